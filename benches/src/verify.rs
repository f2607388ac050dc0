//! Verifier speed: each program of `configs/bpf/` (and, for reference, the test programs) verified
//! from its linked instructions, the median of many runs, beside the kernel's own verification
//! (a full `BPF_PROG_LOAD`, which also allocates and JITs: an upper bound on its verifier) where
//! the kernel is reachable. The budget is 10 ms per `configs/bpf` program.
//!
//! `cargo bench -p benches --bench suite -- --only verify` (`--quick`: one round of 3 runs).
//! The budget is a figure to read, not an assertion: a row over it says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::kernel::KernelProgram;

use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate};
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

/// The verification-time comparison.
#[derive(Debug)]
pub struct Verify;

const OURS: &str = "ours: verifier";
const KERNEL: &str = "kernel: BPF_PROG_LOAD (verifier + JIT)";

impl Comparison for Verify {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, runs) = mode.pick((1, 3), (7, 25));
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let configs: Vec<String> = std::fs::read_dir(root.join("configs/bpf"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut rows = Vec::new();
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
                let configs_bpf = configs.contains(&stem);
                let label = format!(
                    "{stem}:{} ({} insns){}",
                    spec.name,
                    spec.insns.len(),
                    if configs_bpf { ", configs/bpf" } else { "" }
                );
                if !crate::is_root() {
                    rows.push(Row::skipped(&label, KERNEL, &[OURS, KERNEL], "needs root for BPF_PROG_LOAD"));
                    continue;
                }
                let mut processed = 0;
                let samples = alternate(rounds, 2, |_, c| {
                    if c == 0 {
                        let mut times = Vec::with_capacity(runs);
                        for _ in 0..runs {
                            let t = Instant::now();
                            let v = verifier::verify(&spec.insns, &infos, ProgramType::Xdp);
                            times.push(t.elapsed());
                            processed = v.map_or(0, |v| v.processed_insns);
                        }
                        Ok(median(times).as_nanos() as f64 / 1e3)
                    } else {
                        let t = Instant::now();
                        KernelProgram::load(&obj, spec)?;
                        Ok(t.elapsed().as_nanos() as f64 / 1e3)
                    }
                });
                let samples = match samples {
                    Ok(s) => s,
                    Err(e) => {
                        rows.push(Row::skipped(
                            &label,
                            KERNEL,
                            &[OURS, KERNEL],
                            &format!("the kernel refused it: {e:#}"),
                        ));
                        continue;
                    }
                };
                let mut samples = samples.into_iter();
                let (ours, kern) = (samples.next().unwrap_or_default(), samples.next().unwrap_or_default());
                let ours = Cell::new(OURS, ours);
                let over = configs_bpf && ours.stats.is_some_and(|s| s.median > BUDGET.as_secs_f64() * 1e6);
                let note = format!(
                    "({processed} insns processed{})",
                    if over { format!("; over the {BUDGET:?} budget") } else { String::new() }
                );
                rows.push(Row {
                    label,
                    reference: KERNEL.into(),
                    cells: vec![ours.with_note(note), Cell::new(KERNEL, kern)],
                });
            }
        }
        Ok(vec![Table {
            id: "verify".into(),
            title: "Verification time per program".into(),
            method: format!(
                "Every XDP program the build compiled (configs/bpf, the suite's and the tests' programs), verified from \
                 its linked instructions: ours, the median of {runs} runs per round; the kernel, one full \
                 BPF_PROG_LOAD per round (it also allocates and JITs: an upper bound on its verifier). {rounds} \
                 round(s), alternating. The issue's budget: {BUDGET:?} per configs/bpf program. Reference: the \
                 kernel."
            ),
            row_header: "program".into(),
            unit: "µs".into(),
            better: Better::Lower,
            rows,
        }])
    }
}
