//! Verifier speed: each program of `configs/bpf/` (and, for reference, the test programs) verified
//! from its linked instructions, the median of many runs, beside the kernel's own verification
//! (a full `BPF_PROG_LOAD`, which also allocates and JITs: an upper bound on its verifier) where
//! the kernel is reachable. The budget is 10 ms per `configs/bpf` program.
//!
//! `cargo bench -p benches --bench suite -- --only verify`; `-- --quick` runs a few iterations and asserts the
//! budget only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::kernel::KernelProgram;
use xdp_vm::create_maps;
use xdp_vm::elf::{Object, ProgramKind};
use xdp_vm::program::map_infos;
use xdp_vm::verifier::{self, ProgramType};

const BUDGET: Duration = Duration::from_millis(10);

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "o"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub fn main(quick: bool) {
    let iters = if quick { 5 } else { 200 };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let configs: Vec<String> = std::fs::read_dir(root.join("configs/bpf"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    println!("{:32} {:>10} {:>12} {:>14}  processed", "program", "insns", "ours (ns)", "kernel load");
    let mut over = Vec::new();
    for path in objects(Path::new(dataplane::BPF_OBJ_DIR)) {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if stem.starts_with("loader_") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let Ok(obj) = Object::parse(&bytes) else { continue };
        let Ok(maps) = create_maps(&obj, 1) else { continue };
        let infos = map_infos(&maps);
        for spec in obj.programs.iter().filter(|p| p.kind == ProgramKind::Xdp) {
            let mut times = Vec::with_capacity(iters);
            let mut processed = 0;
            for _ in 0..iters {
                let t = Instant::now();
                let v = verifier::verify(&spec.insns, &infos, ProgramType::Xdp);
                times.push(t.elapsed());
                processed = v.map_or(0, |v| v.processed_insns);
            }
            let ours = median(times);
            let kernel = {
                let t = Instant::now();
                KernelProgram::load(&obj, spec).ok().map(|_| t.elapsed())
            };
            let kernel = kernel.map_or_else(|| "-".to_string(), |k| format!("{} ns", k.as_nanos()));
            let tag = if configs.contains(&stem) { " (configs/bpf)" } else { "" };
            println!(
                "{:32} {:>10} {:>12} {:>14}  {processed}{tag}",
                format!("{stem}:{}", spec.name),
                spec.insns.len(),
                ours.as_nanos(),
                kernel
            );
            if !tag.is_empty() && ours > BUDGET {
                over.push(format!("{stem}: {ours:?}"));
            }
        }
    }
    assert!(over.is_empty(), "over the {BUDGET:?} budget: {}", over.join(", "));
}
