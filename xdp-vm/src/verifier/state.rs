//! The abstract machine state: what each register holds, what each stack byte holds, per call
//! frame; and when one state covers another (state pruning).

use super::scalar::Scalar;

/// What a register holds. Pointers carry their region; the offset lives in [`Reg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Never written (reading it is an error).
    NotInit,
    Scalar,
    /// The program's context (`struct xdp_md *`).
    Ctx,
    /// `data`-based packet pointer.
    Packet,
    /// `data_meta`-based pointer.
    PacketMeta,
    /// `data_end`.
    PacketEnd,
    /// Pointer into the stack of frame `n` (0 = the program's own).
    Stack(u8),
    /// Pointer into a value of map `n`.
    MapValue(u32),
    /// What `bpf_map_lookup_elem` on map `n` returns: a value pointer or NULL.
    MapValueOrNull(u32),
    /// The map itself (`lddw` of a map reference), an opaque handle for helpers.
    MapPtr(u32),
    /// A ring-buffer record of `n` bytes from `bpf_ringbuf_reserve` (the kernel's
    /// `PTR_TO_MEM | MEM_RINGBUF`), a reference that must be submitted or discarded; `Reg::id`
    /// names the reference.
    RingbufMem(u32),
    /// What `bpf_ringbuf_reserve` returns: a record of `n` bytes or NULL.
    RingbufMemOrNull(u32),
    /// A function of the program (`lddw` with `BPF_PSEUDO_FUNC`), starting at instruction `n`:
    /// a callback for `bpf_loop` or `bpf_for_each_map_elem` (the kernel's `PTR_TO_FUNC`).
    Func(u32),
    /// The key of the element of map `n` a `bpf_for_each_map_elem` callback is called with
    /// (the kernel's `PTR_TO_MAP_KEY`): readable, `key_size` bytes, never writable.
    MapKey(u32),
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotInit => "uninitialized",
            Kind::Scalar => "scalar",
            Kind::Ctx => "ctx",
            Kind::Packet => "pkt",
            Kind::PacketMeta => "pkt_meta",
            Kind::PacketEnd => "pkt_end",
            Kind::Stack(_) => "fp",
            Kind::MapValue(_) => "map_value",
            Kind::MapValueOrNull(_) => "map_value_or_null",
            Kind::MapPtr(_) => "map_ptr",
            Kind::RingbufMem(_) => "ringbuf_mem",
            Kind::RingbufMemOrNull(_) => "ringbuf_mem_or_null",
            Kind::Func(_) => "func",
            Kind::MapKey(_) => "map_key",
        }
    }

    pub fn is_pointer(self) -> bool {
        !matches!(self, Kind::NotInit | Kind::Scalar)
    }

    pub fn is_packet(self) -> bool {
        matches!(self, Kind::Packet | Kind::PacketMeta)
    }
}

/// One register: a scalar (value in `val`), or a pointer at `off + val` from its region's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reg {
    pub kind: Kind,
    /// Constant part of a pointer's offset.
    pub off: i64,
    /// A scalar's value, or a pointer's variable offset.
    pub val: Scalar,
    /// Links copies: of a scalar (refined together), of a packet pointer's variable part (share
    /// `range`), of a map value or null (null-checked together). 0: none.
    pub id: u32,
    /// Packet pointers: bytes from `base + val` proven to lie before `data_end` (or `data` for
    /// meta pointers).
    pub range: i64,
}

impl Reg {
    pub fn not_init() -> Self {
        Self { kind: Kind::NotInit, off: 0, val: Scalar::konst(0), id: 0, range: 0 }
    }

    pub fn scalar(val: Scalar) -> Self {
        Self { kind: Kind::Scalar, off: 0, val, id: 0, range: 0 }
    }

    pub fn pointer(kind: Kind, off: i64) -> Self {
        Self { kind, off, val: Scalar::konst(0), id: 0, range: 0 }
    }
}

/// What one stack byte holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Byte {
    /// Never written.
    Invalid,
    /// Written with something unknown.
    Misc,
    /// Known to be zero.
    Zero,
    /// Part of a spilled register (see [`Slot::spill`]).
    Spill,
}

/// One aligned 8-byte stack slot. A spill occupies bytes `0..size` (the lowest addresses) of a
/// slot it was stored at the start of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    pub bytes: [Byte; 8],
    pub spill: Option<(Reg, u8)>,
}

