//! The verifier: proves a program safe before any engine runs it, in the model of the Linux
//! kernel's `kernel/bpf/verifier.c`.
//!
//! A program the verifier accepts can only read and write its own stack, the packet between
//! `data_meta`/`data` and `data_end`, its context's fields, and the values of its maps; it
//! terminates; it calls only helpers it may call, with arguments of the right kind and size.
//! That is what lets an engine drop its runtime checks: [`Verified`] says, instruction by
//! instruction, what was proven.
//!
//! How: a structural pass ([`cfg`]: function boundaries, jumps, reachability, call depth,
//! register liveness), then abstract interpretation of every path from the first instruction.
//! Each register holds a [`state::Kind`] (scalar, context, packet, packet end, packet meta,
//! stack, map value, map value or null, map handle) with a constant and a variable offset;
//! scalars are tracked as known bits plus signed and unsigned 32- and 64-bit ranges
//! ([`scalar`]). Packet bounds are learned from comparisons with `data_end`, null checks turn
//! a map value or null into a map value in every copy, stack slots remember spilled registers
//! and which bytes were written. Loops are explored iteration by iteration; a state that an
//! already finished state at the same instruction covers is pruned, one equal to a state still
//! being explored on the same path is an infinite loop, and the walk stops after
//! [`MAX_PROCESSED_INSNS`] instructions.
//!
//! Callbacks (`bpf_loop`, `bpf_for_each_map_elem`) are walked as the kernel walks them: the
//! helper call forks into "the helper returns" and "the callback runs" (a new frame with the
//! kernel's arguments); the callback's exit (r0 in [0, 1]) goes back to the call, which forks
//! again, until the state there is covered by an earlier walk's. Scalars that keep changing
//! from walk to walk are widened to unknown (`state::widen`), so the walk converges.
//!
//! The model is the kernel's for a privileged loader (`CAP_BPF` + `CAP_PERFMON`, what the
//! kernel oracle here runs as), with these deliberate differences (all stricter):
//! - storing a pointer into a map value, the packet or the context, passing one to a helper as
//!   a plain value, and returning one from the program are refused (the kernel allows
//!   privileged programs to leak addresses; here they would be userspace addresses);
//! - comparing pointers of unrelated regions, or a pointer with a non-zero scalar, is refused;
//! - 32-bit moves of pointers and pointer stores with a variable stack offset are refused.
//!
//! ```
//! use xdp_vm::insn::Insn;
//! use xdp_vm::verifier::{self, ProgramType};
//!
//! // r0 = *(u32 *)(r1 + 0)  -- reads xdp_md.data: fine; then exit.
//! let ok = [Insn::new(0x61, 0, 1, 0, 0), Insn::new(0xb7, 0, 0, 0, 2), Insn::new(0x95, 0, 0, 0, 0)];
//! assert!(verifier::verify(&ok, &[], ProgramType::Xdp).is_ok());
//! // r0 = *(u8 *)(r2 + 0)  -- r2 was never written.
//! let bad = [Insn::new(0x71, 0, 2, 0, 0), Insn::new(0x95, 0, 0, 0, 0)];
//! let err = verifier::verify(&bad, &[], ProgramType::Xdp).unwrap_err();
//! assert_eq!(err.insn, 0);
//! ```

#[cfg(test)]
mod callback_tests;
mod cfg;
mod check;
#[cfg(test)]
mod fuzz;
mod scalar;
mod state;
mod tnum;

use std::fmt;

use crate::elf::SourceLine;
use crate::insn::Insn;

/// Most instructions one verification may process, over all paths (the kernel's
/// `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_PROCESSED_INSNS: usize = 1_000_000;

/// The kind of program, which decides the context and the helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramType {
    /// `struct xdp_md`: `data`, `data_end`, `data_meta`, `ingress_ifindex`, `rx_queue_index`
    /// readable with 4-byte loads; nothing writable (`egress_ifindex` is for devmap programs).
    Xdp,
    /// `struct pt_regs` (the kernel's `BPF_PROG_TYPE_KPROBE`, which uprobes are): any field
    /// readable with a 1-, 2-, 4- or 8-byte load at an offset that is a multiple of the size,
    /// nothing writable; the tracing helpers.
    Uprobe,
}

