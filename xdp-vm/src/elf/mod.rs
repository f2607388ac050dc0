//! Loading clang-built eBPF objects: programs, maps and relocations, without touching the kernel.
//!
//! (Skeleton: the types below are the contract; parsing is being written.)

use crate::insn::Insn;

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
