//! Several threads on one map at once: no lost updates where the semantics promise none, no false
//! misses from the lock-free lookups, no crashes, and a consistent map afterwards.

use std::collections::BTreeSet;
use std::sync::Barrier;

use maps::{BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map, MapDef, OpError, map_type};

const THREADS: usize = 4;
const OWN_KEYS: u32 = 16;
// Miri (data-race detector, weak memory emulation) runs a short version.
const ROUNDS: u32 = if cfg!(miri) { 64 } else { 16_000 };

fn counter(map: &Map, key: u32) -> u64 {
    u64::from_ne_bytes(map.lookup_user(&key.to_ne_bytes()).unwrap().try_into().unwrap())
}

/// A tiny deterministic generator, so each thread churns differently but reproducibly.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn hash_counts_are_exact_under_churn() {
    // Small on purpose: few buckets, so owned and churned keys share chains.
    let def = MapDef { map_type: map_type::HASH, key_size: 4, value_size: 8, max_entries: 96, map_flags: 0 };
    let map = Map::new("counts", def, THREADS).unwrap();
    let barrier = Barrier::new(THREADS);
    let finals: Vec<Vec<u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (map, barrier) = (&map, &barrier);
                s.spawn(move || {
                    let own: Vec<u32> = (0..OWN_KEYS).map(|i| t as u32 * 1000 + i).collect();
                    let mut counts = vec![0u64; own.len()];
                    for &k in &own {
                        map.update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), BPF_NOEXIST, t).unwrap();
                    }
                    let mut rng = 0x9e37_79b9 ^ (t as u64 + 1);
                    barrier.wait();
                    for round in 0..ROUNDS {
                        let i = (round % OWN_KEYS) as usize;
                        let key = own[i].to_ne_bytes();
                        // The owner's key is present throughout: a lock-free lookup must find it,
                        // whatever the other threads do to their keys in the same buckets.
                        assert!(map.lookup(&key, t).is_some(), "thread {t} lost key {}", own[i]);
                        assert_eq!(counter(map, own[i]), counts[i]);
                        counts[i] += 1;
                        let flags = if round % 2 == 0 { BPF_ANY } else { BPF_EXIST };
                        map.update(&key, &counts[i].to_ne_bytes(), flags, t).unwrap();
                        if round % 7 == 0 {
                            map.delete(&key).unwrap();
                            assert!(map.lookup(&key, t).is_none());
                            assert_eq!(map.delete(&key), Err(OpError::NotFound));
                            map.update(&key, &counts[i].to_ne_bytes(), BPF_NOEXIST, t).unwrap();
                        }
                        // Churn on keys every thread fights over; any kernel result is fine.
                        let shared = (5000 + xorshift(&mut rng) % 24) as u32;
                        let shared = shared.to_ne_bytes();
                        match xorshift(&mut rng) % 4 {
                            0 => drop(map.delete(&shared)),
                            1 => drop(map.lookup_user(&shared)),
                            2 => drop(map.update_user(&shared, &[1; 8], BPF_ANY)),
                            _ => drop(map.update(&shared, &[2; 8], BPF_ANY, t)),
                        }
                    }
                    counts
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (t, counts) in finals.iter().enumerate() {
        for (i, &count) in counts.iter().enumerate() {
            assert_eq!(count, u64::from(ROUNDS / OWN_KEYS));
            assert_eq!(counter(&map, t as u32 * 1000 + i as u32), count, "thread {t}, key {i}");
        }
    }
    // The map is still consistent: entries and a next-key walk agree, no duplicates.
    let entries: Vec<_> = map.entries().into_iter().map(|e| e.key).collect();
    let unique: BTreeSet<_> = entries.iter().cloned().collect();
    assert_eq!(unique.len(), entries.len());
    assert!(entries.len() <= 96);
    let mut walked = BTreeSet::new();
    let mut cur = map.next_key(None);
    while let Ok(k) = cur {
        assert!(walked.insert(k.clone()));
        cur = map.next_key(Some(&k));
    }
    assert_eq!(walked, unique);
}

#[test]
fn percpu_slots_count_exactly() {
    const KEYS: u32 = 8;
    for map_type in [map_type::PERCPU_HASH, map_type::PERCPU_ARRAY] {
        let def = MapDef { map_type, key_size: 4, value_size: 8, max_entries: KEYS, map_flags: 0 };
        let map = Map::new("pcpu", def, THREADS).unwrap();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let map = &map;
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        let key = (round % KEYS).to_ne_bytes();
                        // Read this slot's count back; the first insert of a per-CPU hash key
                        // (by any thread) zeroes the other slots, which hold nothing yet.
                        let count = map
                            .lookup_user(&key)
                            .map_or(0, |all| u64::from_ne_bytes(all[t * 8..t * 8 + 8].try_into().unwrap()));
                        map.update(&key, &(count + 1).to_ne_bytes(), BPF_ANY, t).unwrap();
                    }
                });
            }
        });
        for key in 0..KEYS {
            let all = map.lookup_user(&key.to_ne_bytes()).unwrap();
            for t in 0..THREADS {
                let count = u64::from_ne_bytes(all[t * 8..t * 8 + 8].try_into().unwrap());
                assert_eq!(count, u64::from(ROUNDS / KEYS), "type {map_type}, key {key}, slot {t}");
            }
        }
    }
}
