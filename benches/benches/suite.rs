//! The whole suite: `cargo bench -p benches --bench suite [-- --quick] [--out DIR]
//! [--readme README.md] [--only NAME]... [NAME...]`. Prints the Markdown report and writes
//! `report.md`, `report.json` and `ratios.svg` into `DIR` (default
//! `$CARGO_TARGET_DIR/bench-report`), puts the report between the README's suite markers when
//! asked, and prints how long each module took. See the crate docs.

use std::path::PathBuf;
use std::time::Instant;

use benches::report::{self, Machine};
use benches::{Mode, comparisons};

/// The options, or one line saying what was wrong with them.
struct Options {
    mode: Mode,
    out: PathBuf,
    readme: Option<PathBuf>,
    only: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut mode = Mode::Full;
    let mut out = report::default_dir();
    let mut readme = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--only" => only.push(args.next().ok_or("--only needs a comparison name")?),
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
            "--readme" => readme = Some(PathBuf::from(args.next().ok_or("--readme needs a file")?)),
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            name if !name.starts_with('-') => only.push(name.to_string()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let names: Vec<_> = comparisons().iter().map(|c| c.name()).collect();
    if let Some(bad) = only.iter().find(|n| !names.contains(&n.as_str())) {
        return Err(format!("no comparison named {bad} (there are: {})", names.join(", ")));
    }
    if let Some(path) = &readme {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--readme {}: {e}", path.display()))?;
        if report::splice(&text, "").is_none() {
            let (a, b) = report::MARKERS;
            return Err(format!("--readme {}: no {a} ... {b} markers", path.display()));
        }
    }
    Ok(Options { mode, out, readme, only })
}

fn main() -> anyhow::Result<()> {
    let Options { mode, out, readme, only } = options().unwrap_or_else(|e| {
        eprintln!("suite: {e}");
        std::process::exit(2);
    });
    let machine = Machine::here(mode);
    let mut tables = Vec::new();
    let mut took = Vec::new();
    let mut failed = Vec::new();
    for c in comparisons().iter().filter(|c| only.is_empty() || only.iter().any(|n| n == c.name())) {
        eprintln!("suite: running {}", c.name());
        let t = Instant::now();
        match c.run(mode) {
            Ok(t) => tables.extend(t),
            // The other modules still run and report; the exit code says one failed.
            Err(e) => {
                eprintln!("suite: {}: {e:#}", c.name());
                failed.push(c.name());
            }
        }
        took.push(format!("{} {:.0} s", c.name(), t.elapsed().as_secs_f64()));
    }
    report::write(&out, &machine, &tables)?;
    let md = report::markdown(&machine, &tables);
    if let Some(path) = readme {
        let text = std::fs::read_to_string(&path)?;
        let spliced = report::splice(&text, &md)
            .ok_or_else(|| anyhow::anyhow!("{}: the suite markers went missing", path.display()))?;
        std::fs::write(&path, spliced)?;
        eprintln!("suite: put the report into {}", path.display());
    }
    print!("{md}");
    eprintln!("suite: took {}", took.join(", "));
    eprintln!("suite: wrote {}/report.md, report.json, ratios.svg", out.display());
    if !failed.is_empty() {
        eprintln!("suite: failed (no table): {}", failed.join(", "));
        std::process::exit(1);
    }
    Ok(())
}
