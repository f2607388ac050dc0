//! The suite's outputs: a Markdown report (the README's tables), a JSON file of every figure and
//! an SVG chart of the ratios against the reference contestants.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{Mode, Table};

/// The machine and the run, printed above the tables.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    pub mode: String,
}

impl Machine {
    /// This machine, now.
    #[must_use]
    pub fn here(mode: Mode) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown CPU")
            .to_string();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
        let cpus = online_cpus();
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { cpu, cpus, kernel, date: utc(secs), mode: format!("{mode:?}").to_lowercase() }
    }
}

/// CPUs online (`processor` lines of `/proc/cpuinfo`; whatever this thread's affinity is).
#[must_use]
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map_or(1, |s| s.lines().filter(|l| l.starts_with("processor")).count().max(1))
}

/// `YYYY-MM-DD HH:MM` for Unix time `secs` (UTC).
#[must_use]
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

fn figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown report: the machine, then each table with median (min..max) and the ratio to
/// the row's reference.
#[must_use]
pub fn markdown(machine: &Machine, tables: &[Table]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured {} UTC on {} ({} CPUs), Linux {}, {} mode. Figures: median of the rounds (min..max); \
         ratio: how many times better than the row's reference, from the same run.\n",
        machine.date, machine.cpu, machine.cpus, machine.kernel, machine.mode
    );
    for t in tables {
        let _ = writeln!(out, "#### {}\n\n{}\n", t.title, t.method);
        let _ = writeln!(out, "| {} | contestant | {} | vs reference |", t.row_header, t.unit);
        let _ = writeln!(out, "|---|---|---|---|");
        for row in &t.rows {
            for cell in &row.cells {
                let value = match cell.stats {
                    Some(s) => format!("{} ({}..{})", figure(s.median), figure(s.min), figure(s.max)),
                    None => "—".to_string(),
                };
                let value = if cell.note.is_empty() { value } else { format!("{value} {}", cell.note) };
                let ratio = if cell.contestant == row.reference {
                    "reference".to_string()
                } else {
                    row.ratio(cell, t.better).map_or_else(|| "—".into(), |r| format!("{r:.2}x"))
                };
                let _ = writeln!(out, "| {} | {} | {value} | {ratio} |", row.label, cell.contestant);
            }
        }
        let _ = writeln!(out);
    }
    out
}

/// Every figure, with the machine, as one JSON document: the tables as they are (every round's
/// sample, median, min, max), and in each cell the row's reference contestant, the reference's
/// median and this cell's ratio to it (how many times better; `null` where either is missing).
///
/// # Errors
/// Serialization errors (none for these types in practice).
pub fn json(machine: &Machine, tables: &[Table]) -> serde_json::Result<String> {
    let mut doc = serde_json::json!({ "machine": machine, "tables": tables });
    for (t, jt) in tables.iter().zip(doc["tables"].as_array_mut().into_iter().flatten()) {
        for (row, jr) in t.rows.iter().zip(jt["rows"].as_array_mut().into_iter().flatten()) {
            for (cell, jc) in row.cells.iter().zip(jr["cells"].as_array_mut().into_iter().flatten()) {
                jc["reference"] = row.reference.clone().into();
                jc["reference_median"] = row.reference_stats().map(|s| s.median).into();
                jc["ratio"] = row.ratio(cell, t.better).into();
            }
        }
    }
    serde_json::to_string_pretty(&doc)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A horizontal bar chart of every ratio against its row's reference, on a log scale centred on
/// 1x (bars right of the line: better than the reference; left: worse).
#[must_use]
pub fn svg(machine: &Machine, tables: &[Table]) -> String {
    let mut bars = Vec::new();
    for t in tables {
        for row in &t.rows {
            for cell in row.cells.iter().filter(|c| c.contestant != row.reference) {
                if let Some(r) = row.ratio(cell, t.better) {
                    let mut label = format!("{}: {} — {}", t.id, row.label, cell.contestant);
                    if label.chars().count() > 84 {
                        label = label.chars().take(83).collect::<String>() + "…";
                    }
                    bars.push((label, r));
                }
            }
        }
    }
    let (label_w, plot_w, bar_h, top) = (520.0, 420.0, 18.0, 48.0);
    // Whole decades around every ratio, at least 0.01x..100x.
    let (lo, hi) = bars
        .iter()
        .fold((-2.0f64, 2.0f64), |(lo, hi), (_, r)| (lo.min(r.log10().floor()), hi.max(r.log10().ceil())));
    let x = |r: f64| label_w + (r.log10().clamp(lo, hi) - lo) / (hi - lo) * plot_w;
    let height = top + bars.len() as f64 * bar_h + 30.0;
    let width = label_w + plot_w + 70.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="8" y="16" font-size="13">Speed relative to the reference (kernel or peer), same run, log scale; {} — {}, Linux {}</text>"#,
        escape(&machine.date),
        escape(&machine.cpu),
        escape(&machine.kernel)
    );
    let decades = (lo as i32..=hi as i32).map(|e| 10f64.powi(e));
    for tick in decades.chain([0.5, 2.0]) {
        let tx = x(tick);
        let stroke = if tick == 1.0 { "black" } else { "#ccc" };
        let _ = writeln!(
            s,
            r#"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="{stroke}"/><text x="{tx:.1}" y="{}" text-anchor="middle">{tick}x</text>"#,
            top - 8.0,
            height - 24.0,
            top - 12.0
        );
    }
    for (i, (label, r)) in bars.iter().enumerate() {
        let y = top + i as f64 * bar_h;
        let (x0, x1) = (x(1.0), x(*r));
        let (left, w) = if x1 >= x0 { (x0, x1 - x0) } else { (x1, x0 - x1) };
        let color = if *r >= 1.0 { "#2a7ab0" } else { "#c0504d" };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}">{r:.2}x</text>"#,
            label_w - 6.0,
            y + 12.0,
            escape(label),
            y + 3.0,
            w.max(1.0),
            bar_h - 6.0,
            x1.max(x0) + 4.0,
            y + 12.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// The README markers between which [`splice`] puts the report.
pub const MARKERS: (&str, &str) = ("<!-- suite tables -->", "<!-- /suite tables -->");

/// `readme` with the text between [`MARKERS`] replaced by `report` (so the README's tables are
/// the report, byte for byte); `None` when the markers are missing or out of order.
#[must_use]
pub fn splice(readme: &str, report: &str) -> Option<String> {
    let start = readme.find(MARKERS.0)? + MARKERS.0.len();
    let end = start + readme[start..].find(MARKERS.1)?;
    Some(format!("{}\n{}\n{}", &readme[..start], report.trim_end(), &readme[end..]))
}

/// Writes `report.md`, `report.json` and `ratios.svg` into `dir`.
///
/// # Errors
/// I/O errors.
pub fn write(dir: &std::path::Path, machine: &Machine, tables: &[Table]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(machine, tables))?;
    std::fs::write(dir.join("report.json"), json(machine, tables)?)?;
    std::fs::write(dir.join("ratios.svg"), svg(machine, tables))?;
    Ok(())
}

