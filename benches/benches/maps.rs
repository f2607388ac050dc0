//! Map operations from Rust: ns per update / lookup / delete on hash, array, per-CPU hash and
//! per-CPU array (the rows of issue 5's table), and how hash updates scale from one thread to two.
//!
//! Each figure is the median of several rounds of 1000-key loops (the shape of the kernel-side
//! "1000 operations per program run" loops), printed beside the kernel's figure for the same row.
//!
//! The kernel column: the table measured these with `BPF_PROG_TEST_RUN` over programs
//! that loop 1000 map helper calls; the same loops run in ours need the JIT (another engineer's
//! work in xdp-vm). Until it lands, this bench prints those reference figures, marked as such, and
//! measures ours through the `Map` API a JIT trampoline calls (the helper's cost minus the call).
//!
//! `cargo bench -p benches --bench maps` (full), `-- --quick` for a few-second run.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use maps::{BPF_ANY, Map, MapDef, map_type};

const KEYS: u32 = 1000;

/// Per-op ns of the kernel's BPF_PROG_TEST_RUN map-op loops, from issue 5 (same machine class),
/// until the JIT lets this bench measure them side by side.
const KERNEL_REFERENCE: [(&str, &str, f64); 10] = [
    ("hash", "update", 52.0),
    ("hash", "lookup", 14.0),
    ("hash", "delete", 23.0),
    ("array", "update", 11.0),
    ("array", "lookup", 1.1),
    ("percpu hash", "update", 40.0),
    ("percpu hash", "lookup", 12.0),
    ("percpu hash", "delete", 23.0),
    ("percpu array", "update", 9.0),
    ("percpu array", "lookup", 1.9),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per op of `body` (which does `KEYS` ops), median over `rounds` of `reps` repetitions.
fn measure(rounds: usize, reps: u32, mut body: impl FnMut()) -> f64 {
    let samples = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                body();
            }
            t.elapsed().as_nanos() as f64 / f64::from(reps * KEYS)
        })
        .collect();
    median(samples)
}

fn map(map_type: u32, slots: usize) -> Map {
    let def = MapDef { map_type, key_size: 4, value_size: 8, max_entries: KEYS * 4, map_flags: 0 };
    Map::new("bench", def, slots).expect("bench map")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, reps) = if quick { (3, 200) } else { (9, 5000) };
    let keys: Vec<[u8; 4]> = (0..KEYS).map(u32::to_ne_bytes).collect();
    let mut ours = Vec::new();

    for (name, t) in [
        ("hash", map_type::HASH),
        ("array", map_type::ARRAY),
        ("percpu hash", map_type::PERCPU_HASH),
        ("percpu array", map_type::PERCPU_ARRAY),
    ] {
        let m = map(t, 2);
        let is_hash = matches!(t, map_type::HASH | map_type::PERCPU_HASH);
        let value = 1u64.to_ne_bytes();
        for k in &keys {
            m.update(k, &value, BPF_ANY, 0).unwrap();
        }
        let update = measure(rounds, reps, || {
            for k in &keys {
                black_box(m.update(black_box(k), &value, BPF_ANY, 0)).unwrap();
            }
        });
        ours.push((name, "update", update));
        let lookup = measure(rounds, reps, || {
            for k in &keys {
                black_box(m.lookup(black_box(k), 0));
            }
        });
        ours.push((name, "lookup", lookup));
        if is_hash {
            // Deletes of present keys; the re-inserts are timed separately and subtracted.
            let both = measure(rounds, reps, || {
                for k in &keys {
                    black_box(m.delete(black_box(k))).unwrap();
                }
                for k in &keys {
                    m.update(k, &value, BPF_ANY, 0).unwrap();
                }
            });
            let insert = measure(rounds, reps, || {
                for k in &keys {
                    m.update(k, &value, BPF_ANY, 0).unwrap();
                }
            });
            ours.push((name, "delete", (both - insert).max(0.0)));
        }
    }

    println!("map ops from Rust, ns per op (median of {rounds} rounds x {reps} x {KEYS} keys)");
    println!();
    println!("| map | op | ours | kernel (reference*) | speed-up |");
    println!("|---|---|---:|---:|---:|");
    for (name, op, ns) in &ours {
        let kernel = KERNEL_REFERENCE.iter().find(|(n, o, _)| n == name && o == op).map(|r| r.2);
        match kernel {
            Some(k) => println!("| {name} | {op} | {ns:.1} | {k:.1} | {:.1}x |", k / ns),
            None => println!("| {name} | {op} | {ns:.1} | - | - |"),
        }
    }
    println!();
    println!(
        "* kernel: BPF_PROG_TEST_RUN map-op loops from issue 5, not measured in this run: the same loops \
         through our engine need the JIT (xdp-vm), which is not wired to these maps yet."
    );

    // Scaling: each thread updates its own 1000 keys of one shared hash map.
    let shared = map(map_type::HASH, 2);
    let threads_rate = |threads: usize| -> f64 {
        let barrier = Barrier::new(threads);
        let ops_per_thread = u64::from(reps) * u64::from(KEYS);
        let samples: Vec<f64> = (0..rounds)
            .map(|_| {
                let elapsed: Vec<f64> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let (shared, barrier) = (&shared, &barrier);
                            s.spawn(move || {
                                let keys: Vec<[u8; 4]> =
                                    (0..KEYS).map(|i| (t as u32 * 100_000 + i).to_ne_bytes()).collect();
                                let value = 7u64.to_ne_bytes();
                                barrier.wait();
                                let start = Instant::now();
                                for _ in 0..reps {
                                    for k in &keys {
                                        black_box(shared.update(k, &value, BPF_ANY, t)).unwrap();
                                    }
                                }
                                start.elapsed().as_secs_f64()
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let slowest = elapsed.into_iter().fold(0.0, f64::max);
                (ops_per_thread * threads as u64) as f64 / slowest
            })
            .collect();
        median(samples)
    };
    let one = threads_rate(1);
    let two = threads_rate(2);
    println!();
    println!("hash update scaling (own keys per thread, one shared map):");
    println!("  1 thread : {:.1} M updates/s", one / 1e6);
    println!("  2 threads: {:.1} M updates/s ({:.2}x; goal >= 1.6x)", two / 1e6, two / one);
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("  (only one CPU available: scaling is not meaningful here)");
    }
}
