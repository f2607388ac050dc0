//! CO-RE field relocations (`.BTF.ext` core_relo records) against `struct pt_regs`.
//!
//! A uprobe program built with `BPF_CORE_READ(ctx, di)`, `PT_REGS_PARM1_CORE(ctx)` or a plain
//! `ctx->di` over a local `struct pt_regs { ... } __attribute__((preserve_access_index))` carries
//! the offsets of its *local* struct, which may be reduced or reordered. Each record names the
//! instruction (`insn_off`, bytes into the section), the local root type (`type_id`), an access
//! string (`"0:3"`: index 0 through the pointer, then member 3 of the local struct) and a kind.
//! We resolve the member by name against the x86-64 kernel layout our context uses
//! ([`crate::context::pt_regs`]: r15..ss, 8 bytes each) and patch the instruction as libbpf does:
//! the `off` of a load/store, the `imm` of an ALU-immediate (`mov`/`add`) or of an `lddw`.
//! Supported kinds: FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS. Anything else — another
//! kind, another root type, an unknown field, a nested access — is a load error naming it.

use std::collections::HashMap;

use super::btf::{self, Btf};
use crate::insn::Insn;

/// The kernel's x86-64 `struct pt_regs`, in order, 8 bytes per field.
pub const KERNEL_PT_REGS: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];

const FIELD_BYTE_OFFSET: u32 = 0;
const FIELD_BYTE_SIZE: u32 = 1;
const FIELD_EXISTS: u32 = 2;

/// One `struct bpf_core_relo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CoreRelo {
    /// Instruction index in its section.
    pub insn: usize,
    pub type_id: u32,
    pub access: String,
    pub kind: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The core_relo records by section name. `Ok(empty)` when the header has no such block; an
/// error when the block is there but corrupt (a relocation we cannot read must not be skipped).
pub(super) fn parse(ext: &[u8], btf: &Btf<'_>) -> Result<HashMap<String, Vec<CoreRelo>>, String> {
    let mut out: HashMap<String, Vec<CoreRelo>> = HashMap::new();
    if ext.get(..2) != Some(&[0x9f, 0xeb][..]) {
        return Err("bad .BTF.ext magic".into());
    }
    let hdr_len = u32_at(ext, 4).ok_or("header cut short")? as usize;
    if hdr_len < 32 {
        return Ok(out);
    }
    let (Some(off), Some(len)) = (u32_at(ext, 24), u32_at(ext, 28)) else {
        return Err("header cut short".into());
    };
    if len == 0 {
        return Ok(out);
    }
    let start = hdr_len.checked_add(off as usize).ok_or("core_relo offset overflows")?;
    let block = start
        .checked_add(len as usize)
        .and_then(|end| ext.get(start..end))
        .ok_or("core_relo block lies outside the section")?;
    let rec_size = u32_at(block, 0).ok_or("core_relo block cut short")? as usize;
    if rec_size < 16 {
        return Err(format!("core_relo record size {rec_size} < 16"));
    }
    let mut pos = 4;
    while pos < block.len() {
        let (Some(sec_off), Some(n)) = (u32_at(block, pos), u32_at(block, pos + 4)) else {
            return Err("core_relo section header cut short".into());
        };
        let sec = btf.text_at(sec_off).ok_or("core_relo section name is not a string")?;
        pos += 8;
        let recs = out.entry(sec).or_default();
        for _ in 0..n {
            let r = pos
                .checked_add(rec_size)
                .and_then(|end| block.get(pos..end))
                .ok_or("core_relo record cut short")?;
            let insn_off = u32_at(r, 0).unwrap_or(0);
            if !insn_off.is_multiple_of(8) {
                return Err(format!("core_relo insn_off {insn_off} is not a multiple of 8"));
            }
            let access = btf
                .str_at(u32_at(r, 8).unwrap_or(0))
                .map_err(|_| "core_relo access string is not a string")?
                .to_string();
            recs.push(CoreRelo {
                insn: insn_off as usize / 8,
                type_id: u32_at(r, 4).unwrap_or(0),
                access,
                kind: u32_at(r, 12).unwrap_or(0),
            });
            pos += rec_size;
        }
    }
    Ok(out)
}

/// What one relocation resolves to: the local value the compiler put in (checked against the
/// instruction, as libbpf does) and the value for our target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resolved {
    pub local: i64,
    pub target: i64,
}