impl ProgramType {
    /// The program type of a [`crate::Context`] by its name; `None` when the verifier has no
    /// model of it yet.
    #[must_use]
    pub fn from_context_name(name: &str) -> Option<Self> {
        match name {
            "xdp" => Some(ProgramType::Xdp),
            "uprobe" => Some(ProgramType::Uprobe),
            _ => None,
        }
    }

    /// Whether programs of this type may call helper `id`.
    #[must_use]
    pub fn allows_helper(self, id: u32) -> bool {
        use crate::Context;
        match self {
            ProgramType::Xdp => crate::Xdp::allows_helper(id),
            ProgramType::Uprobe => crate::context::Uprobe::allows_helper(id),
        }
    }
}

/// What the verifier needs to know of one map (indexed like the program's map table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    pub name: String,
    pub def: maps::MapDef,
    /// Contents of a read-only one-entry array (`.rodata`): loads from it at constant offsets
    /// are known constants, as in the kernel for frozen maps.
    pub frozen: Option<Vec<u8>>,
}

impl MapInfo {
    fn readonly(&self) -> bool {
        self.def.map_flags & maps::map_flags::RDONLY_PROG != 0
    }
}

/// Knobs; the defaults are the kernel's behaviour for a privileged loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Reading stack bytes never written gives an unknown value (kernel: `allow_uninit_stack`,
    /// true for `CAP_PERFMON`). When false, such reads are refused.
    pub allow_uninit_stack: bool,
    /// Instructions to process before giving up.
    pub max_processed_insns: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { allow_uninit_stack: true, max_processed_insns: MAX_PROCESSED_INSNS }
    }
}

/// A field of the context, for engines that rewrite context loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtxField {
    /// `xdp_md.data`: the packet pointer.
    Data,
    /// `xdp_md.data_end`.
    DataEnd,
    /// `xdp_md.data_meta`.
    DataMeta,
    /// `xdp_md.ingress_ifindex`.
    IngressIfindex,
    /// `xdp_md.rx_queue_index`.
    RxQueueIndex,
}

/// Memory regions, as a bit set.
pub mod region {
    pub const STACK: u8 = 1;
    pub const PACKET: u8 = 2;
    pub const MAP_VALUE: u8 = 4;
    pub const CTX: u8 = 8;
}

/// What was proven about one instruction over every path that reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsnFact {
    /// Some path reaches it (false only for the second slot of an `lddw`).
    pub reached: bool,
    /// For loads, stores and atomics: the regions ([`region`] bits) its address fell in, on
    /// some path. Every such access is proven inside its region on every path: an engine may
    /// drop the bounds check of every memory instruction of a verified program.
    pub regions: u8,
    /// For a load from the context: the field, when every path loads the same one. An engine
    /// may compile the load as a read of that field of its own context representation.
    pub ctx_field: Option<CtxField>,
    /// A `bpf_loop` call the kernel's verifier would inline (`inline_bpf_loop`): on every path
    /// its flags are a known 0 and its callback the same function. The inlined loop differs
    /// from the helper at the edges (a 64-bit count, `-E2BIG` as a 32-bit value), which engines
    /// reproduce.
    pub loop_inlined: bool,
}

/// A program the verifier accepted, and what it proved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Instructions processed over all paths (the kernel's `processed N insns`).
    pub processed_insns: usize,
    /// States stored for pruning.
    pub states: usize,
    /// Stack bytes each function uses, in function order (the program first).
    pub stack_depth: Vec<u32>,
    /// First instruction of each function.
    pub subprogs: Vec<usize>,
    /// Per instruction, what was proven.
    pub facts: Vec<InsnFact>,
    /// Whether some path reads stack bytes it never wrote (which `Options::allow_uninit_stack`
    /// allows, as the kernel does for a privileged loader): such a read sees what an earlier
    /// function or run left there, so a compiler must then make every stack store, even one
    /// whose frame ends before anything of the program reads it.
    pub reads_uninit_stack: bool,
}

