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

/// Updates of existing keys run without the bucket lock in plain maps with one-word values and
/// in per-CPU maps; deletes and reinserts of the same keys race with them. A lock-free update
/// that found its element just before a delete must never write into that element once it is
/// reused for another key: every value here names its key, and a value under the wrong key is
/// exactly that. Values are checked through the locked userspace copy, which is exact.
#[test]
fn lockless_updates_never_land_in_another_keys_element() {
    const KEYS: u64 = 8;
    for (map_type, value_size) in
        [(map_type::HASH, 8), (map_type::PERCPU_HASH, 8), (map_type::PERCPU_HASH, 24)]
    {
        // Fewer entries than keys: inserts keep finding the map full, so deleted elements are
        // reclaimed (after a grace period) and reused as soon as that is allowed.
        let def = MapDef { map_type, key_size: 8, value_size, max_entries: 6, map_flags: 0 };
        let map = Map::new("reuse", def, THREADS).unwrap();
        let slots = map.slots();
        let vs = value_size as usize;
        let check = |key: u64| {
            if let Ok(all) = map.lookup_user(&key.to_ne_bytes()) {
                assert_eq!(all.len(), vs * slots);
                for (slot, v) in all.chunks_exact(vs).enumerate() {
                    let words: Vec<u64> =
                        v.chunks_exact(8).map(|w| u64::from_ne_bytes(w.try_into().unwrap())).collect();
                    // Each word is this key's (or zero: a per-CPU slot nobody wrote since the
                    // element was inserted). A value of several words may mix writes of this key
                    // word by word: the locked copy here races with a program's lock-free write
                    // of its slot (as a userspace read races with a program writing through its
                    // lookup pointer in the kernel), and a userspace update of every slot with it.
                    for w in words {
                        assert!(
                            w == 0 || w >> 32 == key,
                            "type {map_type}: key {key}, slot {slot} holds another key's value {w:#x}"
                        );
                    }
                }
            }
        };
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (map, check) = (&map, &check);
                s.spawn(move || {
                    let mut rng = 0xdead_beef ^ (t as u64 + 1);
                    for round in 0..ROUNDS {
                        let key = xorshift(&mut rng) % KEYS;
                        let tag = key << 32 | (t as u64) << 24 | u64::from(round & 0xff_ffff);
                        let value: Vec<u8> = (0..vs / 8).flat_map(|_| tag.to_ne_bytes()).collect();
                        let k = key.to_ne_bytes();
                        match xorshift(&mut rng) % 6 {
                            0 | 1 => drop(map.update(&k, &value, BPF_ANY, t)),
                            2 => drop(map.update(&k, &value, BPF_EXIST, t)),
                            3 => drop(map.delete_from(&k, t)),
                            4 => drop(map.update_user(&k, &value.repeat(slots), BPF_ANY)),
                            _ => drop(map.delete(&k)),
                        }
                        check(xorshift(&mut rng) % KEYS);
                    }
                });
            }
        });
        for key in 0..KEYS {
            check(key);
        }
        assert!(map.entries().len() <= 6);
    }
}

#[test]
fn lru_counts_are_exact_without_pressure() {
    // Room for every key plus each thread's fresh element: nothing is evicted, so an LRU map must
    // keep counts as exactly as a hash map.
    let def =
        MapDef { map_type: map_type::LRU_HASH, key_size: 4, value_size: 8, max_entries: 128, map_flags: 0 };
    let map = Map::new("lru", def, THREADS).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let map = &map;
            s.spawn(move || {
                let own: Vec<u32> = (0..OWN_KEYS).map(|i| t as u32 * 1000 + i).collect();
                let mut counts = vec![0u64; own.len()];
                for round in 0..ROUNDS {
                    let i = (round % OWN_KEYS) as usize;
                    let key = own[i].to_ne_bytes();
                    if round >= OWN_KEYS {
                        assert!(map.lookup(&key, t).is_some(), "thread {t} lost key {}", own[i]);
                        assert_eq!(counter(map, own[i]), counts[i]);
                    }
                    counts[i] += 1;
                    map.update(&key, &counts[i].to_ne_bytes(), BPF_ANY, t).unwrap();
                    if round % 5 == 0 {
                        let shared = (5000 + round % 24).to_ne_bytes();
                        let _ = map.update(&shared, &[1; 8], BPF_ANY, t);
                        let _ = map.delete(&shared);
                    }
                }
            });
        }
    });
    assert!(map.entries().len() <= 128);
}

