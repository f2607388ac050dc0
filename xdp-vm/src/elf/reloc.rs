//! Linking one program: map and global-data relocations, and bpf-to-bpf calls.
//!
//! A program is its own function followed by every function it reaches through `call`
//! (`BPF_PSEUDO_CALL`) or a callback pointer (`lddw` with `BPF_PSEUDO_FUNC`), each copied once, in
//! the order first reached — libbpf's layout. Call targets follow libbpf's rules: with a relocation
//! against a function or section symbol the target is `sym.value / 8 + imm + 1` (calls) or
//! `(sym.value + imm) / 8` (callbacks, a byte offset); without one `imm` is already relative to the
//! next instruction in the same section. The linked `imm` is relative to the next instruction of
//! the linked program.

use object::elf;

use super::parse::{Ctx, Func, R_BPF_64_32, R_BPF_64_64, Reloc};
use super::{ElfError, Function};
use crate::insn::{
    BPF_PSEUDO_FUNC, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE, Insn,
};

/// One function copied into the linked program.
#[derive(Debug, Clone, Copy)]
struct Placed {
    sec: usize,
    start: usize,
    end: usize,
    /// Index of `start` in the linked program.
    base: usize,
}

struct Linker<'c, 'a> {
    cx: &'c Ctx<'a>,
    placed: Vec<Placed>,
    out: Vec<Insn>,
}

/// Where one linked function came from: (section, first instruction there, first linked
/// instruction, length).
pub(super) type Origin = (usize, usize, usize, usize);

/// A linked program: its instructions, the functions they are made of, where each came from.
pub(super) type Linked = (Vec<Insn>, Vec<Function>, Vec<Origin>);

/// The program's instructions, the functions they are made of, and where each came from.
pub(super) fn link(cx: &Ctx<'_>, sec: usize, func: &Func) -> Result<Linked, ElfError> {
    let mut l = Linker { cx, placed: Vec::new(), out: Vec::new() };
    l.place(sec, func.start, func.end);
    let mut next = 0;
    while let Some(&p) = l.placed.get(next) {
        l.relocate(p)?;
        next += 1;
    }
    let functions = l
        .placed
        .iter()
        .map(|p| {
            let name =
                cx.funcs.get(&p.sec).and_then(|fs| fs.iter().find(|f| f.start == p.start && f.end == p.end));
            Function {
                name: name.map_or_else(String::new, |f| f.name.clone()),
                start: p.base,
                len: p.end - p.start,
            }
        })
        .collect();
    let origins = l.placed.iter().map(|p| (p.sec, p.start, p.base, p.end - p.start)).collect();
    Ok((l.out, functions, origins))
}

impl Linker<'_, '_> {
    fn place(&mut self, sec: usize, start: usize, end: usize) -> usize {
        let base = self.out.len();
        if let Some(code) = self.cx.insns.get(&sec).and_then(|c| c.get(start..end)) {
            self.out.extend_from_slice(code);
        }
        self.placed.push(Placed { sec, start, end, base });
        base
    }

    fn section(&self, sec: usize) -> String {
        self.cx.section_name(sec).to_string()
    }

    fn relocate(&mut self, p: Placed) -> Result<(), ElfError> {
        let rels = self.cx.rels.get(&p.sec);
        let mut k = p.start;
        while k < p.end {
            let at = p.base + (k - p.start);
            let insn = self.out[at];
            let offset = k as u64 * 8;
            let rel = rels.and_then(|r| r.get(&offset)).copied();
            if insn.is_lddw() {
                if k + 1 >= p.end {
                    return Err(ElfError::TruncatedLddw { section: self.section(p.sec), insn: k });
                }
                if let Some(rel) = rel {
                    self.lddw(p, k, at, rel)?;
                } else if insn.src == BPF_PSEUDO_FUNC {
                    let target = self.resolve(p.sec, k, k as i64 + i64::from(insn.imm) + 1)?;
                    self.out[at].imm = relative(target, at, &self.section(p.sec), k)?;
                }
                k += 2;
                continue;
            }
            if insn.is_pseudo_call() {
                let (tsec, tidx) = match rel {
                    Some(rel) => self.call_target(p, k, rel, insn)?,
                    None => (p.sec, k as i64 + i64::from(insn.imm) + 1),
                };
                let target = self.resolve(tsec, k, tidx)?;
                self.out[at].imm = relative(target, at, &self.section(p.sec), k)?;
            } else if let Some(rel) = rel {
                let sym = self.cx.sym(rel.sym)?;
                let kind = if insn.code == crate::insn::BPF_JMP | crate::insn::BPF_CALL
                    && insn.src == BPF_PSEUDO_KFUNC_CALL
                {
                    format!("call of kernel function {}", sym.name)
                } else {
                    format!("type {} against {} on opcode {:#04x}", rel.r_type, sym.name, insn.code)
                };
                return Err(ElfError::UnsupportedRelocation { section: self.section(p.sec), offset, kind });
            }
            k += 1;
        }
        Ok(())
    }