/// Why the verifier refused a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction {insn}: {kind}")]
pub struct VerifierError {
    /// The instruction at fault (index into the program's instructions).
    pub insn: usize,
    pub kind: ErrorKind,
    /// Its source line, when the object has `.BTF.ext` line info.
    pub line: Option<Box<SourceLine>>,
    /// The instruction as `bpftool prog dump xlated` prints it (`r1 = *(u64 *)(r0 +0)`), when
    /// it exists (set by [`verify`]).
    pub text: Option<String>,
}

impl VerifierError {
    /// The log a user reads: the instruction, the source line where known, the reason.
    #[must_use]
    pub fn log(&self) -> String {
        let mut s = format!("instruction {}: {}\n", self.insn, self.kind);
        if let Some(t) = &self.text {
            s.push_str(&format!("  {}: {t}\n", self.insn));
        }
        if let Some(l) = &self.line {
            s.push_str(&format!("  --> {}:{}:{}\n", l.file, l.line, l.column));
            if !l.text.is_empty() {
                s.push_str(&format!("   | {}\n", l.text.trim_end()));
            }
        }
        s
    }

    /// Attaches the source line of the instruction from `.BTF.ext` line info.
    #[must_use]
    pub fn with_lines(mut self, lines: &[crate::elf::LineInfo]) -> Self {
        self.line = crate::elf::line_for(lines, self.insn).map(Box::new);
        self
    }
}

