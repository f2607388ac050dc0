//! The benchmark suite: every comparison the README reports, side by side with the kernel (or a
//! peer) in the same run.
//!
//! Each comparison is a module implementing [`Comparison`]: it sets its contestants up, runs
//! them **alternately**, round by round (so machine noise hits all of them alike; see
//! [`alternate`]), and returns [`Table`]s whose rows hold one [`Cell`] per contestant — the
//! samples of every round — and name the reference contestant (the kernel, or the peer) that
//! every other cell is compared with. [`report`] turns the tables into the Markdown the README
//! shows, a JSON file of every figure and an SVG chart of the ratios.
//!
//! `cargo bench -p benches --bench suite` runs all comparisons in full mode;
//! `-- --quick` runs each for a few seconds at most, asserting nothing about speed (CI runs it
//! as a test: `tests/suite.rs`); `-- NAME...` runs only the named comparisons. Adding a
//! comparison: a module with a type implementing [`Comparison`], one line in [`comparisons`].

#![deny(unsafe_code)]

pub mod clock;
pub mod control;
pub mod dpdk;
pub mod embed;
pub mod helpers;
pub mod mapops;
pub mod pktgen;
pub mod rbpf_peer;
pub mod replay;
pub mod report;
pub mod scaling;
pub mod throughput;
pub mod traced;
pub mod uprobe;
pub mod verify;
pub mod veth;

use serde::Serialize;

/// How long to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A few seconds in all: proves every comparison runs; its figures are not worth reading.
    Quick,
    /// The README's figures.
    Full,
}

impl Mode {
    /// `quick` in quick mode, `full` otherwise.
    #[must_use]
    pub fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Mode::Quick => quick,
            Mode::Full => full,
        }
    }
}

/// One comparison of the suite (a module). Implementations alternate their contestants round
/// by round ([`alternate`]) and put every round's sample into the tables they return.
pub trait Comparison {
    /// Short name for `cargo bench -p benches --bench suite -- NAME`.
    fn name(&self) -> &'static str;

    /// Runs the comparison.
    ///
    /// # Errors
    /// Whatever stops it: a program that does not load, a kernel that refuses, a fault.
    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>>;
}

/// Every comparison, in report order.
#[must_use]
pub fn comparisons() -> Vec<Box<dyn Comparison>> {
    vec![
        Box::new(replay::Replay),
        Box::new(mapops::MapOps),
        Box::new(embed::Embed),
        Box::new(helpers::Helpers),
        Box::new(verify::Verify),
        Box::new(uprobe::Uprobe),
        Box::new(throughput::Throughput),
        Box::new(traced::Traced),
        Box::new(scaling::Scaling),
        Box::new(dpdk::Dpdk),
        Box::new(control::Control),
        Box::new(pktgen::Pktgen),
    ]
}

/// Which way a unit improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

/// A table of the report: rows of cells, one cell per contestant.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// Stable identifier (`replay`, `mapops`), the JSON key.
    pub id: String,
    pub title: String,
    /// How it was measured, printed under the title.
    pub method: String,
    /// What the row label names (`program`, `map / op`).
    pub row_header: String,
    /// The unit of every figure (`ns/run`).
    pub unit: String,
    pub better: Better,
    pub rows: Vec<Row>,
}

/// One row: the same workload for every contestant.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    /// The contestant the others are compared with (its name).
    pub reference: String,
    pub cells: Vec<Cell>,
}

/// One contestant's figures for a row: every round's sample, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub contestant: String,
    pub samples: Vec<f64>,
    /// Statistics of `samples` (`None` when the contestant could not run the workload).
    pub stats: Option<Stats>,
    /// Said next to the figure: a second reading, or why the contestant does not run.
    pub note: String,
}

impl Cell {
    /// A cell with figures.
    #[must_use]
    pub fn new(contestant: &str, samples: Vec<f64>) -> Self {
        let stats = Stats::of(&samples);
        Self { contestant: contestant.to_string(), samples, stats, note: String::new() }
    }

    /// A cell for a contestant that cannot run the workload, and why.
    #[must_use]
    pub fn missing(contestant: &str, why: &str) -> Self {
        let note = why.split_whitespace().collect::<Vec<_>>().join(" ");
        Self { contestant: contestant.to_string(), samples: Vec::new(), stats: None, note }
    }

    /// The same cell with a note (one line).
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

impl Row {
    /// The reference cell's statistics.
    #[must_use]
    pub fn reference_stats(&self) -> Option<Stats> {
        self.cells.iter().find(|c| c.contestant == self.reference).and_then(|c| c.stats)
    }

    /// How many times better than the reference `cell` is (> 1: better), by the medians.
    #[must_use]
    pub fn ratio(&self, cell: &Cell, better: Better) -> Option<f64> {
        let (r, c) = (self.reference_stats()?.median, cell.stats?.median);
        if r <= 0.0 || c <= 0.0 {
            return None;
        }
        Some(match better {
            Better::Lower => r / c,
            Better::Higher => c / r,
        })
    }
}

/// Median and spread of the rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

impl Stats {
    /// `None` for no samples.
    #[must_use]
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, min: v[0], max: v[n - 1], rounds: n })
    }
}

