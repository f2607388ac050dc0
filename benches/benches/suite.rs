//! The whole suite: `cargo bench -p benches --bench suite [-- --quick] [--out DIR]
//! [--only NAME]... [NAME...]`. Prints the Markdown report and writes `report.md`,
//! `report.json` and `ratios.svg` into `DIR` (default `$CARGO_TARGET_DIR/bench-report`), and
//! how long each module took. See the crate docs.

use std::time::Instant;

use benches::report::{self, Machine};
use benches::{Mode, comparisons};

/// The options, or one line saying what was wrong with them.
fn options() -> Result<(Mode, std::path::PathBuf, Vec<String>), String> {
    let mut mode = Mode::Full;
    let mut out = report::default_dir();
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--only" => only.push(args.next().ok_or("--only needs a comparison name")?),
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
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
    Ok((mode, out, only))
}

fn main() -> anyhow::Result<()> {
    let (mode, out, only) = options().unwrap_or_else(|e| {
        eprintln!("suite: {e}");
        std::process::exit(2);
    });
    let machine = Machine::here(mode);
    let mut tables = Vec::new();
    let mut took = Vec::new();
    for c in comparisons().iter().filter(|c| only.is_empty() || only.iter().any(|n| n == c.name())) {
        eprintln!("suite: running {}", c.name());
        let t = Instant::now();
        match c.run(mode) {
            Ok(t) => tables.extend(t),
            Err(e) => {
                eprintln!("suite: {}: {e:#}", c.name());
                std::process::exit(1);
            }
        }
        took.push(format!("{} {:.0} s", c.name(), t.elapsed().as_secs_f64()));
    }
    report::write(&out, &machine, &tables)?;
    print!("{}", report::markdown(&machine, &tables));
    eprintln!("suite: took {}", took.join(", "));
    eprintln!("suite: wrote {}/report.md, report.json, ratios.svg", out.display());
    Ok(())
}
