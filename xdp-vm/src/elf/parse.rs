//! Reading the ELF container: sections, symbols, relocations, then maps and global data.
//!
//! Section contents are read lazily (a corrupt debug section does not fail a load that never looks
//! at it); everything that is used is bounds-checked against the file.

use std::collections::HashMap;

use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, Rel as _, SectionHeader as _, Sym as _};

use super::btf::{self, Btf};
use super::{
    ElfError, Extras, GlobalVar, MAX_GLOBAL_SIZE, MapKind, MapSlot, MapSpec, Object, ProgramKind,
    ProgramSpec, SlotTarget,
};
use crate::insn::{INSN_SIZE, Insn, decode_all};
use maps::{MapDef, map_flags, map_type};

/// `R_BPF_64_64`: the 64-bit immediate of an `lddw`.
pub(super) const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_ABS64`: a 64-bit data word (`.maps` slot initialisers, debug info).
pub(super) const R_BPF_64_ABS64: u32 = 2;
/// `R_BPF_64_32`: the 32-bit immediate of a `call`.
pub(super) const R_BPF_64_32: u32 = 10;

const EM_BPF: u16 = 247;

/// One section header, its contents read on demand.
#[derive(Debug)]
pub(super) struct Section<'a> {
    pub name: String,
    /// `None` when the header points outside the file.
    data: Option<&'a [u8]>,
    pub size: u64,
    pub sh_type: u32,
    pub flags: u64,
}

impl<'a> Section<'a> {
    pub(super) fn exec(&self) -> bool {
        self.flags & u64::from(elf::SHF_EXECINSTR) != 0
    }

    pub(super) fn data(&self) -> Result<&'a [u8], ElfError> {
        self.data.ok_or_else(|| corrupt(&self.name, "contents lie outside the file"))
    }
}

/// One symbol table entry.
#[derive(Debug)]
pub(super) struct Symbol {
    pub name: String,
    /// The defining section; `None` for undefined (extern), absolute and common symbols.
    pub section: Option<usize>,
    pub value: u64,
    pub size: u64,
    pub st_type: u8,
    pub bind: u8,
}

/// One `Elf64_Rel` of a section we relocate.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reloc {
    pub r_type: u32,
    pub sym: usize,
}

/// A function symbol's instruction range in its section.
#[derive(Debug)]
pub(super) struct Func {
    pub name: String,
    pub start: usize,
    pub end: usize,
    pub global: bool,
}

/// Everything the linker needs, indexed by section.
#[derive(Debug)]
pub(super) struct Ctx<'a> {
    pub sections: Vec<Section<'a>>,
    symbols: Vec<Symbol>,
    /// Relocations of executable sections and `.maps`, by section then byte offset.
    pub rels: HashMap<usize, HashMap<u64, Reloc>>,
    /// Decoded instructions of each executable section.
    pub insns: HashMap<usize, Vec<Insn>>,
    /// Function symbols of each executable section, sorted by start.
    pub funcs: HashMap<usize, Vec<Func>>,
    /// Map index by (map section, offset of its symbol).
    pub map_at: HashMap<(usize, u64), usize>,
    /// Global-data map index by section.
    pub global_map: HashMap<usize, usize>,
    /// Size of each global-data section, by map index.
    pub global_size: HashMap<usize, u64>,
    /// Offset of the `values` array inside a map-in-map or prog-array definition, by map index.
    values_offset: HashMap<usize, u64>,
}

impl Ctx<'_> {
    pub(super) fn sym(&self, index: usize) -> Result<&Symbol, ElfError> {
        self.symbols.get(index).ok_or(ElfError::UnknownSymbol { index })
    }

    pub(super) fn section_name(&self, index: usize) -> &str {
        self.sections.get(index).map_or("?", |s| s.name.as_str())
    }
}

pub(super) fn corrupt(section: &str, reason: impl Into<String>) -> ElfError {
    ElfError::CorruptSection { section: section.to_string(), reason: reason.into() }
}

/// A name from the file, safe to print on one line: control characters are escaped (real names
/// have none; a corrupt string table must not forge output lines or terminal escapes).
fn clean(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if s.chars().any(char::is_control) {
        s.chars().flat_map(char::escape_default).collect()
    } else {
        s.into_owned()
    }
}

/// Gives the clear errors (`NotElf`, class, endianness, machine) before the `object` crate's.
fn check_header(bytes: &[u8]) -> Result<(), ElfError> {
    if bytes.len() < 16 || bytes[..4] != elf::ELFMAG {
        return Err(ElfError::NotElf);
    }
    if bytes[4] != elf::ELFCLASS64 {
        return Err(ElfError::WrongClass { class: bytes[4] });
    }
    if bytes[5] != elf::ELFDATA2LSB {
        return Err(ElfError::WrongEndian { encoding: bytes[5] });
    }
    let machine = bytes.get(18..20).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or(ElfError::NotElf)?;
    if machine != EM_BPF {
        return Err(ElfError::WrongMachine { machine });
    }
    Ok(())
}

pub(super) fn parse(bytes: &[u8]) -> Result<(Object, Extras), ElfError> {
    check_header(bytes)?;
    let malformed = |source| ElfError::Malformed { source };
    let header = elf::FileHeader64::<LE>::parse(bytes).map_err(malformed)?;
    let table = header.sections(LE, bytes).map_err(malformed)?;

    let mut sections = Vec::with_capacity(table.len());
    for sh in table.iter() {
        let name = table.section_name(LE, sh).map_err(malformed)?;
        let sh_type = sh.sh_type(LE);
        let data = if sh_type == elf::SHT_NOBITS { Some(&[][..]) } else { sh.data(LE, bytes).ok() };
        sections.push(Section {
            name: clean(name),
            data,
            size: sh.sh_size(LE),
            sh_type,
            flags: sh.sh_flags(LE),
        });
    }

    let symtab = table.symbols(LE, bytes, elf::SHT_SYMTAB).map_err(malformed)?;
    let mut symbols = Vec::with_capacity(symtab.len());
    for sym in symtab.iter() {
        let name = symtab.symbol_name(LE, sym).map_err(malformed)?;
        let shndx = usize::from(sym.st_shndx(LE));
        let defined = shndx != 0 && shndx < usize::from(elf::SHN_LORESERVE) && shndx < sections.len();
        symbols.push(Symbol {
            name: clean(name),
            section: defined.then_some(shndx),
            value: sym.st_value(LE),
            size: sym.st_size(LE),
            st_type: sym.st_type(),
            bind: sym.st_bind(),
        });
    }

    let mut cx = Ctx {
        rels: HashMap::new(),
        insns: HashMap::new(),
        funcs: HashMap::new(),
        map_at: HashMap::new(),
        global_map: HashMap::new(),
        global_size: HashMap::new(),
        values_offset: HashMap::new(),
        sections,
        symbols,
    };
    collect_relocations(&cx.sections, header, bytes, &mut cx.rels)?;
    collect_code(&mut cx)?;

    let license = match cx.sections.iter().find(|s| s.name == "license") {
        Some(s) => {
            let d = s.data()?;
            String::from_utf8_lossy(d.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        }
        None => String::new(),
    };

    let btf_section = cx.sections.iter().find(|s| s.name == ".BTF");
    let btf = match btf_section {
        Some(s) => Some(Btf::parse(s.data()?)),
        None => None,
    };

    let mut maps = Vec::new();
    let mut extras = Extras::default();
    if let Some(idx) = cx.sections.iter().position(|s| s.name == ".maps") {
        let btf = match &btf {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(ElfError::Btf { source: e.clone() }),
            None => return Err(corrupt(".maps", "BTF-defined maps need a .BTF section")),
        };
        btf_maps(&mut cx, btf, idx, &mut maps, &mut extras)?;
    }
    if let Some(idx) = cx.sections.iter().position(|s| s.name == "maps") {
        legacy_maps(&mut cx, idx, &mut maps)?;
    }
    global_maps(&mut cx, btf.as_ref().and_then(|b| b.as_ref().ok()), &mut maps)?;
    extras.inner.resize(maps.len(), None);
    extras.slots.resize(maps.len(), Vec::new());

    let line_recs = match (cx.sections.iter().find(|s| s.name == ".BTF.ext"), &btf) {
        (Some(ext), Some(Ok(b))) => ext.data().map(|d| super::lines::parse(d, b)).unwrap_or_default(),
        _ => HashMap::new(),
    };
    apply_core_relocations(&mut cx, btf.as_ref())?;
    let mut programs = Vec::new();
    let mut exec: Vec<usize> = cx.insns.keys().copied().filter(|&i| cx.sections[i].name != ".text").collect();
    exec.sort_unstable();
    for sec in exec {
        let section = cx.section_name(sec).to_string();
        for func in cx.funcs.get(&sec).into_iter().flatten().filter(|f| f.global) {
            let (insns, functions, origins) = super::reloc::link(&cx, sec, func)?;
            extras.functions.push(functions);
            extras.lines.push(program_lines(&cx, &line_recs, &origins));
            programs.push(ProgramSpec {
                name: func.name.clone(),
                kind: program_kind(&section),
                section: section.clone(),
                insns,
            });
        }
    }
    map_slots(&cx, &maps, &mut extras)?;
    Ok((Object { license, maps, programs }, extras))
}

/// Applies `.BTF.ext` CO-RE relocations to the sections' instructions before linking (see
/// [`super::core_relo`]); a relocation we cannot resolve is an error naming it.
fn apply_core_relocations(
    cx: &mut Ctx<'_>,
    btf: Option<&Result<Btf<'_>, btf::BtfError>>,
) -> Result<(), ElfError> {
    let Some(ext) = cx.sections.iter().find(|s| s.name == ".BTF.ext") else { return Ok(()) };
    let data = ext.data()?;
    let btf = match btf {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(ElfError::Btf { source: e.clone() }),
        None => return Err(corrupt(".BTF.ext", "CO-RE relocations need a .BTF section")),
    };
    let relos = super::core_relo::parse(data, btf).map_err(|r| corrupt(".BTF.ext", r))?;
    for (section, list) in relos {
        if list.is_empty() {
            continue;
        }
        let idx = cx.sections.iter().position(|s| s.name == section);
        let Some(insns) = idx.and_then(|i| cx.insns.get_mut(&i)) else {
            return Err(corrupt(".BTF.ext", format!("CO-RE relocations for {section}, which holds no code")));
        };
        for relo in &list {
            let err = |reason| ElfError::CoreRelocation { section: section.clone(), insn: relo.insn, reason };
            let resolved = super::core_relo::resolve(btf, relo).map_err(err)?;
            super::core_relo::patch(insns, relo.insn, resolved).map_err(err)?;
        }
    }
    Ok(())
}

/// Line records of one linked program, from its functions' sections.
fn program_lines(
    cx: &Ctx<'_>,
    recs: &HashMap<String, Vec<(usize, super::SourceLine)>>,
    origins: &[super::reloc::Origin],
) -> Vec<super::LineInfo> {
    let mut out = Vec::new();
    for &(sec, start, base, len) in origins {
        let Some(list) = recs.get(cx.section_name(sec)) else { continue };
        for (insn, line) in list {
            if (start..start + len).contains(insn) {
                out.push(super::LineInfo { insn: base + (insn - start), line: line.clone() });
            }
        }
    }
    out.sort_by_key(|l| l.insn);
    out
}

fn collect_relocations(
    sections: &[Section<'_>],
    header: &elf::FileHeader64<LE>,
    bytes: &[u8],
    rels: &mut HashMap<usize, HashMap<u64, Reloc>>,
) -> Result<(), ElfError> {
    let table = header.sections(LE, bytes).map_err(|source| ElfError::Malformed { source })?;
    for (i, sh) in table.iter().enumerate() {
        let target = sh.sh_info(LE) as usize;
        let Some(tsec) = sections.get(target) else { continue };
        if !(tsec.exec() || tsec.name == ".maps") {
            // `.BTF`, `.BTF.ext`, debug info, data sections: nothing to apply, as in libbpf.
            continue;
        }
        let name = &sections[i].name;
        match sh.sh_type(LE) {
            elf::SHT_REL => {
                let entries: &[elf::Rel64<LE>] = sh
                    .data_as_array(LE, bytes)
                    .map_err(|_| corrupt(name, "relocation entries lie outside the file"))?;
                let map = rels.entry(target).or_default();
                for r in entries {
                    let reloc = Reloc { r_type: r.r_type(LE), sym: r.r_sym(LE) as usize };
                    map.insert(r.r_offset(LE), reloc);
                }
            }
            elf::SHT_RELA => {
                return Err(ElfError::UnsupportedRelocation {
                    section: tsec.name.clone(),
                    offset: 0,
                    kind: "RELA relocations (clang emits REL)".to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes executable sections and validates their function symbols.
fn collect_code(cx: &mut Ctx<'_>) -> Result<(), ElfError> {
    for (idx, sec) in cx.sections.iter().enumerate() {
        if !sec.exec() || sec.sh_type != elf::SHT_PROGBITS {
            continue;
        }
        let data = sec.data()?;
        if data.len() % INSN_SIZE != 0 {
            return Err(corrupt(&sec.name, format!("size {} is not a multiple of 8", data.len())));
        }
        let insns = decode_all(data);
        let mut funcs = Vec::new();
        for sym in cx.symbols.iter().filter(|s| s.section == Some(idx) && s.st_type == elf::STT_FUNC) {
            let bad = || corrupt(&sec.name, format!("function {} has a bad range", sym.name));
            if sym.value % 8 != 0 || sym.size % 8 != 0 {
                return Err(bad());
            }
            let start = usize::try_from(sym.value / 8).map_err(|_| bad())?;
            let len = usize::try_from(sym.size / 8).map_err(|_| bad())?;
            let end = start
                .checked_add(len)
                .filter(|&e| e <= insns.len() && start < insns.len())
                .ok_or_else(bad)?;
            let global = matches!(sym.bind, elf::STB_GLOBAL | elf::STB_WEAK);
            funcs.push(Func { name: sym.name.clone(), start, end, global });
        }
        funcs.sort_by_key(|f| (f.start, f.end));
        // A size-0 symbol runs to the next function or the end of the section.
        let starts: Vec<usize> = funcs.iter().map(|f| f.start).collect();
        for f in &mut funcs {
            if f.end == f.start {
                f.end = starts.iter().copied().find(|&s| s > f.start).unwrap_or(insns.len());
            }
        }
        cx.insns.insert(idx, insns);
        cx.funcs.insert(idx, funcs);
    }
    Ok(())
}

fn program_kind(section: &str) -> ProgramKind {
    let target_after = |prefix: &str| -> Option<String> {
        let rest = section.strip_prefix(prefix)?;
        let rest = rest.strip_prefix(".s").unwrap_or(rest);
        if rest.is_empty() { Some(String::new()) } else { rest.strip_prefix('/').map(str::to_string) }
    };
    if section == "xdp" || section.starts_with("xdp/") || section.starts_with("xdp.") {
        ProgramKind::Xdp
    } else if let Some(target) = target_after("uprobe") {
        ProgramKind::Uprobe { target }
    } else if let Some(target) = target_after("uretprobe") {
        ProgramKind::Uretprobe { target }
    } else {
        ProgramKind::Other
    }
}

/// A BTF map definition, and where its `values` array starts in the map's symbol.
struct BtfMapDef {
    def: MapDef,
    inner: Option<MapDef>,
    values_offset: Option<u32>,
}

fn btf_maps(
    cx: &mut Ctx<'_>,
    btf: &Btf<'_>,
    sec: usize,
    maps: &mut Vec<MapSpec>,
    extras: &mut Extras,
) -> Result<(), ElfError> {
    let Some(datasec) = btf.datasec(".maps") else {
        return Err(corrupt(".maps", "no DATASEC .maps in BTF"));
    };
    let mut found = Vec::new();
    for (var_id, _, _) in datasec.datasec_vars() {
        let var = btf.get(var_id).map_err(|source| ElfError::Btf { source })?;
        let name = btf.name(var).map_err(|source| ElfError::Btf { source })?;
        let bad = |reason: String| ElfError::BadMapDefinition { name: name.to_string(), reason };
        if var.kind() != btf::KIND_VAR {
            return Err(bad(format!("DATASEC entry is BTF kind {}, not a variable", var.kind())));
        }
        let sym = cx
            .symbols
            .iter()
            .find(|s| s.section == Some(sec) && s.name == name)
            .ok_or_else(|| bad("no symbol in .maps".to_string()))?;
        let parsed = btf_map_def(btf, var.target(), name, true)?;
        found.push((sym.value, name.to_string(), parsed));
    }
    found.sort_by_key(|f| f.0);
    for (offset, name, parsed) in found {
        if cx.map_at.insert((sec, offset), maps.len()).is_some() {
            return Err(ElfError::BadMapDefinition {
                name,
                reason: "shares its offset with another map".into(),
            });
        }
        if let Some(values) = parsed.values_offset {
            cx.values_offset.insert(maps.len(), u64::from(values));
        }
        extras.inner.push(parsed.inner);
        maps.push(MapSpec {
            name,
            def: parsed.def,
            kind: MapKind::Regular,
            data: Vec::new(),
            vars: Vec::new(),
        });
    }
    Ok(())
}

/// Reads `struct { __uint(type, ...); __type(key, ...); ... }`.
fn btf_map_def(btf: &Btf<'_>, ty: u32, name: &str, outer: bool) -> Result<BtfMapDef, ElfError> {
    let bad = |reason: String| ElfError::BadMapDefinition { name: name.to_string(), reason };
    let btf_bad = |e: btf::BtfError| bad(e.to_string());
    let st = btf.skip_mods(ty).map_err(btf_bad)?;
    if st.kind() != btf::KIND_STRUCT {
        return Err(bad("not a struct".to_string()));
    }
    // `__uint(field, N)` is `int (*field)[N]`.
    let uint = |field: &str, id: u32| -> Result<u32, ElfError> {
        let ptr = btf.skip_mods(id).map_err(btf_bad)?;
        let arr = if ptr.kind() == btf::KIND_PTR {
            Some(btf.skip_mods(ptr.target()).map_err(btf_bad)?)
        } else {
            None
        };
        match arr {
            Some(a) if a.kind() == btf::KIND_ARRAY => Ok(a.array().1),
            _ => Err(bad(format!("{field} is not a __uint(...)"))),
        }
    };
    // `__type(field, T)` is `T *field`.
    let pointee_size = |field: &str, id: u32| -> Result<u32, ElfError> {
        let ptr = btf.skip_mods(id).map_err(btf_bad)?;
        if ptr.kind() != btf::KIND_PTR {
            return Err(bad(format!("{field} is not a __type(...)")));
        }
        let size = btf.size_of(ptr.target()).map_err(btf_bad)?;
        u32::try_from(size).map_err(|_| bad(format!("{field} is {size} bytes")))
    };
    let set = |slot: &mut Option<u32>, field: &str, v: u32| -> Result<(), ElfError> {
        match *slot {
            Some(old) if old != v => Err(bad(format!("conflicting {field}: {old} and {v}"))),
            _ => {
                *slot = Some(v);
                Ok(())
            }
        }
    };

    let mut def = MapDef::default();
    let (mut key_size, mut value_size) = (None, None);
    let mut inner = None;
    let mut values_offset = None;
    for m in st.members() {
        let field = btf.str_at(m.name_off).map_err(btf_bad)?;
        match field {
            "type" => def.map_type = uint(field, m.ty)?,
            "max_entries" => def.max_entries = uint(field, m.ty)?,
            "map_flags" => def.map_flags = uint(field, m.ty)?,
            "key_size" => set(&mut key_size, "key size", uint(field, m.ty)?)?,
            "value_size" => set(&mut value_size, "value size", uint(field, m.ty)?)?,
            "key" => set(&mut key_size, "key size", pointee_size(field, m.ty)?)?,
            "value" => set(&mut value_size, "value size", pointee_size(field, m.ty)?)?,
            // Pinning, NUMA placement and map_extra have no meaning in userspace; still well-formed.
            "pinning" | "numa_node" | "map_extra" => {
                uint(field, m.ty)?;
            }
            "values" => {
                if !outer {
                    return Err(bad("an inner map cannot have values".to_string()));
                }
                let arr = btf.skip_mods(m.ty).map_err(btf_bad)?;
                if arr.kind() != btf::KIND_ARRAY {
                    return Err(bad("values is not an __array(...)".to_string()));
                }
                let ptr = btf.skip_mods(arr.array().0).map_err(btf_bad)?;
                if ptr.kind() != btf::KIND_PTR {
                    return Err(bad("values is not an array of pointers".to_string()));
                }
                let pointee = btf.skip_mods(ptr.target()).map_err(btf_bad)?;
                match pointee.kind() {
                    btf::KIND_STRUCT => inner = Some(btf_map_def(btf, pointee.id, name, false)?.def),
                    btf::KIND_FUNC_PROTO => {}
                    k => return Err(bad(format!("values point to BTF kind {k}, not a map or a program"))),
                }
                // Map-in-map and prog-array values are 4-byte ids.
                set(&mut value_size, "value size", 4)?;
                values_offset = Some(m.offset);
            }
            // Unknown fields are ignored, as libbpf does outside its strict mode.
            _ => {}
        }
    }
    def.key_size = key_size.unwrap_or(0);
    def.value_size = value_size.unwrap_or(0);
    if def.map_type == 0 {
        return Err(bad("no map type".to_string()));
    }
    Ok(BtfMapDef { def, inner, values_offset })
}

/// `struct bpf_map_def SEC("maps")`: five u32s, then optional fields that must be zero.
fn legacy_maps(cx: &mut Ctx<'_>, sec: usize, maps: &mut Vec<MapSpec>) -> Result<(), ElfError> {
    let section = &cx.sections[sec];
    let data = section.data()?;
    let mut syms: Vec<&Symbol> = cx
        .symbols
        .iter()
        .filter(|s| s.section == Some(sec) && !matches!(s.st_type, elf::STT_SECTION | elf::STT_FILE))
        .collect();
    syms.sort_by_key(|s| s.value);
    if syms.is_empty() {
        return Ok(());
    }
    let nr = syms.len();
    for sym in syms {
        let bad = |reason: String| ElfError::BadMapDefinition { name: sym.name.clone(), reason };
        let def_size = if sym.size != 0 {
            sym.size
        } else if data.len() % nr == 0 {
            (data.len() / nr) as u64
        } else {
            return Err(bad("maps section size is not a multiple of the map count".to_string()));
        };
        let start = usize::try_from(sym.value).ok();
        let end = start.zip(usize::try_from(def_size).ok()).and_then(|(s, n)| s.checked_add(n));
        let raw = start
            .zip(end)
            .and_then(|(s, e)| data.get(s..e))
            .ok_or_else(|| bad("outside the maps section".into()))?;
        let mut words = [0u32; 5];
        for (i, w) in words.iter_mut().enumerate() {
            if let Some(b) = raw.get(i * 4..i * 4 + 4) {
                *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        if raw.get(20..).is_some_and(|extra| extra.iter().any(|&b| b != 0)) {
            return Err(bad("unsupported non-zero fields after map_flags".to_string()));
        }
        if cx.map_at.insert((sec, sym.value), maps.len()).is_some() {
            return Err(bad("shares its offset with another map".to_string()));
        }
        let [map_type, key_size, value_size, max_entries, map_flags] = words;
        maps.push(MapSpec {
            name: sym.name.clone(),
            def: MapDef { map_type, key_size, value_size, max_entries, map_flags },
            kind: MapKind::Regular,
            data: Vec::new(),
            vars: Vec::new(),
        });
    }
    Ok(())
}

fn is_global_data(name: &str) -> bool {
    [".rodata", ".data", ".bss"]
        .iter()
        .any(|p| name == *p || name.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}

/// `.rodata*`, `.data*`, `.bss*`: one-entry arrays holding the section.
fn global_maps(cx: &mut Ctx<'_>, btf: Option<&Btf<'_>>, maps: &mut Vec<MapSpec>) -> Result<(), ElfError> {
    for (idx, sec) in cx.sections.iter().enumerate() {
        if !is_global_data(&sec.name)
            || !matches!(sec.sh_type, elf::SHT_PROGBITS | elf::SHT_NOBITS)
            || sec.size == 0
        {
            continue;
        }
        if sec.size > MAX_GLOBAL_SIZE {
            return Err(corrupt(
                &sec.name,
                format!("{} bytes of global data, more than {MAX_GLOBAL_SIZE}", sec.size),
            ));
        }
        let size = usize::try_from(sec.size).map_err(|_| corrupt(&sec.name, "too large"))?;
        let data = if sec.sh_type == elf::SHT_NOBITS { vec![0; size] } else { sec.data()?.to_vec() };
        let readonly = sec.name.starts_with(".rodata");
        let datasec = btf.and_then(|b| b.datasec(&sec.name).map(|d| (b, d)));
        let mut vars = Vec::new();
        for sym in cx.symbols.iter().filter(|s| s.section == Some(idx) && s.st_type == elf::STT_OBJECT) {
            let mut var_size = sym.size;
            if var_size == 0 {
                // Fall back to the size BTF records for the variable of that name.
                let from_btf = datasec.and_then(|(b, d)| {
                    d.datasec_vars()
                        .find(|&(id, _, _)| b.get(id).is_ok_and(|v| b.name(v) == Ok(&sym.name)))
                        .map(|v| v.2)
                });
                var_size = u64::from(from_btf.unwrap_or(0));
            }
            if sym.value.checked_add(var_size).is_none_or(|end| end > sec.size) {
                return Err(corrupt(&sec.name, format!("variable {} lies outside the section", sym.name)));
            }
            vars.push(GlobalVar {
                name: sym.name.clone(),
                offset: sym.value as usize,
                size: var_size as usize,
            });
        }
        vars.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
        let flags = if readonly { map_flags::RDONLY_PROG | map_flags::MMAPABLE } else { map_flags::MMAPABLE };
        cx.global_map.insert(idx, maps.len());
        cx.global_size.insert(maps.len(), sec.size);
        maps.push(MapSpec {
            name: sec.name.clone(),
            def: MapDef {
                map_type: map_type::ARRAY,
                key_size: 4,
                value_size: size as u32,
                max_entries: 1,
                map_flags: flags,
            },
            kind: MapKind::Global { readonly },
            data,
            vars,
        });
    }
    Ok(())
}

/// Applies `.rel.maps`: `.values = { [i] = &inner_map }` or `= { [i] = &prog }`.
fn map_slots(cx: &Ctx<'_>, maps: &[MapSpec], extras: &mut Extras) -> Result<(), ElfError> {
    let Some(sec) = cx.sections.iter().position(|s| s.name == ".maps") else { return Ok(()) };
    let Some(rels) = cx.rels.get(&sec) else { return Ok(()) };
    let mut offsets: Vec<(u64, usize)> =
        cx.map_at.iter().filter(|(k, _)| k.0 == sec).map(|(k, &v)| (k.1, v)).collect();
    offsets.sort_unstable();
    let mut rels: Vec<(u64, Reloc)> = rels.iter().map(|(&o, &r)| (o, r)).collect();
    rels.sort_unstable_by_key(|r| r.0);
    for (offset, rel) in rels {
        let unsupported =
            |kind: String| ElfError::UnsupportedRelocation { section: ".maps".into(), offset, kind };
        if !matches!(rel.r_type, R_BPF_64_64 | R_BPF_64_ABS64) {
            return Err(unsupported(format!("type {}", rel.r_type)));
        }
        let Some(&(map_off, idx)) = offsets.iter().rev().find(|(o, _)| *o <= offset) else {
            return Err(unsupported("before the first map".to_string()));
        };
        let name = maps[idx].name.clone();
        let bad = |reason: String| ElfError::BadMapDefinition { name: name.clone(), reason };
        let Some(&values) = cx.values_offset.get(&idx) else {
            return Err(bad(format!("initialised at offset {offset} but has no values array")));
        };
        let rel_off = offset - map_off;
        if rel_off < values || (rel_off - values) % 8 != 0 {
            return Err(bad(format!("initialiser at offset {rel_off} is not a values slot")));
        }
        let index =
            u32::try_from((rel_off - values) / 8).map_err(|_| bad("slot out of range".to_string()))?;
        if index >= maps[idx].def.max_entries {
            return Err(bad(format!("slot {index} is beyond max_entries {}", maps[idx].def.max_entries)));
        }
        let sym = cx.sym(rel.sym)?;
        let target = match sym.section {
            Some(s) if s == sec => {
                let inner = cx.map_at.get(&(sec, sym.value)).copied();
                SlotTarget::Map(inner.ok_or_else(|| bad(format!("slot {index} points to no map")))?)
            }
            Some(s) if cx.insns.contains_key(&s) && sym.st_type == elf::STT_FUNC => {
                SlotTarget::Program(sym.name.clone())
            }
            _ => {
                return Err(bad(format!("slot {index} points to {}, neither a map nor a program", sym.name)));
            }
        };
        if extras.inner[idx].is_some() != matches!(target, SlotTarget::Map(_)) {
            return Err(bad(format!("slot {index} holds the wrong kind of value")));
        }
        extras.slots[idx].push(MapSlot { index, target });
    }
    Ok(())
}
