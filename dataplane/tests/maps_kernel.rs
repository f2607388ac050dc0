//! Map operations through the kernel's `bpf(2)` syscalls and through `maps`, side by side: the
//! same definitions and the same sequences of update / lookup / delete / next-key / pop, compared
//! result by result (errno included) and by final contents. Needs root (CI runs as root).
//!
//! What is compared exactly: creation errors for every map type this store adds; LPM trie results
//! and next-key order; queue and stack results; LRU hash results while nothing needs evicting.
//! Under eviction pressure only what the semantics promise is compared (the kernel's per-CPU free
//! lists may evict earlier than a full map, and the victim is the LRU's choice): updates succeed,
//! the key just written is present with its value, and no more than `max_entries` keys remain.

use dataplane::kernel::{KernelError, KernelMap, pin_current_thread};
use maps::{BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map, MapDef, OpError, map_flags, map_type};

/// The errno of a kernel result, 0 for success.
fn kerr<T>(r: &Result<T, KernelError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(KernelError::Syscall { source, .. }) => source.raw_os_error().unwrap_or(-1),
        Err(e) => panic!("unexpected kernel error: {e}"),
    }
}

/// The errno of one of our results, 0 for success.
fn ourerr<T>(r: &Result<T, OpError>) -> i32 {
    r.as_ref().err().map_or(0, |e| e.errno())
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

const fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, map_flags }
}

fn both(d: MapDef) -> (KernelMap, Map) {
    pin_current_thread(0).unwrap();
    let k = KernelMap::create_standalone("diff", d).unwrap_or_else(|e| panic!("kernel refused {d:?}: {e}"));
    let ours = Map::new("diff", d, 1).unwrap();
    (k, ours)
}

