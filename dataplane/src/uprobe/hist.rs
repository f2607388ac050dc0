//! Printing tracing maps the way `bpftrace` prints its maps: `count`, `hist` (power-of-two
//! buckets) and `lhist` (linear buckets), one block per group (`@[dp-lab0]:`).
//!
//! The programs keep their maps in the layout `bpftrace` itself uses for these aggregations:
//! - `count`: key = the group (4 or 8 bytes), value = a `u64` count;
//! - `hist` / `lhist`: key = `{ u32 group; u32 bucket; }`, value = a `u64` count. `hist`
//!   buckets: 0 holds the value 0, bucket `k >= 1` holds `[2^(k-1), 2^k)`. `lhist(v, min, max,
//!   step)` buckets: 0 holds `v < min`, bucket `i` in `1..=n` holds `[min + (i-1)*step, min +
//!   i*step)`, bucket `n + 1` holds `v >= max`, with `n = (max - min) / step`.
//!
//! Per-CPU maps are summed over their CPU slots. Groups are printed as interface names when
//! the group is an interface index of this machine (`/sys/class/net`), as numbers otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maps::Map;

/// How a map is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Count,
    Hist,
    Lhist { min: i64, max: i64, step: i64 },
}

/// The width of the bar `bpftrace` draws for the largest bucket.
const BAR: u64 = 52;

fn value_of(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// Counts by (group, bucket), summed over per-CPU slots.
fn collect(map: &Map, grouped: bool) -> BTreeMap<u64, BTreeMap<u64, u64>> {
    let mut out: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    for e in map.entries() {
        let total: u64 = e.values.iter().map(|v| value_of(v)).sum();
        let (group, bucket) = if grouped && e.key.len() >= 8 {
            (value_of(&e.key[..4]), value_of(&e.key[4..8]))
        } else {
            (value_of(&e.key), 0)
        };
        *out.entry(group).or_default().entry(bucket).or_default() += total;
    }
    out
}

/// An interface's name by index, from `/sys/class/net` (the index itself when none has it).
#[must_use]
pub fn group_name(group: u64) -> String {
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.filter_map(Result::ok) {
            let idx = std::fs::read_to_string(e.path().join("ifindex")).ok();
            if idx.and_then(|s| s.trim().parse::<u64>().ok()) == Some(group) {
                return e.file_name().to_string_lossy().into_owned();
            }
        }
    }
    group.to_string()
}

/// `bpftrace`'s number suffixes for hist bucket bounds (powers of 1024).
fn short(n: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut n = n;
    let mut u = 0;
    while n >= 1024 && n.is_multiple_of(1024) && u < UNITS.len() - 1 {
        n /= 1024;
        u += 1;
    }
    format!("{n}{}", UNITS[u])
}

fn bar(count: u64, max: u64) -> String {
    let w = (count * BAR).checked_div(max).unwrap_or(0);
    format!("|{}{}|", "@".repeat(w as usize), " ".repeat((BAR - w) as usize))
}

/// The label of bucket `b` of `kind`.
fn label(kind: Kind, b: u64) -> String {
    match kind {
        Kind::Hist => match b {
            0 => "[0]".to_string(),
            1 => "[1]".to_string(),
            k => format!("[{}, {})", short(1 << (k - 1)), short(1 << k)),
        },
        Kind::Lhist { min, max, step } => {
            let n = ((max - min) / step.max(1)) as u64;
            if b == 0 {
                format!("(..., {min})")
            } else if b > n {
                format!("[{max}, ...)")
            } else {
                let lo = min + (b as i64 - 1) * step;
                format!("[{lo}, {})", lo + step)
            }
        }
        Kind::Count => String::new(),
    }
}

/// `map` printed as `bpftrace` prints `@name` after `kind`.
#[must_use]
pub fn render(name: &str, map: &Map, kind: Kind) -> String {
    let mut s = String::new();
    let groups = collect(map, kind != Kind::Count);
    if kind == Kind::Count {
        for (g, b) in &groups {
            let _ = writeln!(s, "@{name}[{}]: {}", group_name(*g), b.values().sum::<u64>());
        }
        return s;
    }
    for (g, buckets) in &groups {
        let _ = writeln!(s, "@{name}[{}]:", group_name(*g));
        let (Some(first), Some(last)) = (buckets.keys().next(), buckets.keys().next_back()) else { continue };
        let max = buckets.values().copied().max().unwrap_or(0);
        for b in *first..=*last {
            let c = buckets.get(&b).copied().unwrap_or(0);
            let _ = writeln!(s, "{:<16}{:>8} {}", label(kind, b), c, bar(c, max));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bpftraces() {
        let l = Kind::Lhist { min: 0, max: 128, step: 1 };
        assert_eq!(label(l, 0), "(..., 0)");
        assert_eq!(label(l, 1), "[0, 1)");
        assert_eq!(label(l, 128), "[127, 128)");
        assert_eq!(label(l, 129), "[128, ...)");
        assert_eq!(label(Kind::Hist, 0), "[0]");
        assert_eq!(label(Kind::Hist, 3), "[4, 8)");
        assert_eq!(label(Kind::Hist, 11), "[1K, 2K)");
        assert_eq!(bar(26, 52).matches('@').count(), 26);
    }

    #[test]
    fn renders_a_map_by_group() {
        let def = maps::MapDef {
            map_type: maps::map_type::HASH,
            key_size: 8,
            value_size: 8,
            max_entries: 16,
            map_flags: 0,
        };
        let m = Map::new("rx_cpu", def, 1).unwrap();
        let key = |g: u32, b: u32| [g.to_le_bytes(), b.to_le_bytes()].concat();
        m.update_user(&key(999_999, 1), &10u64.to_le_bytes(), 0).unwrap();
        m.update_user(&key(999_999, 3), &5u64.to_le_bytes(), 0).unwrap();
        let out = render("", &m, Kind::Lhist { min: 0, max: 128, step: 1 });
        let want = format!(
            "@[999999]:\n[0, 1)                10 |{}|\n[1, 2)                 0 |{}|\n[2, 3)                 5 |{}{}|\n\n",
            "@".repeat(52),
            " ".repeat(52),
            "@".repeat(26),
            " ".repeat(26)
        );
        assert_eq!(out, want);
    }
}