impl Slot {
    pub const EMPTY: Slot = Slot { bytes: [Byte::Invalid; 8], spill: None };

    /// Turns a spill into plain bytes (when part of it is overwritten).
    pub fn unspill(&mut self) {
        if self.spill.take().is_some() {
            for b in &mut self.bytes {
                if *b == Byte::Spill {
                    *b = Byte::Misc;
                }
            }
        }
    }
}

/// One call frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Frame {
    pub regs: [Reg; 11],
    /// Slot `i` covers bytes `-8(i+1)..-8i` from the frame pointer; grown on demand.
    pub stack: Vec<Slot>,
    /// Instruction of the call that made this frame (0 for the program's frame).
    pub callsite: usize,
    /// First instruction of the function running in this frame.
    pub subprog: usize,
    /// A callback frame: the function was called by the helper at `callsite` (`bpf_loop`,
    /// `bpf_for_each_map_elem`), returns 0 or 1, and its exit goes back to that call.
    pub callback: bool,
}

impl Frame {
    pub fn slot_mut(&mut self, i: usize) -> &mut Slot {
        if self.stack.len() <= i {
            self.stack.resize(i + 1, Slot::EMPTY);
        }
        &mut self.stack[i]
    }

    pub fn slot(&self, i: usize) -> Slot {
        self.stack.get(i).copied().unwrap_or(Slot::EMPTY)
    }
}

/// The whole machine state on one path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub frames: Vec<Frame>,
    /// Acquired references (ring-buffer records) not yet released: `(id, instruction that
    /// acquired it)`. Each must be released before the program exits.
    pub refs: Vec<(u32, usize)>,
    /// Callback runs that returned to their helper call on this path (the kernel's
    /// `callback_unroll_depth`): a state seen again after another callback run is a further
    /// iteration of a loop the helper bounds, not a loop that makes no progress.
    pub callback_walks: u32,
}

impl State {
    pub fn cur(&self) -> &Frame {
        &self.frames[self.frames.len() - 1]
    }