/// Resolves `relo` against the kernel `pt_regs` layout. Errors name the type or field.
pub(super) fn resolve(btf: &Btf<'_>, relo: &CoreRelo) -> Result<Resolved, String> {
    let bad = |e: btf::BtfError| format!("type {}: {e}", relo.type_id);
    let root = btf.skip_mods(relo.type_id).map_err(bad)?;
    let name = btf.name(root).map_err(bad)?;
    if root.kind() != btf::KIND_STRUCT || name != "pt_regs" {
        return Err(format!(
            "CO-RE relocation against type {:?} (id {}): only struct pt_regs is supported",
            name, relo.type_id
        ));
    }
    let kind_name = match relo.kind {
        FIELD_BYTE_OFFSET => "field byte offset",
        FIELD_BYTE_SIZE => "field byte size",
        FIELD_EXISTS => "field exists",
        k => return Err(format!("CO-RE relocation kind {k} on struct pt_regs is not supported")),
    };
    let idx: Vec<&str> = relo.access.split(':').collect();
    let parsed: Result<Vec<usize>, _> = idx.iter().map(|s| s.parse::<usize>()).collect();
    let parsed = parsed.map_err(|_| format!("bad CO-RE access string {:?}", relo.access))?;
    match parsed.as_slice() {
        [0, m] => {
            let member = root
                .members()
                .nth(*m)
                .ok_or_else(|| format!("struct pt_regs has no member {m} (access {:?})", relo.access))?;
            let field = btf.str_at(member.name_off).map_err(bad)?;
            let local_size = btf.size_of(member.ty).map_err(bad)?;
            let kernel = KERNEL_PT_REGS.iter().position(|f| *f == field);
            let (local, target) = match relo.kind {
                FIELD_BYTE_OFFSET => (i64::from(member.offset), kernel.map(|i| i as i64 * 8)),
                FIELD_BYTE_SIZE => (local_size as i64, kernel.map(|_| 8)),
                _ => (1, Some(i64::from(kernel.is_some()))),
            };
            let target = target.ok_or_else(|| {
                format!("CO-RE {kind_name}: struct pt_regs has no field {field:?} on x86-64")
            })?;
            if relo.kind == FIELD_BYTE_OFFSET && local_size != 8 {
                return Err(format!(
                    "CO-RE field pt_regs.{field} is {local_size} bytes locally, 8 in the kernel"
                ));
            }
            Ok(Resolved { local, target })
        }
        [0] => Err(format!("CO-RE {kind_name} on the whole struct pt_regs is not supported")),
        _ => Err(format!(
            "CO-RE access {:?} into struct pt_regs is not supported (one field, no nesting or arrays)",
            relo.access
        )),
    }
}