/// What is wrong, in the kernel verifier's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("program has no instructions")]
    Empty,
    #[error("unsupported instruction (opcode {code:#04x})")]
    UnsupportedOpcode { code: u8 },
    #[error("invalid instruction fields (opcode {code:#04x}, off {off}, imm {imm})")]
    BadField { code: u8, off: i16, imm: i32 },
    #[error("invalid register r{reg}")]
    BadRegister { reg: u8 },
    #[error("frame pointer r10 is read only")]
    WritesFramePointer,
    #[error("lddw is incomplete or malformed")]
    BadLddw,
    #[error("unsupported lddw source {src}")]
    UnsupportedLddw { src: u8 },
    #[error("reference to map {index}, but the program has {count} maps")]
    NoSuchMap { index: i64, count: usize },
    #[error("{what} are not supported")]
    Unsupported { what: &'static str },
    #[error("jump to {target} is out of range")]
    JumpOutOfRange { target: i64 },
    #[error("jump into the middle of lddw at {target}")]
    JumpIntoLddw { target: usize },
    #[error("jump to {target} leaves the function")]
    JumpOutOfFunction { target: usize },
    #[error("last instruction of a function is not an exit or a jump")]
    FallsOffEnd,
    #[error("unreachable instruction")]
    Unreachable,
    #[error("recursive call")]
    Recursion,
    #[error("the call stack of {frames} frames is too deep (max 8)")]
    CallDepth { frames: usize },
    #[error("combined stack size of the call chain is {size} bytes, more than 512")]
    StackTooLarge { size: u32 },
    #[error("r{reg} is read before it is written (!read_ok)")]
    UninitRegister { reg: u8 },
    #[error("invalid memory access through r{reg}: it holds a {kind}, not a pointer to memory")]
    NotMemory { reg: u8, kind: &'static str },
    #[error("r{reg} may be NULL ({kind}): null-check it first")]
    MaybeNull { reg: u8, kind: &'static str },
    #[error("invalid access to packet through r{reg}: off={off} size={size}, proven range {range}")]
    PacketRange { reg: u8, off: i64, size: u32, range: i64 },
    #[error("invalid packet access through r{reg}: its variable offset may be negative (min {smin})")]
    PacketVarOffset { reg: u8, smin: i64 },
    #[error("invalid stack access through r{reg}: off={off} size={size} is outside the 512-byte frame")]
    StackBounds { reg: u8, off: i64, size: u32 },
    #[error("misaligned stack access through r{reg}: off={off} size={size}")]
    StackMisaligned { reg: u8, off: i64, size: u32 },
    #[error("invalid read from stack through r{reg}: off={off} size={size} was never written")]
    StackUninit { reg: u8, off: i64, size: u32 },
    #[error("invalid stack access through r{reg}: {reason}")]
    StackSpill { reg: u8, reason: &'static str },
    #[error(
        "invalid access to map value of {map} through r{reg}: offsets {min}..{max} size {size}, value is {value_size} bytes"
    )]
    MapValueBounds { reg: u8, map: String, min: i64, max: i64, size: u32, value_size: u32 },
    #[error(
        "invalid access to a ring-buffer record through r{reg}: offsets {min}..{max} size {size}, record is {len} bytes"
    )]
    RingbufBounds { reg: u8, min: i64, max: i64, size: u32, len: u32 },
    #[error(
        "unreleased reference id={id} alloc_insn={insn}: submit or discard the ring-buffer record on every path"
    )]
    UnreleasedReference { id: u32, insn: usize },
    #[error("write into read-only map {map}")]
    MapReadOnly { map: String },
    #[error("invalid context access: off={off} size={size}{}", if *write { " (write)" } else { "" })]
    CtxAccess { off: i64, size: u32, write: bool },
    #[error("dereference of modified ctx pointer r{reg} (off={off})")]
    CtxModified { reg: u8, off: i64 },
    #[error("variable offset access to {kind} through r{reg}")]
    VarOffset { reg: u8, kind: &'static str },
    #[error("r{reg} leaks a pointer into {into}")]
    PointerLeak { reg: u8, into: &'static str },
    #[error("pointer arithmetic on {kind} prohibited{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    PointerArithmetic { kind: &'static str, detail: &'static str },
    #[error("comparison of {left} with {right} prohibited")]
    PointerComparison { left: &'static str, right: &'static str },
    #[error("atomic access to {kind} is not allowed")]
    AtomicRegion { kind: &'static str },
    #[error("misaligned atomic access: off={off} size={size}")]
    AtomicMisaligned { off: i64, size: u32 },
    #[error("unknown helper id {id}")]
    UnknownHelper { id: i32 },
    #[error("helper {helper} is not available to {prog_type} programs")]
    HelperNotAllowed { helper: &'static str, prog_type: &'static str },
    #[error("{helper} argument {arg} (r{arg}): {reason}")]
    HelperArg { helper: &'static str, arg: u8, reason: String },
    #[error("at program exit r0 is {kind}, not a scalar")]
    BadReturn { kind: &'static str },
    #[error("at callback return r0 is {got}, not 0 or 1")]
    CallbackReturn { got: String },
    #[error(
        "invalid access to a key of map {map} through r{reg}: offsets {min}..{max} size {size}, key is {key_size} bytes"
    )]
    MapKeyBounds { reg: u8, map: String, min: i64, max: i64, size: u32, key_size: u32 },
    #[error("write through r{reg} to a map key, which is read only")]
    MapKeyWrite { reg: u8 },
    #[error("cannot return a pointer to the callee's stack")]
    ReturnsStackPointer,
    #[error("infinite loop detected")]
    InfiniteLoop,
    #[error("program is too complex: more than {limit} instructions processed")]
    TooComplex { limit: usize },
}

/// Verifies a program of `prog_type` whose map references index `maps`, with the default
/// [`Options`].
///
/// # Errors
/// The first [`VerifierError`] found.
pub fn verify(insns: &[Insn], maps: &[MapInfo], prog_type: ProgramType) -> Result<Verified, VerifierError> {
    verify_with(insns, maps, prog_type, &Options::default())
}

/// [`verify`] with explicit [`Options`].
///
/// # Errors
/// The first [`VerifierError`] found.
pub fn verify_with(
    insns: &[Insn],
    maps: &[MapInfo],
    prog_type: ProgramType,
    options: &Options,
) -> Result<Verified, VerifierError> {
    let with_text = |mut e: VerifierError| {
        if let Some(&insn) = insns.get(e.insn) {
            let name = |i: usize| maps.get(i).map(|m| m.name.clone());
            let text = crate::disasm::format_insn(insn, insns.get(e.insn + 1).copied(), &name);
            e.text = Some(text);
        }
        e
    };
    let cfg = cfg::analyze(insns).map_err(with_text)?;
    check::run(insns, maps, prog_type, options, &cfg).map_err(with_text)
}

impl fmt::Display for CtxField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CtxField::Data => "data",
            CtxField::DataEnd => "data_end",
            CtxField::DataMeta => "data_meta",
            CtxField::IngressIfindex => "ingress_ifindex",
            CtxField::RxQueueIndex => "rx_queue_index",
        })
    }
}