#[test]
fn creation_errors_match() {
    let nopre = map_flags::NO_PREALLOC;
    let cases = [
        def(map_type::LRU_HASH, 4, 8, 16, 0),
        def(map_type::LRU_HASH, 4, 8, 16, nopre),
        def(map_type::LRU_HASH, 4, 8, 16, 1 << 1),
        def(map_type::LRU_HASH, 0, 8, 16, 0),
        def(map_type::LRU_HASH, 4, 8, 0, 0),
        def(map_type::HASH, 4, 8, 16, 1 << 1),
        def(map_type::LRU_PERCPU_HASH, 4, 8, 16, 0),
        def(map_type::LPM_TRIE, 8, 4, 16, nopre),
        def(map_type::LPM_TRIE, 8, 4, 16, 0),
        def(map_type::LPM_TRIE, 4, 4, 16, nopre),
        def(map_type::LPM_TRIE, 4 + 256, 4, 16, nopre),
        def(map_type::LPM_TRIE, 4 + 257, 4, 16, nopre),
        def(map_type::LPM_TRIE, 8, 0, 16, nopre),
        def(map_type::LPM_TRIE, 8, 4, 0, nopre),
        def(map_type::QUEUE, 0, 4, 16, 0),
        def(map_type::QUEUE, 4, 4, 16, 0),
        def(map_type::QUEUE, 0, 0, 16, 0),
        def(map_type::QUEUE, 0, 4, 0, 0),
        def(map_type::QUEUE, 0, 4, 16, nopre),
        def(map_type::STACK, 0, 8, 16, 0),
        def(map_type::RINGBUF, 0, 0, 4096, 0),
        def(map_type::RINGBUF, 0, 0, 4096 * 4, 0),
        def(map_type::RINGBUF, 0, 0, 4096 * 3, 0),
        def(map_type::RINGBUF, 0, 0, 2048, 0),
        def(map_type::RINGBUF, 4, 0, 4096, 0),
        def(map_type::RINGBUF, 0, 4, 4096, 0),
        def(map_type::RINGBUF, 0, 0, 4096, nopre),
        def(map_type::PROG_ARRAY, 4, 4, 8, 0),
        def(map_type::PROG_ARRAY, 4, 8, 8, 0),
        def(map_type::PROG_ARRAY, 8, 4, 8, 0),
        def(map_type::PROG_ARRAY, 4, 4, 0, 0),
        def(map_type::PERF_EVENT_ARRAY, 4, 4, 8, 0),
        def(map_type::PERF_EVENT_ARRAY, 4, 8, 8, 0),
        def(map_type::DEVMAP, 4, 4, 8, 0),
        def(map_type::DEVMAP, 4, 8, 8, 0),
        def(map_type::DEVMAP, 4, 6, 8, 0),
        def(map_type::DEVMAP, 8, 4, 8, 0),
        def(map_type::DEVMAP, 4, 4, 8, nopre),
        def(map_type::DEVMAP_HASH, 4, 4, 8, 0),
        def(map_type::DEVMAP_HASH, 4, 8, 8, 0),
        def(map_type::DEVMAP_HASH, 4, 2, 8, 0),
        def(map_type::XSKMAP, 4, 4, 8, 0),
        def(map_type::XSKMAP, 4, 8, 8, 0),
        def(map_type::XSKMAP, 4, 4, 0, 0),
    ];
    let mut mismatches = Vec::new();
    for d in cases {
        let kernel = kerr(&KernelMap::create_standalone("c", d));
        let ours = Map::new("c", d, 2).map_or_else(|e| e.errno(), |_| 0);
        if kernel != ours {
            mismatches.push(format!("{d:?}: kernel errno {kernel}, ours {ours}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn lpm_trie_matches_the_kernel() {
    for seed in 1..=6u64 {
        let (k, ours) = both(def(map_type::LPM_TRIE, 8, 4, 24, map_flags::NO_PREALLOC));
        let mut rng = seed * 0x9e37_79b9;
        for step in 0..600 {
            let r = xorshift(&mut rng);
            // Addresses from a small pool so prefixes nest, lengths 0..=33 (33 is invalid).
            let pool = [
                [10, 0, 0, 0],
                [10, 1, 0, 0],
                [10, 1, 2, 0],
                [192, 168, 0, 0],
                [192, 168, 128, 7],
                [0, 0, 0, 0],
                [255, 255, 255, 255],
                [10, 129, 0, 0],
            ];
            let ip = pool[(r % 8) as usize];
            let len = ((r >> 8) % 34) as u32;
            let key = [&len.to_ne_bytes()[..], &ip].concat();
            let flags = [BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST, 3][((r >> 16) % 5) as usize];
            let value = (step as u32).to_ne_bytes();
            match (r >> 24) % 4 {
                0 | 1 => {
                    let (a, b) = (
                        kerr(&k.update(&key, &value, flags)),
                        ourerr(&ours.update_user(&key, &value, flags)),
                    );
                    assert_eq!(a, b, "seed {seed} step {step}: update {len}/{ip:?} flags {flags}");
                }
                2 => {
                    let (a, b) = (kerr(&k.delete(&key)), ourerr(&ours.delete(&key)));
                    assert_eq!(a, b, "seed {seed} step {step}: delete {len}/{ip:?}");
                }
                _ => {
                    let a = k.lookup(&key).unwrap().map(|v| v[0].clone());
                    assert_eq!(
                        a,
                        ours.lookup_user(&key).ok(),
                        "seed {seed} step {step}: lookup {len}/{ip:?}"
                    );
                }
            }
        }
        // The same keys in the same next-key order, with the same values.
        let mut kernel_keys = Vec::new();
        let mut cur = None;
        while let Some(next) = k.next_key(cur.as_deref()).unwrap() {
            kernel_keys.push(next.clone());
            cur = Some(next);
        }
        let our_keys: Vec<_> = ours.entries().into_iter().map(|e| e.key).collect();
        assert_eq!(our_keys, kernel_keys, "seed {seed}: next-key order");
        for key in &kernel_keys {
            assert_eq!(Some(ours.next_key(Some(key)).ok()), Some(k.next_key(Some(key)).unwrap()));
            assert_eq!(k.lookup(key).unwrap().map(|v| v[0].clone()), ours.lookup_user(key).ok());
        }
        // A key that is not there restarts from the first, in both.
        let absent = [&7u32.to_ne_bytes()[..], &[1, 2, 3, 4]].concat();
        assert_eq!(k.next_key(Some(&absent)).unwrap(), ours.next_key(Some(&absent)).ok());
    }
}

#[test]
fn queue_and_stack_match_the_kernel() {
    for t in [map_type::QUEUE, map_type::STACK] {
        let (k, ours) = both(def(t, 0, 4, 5, 0));
        let mut rng = 0xfeed_u64 + u64::from(t);
        for step in 0..400u32 {
            let r = xorshift(&mut rng);
            match r % 4 {
                0 | 1 => {
                    let flags = [BPF_ANY, BPF_EXIST, BPF_NOEXIST, 4][((r >> 8) % 4) as usize];
                    let v = step.to_ne_bytes();
                    let (a, b) = (kerr(&k.update(&[], &v, flags)), ourerr(&ours.update_user(&[], &v, flags)));
                    assert_eq!(a, b, "type {t} step {step}: push flags {flags}");
                }
                2 => {
                    let a = k.lookup_and_delete(&[]).unwrap().map(|v| v[0].clone());
                    let mut out = [0u8; 4];
                    let b = ours.pop(&mut out).ok().map(|()| out.to_vec());
                    assert_eq!(a, b, "type {t} step {step}: pop");
                }
                _ => {
                    let a = k.lookup(&[]).unwrap().map(|v| v[0].clone());
                    assert_eq!(a, ours.lookup_user(&[]).ok(), "type {t} step {step}: peek");
                }
            }
        }
        assert_eq!(kerr(&k.delete(&[])), ourerr(&ours.delete(&[])), "delete");
        assert_eq!(kerr(&k.next_key(None)), ourerr(&ours.next_key(None)), "next key");
    }
}

#[test]
fn lru_hash_matches_the_kernel_without_pressure() {
    for t in [map_type::LRU_HASH, map_type::LRU_PERCPU_HASH] {
        // 64 keys in a map of 1024: no eviction in either (the kernel's per-CPU free lists hold
        // at most 128 elements each, far more than this thread uses).
        let d = def(t, 4, 8, 1024, 0);
        pin_current_thread(0).unwrap();
        let k = KernelMap::create_standalone("lru", d).unwrap();
        let slots =
            if t == map_type::LRU_PERCPU_HASH { dataplane::kernel::possible_cpus().unwrap() } else { 1 };
        let ours = Map::new("lru", d, slots).unwrap();
        let mut rng = 0xabcd_u64 + u64::from(t);
        for step in 0..1500u64 {
            let r = xorshift(&mut rng);
            let key = ((r % 64) as u32).to_ne_bytes();
            let flags = [BPF_ANY, BPF_NOEXIST, BPF_EXIST, 7][((r >> 8) % 4) as usize];
            let one = step.to_ne_bytes();
            let value: Vec<u8> = one.repeat(slots);
            match (r >> 16) % 3 {
                0 => {
                    let (a, b) = (
                        kerr(&k.update(&key, &value, flags)),
                        ourerr(&ours.update_user(&key, &value, flags)),
                    );
                    assert_eq!(a, b, "type {t} step {step}: update flags {flags}");
                }
                1 => assert_eq!(
                    kerr(&k.delete(&key)),
                    ourerr(&ours.delete(&key)),
                    "type {t} step {step}: delete"
                ),
                _ => {
                    let a = k.lookup(&key).unwrap().map(|v| v.concat());
                    assert_eq!(a, ours.lookup_user(&key).ok(), "type {t} step {step}: lookup");
                }
            }
        }
        let mut theirs = k.entries().unwrap();
        let mut mine = ours.entries();
        theirs.sort();
        mine.sort();
        assert_eq!(mine, theirs, "type {t}: contents");
    }
}

/// Plain and per-CPU hash maps, preallocated and `BPF_F_NO_PREALLOC`, with more keys than room:
/// every update (all flags, including a full map's `E2BIG` and its replacements that still
/// succeed), delete and lookup gives the kernel's result, and the contents end up the same.
#[test]
fn hash_maps_match_the_kernel_with_and_without_prealloc() {
    let cpus = dataplane::kernel::possible_cpus().unwrap();
    for t in [map_type::HASH, map_type::PERCPU_HASH] {
        for flags in [0, map_flags::NO_PREALLOC] {
            let d = def(t, 4, 8, 16, flags);
            pin_current_thread(0).unwrap();
            let k = KernelMap::create_standalone("hash", d).unwrap();
            let slots = if t == map_type::PERCPU_HASH { cpus } else { 1 };
            let ours = Map::new("hash", d, slots).unwrap();
            let mut rng = 0x5eed_u64 + u64::from(t) + u64::from(flags);
            let mut full = 0;
            for step in 0..3000u64 {
                let r = xorshift(&mut rng);
                let key = ((r % 40) as u32).to_ne_bytes();
                let what = format!("type {t} flags {flags} step {step}");
                match (r >> 16) % 4 {
                    0 | 1 => {
                        let f = [BPF_ANY, BPF_NOEXIST, BPF_EXIST, 4][((r >> 8) % 4) as usize];
                        let value: Vec<u8> = step.to_ne_bytes().repeat(slots);
                        let (a, b) =
                            (kerr(&k.update(&key, &value, f)), ourerr(&ours.update_user(&key, &value, f)));
                        assert_eq!(a, b, "{what}: update flags {f}");
                        full += usize::from(a == libc::E2BIG);
                    }
                    2 => assert_eq!(kerr(&k.delete(&key)), ourerr(&ours.delete(&key)), "{what}: delete"),
                    _ => {
                        let a = k.lookup(&key).unwrap().map(|v| v.concat());
                        assert_eq!(a, ours.lookup_user(&key).ok(), "{what}: lookup");
                    }
                }
            }
            assert!(full > 0, "type {t} flags {flags}: the map never filled up");
            let mut theirs = k.entries().unwrap();
            let mut mine = ours.entries();
            theirs.sort();
            mine.sort();
            assert_eq!(mine, theirs, "type {t} flags {flags}: contents");
        }
    }
}

#[test]
fn lru_hash_under_pressure_keeps_its_promises() {
    let d = def(map_type::LRU_HASH, 4, 8, 32, 0);
    let (k, ours) = both(d);
    for i in 0..2000u32 {
        let key = (i % 300).to_ne_bytes();
        let v = u64::from(i).to_ne_bytes();
        assert_eq!(kerr(&k.update(&key, &v, BPF_ANY)), 0);
        assert_eq!(ourerr(&ours.update_user(&key, &v, BPF_ANY)), 0);
        assert_eq!(k.lookup(&key).unwrap(), Some(vec![v.to_vec()]));
        assert_eq!(ours.lookup_user(&key).unwrap(), v);
    }
    assert!(k.entries().unwrap().len() <= 32);
    assert!(ours.entries().len() <= 32);
}

#[test]
fn devmaps_match_the_kernel() {
    // Interface 1 is the loopback device, which exists everywhere; ifindex 0 empties a DEVMAP
    // slot and is refused by DEVMAP_HASH. Values of 8 bytes carry a program fd of 0 (none).
    for (t, value_size) in
        [(map_type::DEVMAP, 4), (map_type::DEVMAP, 8), (map_type::DEVMAP_HASH, 4), (map_type::DEVMAP_HASH, 8)]
    {
        let (k, ours) = both(def(t, 4, value_size, 4, 0));
        let mut rng = 0x5eed_u64 + u64::from(t) * 7 + u64::from(value_size);
        for step in 0..300 {
            let r = xorshift(&mut rng);
            let key = ((r % 6) as u32).to_ne_bytes();
            let ifindex: u32 = if (r >> 8).is_multiple_of(4) { 0 } else { 1 };
            let mut value = vec![0u8; value_size as usize];
            value[..4].copy_from_slice(&ifindex.to_ne_bytes());
            let flags = [BPF_ANY, BPF_NOEXIST, BPF_EXIST, 5][((r >> 16) % 4) as usize];
            match (r >> 24) % 3 {
                0 => {
                    let (a, b) = (
                        kerr(&k.update(&key, &value, flags)),
                        ourerr(&ours.update_user(&key, &value, flags)),
                    );
                    assert_eq!(
                        a, b,
                        "type {t}/{value_size} step {step}: update ifindex {ifindex} flags {flags}"
                    );
                }
                1 => assert_eq!(
                    kerr(&k.delete(&key)),
                    ourerr(&ours.delete(&key)),
                    "type {t}/{value_size} step {step}: delete"
                ),
                _ => {
                    let a = k.lookup(&key).unwrap().map(|v| v.concat());
                    assert_eq!(a, ours.lookup_user(&key).ok(), "type {t}/{value_size} step {step}: lookup");
                }
            }
        }
        let mut theirs = k.entries().unwrap();
        let mut mine = ours.entries();
        theirs.sort();
        mine.sort();
        assert_eq!(mine, theirs, "type {t}/{value_size}: contents");
    }
}