    pub fn cur_mut(&mut self) -> &mut Frame {
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    /// Every register and spilled register of every frame.
    pub fn for_each_reg(&mut self, mut f: impl FnMut(&mut Reg)) {
        for fr in &mut self.frames {
            for r in &mut fr.regs {
                f(r);
            }
            for s in &mut fr.stack {
                if let Some((r, _)) = &mut s.spill {
                    f(r);
                }
            }
        }
    }
}

/// Consistent renaming of ids between an old and a new state.
#[derive(Default)]
struct IdMap(Vec<(u32, u32)>);

impl IdMap {
    fn check(&mut self, old: u32, cur: u32) -> bool {
        if old == 0 {
            return true;
        }
        if cur == 0 {
            return false;
        }
        for &(o, c) in &self.0 {
            if o == old {
                return c == cur;
            }
            if c == cur {
                return false;
            }
        }
        self.0.push((old, cur));
        true
    }
}

fn reg_covers(old: &Reg, cur: &Reg, ids: &mut IdMap) -> bool {
    if old.kind == Kind::NotInit {
        return true;
    }
    if old.kind != cur.kind {
        return false;
    }
    match old.kind {
        Kind::Scalar => old.val.contains(&cur.val) && (old.val.is_const() || ids.check(old.id, cur.id)),
        Kind::Packet | Kind::PacketMeta => {
            old.off == cur.off
                && old.range <= cur.range
                && old.val.contains(&cur.val)
                && ids.check(old.id, cur.id)
        }
        Kind::MapValueOrNull(_) | Kind::RingbufMem(_) | Kind::RingbufMemOrNull(_) => {
            old.off == cur.off && old.val.contains(&cur.val) && ids.check(old.id, cur.id)
        }
        _ => old.off == cur.off && old.val.contains(&cur.val),
    }
}

/// Whether everything `cur` can do was already proven safe from `old`: `old` is at least as
/// general, register by register (those in `live` for the innermost frame) and byte by byte.
///
/// Scalars of the innermost frame outside `precise` (see [`super::cfg::Cfg::relevant_in`]) can
/// never influence a safety decision from here on, so only their kind is compared (the kernel's
/// imprecise scalars).
pub(crate) fn covers(
    old: &State,
    cur: &State,
    live: u16,
    precise: (u16, u64),
    caller_live: &dyn Fn(usize) -> u16,
) -> bool {
    if old.frames.len() != cur.frames.len() || old.refs.len() != cur.refs.len() {
        return false;
    }
    let mut ids = IdMap::default();
    for (o, c) in old.refs.iter().zip(&cur.refs) {
        if !ids.check(o.0, c.0) {
            return false;
        }
    }
    let n = old.frames.len();
    for (i, (fo, fc)) in old.frames.iter().zip(&cur.frames).enumerate() {
        if fo.callsite != fc.callsite || fo.subprog != fc.subprog || fo.callback != fc.callback {
            return false;
        }
        let mask = if i + 1 == n { live } else { caller_live(cur.frames[i + 1].callsite) };
        let (precise, precise_slots) = if i + 1 == n { precise } else { (0x7ff, u64::MAX) };
        for r in 0..10 {
            if mask & (1 << r) == 0 {
                continue;
            }
            let (ro, rc) = (&fo.regs[r], &fc.regs[r]);
            if precise & (1 << r) == 0 && ro.kind == Kind::Scalar && rc.kind == Kind::Scalar {
                continue;
            }
            if !reg_covers(ro, rc, &mut ids) {
                return false;
            }
        }
        let slots = fo.stack.len().max(fc.stack.len());
        for s in 0..slots {
            let (so, sc) = (fo.slot(s), fc.slot(s));
            let no_ptr = |sl: &super::state::Slot| !sl.spill.is_some_and(|(r, _)| r.kind.is_pointer());
            if s < 64 && precise_slots & (1 << s) == 0 && no_ptr(&so) && no_ptr(&sc) {
                continue;
            }
            if let Some((ro, size)) = so.spill {
                match sc.spill {
                    Some((rc, csize)) if csize == size => {
                        if !reg_covers(&ro, &rc, &mut ids) {
                            return false;
                        }
                    }
                    _ => {
                        // An old spilled scalar that is fully unknown reads like misc bytes.
                        let unknown = ro.kind == Kind::Scalar && ro.val == Scalar::unknown();
                        if !unknown || sc.spill.is_some_and(|(r, _)| r.kind.is_pointer()) {
                            return false;
                        }
                    }
                }
            }
            for b in 0..8 {
                let ok = match so.bytes[b] {
                    Byte::Invalid | Byte::Misc => {
                        sc.bytes[b] != Byte::Spill || sc.spill.is_some_and(|(r, _)| r.kind == Kind::Scalar)
                    }
                    Byte::Zero => sc.bytes[b] == Byte::Zero,
                    Byte::Spill => true, // compared above
                };
                if !ok {
                    return false;
                }
            }
        }
    }
    true
}

/// Widens `cur` against `old`, another state at the same callback call site (an earlier walk
/// of the callback on the same path, or another path to the call): every scalar (register or
/// spilled register, in every frame) becomes `old`'s when that contains it, else unknown; a stack byte known zero in one and written in the other becomes written. The
/// result contains both, so exploring it instead of `cur` is sound; it makes the repeated walks
/// of a callback converge when the callback keeps changing a value in its caller's stack, and
/// keeps the states at a call reached after earlier callbacks from multiplying (the kernel gets
/// there by not tracking imprecise scalars at all).
pub(crate) fn widen(old: &State, cur: &mut State) {
    if old.frames.len() != cur.frames.len() {
        return;
    }
    let join = |o: &Reg, c: &mut Reg, bytes: u32| {
        if o.kind != Kind::Scalar || c.kind != Kind::Scalar || o.val == c.val {
            return;
        }
        // A range that grew (or moved) jumps to unknown: what keeps growing converges.
        let val = if o.val.contains(&c.val) { o.val } else { Scalar::unknown_bytes(bytes) };
        *c = Reg::scalar(val);
    };
    for (fo, fc) in old.frames.iter().zip(&mut cur.frames) {
        if fo.callsite != fc.callsite || fo.subprog != fc.subprog {
            return;
        }
        for (ro, rc) in fo.regs.iter().zip(&mut fc.regs) {
            join(ro, rc, 8);
        }
        for (i, sc) in fc.stack.iter_mut().enumerate() {
            let so = fo.slot(i);
            if let (Some((ro, osize)), Some((rc, csize))) = (so.spill, sc.spill.as_mut())
                && osize == *csize
            {
                join(&ro, rc, u32::from(osize));
            }
            for (bo, bc) in so.bytes.iter().zip(&mut sc.bytes) {
                if *bo == Byte::Misc && *bc == Byte::Zero {
                    *bc = Byte::Misc;
                }
            }
        }
    }
}
