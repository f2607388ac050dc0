//! Loading clang-built eBPF objects: programs, maps and relocations, without touching the kernel.
//!
//! [`Object::parse`] reads an object as `clang -O2 -g -target bpf` writes it and does what libbpf does
//! before `BPF_PROG_LOAD`, minus the syscalls: BTF-defined (`.maps`) and legacy (`maps`) map
//! definitions, global-data sections turned into one-entry arrays, `lddw` relocations rewritten to
//! map indices, and every program linked with the subprograms it calls.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = std::fs::read("xdp_counter.o")?;
//! let mut obj = xdp_vm::elf::Object::parse(&bytes)?;
//! obj.set_global("threshold", &100u32.to_le_bytes())?;
//! let prog = obj.program(None)?;
//! println!("{} has {} instructions", prog.name, prog.insns.len());
//! # Ok(())
//! # }
//! ```
//!
//! Invariants: parsing never panics and never allocates more than a small multiple of the input
//! (bounded by [`MAX_GLOBAL_SIZE`] for `.bss`); every `lddw` in a parsed program has its second slot;
//! every `BPF_PSEUDO_CALL`/`BPF_PSEUDO_FUNC` offset lands inside the program's `insns`; every
//! [`GlobalVar`] lies inside its map's `data`.

mod btf;
mod lines;
mod parse;
mod reloc;
mod types;

mod core_relo;
#[cfg(test)]
mod fuzz;

pub use btf::BtfError;
pub use lines::{LineInfo, SourceLine, line_for};
pub use types::{CType, Field, MAX_NESTING, MapTypes, Types};

use crate::insn::Insn;

/// The largest global-data section accepted, in bytes: the kernel's `KMALLOC_MAX_SIZE` on x86-64,
/// the most an array value can hold. Keeps a corrupt `.bss` size from allocating gigabytes.
pub const MAX_GLOBAL_SIZE: u64 = 4 << 20;

/// Everything that can be wrong with an object file.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF object")]
    NotElf,
    #[error("not a 64-bit ELF object (class {class})")]
    WrongClass { class: u8 },
    #[error("not a little-endian ELF object (data encoding {encoding})")]
    WrongEndian { encoding: u8 },
    #[error("not an eBPF object: machine {machine}, expected 247 (EM_BPF)")]
    WrongMachine { machine: u16 },
    #[error("malformed ELF object")]
    Malformed {
        #[source]
        source: object::Error,
    },
    #[error("corrupt section {section}: {reason}")]
    CorruptSection { section: String, reason: String },
    #[error("corrupt .BTF section")]
    Btf {
        #[source]
        source: BtfError,
    },
    #[error("unknown symbol, index {index}")]
    UnknownSymbol { index: usize },
    #[error("unsupported relocation in {section} at offset {offset}: {kind}")]
    UnsupportedRelocation { section: String, offset: u64, kind: String },
    #[error("CO-RE relocation at instruction {insn} of {section}: {reason}")]
    CoreRelocation { section: String, insn: usize, reason: String },
    #[error("lddw at instruction {insn} of {section} has no second slot")]
    TruncatedLddw { section: String, insn: usize },
    #[error("call at instruction {insn} of {section} to unknown function {name}")]
    UnknownFunction { section: String, insn: usize, name: String },
    #[error("call at instruction {insn} of {section} lands at {target}, outside every function")]
    BadCallTarget { section: String, insn: usize, target: i64 },
    #[error("bad map definition {name}: {reason}")]
    BadMapDefinition { name: String, reason: String },
    #[error("the object has no programs")]
    NoPrograms,
    #[error("no program named {name:?}; available: {}", available.join(", "))]
    NoSuchProgram { name: String, available: Vec<String> },
    #[error("no global variable named {name:?}")]
    NoSuchGlobal { name: String },
    #[error("global variable {name} is {expected} bytes, the value is {actual}")]
    GlobalSizeMismatch { name: String, expected: usize, actual: usize },
}

