//! How evenly a hash map's buckets fill: the multiply-shift hash (`HashWalk::hash`, the bucket
//! from its top bits) with each map's own random multiplier, for keys that count up (in any
//! byte of a word) and for random keys, against what a uniformly random hash gives.

use maps::{HashWalk, Map, MapDef, map_type};

/// Keys per set, and buckets (a map of 4096 entries has 4096).
const N: u64 = 4096;

/// `(pairs of keys sharing a bucket, the fullest bucket)` for `keys` in `w`'s buckets.
fn occupancy(w: &HashWalk, keys: &[u64]) -> (u64, u32) {
    let mut load = vec![0u32; w.mask as usize + 1];
    for &k in keys {
        load[HashWalk::bucket(w.mask, HashWalk::hash(w.hash_init, k))] += 1;
    }
    let pairs = load.iter().map(|&l| u64::from(l) * u64::from(l.saturating_sub(1)) / 2).sum();
    (pairs, load.iter().copied().max().unwrap_or(0))
}

fn walk(name: &str, map_flags: u32) -> HashWalk {
    let def =
        MapDef { map_type: map_type::HASH, key_size: 8, value_size: 8, max_entries: N as u32, map_flags };
    let w = Map::new(name, def, 1).unwrap().hash_walk().expect("a word-keyed hash map");
    assert_eq!(u64::from(w.mask) + 1, N);
    w
}

#[test]
fn buckets_fill_evenly_for_counting_and_random_keys() {
    // Expected pairs sharing a bucket for N uniformly hashed keys in N buckets, and its
    // standard deviation (about its square root).
    let expected = (N * (N - 1) / 2 / N) as f64;
    let sd = expected.sqrt();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut random = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let random64: Vec<u64> = (0..N).map(|_| random()).collect();
    let random32: Vec<u64> = (0..N).map(|_| random() >> 32).collect();
    // A counter in each byte of a word; the last octet of 10.0.0.x read little-endian.
    let mut counting: Vec<(String, Vec<u64>)> =
        (0..=40).step_by(8).map(|s| (format!("i << {s}"), (0..N).map(|i| i << s).collect())).collect();
    counting.push(("10.0.0.x".into(), (0..N).map(|i| (i << 24) | 10).collect()));

    // Fresh maps, each with its own random multiplier, and the fixed one of BPF_F_ZERO_SEED.
    let walks: Vec<HashWalk> =
        (0..24).map(|i| walk(&format!("m{i}"), 0)).chain([walk("zero", 1 << 6)]).collect();
    for w in &walks {
        assert_eq!(w.hash_init & 1, 1, "an odd multiplier");
        for (name, keys) in [("random u64", &random64), ("random u32", &random32)] {
            let (pairs, max) = occupancy(w, keys);
            assert!((pairs as f64 - expected).abs() < 8.0 * sd, "{name}: {pairs} pairs, expected {expected}");
            assert!(max <= 12, "{name}: a bucket of {max}");
        }
        for (name, keys) in &counting {
            // Over 2000 multipliers the fullest bucket held 6 of these (random keys: 10).
            let (pairs, max) = occupancy(w, keys);
            assert!(max <= 8, "{name}: a bucket of {max}, multiplier {:#x}", w.hash_init);
            assert!((pairs as f64) < 4.0 * expected, "{name}: {pairs} pairs");
        }
    }
    // On average the counting keys spread better than random ones.
    for (name, keys) in &counting {
        let mean = walks.iter().map(|w| occupancy(w, keys).0 as f64).sum::<f64>() / walks.len() as f64;
        assert!(mean < expected, "{name}: {mean} pairs on average, random keys {expected}");
    }
}

/// Each map draws its own multiplier, so the same keys collide differently in two maps: the
/// hash is seeded, not a fixed function a sender could search for collisions offline.
#[test]
fn every_map_has_its_own_multiplier() {
    let a = walk("a", 0);
    let b = walk("b", 0);
    assert_ne!(a.hash_init, b.hash_init);
    let keys: Vec<u64> = (0..N).collect();
    let bucket = |w: &HashWalk, k: u64| HashWalk::bucket(w.mask, HashWalk::hash(w.hash_init, k));
    let same = keys.iter().filter(|&&k| bucket(&a, k) == bucket(&b, k)).count();
    assert!(same < 64, "{same} of {N} keys in the same bucket of both maps");
    // BPF_F_ZERO_SEED: the same multiplier every time, as the kernel's zero seed.
    assert_eq!(walk("z1", 1 << 6).hash_init, walk("z2", 1 << 6).hash_init);
    // The draw is a function of the seed.
    assert_eq!(HashWalk::multiplier(7), HashWalk::multiplier(7));
    assert_ne!(HashWalk::multiplier(7), HashWalk::multiplier(8));
}