    /// Where a relocated `call` goes: (section, instruction index in it).
    fn call_target(&self, p: Placed, k: usize, rel: Reloc, insn: Insn) -> Result<(usize, i64), ElfError> {
        let unsupported = |kind: String| ElfError::UnsupportedRelocation {
            section: self.section(p.sec),
            offset: k as u64 * 8,
            kind,
        };
        if rel.r_type != R_BPF_64_32 {
            return Err(unsupported(format!("type {} on a call", rel.r_type)));
        }
        let sym = self.cx.sym(rel.sym)?;
        let Some(tsec) = sym.section else {
            return Err(ElfError::UnknownFunction {
                section: self.section(p.sec),
                insn: k,
                name: sym.name.clone(),
            });
        };
        if !self.cx.insns.contains_key(&tsec) || !matches!(sym.st_type, elf::STT_FUNC | elf::STT_SECTION) {
            return Err(unsupported(format!("call to {}, not a function", sym.name)));
        }
        let value = i64::try_from(sym.value / 8).unwrap_or(i64::MAX);
        Ok((tsec, value.saturating_add(i64::from(insn.imm)).saturating_add(1)))
    }

    /// A relocated `lddw`: a map, a global-data address or a callback.
    fn lddw(&mut self, p: Placed, k: usize, at: usize, rel: Reloc) -> Result<(), ElfError> {
        let offset = k as u64 * 8;
        let unsupported =
            |kind: String| ElfError::UnsupportedRelocation { section: self.section(p.sec), offset, kind };
        if rel.r_type != R_BPF_64_64 {
            return Err(unsupported(format!("type {} on lddw", rel.r_type)));
        }
        let sym = self.cx.sym(rel.sym)?;
        let Some(sec) = sym.section else {
            return Err(unsupported(format!("reference to extern symbol {}", sym.name)));
        };
        let imm = i64::from(self.out[at].imm);
        if let Some(&map) = self.cx.map_at.get(&(sec, sym.value)) {
            self.out[at].src = BPF_PSEUDO_MAP_IDX;
            self.out[at].imm = map_imm(map);
            self.out[at + 1].imm = 0;
        } else if let Some(&map) = self.cx.global_map.get(&sec) {
            let size = self.cx.global_size.get(&map).copied().unwrap_or(0);
            let off = i64::try_from(sym.value).ok().and_then(|v| v.checked_add(imm));
            let off = off.filter(|&o| o >= 0 && o as u64 <= size).and_then(|o| i32::try_from(o).ok());
            let off =
                off.ok_or_else(|| unsupported(format!("offset outside {}", self.cx.section_name(sec))))?;
            self.out[at].src = BPF_PSEUDO_MAP_IDX_VALUE;
            self.out[at].imm = map_imm(map);
            self.out[at + 1].imm = off;
        } else if self.cx.insns.contains_key(&sec) && matches!(sym.st_type, elf::STT_FUNC | elf::STT_SECTION)
        {
            let bytes = i64::try_from(sym.value).unwrap_or(i64::MAX).saturating_add(imm);
            if bytes % 8 != 0 {
                return Err(unsupported(format!("callback address {bytes} is not instruction-aligned")));
            }
            let target = self.resolve(sec, k, bytes / 8)?;
            self.out[at].src = BPF_PSEUDO_FUNC;
            self.out[at].imm = relative(target, at, &self.section(p.sec), k)?;
            self.out[at + 1].imm = 0;
        } else {
            let what = match self.cx.sections.get(sec) {
                Some(s) if s.name == ".maps" || s.name == "maps" => format!("no map at offset {}", sym.value),
                _ => format!("reference to {} in section {}", sym.name, self.cx.section_name(sec)),
            };
            return Err(unsupported(what));
        }
        Ok(())
    }

    /// The linked index of instruction `tidx` of section `tsec`, placing its function if needed.
    fn resolve(&mut self, tsec: usize, from: usize, tidx: i64) -> Result<usize, ElfError> {
        let bad = || ElfError::BadCallTarget { section: self.section(tsec), insn: from, target: tidx };
        let idx = usize::try_from(tidx).map_err(|_| bad())?;
        if let Some(p) = self.placed.iter().find(|p| p.sec == tsec && (p.start..p.end).contains(&idx)) {
            return Ok(p.base + (idx - p.start));
        }
        let func =
            self.cx.funcs.get(&tsec).and_then(|fs| fs.iter().find(|f| (f.start..f.end).contains(&idx)));
        let (start, end) = func.map(|f| (f.start, f.end)).ok_or_else(bad)?;
        let base = self.place(tsec, start, end);
        Ok(base + (idx - start))
    }
}

/// Map indices are bounded by the number of symbols, far below `i32::MAX` for any real object.
fn map_imm(map: usize) -> i32 {
    i32::try_from(map).unwrap_or(i32::MAX)
}

/// `target - (at + 1)` as an instruction's `imm`.
fn relative(target: usize, at: usize, section: &str, insn: usize) -> Result<i32, ElfError> {
    let rel = i64::try_from(target).ok().zip(i64::try_from(at).ok()).map(|(t, a)| t - a - 1);
    rel.and_then(|r| i32::try_from(r).ok()).ok_or_else(|| ElfError::BadCallTarget {
        section: section.to_string(),
        insn,
        target: i64::try_from(target).unwrap_or(i64::MAX),
    })
}
