//! Our own executable as the probes see it: function symbols (by mangled or demangled name, with
//! their original code bytes) and the USDT notes of the probe sites, at their run-time
//! addresses. Read once from `/proc/self/exe`.

use std::sync::OnceLock;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// One function of the executable.
#[derive(Debug, Clone)]
pub struct Function {
    /// The symbol as written (mangled for Rust).
    pub raw: String,
    /// Demangled, without the hash (`dataplane::worker::Worker::run`).
    pub name: String,
    /// Run-time address.
    pub addr: u64,
    /// Its bytes in the file (the original code, whatever is patched now).
    pub code: Vec<u8>,
    /// Where those bytes are in the file (what a kernel uprobe is attached by).
    pub file_offset: Option<u64>,
}

/// One location of a USDT probe (`.note.stapsdt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteNote {
    pub provider: String,
    pub name: String,
    /// Run-time address of the probe's instruction.
    pub addr: u64,
    /// The argument spec (`8@%rdi 8@%rsi ...`).
    pub args: String,
}

/// The executable's probe-relevant contents.
#[derive(Debug)]
pub struct Image {
    /// Run-time address minus link-time address.
    pub bias: u64,
    pub sites: Vec<SiteNote>,
    bytes: Vec<u8>,
    /// (raw name, link-time address, size, file offset of the code)
    functions: Vec<(String, u64, u64, Option<u64>)>,
}

/// Reads (once) the executable of this process.
///
/// # Errors
/// When `/proc/self/exe` cannot be read or parsed.
pub fn image() -> Result<&'static Image, String> {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    IMAGE.get_or_init(|| read(super::patch::runtime_entry())).as_ref().map_err(Clone::clone)
}

fn read(runtime_entry: u64) -> Result<Image, String> {
    let bytes = std::fs::read("/proc/self/exe").map_err(|e| format!("reading /proc/self/exe: {e}"))?;
    let (bias, sites, functions) = {
        let file = object::File::parse(&*bytes).map_err(|e| format!("parsing /proc/self/exe: {e}"))?;
        let bias = runtime_entry.wrapping_sub(file.entry());
        let mut functions = Vec::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text || sym.size() == 0 {
                continue;
            }
            let Ok(raw) = sym.name() else { continue };
            let offset = sym.section_index().and_then(|i| file.section_by_index(i).ok()).and_then(|s| {
                let (off, _) = s.file_range()?;
                Some(off + (sym.address() - s.address()))
            });
            functions.push((raw.to_string(), sym.address(), sym.size(), offset));
        }
        let mut sites = Vec::new();
        if let Some(sec) = file.section_by_name(".note.stapsdt") {
            let data = sec.data().map_err(|e| format!("reading .note.stapsdt: {e}"))?;
            // Notes of code the linker dropped (unused functions) keep an address relative to
            // the dropped section: keep only those inside the code that is there.
            let code: Vec<(u64, u64)> = file
                .sections()
                .filter(|s| s.kind() == object::SectionKind::Text)
                .map(|s| (s.address(), s.address() + s.size()))
                .collect();
            sites = parse_notes(data, 0)
                .into_iter()
                .filter(|n| code.iter().any(|&(lo, hi)| n.addr >= lo && n.addr + 5 <= hi))
                .map(|n| SiteNote { addr: n.addr.wrapping_add(bias), ..n })
                .collect();
        }
        (bias, sites, functions)
    };
    Ok(Image { bias, sites, bytes, functions })
}

/// Parses `.note.stapsdt`: `namesz, descsz, type (3), "stapsdt\0", pc, base, semaphore,
/// provider\0, name\0, args\0`, each note 4-byte aligned.
fn parse_notes(data: &[u8], bias: u64) -> Vec<SiteNote> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    while let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8)) {
        let name_at = at + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let next = desc_at + descsz.next_multiple_of(4);
        if next > data.len() {
            break;
        }
        if ty == 3 && data.get(name_at..name_at + namesz) == Some(b"stapsdt\0") && descsz >= 24 {
            let desc = &data[desc_at..desc_at + descsz];
            let pc = u64::from_le_bytes(desc[0..8].try_into().unwrap_or([0; 8]));
            let mut strings = desc[24..].split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned());
            let provider = strings.next().unwrap_or_default();
            let name = strings.next().unwrap_or_default();
            let args = strings.next().unwrap_or_default();
            out.push(SiteNote { provider, name, addr: pc.wrapping_add(bias), args });
        }
        at = next;
    }
    out
}

impl Image {
    /// The functions whose raw or demangled name is `name`, one per address.
    #[must_use]
    pub fn functions(&self, name: &str) -> Vec<Function> {
        let mut out: Vec<Function> = Vec::new();
        // Demangle only symbols that mention the name's last segment: there are many symbols.
        let last = name.rsplit("::").next().unwrap_or(name);
        for (raw, addr, size, offset) in &self.functions {
            let demangled = if raw == name {
                raw.clone()
            } else if raw.contains(last) {
                format!("{:#}", rustc_demangle::demangle(raw))
            } else {
                continue;
            };
            if raw != name && demangled != name {
                continue;
            }
            let addr = addr.wrapping_add(self.bias);
            if out.iter().any(|f| f.addr == addr) {
                continue;
            }
            let code = offset
                .and_then(|o| self.bytes.get(o as usize..(o + size) as usize))
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            out.push(Function { raw: raw.clone(), name: demangled, addr, code, file_offset: *offset });
        }
        out
    }

    /// The locations of probe site `name` (provider `dataplane`).
    #[must_use]
    pub fn site(&self, name: &str) -> Vec<&SiteNote> {
        self.sites.iter().filter(|s| s.provider == "dataplane" && s.name == name).collect()
    }

    /// Where the code at run-time address `addr` is in the file (what a kernel uprobe, or a
    /// USDT probe of `bpftrace`, is attached by).
    #[must_use]
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        let file = object::File::parse(&*self.bytes).ok()?;
        let link = addr.wrapping_sub(self.bias);
        file.sections().filter(|s| s.kind() == object::SectionKind::Text).find_map(|s| {
            let (off, _) = s.file_range()?;
            (link >= s.address() && link < s.address() + s.size()).then(|| off + (link - s.address()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stapsdt_notes() {
        let mut note = Vec::new();
        let desc: Vec<u8> = [0x1000u64.to_le_bytes(), [0; 8], [0; 8]]
            .concat()
            .into_iter()
            .chain(b"dataplane\0rx\08@%rdi\0".iter().copied())
            .collect();
        note.extend_from_slice(&8u32.to_le_bytes());
        note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&3u32.to_le_bytes());
        note.extend_from_slice(b"stapsdt\0");
        note.extend_from_slice(&desc);
        note.resize(note.len().next_multiple_of(4), 0);
        let notes = parse_notes(&note, 0x5000);
        assert_eq!(
            notes,
            [SiteNote {
                provider: "dataplane".into(),
                name: "rx".into(),
                addr: 0x6000,
                args: "8@%rdi".into()
            }]
        );
    }
}
