//! A program ready to run: linked instructions bound to live maps, for one kind of context.
//!
//! [`Program::new`] checks the structure every engine relies on (known opcodes and helpers,
//! registers in range, jumps and calls landing on instructions, complete `lddw`s, no falling off
//! the end) and binds map references: a map `lddw` becomes an opaque map handle, a global-data
//! `lddw` the real address of the value; then runs the [`verifier`](crate::verifier), which
//! proves memory safety and termination. [`Program::new_unverified`] and
//! [`Program::from_insns`] skip the verifier (experiments, engine tests); the interpreter checks
//! every access at run time either way, and [`Program::verified`] tells engines what was proven.

use std::marker::PhantomData;
use std::sync::Arc;

use maps::{Map, MapError, map_type};

use crate::context::Context;
use crate::elf::{MapSpec, Object, ProgramSpec};
use crate::helpers;
use crate::insn::*;
use crate::verifier::{self, MapInfo, ProgramType, Verified, VerifierError};

/// High bits of a map handle as a program holds it in a register: not a mappable address, so a
/// program that dereferences one faults.
pub(crate) const MAP_HANDLE_TAG: u64 = 0xffff_f0f0_0000_0000;

/// Why a program cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("instruction {insn}: {kind}")]
    Insn { insn: usize, kind: InsnError },
    #[error("program has no instructions")]
    Empty,
    #[error("program has {len} instructions, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("last instruction is not an exit or a jump")]
    FallsOffEnd,
    #[error("cannot create map {name}")]
    Map {
        name: String,
        #[source]
        source: MapError,
    },
    #[error("cannot set the initial contents of {name}: {reason}")]
    GlobalData { name: String, reason: String },
    #[error("the verifier rejects the program: {source}")]
    Verifier {
        #[source]
        source: Box<VerifierError>,
    },
    #[error("no verifier model for {context} programs; load it unverified")]
    NoVerifierModel { context: &'static str },
}

/// What is wrong with one instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsnError {
    #[error("unsupported instruction (opcode {code:#04x})")]
    UnsupportedOpcode { code: u8 },
    #[error("invalid register r{reg}")]
    BadRegister { reg: u8 },
    #[error("frame pointer r10 is read only")]
    WritesFramePointer,
    #[error("invalid field value (opcode {code:#04x}, off {off}, imm {imm})")]
    BadField { code: u8, off: i16, imm: i32 },
    #[error("jump to {target} is out of range")]
    JumpOutOfRange { target: i64 },
    #[error("jump into the middle of lddw at {target}")]
    JumpIntoLddw { target: i64 },
    #[error("lddw is incomplete")]
    IncompleteLddw,
    #[error("unknown helper id {id}")]
    UnknownHelper { id: i32 },
    #[error("helper {name} is not available to {context} programs")]
    HelperNotAllowed { name: &'static str, context: &'static str },
    #[error("kernel function calls (kfuncs) are not supported")]
    Kfunc,
    #[error("reference to map {index}, but the program has {count} maps")]
    NoSuchMap { index: i32, count: usize },
    #[error("offset {offset} is outside the {size}-byte value of {map}")]
    BadValueOffset { map: String, offset: i64, size: u32 },
    #[error("direct value access into {map}, which is not a one-entry array")]
    NotGlobalData { map: String },
    #[error("unsupported lddw source {src} (file-descriptor references need a loader)")]
    UnsupportedLddw { src: u8 },
}

/// Most instructions a program may have (the kernel's `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;

/// Creates the live maps of an object, in [`Object::maps`] order, with `slots` per-CPU slots;
/// global-data maps get their initial contents.
///
/// # Errors
/// When a map definition is refused by the map store.
pub fn create_maps(obj: &Object, slots: usize) -> Result<Vec<Arc<Map>>, LoadError> {
    obj.maps.iter().map(|spec| create_map(spec, slots).map(Arc::new)).collect()
}