impl Object {
    /// Parses and links a clang-built eBPF object (ELF64, little-endian, `EM_BPF`).
    ///
    /// # Errors
    /// Any [`ElfError`] but the lookup ones: the bytes are not such an object, a section, symbol,
    /// relocation or BTF record is corrupt or unsupported, or a map definition is invalid.
    pub fn parse(bytes: &[u8]) -> Result<Object, ElfError> {
        parse::parse(bytes).map(|(object, _)| object)
    }

    /// [`Object::parse`], also returning what does not fit the contract types: map-in-map inner
    /// definitions and slot initialisers, and the function boundaries of each linked program.
    ///
    /// # Errors
    /// As [`Object::parse`].
    pub fn parse_with_extras(bytes: &[u8]) -> Result<(Object, Extras), ElfError> {
        parse::parse(bytes)
    }

    /// The program with this name, or the first program when `name` is `None`.
    ///
    /// # Errors
    /// [`ElfError::NoPrograms`] when there is none, [`ElfError::NoSuchProgram`] (listing the
    /// names there are) when the name is unknown.
    pub fn program(&self, name: Option<&str>) -> Result<&ProgramSpec, ElfError> {
        match name {
            None => self.programs.first().ok_or(ElfError::NoPrograms),
            Some(name) => {
                self.programs.iter().find(|p| p.name == name).ok_or_else(|| ElfError::NoSuchProgram {
                    name: name.to_string(),
                    available: self.programs.iter().map(|p| p.name.clone()).collect(),
                })
            }
        }
    }

    /// Overrides the initial value of a global variable (a `const volatile` knob in `.rodata`, or
    /// any variable of `.data`/`.bss`), as libbpf's skeletons allow before load.
    ///
    /// # Errors
    /// [`ElfError::NoSuchGlobal`] when no global-data section has the variable,
    /// [`ElfError::GlobalSizeMismatch`] when `value` is not exactly the variable's size.
    pub fn set_global(&mut self, name: &str, value: &[u8]) -> Result<(), ElfError> {
        let (map, var) = self
            .maps
            .iter_mut()
            .filter(|m| matches!(m.kind, MapKind::Global { .. }))
            .find_map(|m| {
                let var = m.vars.iter().find(|v| v.name == name)?.clone();
                Some((m, var))
            })
            .ok_or_else(|| ElfError::NoSuchGlobal { name: name.to_string() })?;
        if var.size != value.len() {
            return Err(ElfError::GlobalSizeMismatch {
                name: name.to_string(),
                expected: var.size,
                actual: value.len(),
            });
        }
        // Parsing keeps every variable inside its section, so the range is in bounds.
        if let Some(slot) = map.data.get_mut(var.offset..var.offset + var.size) {
            slot.copy_from_slice(value);
        }
        Ok(())
    }

    /// The index in [`Object::maps`] of the map with this name.
    #[must_use]
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }
}

/// Everything an engine needs from one object file.
#[derive(Debug, Clone)]
pub struct Object {
    /// The `license` section's string ("" when absent).
    pub license: String,
    /// Every map the object defines: BTF `.maps`, legacy `maps`, then global-data sections.
    /// A program refers to a map by its index here.
    pub maps: Vec<MapSpec>,
    /// Every program (a global function in a program section), in section then offset order.
    pub programs: Vec<ProgramSpec>,
}

/// One map of the object.
#[derive(Debug, Clone)]
pub struct MapSpec {
    /// The symbol name (`pkt_len_count`), or the section name for global data (`.rodata`).
    pub name: String,
    pub def: maps::MapDef,
    pub kind: MapKind,
    /// Global data: the initial contents of the single value (zeroes for `.bss`); else empty.
    pub data: Vec<u8>,
    /// Global data: the variables that live in it, for `const volatile` overrides.
    pub vars: Vec<GlobalVar>,
}

/// What the loader knows beyond the contract types, kept out of them so code that builds
/// [`MapSpec`]s and [`ProgramSpec`]s by hand keeps compiling. Indexed like [`Object::maps`] and
/// [`Object::programs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Per map: the inner map's definition of a map-in-map (`__array(values, struct {...})`).
    pub inner: Vec<Option<maps::MapDef>>,
    /// Per map: the slots a map-in-map or prog-array initialises (`.values = { [i] = &x }`).
    pub slots: Vec<Vec<MapSlot>>,
    /// Per program: the functions linked into its `insns`, the program itself first.
    pub functions: Vec<Vec<Function>>,
    /// Per program: `.BTF.ext` line info mapped onto its linked `insns`, sorted by instruction
    /// (empty without `.BTF.ext`). See [`line_for`].
    pub lines: Vec<Vec<LineInfo>>,
}

