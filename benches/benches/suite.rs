//! The whole suite: `cargo bench -p benches --bench suite [-- --quick] [--out DIR] [NAME...]`.
//! Prints the Markdown report and writes `report.md`, `report.json` and `ratios.svg` into
//! `DIR` (default `$CARGO_TARGET_DIR/bench-report`). See the crate docs.

use benches::report::{self, Machine};
use benches::{Mode, comparisons};

/// A module that prints its own tables: `quick` for quick mode.
type Printing = fn(bool) -> anyhow::Result<()>;

fn main() -> anyhow::Result<()> {
    let mut mode = Mode::Full;
    let mut out = report::default_dir();
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--only" => {
                only.push(args.next().ok_or_else(|| anyhow::anyhow!("--only needs a comparison name"))?)
            }
            "--out" => out = args.next().ok_or_else(|| anyhow::anyhow!("--out needs a directory"))?.into(),
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            name if !name.starts_with('-') => only.push(name.to_string()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let all = comparisons();
    // The benches moved from their own targets; until they report tables they print their own.
    let printing: [(&str, Printing); 6] = [
        ("throughput", benches::throughput::main),
        ("dpdk", benches::dpdk::main),
        ("control", benches::control::main),
        ("uprobe", benches::uprobe::main),
        ("pktgen", benches::pktgen::main),
        ("verify", |q| {
            benches::verify::main(q);
            Ok(())
        }),
    ];
    if let Some(bad) = only
        .iter()
        .find(|n| !all.iter().any(|c| c.name() == n.as_str()) && !printing.iter().any(|p| p.0 == n.as_str()))
    {
        let names: Vec<_> = all.iter().map(|c| c.name()).chain(printing.iter().map(|p| p.0)).collect();
        anyhow::bail!("no comparison named {bad} (there are: {})", names.join(", "));
    }
    let machine = Machine::here(mode);
    let mut tables = Vec::new();
    for c in all.iter().filter(|c| only.is_empty() || only.iter().any(|n| n == c.name())) {
        eprintln!("suite: running {}", c.name());
        tables.extend(c.run(mode)?);
    }
    for (name, run) in printing.iter().filter(|p| only.is_empty() || only.iter().any(|n| n == p.0)) {
        eprintln!("suite: running {name}");
        run(mode == Mode::Quick)?;
    }
    report::write(&out, &machine, &tables)?;
    print!("{}", report::markdown(&machine, &tables));
    eprintln!("suite: wrote {}/report.md, report.json, ratios.svg", out.display());
    Ok(())
}