fn create_map(spec: &MapSpec, slots: usize) -> Result<Map, LoadError> {
    let map = Map::new(&spec.name, spec.def, slots)
        .map_err(|source| LoadError::Map { name: spec.name.clone(), source })?;
    if !spec.data.is_empty() {
        map.update_user(&0u32.to_le_bytes(), &spec.data, maps::BPF_ANY)
            .map_err(|e| LoadError::GlobalData { name: spec.name.clone(), reason: format!("{e:?}") })?;
    }
    Ok(map)
}

/// A checked program bound to its maps, runnable on contexts of kind `C`.
#[derive(Debug)]
pub struct Program<C: Context> {
    name: String,
    insns: Vec<Insn>,
    /// The same instructions as little-endian words, the form the interpreter decodes fastest.
    words: Arc<[u64]>,
    /// `bpf_tail_call` targets by program id (the value a prog array holds), set by
    /// [`link_tail_calls`]: the words of every program of the same object.
    tails: Arc<[Arc<[u64]>]>,
    maps: Vec<Arc<Map>>,
    /// What the verifier proved; `None` for a program loaded unverified.
    verified: Option<Arc<Verified>>,
    _context: PhantomData<fn() -> C>,
}

impl<C: Context> Clone for Program<C> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            insns: self.insns.clone(),
            words: self.words.clone(),
            tails: self.tails.clone(),
            maps: self.maps.clone(),
            verified: self.verified.clone(),
            _context: PhantomData,
        }
    }
}

impl<C: Context> Program<C> {
    /// Checks `spec`, binds it to `maps` (the object's maps, from [`create_maps`]) and verifies
    /// it.
    ///
    /// # Errors
    /// [`LoadError`] naming the first offending instruction; [`LoadError::Verifier`] when the
    /// verifier cannot prove the program safe.
    pub fn new(spec: &ProgramSpec, maps: &[Arc<Map>]) -> Result<Self, LoadError> {
        Self::from_insns_verified(&spec.name, &spec.insns, maps)
    }

    /// Like [`Program::new`] without the verifier: only the structural checks. Engines then rely
    /// on their run-time checks alone (the interpreter has them; `--no-verify`).
    ///
    /// # Errors
    /// [`LoadError`] naming the first offending instruction.
    pub fn new_unverified(spec: &ProgramSpec, maps: &[Arc<Map>]) -> Result<Self, LoadError> {
        Self::from_insns(&spec.name, &spec.insns, maps)
    }

    /// Like [`Program::new`], from bare instructions.
    ///
    /// # Errors
    /// As [`Program::new`].
    pub fn from_insns_verified(name: &str, insns: &[Insn], maps: &[Arc<Map>]) -> Result<Self, LoadError> {
        let mut prog = Self::from_insns(name, insns, maps)?;
        let prog_type =
            ProgramType::from_context_name(C::NAME).ok_or(LoadError::NoVerifierModel { context: C::NAME })?;
        let infos = map_infos(maps);
        let verified = verifier::verify(insns, &infos, prog_type)
            .map_err(|e| LoadError::Verifier { source: Box::new(e) })?;
        // `bpf_loop` calls the kernel inlines keep its inlined semantics (see `callbacks`).
        let inlined: Vec<usize> =
            verified.facts.iter().enumerate().filter(|(_, f)| f.loop_inlined).map(|(pc, _)| pc).collect();
        if !inlined.is_empty() {
            for &pc in &inlined {
                prog.insns[pc].off = crate::helpers::callbacks::INLINED_LOOP;
            }
            prog.words = prog.insns.iter().map(|i| u64::from_le_bytes(i.to_bytes())).collect();
        }
        prog.verified = Some(Arc::new(verified));
        Ok(prog)
    }