#[test]
fn lru_under_pressure_never_shows_a_foreign_value() {
    // A tiny LRU map and many keys: evictions all the time. Each thread writes only its own keys,
    // with values naming the thread, so whatever a lookup finds must be that thread's last write
    // or nothing.
    let def =
        MapDef { map_type: map_type::LRU_HASH, key_size: 4, value_size: 8, max_entries: 8, map_flags: 0 };
    let map = Map::new("lru", def, THREADS).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let map = &map;
            s.spawn(move || {
                let mut rng = 0x1234_5678 ^ (t as u64 + 1);
                let mut last = [0u64; 8];
                for round in 0..ROUNDS / 4 {
                    let i = (xorshift(&mut rng) % 8) as usize;
                    let key = (t as u32 * 100 + i as u32).to_ne_bytes();
                    let value = ((t as u64) << 32) | (u64::from(round) + 1);
                    map.update(&key, &value.to_ne_bytes(), BPF_ANY, t).unwrap();
                    last[i] = value;
                    let j = (xorshift(&mut rng) % 8) as usize;
                    let probe = (t as u32 * 100 + j as u32).to_ne_bytes();
                    if let Ok(v) = map.lookup_user(&probe) {
                        assert_eq!(u64::from_ne_bytes(v.try_into().unwrap()), last[j], "thread {t} key {j}");
                    }
                    let _ = map.lookup(&probe, t);
                }
            });
        }
    });
    assert!(map.entries().len() <= 8);
}

#[test]
fn lpm_lookups_never_miss_a_covering_prefix() {
    let def =
        MapDef { map_type: map_type::LPM_TRIE, key_size: 8, value_size: 8, max_entries: 64, map_flags: 1 };
    let map = Map::new("lpm", def, 1).unwrap();
    let key = |len: u32, ip: [u8; 4]| [&len.to_ne_bytes()[..], &ip].concat();
    map.update(&key(8, [10, 0, 0, 0]), &8u64.to_ne_bytes(), BPF_ANY, 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..2u8 {
            let (map, stop) = (&map, &stop);
            s.spawn(move || {
                let mut rng = 77 + u64::from(w);
                for _ in 0..ROUNDS / 2 {
                    let r = xorshift(&mut rng);
                    let len = 9 + (r % 24) as u32;
                    let ip = [10, (r >> 8) as u8 & 3, (r >> 16) as u8, w];
                    if r.is_multiple_of(3) {
                        let _ = map.delete(&key(len, ip));
                    } else {
                        let _ = map.update(&key(len, ip), &u64::from(len).to_ne_bytes(), BPF_ANY, 0);
                    }
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
        for r in 0..2u8 {
            let (map, stop) = (&map, &stop);
            s.spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 16 {
                    n += 1;
                    let ip = [10, n as u8 & 3, (n >> 2) as u8, r];
                    let v = map.lookup_user(&key(32, ip)).expect("10.0.0.0/8 covers every address");
                    let v = u64::from_ne_bytes(v.try_into().unwrap());
                    assert!((8..=32).contains(&v), "value {v}");
                    assert!(map.lookup(&key(32, ip), 0).is_some(), "lock-free lookup missed /8");
                }
            });
        }
    });
}

#[test]
fn ringbuf_producers_and_a_consumer() {
    const PRODUCERS: usize = 3;
    let per = if cfg!(miri) { 40 } else { 20_000u32 };
    let def =
        MapDef { map_type: map_type::RINGBUF, key_size: 0, value_size: 0, max_entries: 4096, map_flags: 0 };
    let map = Map::new("rb", def, 1).unwrap();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for p in 0..PRODUCERS {
            let (map, done) = (&map, &done);
            s.spawn(move || {
                for seq in 0..per {
                    let mut rec = [0u8; 12];
                    rec[..4].copy_from_slice(&(p as u32).to_ne_bytes());
                    rec[4..8].copy_from_slice(&seq.to_ne_bytes());
                    let len = 8 + (seq as usize % 5);
                    if seq % 2 == 0 {
                        while map.ringbuf_output(&rec[..len], 0) == Err(OpError::Again) {
                            std::thread::yield_now();
                        }
                    } else {
                        let ptr = loop {
                            if let Some(ptr) = map.ringbuf_reserve(len as u64, 0) {
                                break ptr;
                            }
                            std::thread::yield_now();
                        };
                        // Discard every fourth record instead of filling it in.
                        if seq % 4 == 1 {
                            map.ringbuf_discard(ptr, 0).unwrap();
                            continue;
                        }
                        // Fill the reservation through safe code: output a copy elsewhere is not
                        // the point; write via the map's own byte copy of a submitted record.
                        fill(ptr, &rec[..len]);
                        map.ringbuf_submit(ptr, 0).unwrap();
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
            });
        }
        let map = &map;
        let done = &done;
        s.spawn(move || {
            let mut next = [0u32; PRODUCERS];
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire) == PRODUCERS;
                map.ringbuf_consume(|r| {
                    let p = u32::from_ne_bytes(r[..4].try_into().unwrap()) as usize;
                    let seq = u32::from_ne_bytes(r[4..8].try_into().unwrap());
                    assert_eq!(r.len(), 8 + (seq as usize % 5));
                    // Each producer's records arrive in order; only discarded ones are missing.
                    while next[p] % 4 == 1 && next[p] < seq {
                        next[p] += 1;
                    }
                    assert_eq!(seq, next[p], "producer {p}");
                    next[p] += 1;
                });
                if finished && map.ringbuf_status().unwrap().0 == 0 {
                    break;
                }
            }
            for n in next {
                assert!(n + 2 >= per, "records lost: {n} of {per}");
            }
        });
    });
}

