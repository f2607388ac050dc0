//! The whole suite: `cargo bench -p benches --bench suite [-- --quick] [--out DIR] [NAME...]`.
//! Prints the Markdown report and writes `report.md`, `report.json` and `ratios.svg` into
//! `DIR` (default `$CARGO_TARGET_DIR/bench-report`). See the crate docs.

use benches::report::{self, Machine};
use benches::{Mode, comparisons};

fn main() -> anyhow::Result<()> {
    let mut mode = Mode::Full;
    let mut out = report::default_dir();
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--out" => out = args.next().ok_or_else(|| anyhow::anyhow!("--out needs a directory"))?.into(),
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            name if !name.starts_with('-') => only.push(name.to_string()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let all = comparisons();
    if let Some(bad) = only.iter().find(|n| !all.iter().any(|c| c.name() == n.as_str())) {
        let names: Vec<_> = all.iter().map(|c| c.name()).collect();
        anyhow::bail!("no comparison named {bad} (there are: {})", names.join(", "));
    }
    let machine = Machine::here(mode);
    let mut tables = Vec::new();
    for c in all.iter().filter(|c| only.is_empty() || only.iter().any(|n| n == c.name())) {
        eprintln!("suite: running {}", c.name());
        tables.extend(c.run(mode)?);
    }
    report::write(&out, &machine, &tables)?;
    print!("{}", report::markdown(&machine, &tables));
    eprintln!("suite: wrote {}/report.md, report.json, ratios.svg", out.display());
    Ok(())
}