    /// Like [`Program::new_unverified`], from bare instructions: structural checks only (engine
    /// tests and fuzzers run programs the verifier would refuse).
    ///
    /// # Errors
    /// [`LoadError`] naming the first offending instruction.
    pub fn from_insns(name: &str, insns: &[Insn], maps: &[Arc<Map>]) -> Result<Self, LoadError> {
        if insns.is_empty() {
            return Err(LoadError::Empty);
        }
        if insns.len() > MAX_INSNS {
            return Err(LoadError::TooLong { len: insns.len(), max: MAX_INSNS });
        }
        let mut out = insns.to_vec();
        let mut is_second_slot = vec![false; insns.len()];
        let mut pc = 0;
        while pc < insns.len() {
            if insns[pc].is_lddw() {
                let value = bind_lddw(insns, pc, maps).map_err(|kind| LoadError::Insn { insn: pc, kind })?;
                // A function reference keeps its source, which tells engines where functions
                // start; its value is the tagged instruction index.
                let src = if insns[pc].src == BPF_PSEUDO_FUNC { BPF_PSEUDO_FUNC } else { 0 };
                out[pc] = Insn::new(insns[pc].code, insns[pc].dst, src, 0, value as u32 as i32);
                out[pc + 1] = Insn::new(0, 0, 0, 0, (value >> 32) as u32 as i32);
                is_second_slot[pc + 1] = true;
                pc += 2;
            } else {
                pc += 1;
            }
        }
        for (pc, insn) in insns.iter().enumerate() {
            if insn.is_lddw() && !is_second_slot[pc] && insn.src == BPF_PSEUDO_FUNC {
                let target = pc as i64 + 1 + i64::from(insn.imm);
                if is_second_slot[target as usize] {
                    return Err(LoadError::Insn { insn: pc, kind: InsnError::JumpIntoLddw { target } });
                }
            }
            if is_second_slot[pc] || insn.is_lddw() {
                continue;
            }
            check_insn::<C>(insn, pc, insns.len(), &is_second_slot)
                .map_err(|kind| LoadError::Insn { insn: pc, kind })?;
        }
        let last = insns[insns.len() - 1];
        let last_ok = !is_second_slot[insns.len() - 1]
            && (last.code == BPF_JMP | BPF_EXIT
                || last.code == BPF_JMP | BPF_JA
                || last.code == BPF_JMP32 | BPF_JA);
        if !last_ok {
            return Err(LoadError::FallsOffEnd);
        }
        let words: Arc<[u64]> = out.iter().map(|i| u64::from_le_bytes(i.to_bytes())).collect();
        Ok(Self {
            name: name.to_string(),
            insns: out,
            words,
            tails: Arc::from(Vec::new()),
            maps: maps.to_vec(),
            verified: None,
            _context: PhantomData,
        })
    }

    /// The program's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound instructions.
    #[must_use]
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// The `bpf_tail_call` targets by program id (see [`link_tail_calls`]).
    pub(crate) fn tail_words(&self) -> &[Arc<[u64]>] {
        &self.tails
    }

    /// The maps the program can reach (the object's, in order).
    #[must_use]
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// What the verifier proved, per instruction; `None` when the program was loaded unverified.
    #[must_use]
    pub fn verified(&self) -> Option<&Verified> {
        self.verified.as_deref()
    }
}

/// Why programs cannot be linked for tail calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("program {name} does not use the same maps as {first}: tail calls stay inside one object")]
    ForeignMaps { name: String, first: String },
}

/// Links the programs of one object for `bpf_tail_call`: a prog array slot holding id `i`
/// runs `progs[i]` (the id is the program's index in the slice, which the loader puts in prog
/// arrays). All programs must have been bound to the same maps (one [`create_maps`] call).
///
/// # Errors
/// [`LinkError::ForeignMaps`] when a program's maps are not the first program's.
pub fn link_tail_calls<C: Context>(progs: &mut [Program<C>]) -> Result<(), LinkError> {
    if let Some(first) = progs.first() {
        for p in progs.iter() {
            let same = p.maps.len() == first.maps.len()
                && p.maps.iter().zip(&first.maps).all(|(a, b)| Arc::ptr_eq(a, b));
            if !same {
                return Err(LinkError::ForeignMaps { name: p.name.clone(), first: first.name.clone() });
            }
        }
    }
    let tails: Arc<[Arc<[u64]>]> = progs.iter().map(|p| p.words.clone()).collect();
    for p in progs.iter_mut() {
        p.tails = tails.clone();
    }
    Ok(())
}

