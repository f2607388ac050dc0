//! The suite's quick mode, as CI runs it: every comparison runs and reports a figure for every
//! contestant it promises, beside its reference (or, for all of a row's contestants, why not).
//! It asserts nothing about speed. One test per comparison, so a failure names its module.

use benches::report::{self, Machine};
use benches::{Mode, Table, comparisons};

/// The tests below, one per comparison: a comparison added to the suite needs its line here.
const TESTED: [&str; 12] = [
    "replay",
    "mapops",
    "embed",
    "helpers",
    "verify",
    "uprobe",
    "throughput",
    "traced",
    "scaling",
    "dpdk",
    "control",
    "pktgen",
];

fn quick(name: &str) -> Vec<Table> {
    let all = comparisons();
    let c = all.iter().find(|c| c.name() == name).unwrap_or_else(|| panic!("no comparison {name}"));
    let tables = c.run(Mode::Quick).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(!tables.is_empty(), "{name} reports no table");
    for t in &tables {
        assert!(!t.rows.is_empty(), "table {} has no rows", t.id);
        for row in &t.rows {
            assert!(
                row.cells.iter().any(|c| c.contestant == row.reference),
                "{} / {}: no cell for the reference {}",
                t.id,
                row.label,
                row.reference
            );
            // A row without its reference figure: the reference's cell says why (checked below
            // for every cell without a figure) — no root, DPDK not built, or the kernel refusing
            // a helper; what ours measured still shows, without a ratio.
            for cell in &row.cells {
                match cell.stats {
                    // "ns added" figures may be noise around zero in quick mode: finite is all.
                    Some(s) => {
                        assert!(s.median.is_finite(), "{} / {} / {}: {s:?}", t.id, row.label, cell.contestant)
                    }
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
    let machine = Machine::here(Mode::Quick);
    let dir = std::env::temp_dir().join(format!("bench-report-{name}-{}", std::process::id()));
    report::write(&dir, &machine, &tables).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for t in &tables {
        assert!(md.contains(&format!("#### {}", t.title)), "{md}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["tables"].as_array().map(Vec::len), Some(tables.len()));
    assert!(std::fs::read_to_string(dir.join("ratios.svg")).unwrap().starts_with("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
    tables
}

#[test]
fn every_comparison_has_its_test() {
    let names: Vec<_> = comparisons().iter().map(|c| c.name()).collect();
    assert_eq!(names, TESTED);
}

#[test]
fn replay() {
    let md = report::markdown(&Machine::here(Mode::Quick), &quick("replay"));
    assert!(md.contains("| xdp_counter | kernel |"), "{md}");
}

#[test]
fn mapops() {
    quick("mapops");
}

#[test]
fn embed() {
    quick("embed");
}

#[test]
fn helpers() {
    quick("helpers");
}

#[test]
fn verify() {
    quick("verify");
}

#[test]
fn uprobe() {
    quick("uprobe");
}

#[test]
fn throughput() {
    quick("throughput");
}

#[test]
fn traced() {
    quick("traced");
}

#[test]
fn scaling() {
    quick("scaling");
}

#[test]
fn dpdk() {
    quick("dpdk");
}

#[test]
fn control() {
    quick("control");
}

#[test]
fn pktgen() {
    quick("pktgen");
}