/// Writes `data` through a pointer `ringbuf_reserve` returned.
#[expect(unsafe_code, reason = "programs write their ring buffer records through the reserved pointer")]
fn fill(ptr: std::ptr::NonNull<u8>, data: &[u8]) {
    // SAFETY: `ptr` is a live reservation of at least `data.len()` bytes that only this thread
    // writes until it submits; the map outlives the call.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), data.len()) };
}

#[test]
fn queue_values_are_popped_exactly_once() {
    let def = MapDef { map_type: map_type::QUEUE, key_size: 0, value_size: 4, max_entries: 16, map_flags: 0 };
    let map = Map::new("q", def, 1).unwrap();
    let per = ROUNDS / 4;
    let popped: Vec<Vec<u32>> = std::thread::scope(|s| {
        for p in 0..2u32 {
            let map = &map;
            s.spawn(move || {
                for i in 0..per {
                    while map.push(&(p << 24 | i).to_ne_bytes(), BPF_ANY) == Err(OpError::TooBig) {
                        std::thread::yield_now();
                    }
                }
            });
        }
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let map = &map;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut idle = 0;
                    while idle < if cfg!(miri) { 2_000 } else { 100_000 } && got.len() < 2 * per as usize {
                        let mut out = [0u8; 4];
                        if map.pop(&mut out).is_ok() {
                            got.push(u32::from_ne_bytes(out));
                            idle = 0;
                        } else {
                            idle += 1;
                            std::thread::yield_now();
                        }
                    }
                    got
                })
            })
            .collect();
        consumers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut all: Vec<u32> = popped.concat();
    let mut rest = [0u8; 4];
    while map.pop(&mut rest).is_ok() {
        all.push(u32::from_ne_bytes(rest));
    }
    all.sort_unstable();
    let want: Vec<u32> = {
        let mut w: Vec<u32> = (0..2u32).flat_map(|p| (0..per).map(move |i| p << 24 | i)).collect();
        w.sort_unstable();
        w
    };
    assert_eq!(all, want);
}

/// Peeks take no lock (a seqlock over the ring): while one thread pushes with `BPF_EXIST`
/// (overwriting the oldest value of a full map) and another pops, a peeking thread sees only
/// whole values that were pushed — every value is a counter (from 1) followed by its complement,
/// across two words, so a peek that mixed two values or read a slot mid-write fails the check.
/// The pusher goes on until the peeker has seen enough values (or a time limit), so a loaded
/// machine that runs the threads one after the other still tests something.
#[test]
fn lock_free_peeks_see_only_whole_pushed_values() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    for map_type in [map_type::QUEUE, map_type::STACK] {
        let def = MapDef { map_type, key_size: 0, value_size: 16, max_entries: 3, map_flags: 0 };
        let map = Map::new("qs", def, 1).unwrap();
        let (min_pushes, want_peeks): (u64, u64) = if cfg!(miri) { (200, 1) } else { (200_000, 10_000) };
        let value = |i: u64| {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&i.to_ne_bytes());
            v[8..].copy_from_slice(&(!i).to_ne_bytes());
            v
        };
        let done = AtomicBool::new(false);
        let peeked = AtomicU64::new(0);
        let started = std::time::Instant::now();
        std::thread::scope(|s| {
            let (map, done, peeked) = (&map, &done, &peeked);
            s.spawn(move || {
                let mut i = 1;
                while i <= min_pushes
                    || (peeked.load(Ordering::Relaxed) < want_peeks && started.elapsed().as_secs() < 20)
                {
                    map.push(&value(i), BPF_EXIST).unwrap();
                    i += 1;
                }
                done.store(true, Ordering::Release);
            });
            s.spawn(move || {
                let mut out = [0u8; 16];
                while !done.load(Ordering::Acquire) {
                    let _ = map.pop(&mut out);
                }
            });
            s.spawn(move || {
                let mut out = [0u8; 16];
                while !done.load(Ordering::Acquire) {
                    match map.peek(&mut out) {
                        Ok(()) => {
                            let a = u64::from_ne_bytes(out[..8].try_into().unwrap());
                            let b = u64::from_ne_bytes(out[8..].try_into().unwrap());
                            assert_eq!(b, !a, "a torn or mixed value: {a:#x} / {b:#x}");
                            assert!(a >= 1, "a value never pushed: {a}");
                            peeked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => assert_eq!(e, OpError::NotFound),
                    }
                }
            });
        });
        assert!(peeked.load(Ordering::Relaxed) >= want_peeks, "the peeker saw too few values in 20 s");
    }
}