/// Where reports go by default: `$CARGO_TARGET_DIR/bench-report`, else `target/bench-report`.
#[must_use]
pub fn default_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            std::path::PathBuf::from,
        )
        .join("bench-report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Better, Cell, Row};

    #[test]
    fn splices_between_the_markers() {
        let readme = format!("a\n{}\nold\n{}\nb\n", MARKERS.0, MARKERS.1);
        assert_eq!(splice(&readme, "new\n").unwrap(), format!("a\n{}\nnew\n{}\nb\n", MARKERS.0, MARKERS.1));
        assert!(splice("no markers", "x").is_none());
        assert!(splice(&format!("{}{}", MARKERS.1, MARKERS.0), "x").is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400 + 3_660), "2000-02-29 01:01");
    }

    #[test]
    fn renders_every_cell() {
        let t = Table {
            id: "t".into(),
            title: "T".into(),
            method: "m".into(),
            row_header: "program".into(),
            unit: "ns/run".into(),
            better: Better::Lower,
            rows: vec![Row {
                label: "p<1>".into(),
                reference: "kernel".into(),
                cells: vec![
                    Cell::new("kernel", vec![20.0, 30.0, 25.0]),
                    Cell::new("ours", vec![10.0]),
                    Cell::missing("rbpf", "(no atomics)"),
                ],
            }],
        };
        let m = Machine::here(Mode::Quick);
        let md = markdown(&m, std::slice::from_ref(&t));
        assert!(md.contains("| p<1> | kernel | 25.0 (20.0..30.0) | reference |"), "{md}");
        assert!(md.contains("| p<1> | ours | 10.0 (10.0..10.0) | 2.50x |"), "{md}");
        assert!(md.contains("| p<1> | rbpf | — (no atomics) | — |"), "{md}");
        let svg = svg(&m, std::slice::from_ref(&t));
        assert!(svg.contains("p&lt;1&gt;") && svg.contains("2.50x"), "{svg}");
        let j: serde_json::Value = serde_json::from_str(&json(&m, &[t]).unwrap()).unwrap();
        let ours = &j["tables"][0]["rows"][0]["cells"][1];
        assert_eq!(ours["stats"]["median"], 10.0);
        assert_eq!(
            (ours["reference"].as_str(), ours["reference_median"].as_f64()),
            (Some("kernel"), Some(25.0))
        );
        assert_eq!(ours["ratio"], 2.5);
        assert!(j["tables"][0]["rows"][0]["cells"][2]["ratio"].is_null());
    }
}
