//! The suite's quick mode, as CI runs it: every comparison runs and reports a figure for every
//! contestant it promises, beside its reference. It asserts nothing about speed.

use benches::report::{self, Machine};
use benches::{Mode, comparisons};

#[test]
fn quick_suite_runs_every_comparison() {
    let machine = Machine::here(Mode::Quick);
    let mut tables = Vec::new();
    for c in comparisons() {
        let t = c.run(Mode::Quick).unwrap_or_else(|e| panic!("{}: {e:#}", c.name()));
        assert!(!t.is_empty(), "{} reports no table", c.name());
        tables.extend(t);
    }
    for t in &tables {
        assert!(!t.rows.is_empty(), "table {} has no rows", t.id);
        for row in &t.rows {
            // A row without its reference figure is one nobody could measure here (say, two
            // threads on one CPU): then no contestant has a figure either.
            if row.reference_stats().is_none() {
                assert!(
                    row.cells.iter().all(|c| c.stats.is_none()),
                    "{} / {}: figures without the reference",
                    t.id,
                    row.label
                );
            }
            for cell in &row.cells {
                match cell.stats {
                    Some(s) => assert!(
                        s.median > 0.0 && s.median.is_finite(),
                        "{} / {} / {}: {s:?}",
                        t.id,
                        row.label,
                        cell.contestant
                    ),
                    None => assert!(
                        !cell.note.is_empty(),
                        "{} / {} / {}: no figure and no reason",
                        t.id,
                        row.label,
                        cell.contestant
                    ),
                }
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
    report::write(&dir, &machine, &tables).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| xdp_counter | kernel |"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["tables"].as_array().map(Vec::len), Some(tables.len()));
    assert!(std::fs::read_to_string(dir.join("ratios.svg")).unwrap().starts_with("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
}