/// One function inside a linked program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// Index of its first instruction in [`ProgramSpec::insns`].
    pub start: usize,
    /// Number of instruction slots.
    pub len: usize,
}

/// One initialised slot of a map-in-map or prog-array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSlot {
    /// The key (array index).
    pub index: u32,
    pub target: SlotTarget,
}

/// What a slot initially holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotTarget {
    /// Another map of the object, by index into [`Object::maps`].
    Map(usize),
    /// A program of the object, by name.
    Program(String),
}

/// What a map is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// A map the program declared.
    Regular,
    /// A global-data section turned into a one-entry array; `readonly` for `.rodata*`.
    Global { readonly: bool },
}

/// A variable in a global-data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalVar {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// The kind of program, from its section name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramKind {
    /// `xdp`, `xdp/...`, `xdp.frags`...
    Xdp,
    /// `uprobe/TARGET`: the target is what follows the slash ("" when none).
    Uprobe { target: String },
    /// `uretprobe/TARGET`.
    Uretprobe { target: String },
    /// Any other section a program was found in.
    Other,
}

/// One program, linked and ready for an engine.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// The function's symbol name.
    pub name: String,
    /// The section it came from.
    pub section: String,
    pub kind: ProgramKind,
    /// The program's instructions, followed by every subprogram it calls (transitively), with
    /// bpf-to-bpf call offsets fixed up. Map references are `lddw` with `src =
    /// BPF_PSEUDO_MAP_IDX` and `imm` = index into [`Object::maps`]; global-data references use
    /// `BPF_PSEUDO_MAP_IDX_VALUE` with the offset in the second slot's `imm`.
    pub insns: Vec<Insn>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::{BPF_CALL, BPF_EXIT, BPF_JMP, BPF_PSEUDO_CALL, BPF_PSEUDO_MAP_IDX_VALUE};

    const LDDW: u8 = 0x18;
    const CALL: u8 = BPF_JMP | BPF_CALL;
    const EXIT: Insn = Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

    /// A symbol for [`tiny`]: name, section index, value, size, `st_info`.
    type Sym<'a> = (&'a str, u16, u64, u64, u8);
    const FUNC_GLOBAL: u8 = 0x12;
    const OBJECT_GLOBAL: u8 = 0x11;
    const NOTYPE_GLOBAL: u8 = 0x10;

    /// A section for [`tiny`]: name offset, type, flags, contents, link, info, entsize.
    type SectionSpec = (u32, u32, u64, Vec<u8>, u32, u32, u64);

    /// Builds a minimal relocatable eBPF ELF: [1] `xdp` holding `code` (symbol 1, `prog`, spans
    /// it), [2] its relocations, [3] `.symtab`, [4] `.strtab`, [5] `.data` (8 bytes, 0x11..0x18),
    /// [6] `.bss` of `bss_size` bytes.
    fn tiny(code: &[Insn], rels: &[(u64, u32, u32)], syms: &[Sym<'_>], bss_size: u64) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut name = |s: &str| {
            let off = u32::try_from(strtab.len()).unwrap();
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            off
        };
        let names: Vec<u32> =
            ["xdp", ".relxdp", ".symtab", ".strtab", ".data", ".bss"].map(&mut name).to_vec();
        let code_len = u64::try_from(code.len() * 8).unwrap();
        let mut all: Vec<Sym<'_>> = vec![("prog", 1, 0, code_len, FUNC_GLOBAL)];
        all.extend_from_slice(syms);
        let mut symtab = vec![0u8; 24];
        for (n, shndx, value, size, info) in all {
            symtab.extend_from_slice(&name(n).to_le_bytes());
            symtab.extend_from_slice(&[info, 0]);
            symtab.extend_from_slice(&shndx.to_le_bytes());
            symtab.extend_from_slice(&value.to_le_bytes());
            symtab.extend_from_slice(&size.to_le_bytes());
        }
        let mut rel = Vec::new();
        for &(off, sym, ty) in rels {
            rel.extend_from_slice(&off.to_le_bytes());
            rel.extend_from_slice(&((u64::from(sym) << 32) | u64::from(ty)).to_le_bytes());
        }
        let data: Vec<u8> = (0x11..=0x18).collect();
        // .bss is NOBITS with `bss_size`.
        let secs: [SectionSpec; 6] = [
            (names[0], 1, 6, crate::insn::encode_all(code), 0, 0, 0),
            (names[1], 9, 0, rel, 3, 1, 16),
            (names[2], 2, 0, symtab, 4, 1, 24),
            (names[3], 3, 0, strtab, 0, 0, 0),
            (names[4], 1, 3, data, 0, 0, 0),
            (names[5], 8, 3, Vec::new(), 0, 0, 0),
        ];
        let mut body = Vec::new();
        let mut headers = vec![0u8; 64];
        for (n, ty, flags, contents, link, info, entsize) in secs {
            let offset = 64 + body.len() as u64;
            let size = if ty == 8 { bss_size } else { contents.len() as u64 };
            body.extend_from_slice(&contents);
            body.resize(body.len().next_multiple_of(8), 0);
            for (v, w) in [(u64::from(n), 4), (u64::from(ty), 4), (flags, 8), (0, 8), (offset, 8), (size, 8)]
            {
                headers.extend_from_slice(&v.to_le_bytes()[..w]);
            }
            for (v, w) in [(u64::from(link), 4), (u64::from(info), 4), (8, 8), (entsize, 8)] {
                headers.extend_from_slice(&v.to_le_bytes()[..w]);
            }
        }
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        elf.extend_from_slice(&247u16.to_le_bytes()); // EM_BPF
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&[0; 16]); // entry, phoff
        elf.extend_from_slice(&(64 + body.len() as u64).to_le_bytes()); // shoff
        elf.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 0, 0, 64, 7, 4] {
            elf.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        }
        elf.extend_from_slice(&body);
        elf.extend_from_slice(&headers);
        elf
    }

    fn ret(v: i32) -> [Insn; 2] {
        [Insn::new(0xb7, 0, 0, 0, v), EXIT]
    }

    #[test]
    fn tiny_object_parses() {
        // r1 = &.data + 4 (section symbol 2, imm 4); call global `helper` at insn 4 via its symbol.
        let code = [
            Insn::new(LDDW, 1, 0, 0, 4),
            Insn::default(),
            Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, -1),
            EXIT,
            ret(7)[0],
            ret(7)[1],
        ];
        let syms = [(".data", 5, 0, 0, 0x03), ("helper", 1, 32, 16, 0x02), ("knob", 5, 4, 4, OBJECT_GLOBAL)];
        let bytes = tiny(&code, &[(0, 2, 1), (16, 3, 10)], &syms, 16);
        let mut obj = Object::parse(&bytes).unwrap();
        assert_eq!(obj.programs.len(), 1, "static `helper` is a subprogram, not a program");
        let p = obj.program(None).unwrap();
        assert_eq!(p.insns[0].src, BPF_PSEUDO_MAP_IDX_VALUE);
        assert_eq!((p.insns[0].imm, p.insns[1].imm), (0, 4));
        assert_eq!(p.insns[2].imm, 1, "call lands on helper at insn 4");
        assert_eq!([obj.maps[0].name.as_str(), obj.maps[1].name.as_str()], [".data", ".bss"]);
        assert_eq!(obj.maps[1].data, [0; 16]);
        obj.set_global("knob", &[1, 2, 3, 4]).unwrap();
        assert_eq!(obj.maps[0].data, [0x11, 0x12, 0x13, 0x14, 1, 2, 3, 4]);
        assert!(matches!(
            obj.set_global("knob", &[1]),
            Err(ElfError::GlobalSizeMismatch { expected: 4, actual: 1, .. })
        ));
        assert!(matches!(obj.set_global("nope", &[1]), Err(ElfError::NoSuchGlobal { .. })));
        let err = obj.program(Some("other")).unwrap_err();
        assert_eq!(err.to_string(), "no program named \"other\"; available: prog");
    }

    #[test]
    fn rejects_what_is_not_an_ebpf_object() {
        assert!(matches!(Object::parse(b""), Err(ElfError::NotElf)));
        assert!(matches!(Object::parse(b"#!/bin/sh\necho hello\n"), Err(ElfError::NotElf)));
        let good = tiny(&ret(0), &[], &[], 0);
        let mut elf32 = good.clone();
        elf32[4] = 1;
        assert!(matches!(Object::parse(&elf32), Err(ElfError::WrongClass { class: 1 })));
        let mut big_endian = good.clone();
        big_endian[5] = 2;
        assert!(matches!(Object::parse(&big_endian), Err(ElfError::WrongEndian { encoding: 2 })));
        let mut x86 = good.clone();
        x86[18] = 62;
        let err = Object::parse(&x86).unwrap_err();
        assert_eq!(err.to_string(), "not an eBPF object: machine 62, expected 247 (EM_BPF)");
        for len in [17, 63, 64, 100, good.len() - 1] {
            assert!(Object::parse(&good[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn rejects_bad_code_and_relocations() {
        // lddw in the last slot.
        let code = [ret(0)[0], Insn::new(LDDW, 1, 0, 0, 0)];
        assert!(matches!(
            Object::parse(&tiny(&code, &[], &[], 0)),
            Err(ElfError::TruncatedLddw { insn: 1, .. })
        ));
        // Call of an extern function.
        let code = [Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, -1), EXIT];
        let bytes = tiny(&code, &[(0, 2, 10)], &[("ext", 0, 0, 0, NOTYPE_GLOBAL)], 0);
        let err = Object::parse(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "call at instruction 0 of xdp to unknown function ext");
        // Unrelocated call outside the section.
        let code = [Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 100), EXIT];
        assert!(matches!(
            Object::parse(&tiny(&code, &[], &[], 0)),
            Err(ElfError::BadCallTarget { target: 101, .. })
        ));
        // Relocation against a symbol index that does not exist.
        let code = [Insn::new(LDDW, 1, 0, 0, 0), Insn::default(), EXIT];
        assert!(matches!(
            Object::parse(&tiny(&code, &[(0, 99, 1)], &[], 0)),
            Err(ElfError::UnknownSymbol { index: 99 })
        ));
        // Wrong relocation type on an lddw, and a relocation on an ALU instruction.
        let bytes = tiny(&code, &[(0, 1, 3)], &[], 0);
        assert!(matches!(Object::parse(&bytes), Err(ElfError::UnsupportedRelocation { offset: 0, .. })));
        let bytes = tiny(&ret(0), &[(0, 1, 1)], &[], 0);
        assert!(matches!(Object::parse(&bytes), Err(ElfError::UnsupportedRelocation { offset: 0, .. })));
        // A `.bss` claiming a terabyte is refused, not allocated.
        let err = Object::parse(&tiny(&ret(0), &[], &[], 1 << 40)).unwrap_err();
        assert!(matches!(err, ElfError::CorruptSection { ref section, .. } if section == ".bss"), "{err}");
        // Global-data offset past the end of the section.
        let code = [Insn::new(LDDW, 1, 0, 0, 64), Insn::default(), EXIT];
        let bytes = tiny(&code, &[(0, 2, 1)], &[(".data", 5, 0, 0, 0x03)], 0);
        assert!(matches!(Object::parse(&bytes), Err(ElfError::UnsupportedRelocation { .. })));
    }

    #[test]
    fn no_programs_is_an_error_only_when_asked() {
        let mut bytes = tiny(&ret(0), &[], &[], 0);
        // Make `prog` local: a static function in a program section is not a program.
        let symtab_prog_info = bytes.windows(4).position(|w| w == [0x12, 0, 1, 0]).unwrap();
        bytes[symtab_prog_info] = 0x02;
        let obj = Object::parse(&bytes).unwrap();
        assert!(obj.programs.is_empty());
        assert!(matches!(obj.program(None), Err(ElfError::NoPrograms)));
    }
}