/// Patches instruction `insn` of `insns` (and its `lddw` second slot) from `r`, as libbpf's
/// `bpf_core_patch_insn`: the value the compiler emitted must be the local one.
pub(super) fn patch(insns: &mut [Insn], at: usize, r: Resolved) -> Result<(), String> {
    let insn = insns.get_mut(at).ok_or_else(|| format!("instruction {at} is outside the section"))?;
    let class = insn.code & 0x07;
    let mismatch = |v: i64| format!("instruction {at} holds {v}, the local value is {}", r.local);
    match class {
        // ALU / ALU64 with an immediate source.
        0x04 | 0x07 if insn.code & 0x08 == 0 => {
            if i64::from(insn.imm) != r.local {
                return Err(mismatch(insn.imm.into()));
            }
            insn.imm = i32::try_from(r.target).map_err(|_| "value out of range".to_string())?;
        }
        // LDX / ST / STX.
        0x01..=0x03 => {
            if i64::from(insn.off) != r.local {
                return Err(mismatch(insn.off.into()));
            }
            insn.off = i16::try_from(r.target).map_err(|_| "offset out of range".to_string())?;
        }
        // lddw.
        0x00 if insn.code == 0x18 => {
            if i64::from(insn.imm) != r.local {
                return Err(mismatch(insn.imm.into()));
            }
            insn.imm = i32::try_from(r.target).map_err(|_| "value out of range".to_string())?;
            if let Some(hi) = insns.get_mut(at + 1) {
                hi.imm = 0;
            }
        }
        _ => {
            return Err(format!(
                "instruction {at} (opcode {:#04x}) cannot take a CO-RE relocation",
                insn.code
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pt_regs { si, di, nosuch }` (reordered, reduced, one foreign field) and `other { si }`.
    fn btf_blob() -> Vec<u8> {
        let strings: &[u8] = b"\0pt_regs\0si\0di\0nosuch\0other\0unsigned long\0";
        #[rustfmt::skip]
        let types: [u32; 22] = [
            28, 1 << 24, 8, 64,
            1, (4 << 24) | 3, 24, 9, 1, 0, 12, 1, 64, 15, 1, 128,
            22, (4 << 24) | 1, 8, 9, 1, 0,
        ];
        let type_len = u32::try_from(types.len() * 4).unwrap();
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, type_len, type_len, u32::try_from(strings.len()).unwrap()] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for w in &types {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(strings);
        b
    }

    fn relo(type_id: u32, access: &str, kind: u32) -> CoreRelo {
        CoreRelo { insn: 0, type_id, access: access.to_string(), kind }
    }

    #[test]
    fn fields_resolve_by_name_against_the_kernel_layout() {
        let bytes = btf_blob();
        let btf = Btf::parse(&bytes).unwrap();
        // si is local member 0 at 0, di member 1 at 8; the kernel has si at 104, di at 112.
        assert_eq!(resolve(&btf, &relo(2, "0:0", FIELD_BYTE_OFFSET)), Ok(Resolved { local: 0, target: 104 }));
        assert_eq!(resolve(&btf, &relo(2, "0:1", FIELD_BYTE_OFFSET)), Ok(Resolved { local: 8, target: 112 }));
        assert_eq!(resolve(&btf, &relo(2, "0:1", FIELD_BYTE_SIZE)), Ok(Resolved { local: 8, target: 8 }));
        assert_eq!(resolve(&btf, &relo(2, "0:1", FIELD_EXISTS)), Ok(Resolved { local: 1, target: 1 }));
        assert_eq!(resolve(&btf, &relo(2, "0:2", FIELD_EXISTS)), Ok(Resolved { local: 1, target: 0 }));
    }

    #[test]
    fn unknown_fields_other_types_and_other_kinds_are_named_errors() {
        let bytes = btf_blob();
        let btf = Btf::parse(&bytes).unwrap();
        let err = resolve(&btf, &relo(2, "0:2", FIELD_BYTE_OFFSET)).unwrap_err();
        assert!(err.contains("no field \"nosuch\""), "{err}");
        let err = resolve(&btf, &relo(3, "0:0", FIELD_BYTE_OFFSET)).unwrap_err();
        assert!(err.contains("\"other\"") && err.contains("only struct pt_regs"), "{err}");
        let err = resolve(&btf, &relo(2, "0:1", 8)).unwrap_err();
        assert!(err.contains("kind 8"), "{err}");
        assert!(resolve(&btf, &relo(2, "0:7", FIELD_BYTE_OFFSET)).unwrap_err().contains("no member 7"));
        assert!(resolve(&btf, &relo(2, "0:1:0", FIELD_BYTE_OFFSET)).unwrap_err().contains("not supported"));
        assert!(resolve(&btf, &relo(2, "x", FIELD_BYTE_OFFSET)).unwrap_err().contains("bad CO-RE access"));
    }

    #[test]
    fn patches_loads_alu_immediates_and_lddw_checking_the_local_value() {
        let r = Resolved { local: 8, target: 112 };
        let mut insns = vec![
            Insn::new(0x79, 1, 6, 8, 0), // r1 = *(u64 *)(r6 + 8)
            Insn::new(0xb7, 1, 0, 0, 8), // r1 = 8
            Insn::new(0x07, 3, 0, 0, 8), // r3 += 8
            Insn::new(0x18, 1, 0, 0, 8), // lddw r1, 8
            Insn::new(0, 0, 0, 0, 0),
            Insn::new(0x0f, 3, 1, 0, 0),  // r3 += r1: no immediate
            Insn::new(0x79, 1, 6, 16, 0), // holds another offset
        ];
        for at in 0..4 {
            patch(&mut insns, at, r).unwrap();
        }
        assert_eq!(insns[0].off, 112);
        assert_eq!((insns[1].imm, insns[2].imm, insns[3].imm), (112, 112, 112));
        assert!(patch(&mut insns, 5, r).unwrap_err().contains("cannot take"));
        assert!(patch(&mut insns, 6, r).unwrap_err().contains("holds 16"));
        assert!(patch(&mut insns, 9, r).unwrap_err().contains("outside"));
    }
}
