//! Robustness: real objects, truncated and corrupted thousands of times, must parse to `Ok` or
//! `Err` — never a panic, never a runaway allocation.
//!
//! The objects are the loader's C test programs (`dataplane/tests/bpf/loader_*.c`), compiled here
//! with the same clang and flags the build uses. Corruption is seeded and deterministic, and aimed
//! at the parts a loader interprets (headers, section table, symbols, relocations, BTF, code)
//! rather than spread over the DWARF that makes up most of the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::LittleEndian as LE;
use object::read::elf::{FileHeader, SectionHeader};

use super::Object;

/// Corrupted variants tried per object; `ELF_FUZZ_ROUNDS` raises it for a longer hunt.
fn rounds() -> usize {
    std::env::var("ELF_FUZZ_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4000)
}

/// xorshift64*: small, seeded, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn clang() -> String {
    if let Ok(c) = std::env::var("BPF_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang-18", "clang-17", "clang"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.to_string();
        }
    }
    panic!("no clang found to build the loader's test objects (the build needs clang-19 anyway)");
}

/// Every `loader_*.c`, compiled once per test run.
fn objects() -> &'static [(String, Vec<u8>)] {
    static OBJECTS: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    OBJECTS.get_or_init(compile_all)
}

/// Compiles every `loader_*.c` into a fresh temporary directory and returns the objects.
fn compile_all() -> Vec<(String, Vec<u8>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tests/bpf");
    let out = std::env::temp_dir().join(format!("xdp-vm-elf-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("loader_")))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no loader_*.c in {}", src.display());
    let clang = clang();
    let objs = sources
        .iter()
        .map(|s| {
            let obj = out.join(s.file_stem().unwrap()).with_extension("o");
            let status = Command::new(&clang)
                .args(["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"])
                .arg(s)
                .arg("-o")
                .arg(&obj)
                .status()
                .unwrap();
            assert!(status.success(), "{clang} failed on {}", s.display());
            (s.display().to_string(), std::fs::read(&obj).unwrap())
        })
        .collect();
    let _ = std::fs::remove_dir_all(&out);
    objs
}

/// Byte ranges worth corrupting: the ELF header, the section header table, and every section
/// except DWARF.
fn hot_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let header = object::elf::FileHeader64::<LE>::parse(bytes).unwrap();
    let table = header.sections(LE, bytes).unwrap();
    let shoff = header.e_shoff.get(LE) as usize;
    let mut ranges = vec![0..64, shoff..shoff + table.len() * 64];
    for sh in table.iter() {
        let name = table.section_name(LE, sh).unwrap_or_default();
        if name.starts_with(b".debug") || sh.sh_type(LE) == object::elf::SHT_NOBITS {
            continue;
        }
        let (off, size) = (sh.sh_offset(LE) as usize, sh.sh_size(LE) as usize);
        if size > 0 {
            ranges.push(off..off + size);
        }
    }
    ranges
}

/// Values that sit on boundaries: zero, all ones, sign bits, small counts.
const INTERESTING: [u64; 10] = [0, 1, 7, 8, 0xff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, u64::MAX, 1 << 40];

fn mutate(rng: &mut Rng, original: &[u8], hot: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut b = original.to_vec();
    let steps = 1 + rng.below(4);
    for _ in 0..steps {
        let range = hot[rng.below(hot.len())].clone();
        let at = range.start + rng.below(range.len());
        match rng.below(5) {
            0 => {
                b.truncate(rng.below(b.len() + 1));
            }
            1 => {
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << rng.below(8);
                }
            }
            2 => {
                if let Some(x) = b.get_mut(at) {
                    *x = rng.next() as u8;
                }
            }
            width => {
                // A 4- or 8-byte field set to a boundary value, aligned like the field it hits.
                let w = if width == 3 { 4 } else { 8 };
                let at = at & !(w - 1);
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                if let Some(slot) = b.get_mut(at..at + w) {
                    slot.copy_from_slice(&v[..w]);
                }
            }
        }
    }
    b
}

#[test]
fn corrupted_objects_never_panic() {
    let objects = objects();
    let rounds = rounds();
    let seed =
        std::env::var("ELF_FUZZ_SEED").ok().and_then(|r| r.parse().ok()).unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed | 1);
    for (name, original) in objects {
        Object::parse(original).unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        let hot = hot_ranges(original);
        let (mut ok, mut err) = (0, 0);
        for round in 0..rounds {
            let bytes = mutate(&mut rng, original, &hot);
            let result = std::panic::catch_unwind(|| {
                // The typed view of the same bytes must not panic either (its result may differ).
                let _ = super::Types::from_object(&bytes);
                Object::parse(&bytes).map(|o| o.maps.len() + o.programs.len())
            });
            match result {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => {
                    // Every error renders as one line.
                    assert!(!e.to_string().contains('\n'));
                    err += 1;
                }
                Err(_) => {
                    let path = std::env::temp_dir().join(format!("elf-fuzz-crash-{round}.o"));
                    std::fs::write(&path, &bytes).unwrap();
                    panic!("{name}, round {round}: parse panicked; input saved to {}", path.display());
                }
            }
        }
        // The corruption is neither so mild that nothing fails nor so wild that nothing parses.
        eprintln!("{name}: {ok} ok, {err} errors");
        assert!(ok > rounds / 20 && err > rounds / 20, "{name}: {ok} ok, {err} errors");
    }
}

#[test]
fn every_truncation_is_an_error() {
    for (name, original) in objects() {
        // Section headers sit at the end: any shorter file loses some of them.
        for len in (0..original.len()).step_by(7) {
            assert!(Object::parse(&original[..len]).is_err(), "{name} truncated to {len} parsed");
        }
    }
}