/// What the verifier needs of live maps: definitions, and the contents of read-only global data
/// (`.rodata`), which the kernel treats as constants once frozen.
#[must_use]
pub fn map_infos(maps: &[Arc<Map>]) -> Vec<MapInfo> {
    maps.iter()
        .map(|m| {
            let def = *m.def();
            let frozen = (def.map_flags & maps::map_flags::RDONLY_PROG != 0
                && def.map_type == map_type::ARRAY
                && def.max_entries == 1)
                .then(|| m.lookup_user(&0u32.to_le_bytes()).ok())
                .flatten();
            MapInfo { name: m.name().to_string(), def, frozen }
        })
        .collect()
}

/// The 64-bit value an `lddw` loads once its reference is bound.
fn bind_lddw(insns: &[Insn], pc: usize, maps: &[Arc<Map>]) -> Result<u64, InsnError> {
    let first = insns[pc];
    let Some(second) = insns.get(pc + 1) else { return Err(InsnError::IncompleteLddw) };
    if second.code != 0 || second.dst != 0 || second.src != 0 || second.off != 0 {
        return Err(InsnError::IncompleteLddw);
    }
    if first.dst > 9 {
        return Err(if first.dst == REG_FP {
            InsnError::WritesFramePointer
        } else {
            InsnError::BadRegister { reg: first.dst }
        });
    }
    let map_at = |index: i32| {
        usize::try_from(index)
            .ok()
            .and_then(|i| maps.get(i).map(|m| (i, m)))
            .ok_or(InsnError::NoSuchMap { index, count: maps.len() })
    };
    match first.src {
        0 => Ok(u64::from(first.imm as u32) | (u64::from(second.imm as u32) << 32)),
        BPF_PSEUDO_MAP_IDX => {
            let (i, _) = map_at(first.imm)?;
            Ok(MAP_HANDLE_TAG | i as u64)
        }
        BPF_PSEUDO_MAP_IDX_VALUE => {
            let (_, map) = map_at(first.imm)?;
            let def = map.def();
            let base = match map.array_base() {
                Some(base) if def.map_type == map_type::ARRAY && def.max_entries == 1 => base,
                _ => return Err(InsnError::NotGlobalData { map: map.name().to_string() }),
            };
            let offset = i64::from(second.imm);
            if offset < 0 || offset >= i64::from(def.value_size) {
                return Err(InsnError::BadValueOffset {
                    map: map.name().to_string(),
                    offset,
                    size: def.value_size,
                });
            }
            Ok(base.as_ptr() as u64 + offset as u64)
        }
        BPF_PSEUDO_FUNC => {
            let target = pc as i64 + 1 + i64::from(first.imm);
            if target < 0 || target >= insns.len() as i64 {
                return Err(InsnError::JumpOutOfRange { target });
            }
            Ok(crate::helpers::callbacks::FUNC_TAG | target as u64)
        }
        src => Err(InsnError::UnsupportedLddw { src }),
    }
}