/// The median of `samples` (the mean of the two middle ones for an even count); 0 when empty.
#[must_use]
pub fn median(samples: &[f64]) -> f64 {
    Stats::of(samples).map_or(0.0, |s| s.median)
}

/// Runs `rounds` rounds; in each, every contestant once, in order (`f(round, contestant)`
/// returns that contestant's sample). Returns the samples per contestant. Alternating like this
/// spreads slow phases of the machine over all contestants instead of one.
///
/// # Errors
/// The first error a contestant returns.
pub fn alternate(
    rounds: usize,
    contestants: usize,
    mut f: impl FnMut(usize, usize) -> anyhow::Result<f64>,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::with_capacity(rounds); contestants];
    for round in 0..rounds {
        for (c, samples) in out.iter_mut().enumerate() {
            samples.push(f(round, c)?);
        }
    }
    Ok(out)
}

/// Thread CPU nanoseconds per iteration of `iters` calls of `f`.
pub fn cpu_ns_per(iters: u64, mut f: impl FnMut()) -> f64 {
    let t0 = clock::thread_cpu_ns();
    for _ in 0..iters {
        f();
    }
    (clock::thread_cpu_ns() - t0) as f64 / iters as f64
}

/// Whether this process runs as root (namespaces, XDP, AF_XDP, uprobes, `BPF_PROG_LOAD`): the
/// modules that need it report "skipped: not root" rows otherwise.
#[must_use]
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

impl Row {
    /// A row nobody could measure here: every contestant's cell says `why`.
    #[must_use]
    pub fn skipped(label: &str, reference: &str, contestants: &[&str], why: &str) -> Self {
        let why = format!("(skipped: {why})");
        Self {
            label: label.into(),
            reference: reference.into(),
            cells: contestants.iter().map(|c| Cell::missing(c, &why)).collect(),
        }
    }
}

/// The shipped XDP programs: every `configs/bpf/*.c` whose object has an XDP program, by file
/// stem, sorted, with the object's path and the parsed object.
///
/// # Errors
/// An object the build should have made that is missing or does not parse.
pub fn shipped_xdp() -> anyhow::Result<Vec<(String, std::path::PathBuf, xdp_vm::elf::Object)>> {
    let mut stems: Vec<String> = std::fs::read_dir(configs_bpf())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    stems.sort();
    let mut out = Vec::new();
    for stem in stems {
        let path = object(&stem);
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let obj = xdp_vm::elf::Object::parse(&bytes)?;
        if obj.programs.first().is_some_and(|p| p.kind == xdp_vm::elf::ProgramKind::Xdp) {
            out.push((stem, path, obj));
        }
    }
    Ok(out)
}

/// Whether `obj`'s first program returns `XDP_TX` for any of the lab's frames
/// ([`dataplane::lab::frames`]) in the kernel (`BPF_PROG_TEST_RUN`): only then does a veth
/// throughput round see frames come back.
///
/// # Errors
/// When the kernel refuses the program or the run.
pub fn sends_lab_traffic_back(obj: &xdp_vm::elf::Object) -> anyhow::Result<bool> {
    let prog = dataplane::kernel::KernelProgram::load(obj, &obj.programs[0])?;
    for f in dataplane::lab::frames(16) {
        if prog.test_run(&f, 1)?.retval == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `configs/bpf/` directory.
#[must_use]
pub fn configs_bpf() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/bpf")
}

/// The object the build made from `configs/bpf/NAME.c` (or `benches/bpf/NAME.c`).
#[must_use]
pub fn object(stem: &str) -> std::path::PathBuf {
    std::path::Path::new(dataplane::BPF_OBJ_DIR).join(format!("{stem}.o"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_ratios() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.rounds), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stats::of(&[1.0, 3.0]).unwrap().median, 2.0);
        assert!(Stats::of(&[]).is_none());
        let row = Row {
            label: "p".into(),
            reference: "kernel".into(),
            cells: vec![
                Cell::new("kernel", vec![30.0]),
                Cell::new("ours", vec![10.0]),
                Cell::missing("x", "no"),
            ],
        };
        assert_eq!(row.ratio(&row.cells[1], Better::Lower), Some(3.0));
        assert_eq!(row.ratio(&row.cells[1], Better::Higher), Some(1.0 / 3.0));
        assert_eq!(row.ratio(&row.cells[2], Better::Lower), None);
    }

    #[test]
    fn alternate_interleaves() {
        let mut order = Vec::new();
        let out = alternate(2, 3, |r, c| {
            order.push((r, c));
            Ok((r * 10 + c) as f64)
        })
        .unwrap();
        assert_eq!(order, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(out[2], [2.0, 12.0]);
    }
}