fn check_insn<C: Context>(insn: &Insn, pc: usize, len: usize, second: &[bool]) -> Result<(), InsnError> {
    let Insn { code, dst, src, off, imm } = *insn;
    let bad_field = || InsnError::BadField { code, off, imm };
    let reg = |r: u8| if r > 10 { Err(InsnError::BadRegister { reg: r }) } else { Ok(()) };
    let write_reg = |r: u8| match r {
        REG_FP => Err(InsnError::WritesFramePointer),
        r if r > 10 => Err(InsnError::BadRegister { reg: r }),
        _ => Ok(()),
    };
    let jump = |offset: i64| {
        let target = pc as i64 + 1 + offset;
        if target < 0 || target >= len as i64 {
            Err(InsnError::JumpOutOfRange { target })
        } else if second[target as usize] {
            Err(InsnError::JumpIntoLddw { target })
        } else {
            Ok(())
        }
    };
    match insn.class() {
        BPF_ALU | BPF_ALU64 => {
            let wide = insn.class() == BPF_ALU64;
            let op = code & 0xf0;
            let x = code & BPF_X != 0;
            write_reg(dst)?;
            if x {
                reg(src)?;
            }
            match op {
                BPF_ADD | BPF_SUB | BPF_MUL | BPF_OR | BPF_AND | BPF_LSH | BPF_RSH | BPF_XOR | BPF_ARSH => {
                    if off != 0 {
                        return Err(bad_field());
                    }
                }
                BPF_DIV | BPF_MOD => {
                    if off != 0 && off != 1 {
                        return Err(bad_field());
                    }
                }
                BPF_MOV => {
                    let ok = match (x, off) {
                        (_, 0) => true,
                        (true, 8 | 16) => true,
                        (true, 32) => wide,
                        _ => false,
                    };
                    if !ok {
                        return Err(bad_field());
                    }
                }
                BPF_NEG => {
                    if x || off != 0 {
                        return Err(InsnError::UnsupportedOpcode { code });
                    }
                }
                BPF_END => {
                    if (wide && x) || off != 0 || !matches!(imm, 16 | 32 | 64) {
                        return Err(if wide && x {
                            InsnError::UnsupportedOpcode { code }
                        } else {
                            bad_field()
                        });
                    }
                }
                _ => return Err(InsnError::UnsupportedOpcode { code }),
            }
        }
        BPF_JMP | BPF_JMP32 => {
            let op = code & 0xf0;
            let jmp32 = insn.class() == BPF_JMP32;
            match op {
                BPF_JA => {
                    if code & BPF_X != 0 {
                        return Err(InsnError::UnsupportedOpcode { code });
                    }
                    jump(if jmp32 { i64::from(imm) } else { i64::from(off) })?;
                }
                BPF_CALL if !jmp32 => match src {
                    CALL_HELPER => {
                        let Some(name) = u32::try_from(imm).ok().and_then(helpers::name) else {
                            return Err(InsnError::UnknownHelper { id: imm });
                        };
                        if !C::allows_helper(imm as u32) {
                            return Err(InsnError::HelperNotAllowed { name, context: C::NAME });
                        }
                    }
                    BPF_PSEUDO_CALL => jump(i64::from(imm))?,
                    BPF_PSEUDO_KFUNC_CALL => return Err(InsnError::Kfunc),
                    _ => return Err(bad_field()),
                },
                BPF_EXIT if !jmp32 => {}
                BPF_JEQ | BPF_JGT | BPF_JGE | BPF_JSET | BPF_JNE | BPF_JSGT | BPF_JSGE | BPF_JLT
                | BPF_JLE | BPF_JSLT | BPF_JSLE => {
                    reg(dst)?;
                    if code & BPF_X != 0 {
                        reg(src)?;
                    }
                    jump(i64::from(off))?;
                }
                _ => return Err(InsnError::UnsupportedOpcode { code }),
            }
        }
        BPF_LDX => {
            if !matches!(code, 0x61 | 0x69 | 0x71 | 0x79 | 0x81 | 0x89 | 0x91) {
                return Err(InsnError::UnsupportedOpcode { code });
            }
            write_reg(dst)?;
            reg(src)?;
        }
        BPF_ST => {
            if !matches!(code, 0x62 | 0x6a | 0x72 | 0x7a) {
                return Err(InsnError::UnsupportedOpcode { code });
            }
            reg(dst)?;
        }
        BPF_STX => {
            match code {
                0x63 | 0x6b | 0x73 | 0x7b => {}
                0xc3 | 0xdb => {
                    let base = imm & !BPF_FETCH;
                    let ok =
                        matches!(base, 0x00 | 0x40 | 0x50 | 0xa0) || imm == BPF_XCHG || imm == BPF_CMPXCHG;
                    if !ok {
                        return Err(bad_field());
                    }
                }
                _ => return Err(InsnError::UnsupportedOpcode { code }),
            }
            reg(dst)?;
            reg(src)?;
        }
        // `lddw` was bound before; any other BPF_LD (legacy packet access) has no meaning here.
        _ => return Err(InsnError::UnsupportedOpcode { code }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Xdp;

    fn prog(insns: &[Insn]) -> Result<Program<Xdp>, LoadError> {
        Program::<Xdp>::from_insns("t", insns, &[])
    }

    const EXIT: Insn = Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    const MOV0: Insn = Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 2);

    fn insn_err(r: Result<Program<Xdp>, LoadError>) -> (usize, InsnError) {
        match r {
            Err(LoadError::Insn { insn, kind }) => (insn, kind),
            other => panic!("expected an instruction error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_minimal_program() {
        assert_eq!(prog(&[MOV0, EXIT]).unwrap().insns().len(), 2);
    }

    #[test]
    fn rejects_structural_faults() {
        assert!(matches!(prog(&[]), Err(LoadError::Empty)));
        assert!(matches!(prog(&[MOV0]), Err(LoadError::FallsOffEnd)));
        assert_eq!(
            insn_err(prog(&[Insn::new(0xff, 0, 0, 0, 0), EXIT])),
            (0, InsnError::UnsupportedOpcode { code: 0xff })
        );
        assert_eq!(insn_err(prog(&[Insn::new(0xb7, 10, 0, 0, 0), EXIT])), (0, InsnError::WritesFramePointer));
        assert_eq!(
            insn_err(prog(&[Insn::new(0xbf, 1, 12, 0, 0), EXIT])),
            (0, InsnError::BadRegister { reg: 12 })
        );
        assert_eq!(
            insn_err(prog(&[Insn::new(0x05, 0, 0, 5, 0), EXIT])),
            (0, InsnError::JumpOutOfRange { target: 6 })
        );
        assert_eq!(
            insn_err(prog(&[Insn::new(0x85, 0, 0, 0, 9999), EXIT])),
            (0, InsnError::UnknownHelper { id: 9999 })
        );
        assert_eq!(insn_err(prog(&[Insn::new(0x85, 0, 2, 0, 1), EXIT])), (0, InsnError::Kfunc));
        // A jump into the second slot of an lddw.
        let lddw = [Insn::new(0x18, 1, 0, 0, 1), Insn::new(0, 0, 0, 0, 0)];
        assert_eq!(
            insn_err(prog(&[Insn::new(0x05, 0, 0, 1, 0), lddw[0], lddw[1], EXIT])),
            (0, InsnError::JumpIntoLddw { target: 2 })
        );
        assert_eq!(insn_err(prog(&[lddw[0]])), (0, InsnError::IncompleteLddw));
        assert_eq!(
            insn_err(prog(&[Insn::new(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0), lddw[1], EXIT])),
            (0, InsnError::NoSuchMap { index: 0, count: 0 })
        );
    }

    #[test]
    fn binds_plain_lddw_constants() {
        let p =
            prog(&[Insn::new(0x18, 0, 0, 0, 0x5566_7788), Insn::new(0, 0, 0, 0, 0x1122_3344), EXIT]).unwrap();
        assert_eq!(p.insns()[0].imm as u32, 0x5566_7788);
        assert_eq!(p.insns()[1].imm as u32, 0x1122_3344);
    }
}
