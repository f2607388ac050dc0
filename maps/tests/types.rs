//! Model-based tests of the map types beyond array and hash: LRU eviction, LPM trie, queue and
//! stack, ring buffer, and the slot maps (program arrays, devmaps, xskmaps, maps of maps, perf
//! event arrays), each against a plain reference model of the kernel's rules.

#![expect(
    unsafe_code,
    reason = "writes a ring buffer record through the pointer `ringbuf_reserve` hands to programs"
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use maps::{
    BPF_ANY, BPF_EXIST, BPF_F_CURRENT_CPU, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, Map, MapDef, OpError, map_flags,
    map_type,
};
use proptest::prelude::*;

const fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, map_flags }
}

// ---------------------------------------------------------------------------------------------
// LRU with eviction: which key goes is the LRU's choice; what must hold is checked after each op.

#[derive(Debug, Clone)]
enum LruOp {
    Update { key: u8, val: u8, flags: u64 },
    Delete { key: u8 },
    Lookup { key: u8 },
}

fn lru_ops() -> impl Strategy<Value = Vec<LruOp>> {
    let op = prop_oneof![
        5 => (0u8..24, any::<u8>(), prop::sample::select(vec![BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST]))
            .prop_map(|(key, val, flags)| LruOp::Update { key, val, flags }),
        1 => (0u8..24).prop_map(|key| LruOp::Delete { key }),
        3 => (0u8..24).prop_map(|key| LruOp::Lookup { key }),
    ];
    prop::collection::vec(op, 0..200)
}

fn run_lru(map_type: u32, ops: Vec<LruOp>) -> Result<(), TestCaseError> {
    let max = 6;
    let map = Map::new("lru", def(map_type, 4, 8, max, 0), 1).unwrap();
    // The last value written to each key; a present key must hold exactly that.
    let mut last: BTreeMap<[u8; 4], [u8; 8]> = BTreeMap::new();
    for op in ops {
        match op {
            LruOp::Update { key, val, flags } => {
                let k = u32::from(key).to_ne_bytes();
                let present = map.lookup_user(&k).is_ok();
                let full = map.entries().len() == max as usize;
                let got = map.update(&k, &[val; 8], flags, 0);
                let want = match (present, flags) {
                    (true, BPF_NOEXIST) => Err(OpError::Exists),
                    (false, BPF_EXIST) => Err(OpError::NotFound),
                    _ => Ok(()),
                };
                // As in the kernel, a full map evicts before the flags are checked, and the victim
                // may be this very key: then NOEXIST succeeds and EXIST finds nothing.
                let evicted_itself = full
                    && present
                    && got != want
                    && ((flags == BPF_NOEXIST && got == Ok(()))
                        || (flags == BPF_EXIST && got == Err(OpError::NotFound)));
                prop_assert!(got == want || evicted_itself, "{:?}: {:?}, expected {:?}", op, got, want);
                if got.is_ok() {
                    last.insert(k, [val; 8]);
                    prop_assert_eq!(map.lookup_user(&k), Ok(vec![val; 8]), "just written");
                }
            }
            LruOp::Delete { key } => {
                let k = u32::from(key).to_ne_bytes();
                let present = map.lookup_user(&k).is_ok();
                prop_assert_eq!(map.delete(&k), if present { Ok(()) } else { Err(OpError::NotFound) });
                prop_assert!(map.lookup_user(&k).is_err());
            }
            LruOp::Lookup { key } => {
                let _ = map.lookup(&u32::from(key).to_ne_bytes(), 0);
            }
        }
        let entries = map.entries();
        prop_assert!(entries.len() <= max as usize, "over max_entries");
        for e in entries {
            let k: [u8; 4] = e.key.clone().try_into().unwrap();
            prop_assert_eq!(Some(&e.values[0][..]), last.get(&k).map(|v| &v[..]), "stale value");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn lru_hash_evicts_consistently(ops in lru_ops()) {
        run_lru(map_type::LRU_HASH, ops)?;
    }

    #[test]
    fn lru_percpu_hash_evicts_consistently(ops in lru_ops()) {
        run_lru(map_type::LRU_PERCPU_HASH, ops)?;
    }
}

#[test]
fn lru_keeps_the_hot_set() {
    // 4 hot keys looked up before every insert of a cold one: the clock never evicts them.
    let map = Map::new("lru", def(map_type::LRU_HASH, 4, 8, 16, 0), 1).unwrap();
    for cold in 100..1000u32 {
        for hot in 0..4u32 {
            if map.lookup(&hot.to_ne_bytes(), 0).is_none() {
                map.update(&hot.to_ne_bytes(), &[1; 8], BPF_ANY, 0).unwrap();
            }
        }
        map.update(&cold.to_ne_bytes(), &[2; 8], BPF_ANY, 0).unwrap();
        if cold > 200 {
            for hot in 0..4u32 {
                assert!(map.lookup_user(&hot.to_ne_bytes()).is_ok(), "hot key {hot} evicted at {cold}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LPM trie against a list of prefixes.

const LPM_DATA: usize = 2;

#[derive(Debug, Clone)]
enum LpmOp {
    Update { len: u32, data: [u8; LPM_DATA], val: u8, flags: u64 },
    Delete { len: u32, data: [u8; LPM_DATA] },
    Lookup { len: u32, data: [u8; LPM_DATA] },
}

fn lpm_key(len: u32, data: [u8; LPM_DATA]) -> Vec<u8> {
    [&len.to_ne_bytes()[..], &data].concat()
}

/// The first `len` bits of `data`, the rest zeroed.
fn masked(len: u32, data: [u8; LPM_DATA]) -> u16 {
    let v = u16::from_be_bytes(data);
    if len == 0 { 0 } else { v & (u16::MAX << (16 - len.min(16))) }
}

fn lpm_ops() -> impl Strategy<Value = Vec<LpmOp>> {
    // Few distinct data patterns and lengths, so prefixes nest and collide.
    let data = prop::sample::select(vec![
        [0x00, 0x00],
        [0x80, 0x00],
        [0xc0, 0xa8],
        [0xc0, 0xa9],
        [0xc0, 0x00],
        [0xff, 0xff],
        [0x0f, 0x01],
    ]);
    let len = prop_oneof![0u32..=16, Just(17)];
    let flags = prop::sample::select(vec![BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST, 3]);
    let op = prop_oneof![
        4 => (len.clone(), data.clone(), any::<u8>(), flags).prop_map(|(len, data, val, flags)| LpmOp::Update { len, data, val, flags }),
        2 => (len.clone(), data.clone()).prop_map(|(len, data)| LpmOp::Delete { len, data }),
        3 => (len, data).prop_map(|(len, data)| LpmOp::Lookup { len, data }),
    ];
    prop::collection::vec(op, 0..80)
}

proptest! {
    #[test]
    fn lpm_trie_matches_a_prefix_list(ops in lpm_ops()) {
        let max = 6u32;
        let map = Map::new("lpm", def(map_type::LPM_TRIE, 4 + LPM_DATA as u32, 1, max, map_flags::NO_PREALLOC), 1).unwrap();
        // (len, masked prefix) -> (data as stored, value)
        let mut model: BTreeMap<(u32, u16), ([u8; LPM_DATA], u8)> = BTreeMap::new();
        for op in ops {
            match op {
                LpmOp::Update { len, data, val, flags } => {
                    let present = model.contains_key(&(len, masked(len, data)));
                    let want = if flags > BPF_EXIST || len > 16 {
                        Err(OpError::Invalid)
                    } else if present && flags == BPF_NOEXIST {
                        Err(OpError::Exists)
                    } else if !present && flags == BPF_EXIST {
                        Err(OpError::NotFound)
                    } else if !present && model.len() == max as usize {
                        Err(OpError::NoSpace)
                    } else {
                        model.insert((len, masked(len, data)), (data, val));
                        Ok(())
                    };
                    prop_assert_eq!(map.update(&lpm_key(len, data), &[val], flags, 0), want, "{:?}", op);
                }
                LpmOp::Delete { len, data } => {
                    let want = if len > 16 {
                        Err(OpError::Invalid)
                    } else {
                        model.remove(&(len, masked(len, data))).map(drop).ok_or(OpError::NotFound)
                    };
                    prop_assert_eq!(map.delete(&lpm_key(len, data)), want, "{:?}", op);
                }
                LpmOp::Lookup { len, data } => {
                    let want = if len > 16 {
                        None
                    } else {
                        model
                            .iter()
                            .filter(|((plen, prefix), _)| *plen <= len && masked(*plen, data) == *prefix)
                            .max_by_key(|((plen, _), _)| *plen)
                            .map(|(_, (_, v))| vec![*v])
                    };
                    prop_assert_eq!(map.lookup_user(&lpm_key(len, data)).ok(), want.clone(), "{:?}", op);
                    prop_assert_eq!(map.lookup(&lpm_key(len, data), 0).is_some(), want.is_some());
                }
            }
        }
        // Every stored key, with the data it was last stored with, exactly once in next_key order;
        // entries() lists the same order; and more specific prefixes come before the ones they
        // extend (post-order).
        let mut walked = Vec::new();
        let mut cur = map.next_key(None);
        while let Ok(k) = cur {
            prop_assert!(walked.len() <= model.len(), "next_key loops");
            walked.push(k.clone());
            cur = map.next_key(Some(&k));
        }
        prop_assert_eq!(cur, Err(OpError::NotFound));
        let want: BTreeSet<Vec<u8>> = model.iter().map(|((len, _), (data, _))| lpm_key(*len, *data)).collect();
        prop_assert_eq!(walked.iter().cloned().collect::<BTreeSet<_>>(), want);
        prop_assert_eq!(walked.len(), model.len());
        let listed: Vec<Vec<u8>> = map.entries().into_iter().map(|e| e.key).collect();
        prop_assert_eq!(&listed, &walked);
        for (i, a) in walked.iter().enumerate() {
            for b in &walked[i + 1..] {
                let (la, lb) = (u32::from_ne_bytes(a[..4].try_into().unwrap()), u32::from_ne_bytes(b[..4].try_into().unwrap()));
                let (da, db) = (a[4..].try_into().unwrap(), b[4..].try_into().unwrap());
                // b is an ancestor of a, or unrelated: a never extends a later b... i.e. a later
                // key is never more specific than an earlier one it matches.
                prop_assert!(!(lb > la && masked(la, db) == masked(la, da)), "{:?} before {:?}", a, b);
            }
        }
    }
}

#[test]
fn lpm_definition_and_kernel_example() {
    let d = |flags, key, value| Map::new("l", def(map_type::LPM_TRIE, key, value, 8, flags), 1);
    assert!(d(0, 8, 4).is_err(), "BPF_F_NO_PREALLOC is required");
    assert!(d(map_flags::NO_PREALLOC, 4, 4).is_err(), "no data");
    assert!(d(map_flags::NO_PREALLOC, 4 + 257, 4).is_err(), "data over 256 bytes");
    assert!(d(map_flags::NO_PREALLOC, 8, 0).is_err());
    let m = d(map_flags::NO_PREALLOC, 8, 4).unwrap();
    let key = |len: u32, ip: [u8; 4]| [&len.to_ne_bytes()[..], &ip].concat();
    // The four-node example at the top of the kernel's lpm_trie.c.
    m.update(&key(16, [192, 168, 0, 0]), &[16; 4], BPF_ANY, 0).unwrap();
    m.update(&key(24, [192, 168, 0, 0]), &[24; 4], BPF_ANY, 0).unwrap();
    m.update(&key(24, [192, 168, 1, 0]), &[25; 4], BPF_ANY, 0).unwrap();
    m.update(&key(24, [192, 168, 128, 0]), &[26; 4], BPF_ANY, 0).unwrap();
    assert_eq!(m.lookup_user(&key(32, [192, 168, 1, 7])).unwrap(), [25; 4]);
    assert_eq!(m.lookup_user(&key(32, [192, 168, 2, 7])).unwrap(), [16; 4]);
    assert_eq!(m.lookup_user(&key(32, [10, 0, 0, 1])), Err(OpError::NotFound));
    let order: Vec<_> = m.entries().into_iter().map(|e| e.key).collect();
    assert_eq!(
        order,
        [
            key(24, [192, 168, 0, 0]),
            key(24, [192, 168, 1, 0]),
            key(24, [192, 168, 128, 0]),
            key(16, [192, 168, 0, 0])
        ]
    );
    // A lookup pointer is value memory of the map.
    let p = m.lookup(&key(32, [192, 168, 128, 1]), 0).unwrap();
    assert!(m.contains_value(p.as_ptr() as usize, 4));
}

// ---------------------------------------------------------------------------------------------
// Queue and stack against a VecDeque.

#[derive(Debug, Clone)]
enum QsOp {
    Push { val: u8, flags: u64 },
    Pop,
    Peek,
}

proptest! {
    #[test]
    fn queue_and_stack_match_a_deque(stack in any::<bool>(), ops in prop::collection::vec(prop_oneof![
        3 => (any::<u8>(), prop::sample::select(vec![BPF_ANY, BPF_EXIST, BPF_NOEXIST, 4])).prop_map(|(val, flags)| QsOp::Push { val, flags }),
        2 => Just(QsOp::Pop),
        1 => Just(QsOp::Peek),
    ], 0..100)) {
        let max = 4;
        let t = if stack { map_type::STACK } else { map_type::QUEUE };
        let map = Map::new("qs", def(t, 0, 3, max, 0), 1).unwrap();
        let mut model: VecDeque<[u8; 3]> = VecDeque::new();
        for op in ops {
            let mut out = [0u8; 3];
            match op {
                QsOp::Push { val, flags } => {
                    let want = if flags & BPF_NOEXIST != 0 || flags > BPF_EXIST {
                        Err(OpError::Invalid)
                    } else if model.len() == max as usize && flags != BPF_EXIST {
                        Err(OpError::TooBig)
                    } else {
                        if model.len() == max as usize {
                            model.pop_front(); // the oldest goes, for stacks too
                        }
                        model.push_back([val; 3]);
                        Ok(())
                    };
                    let got = if val % 2 == 0 { map.push(&[val; 3], flags) } else { map.update_user(&[], &[val; 3], flags) };
                    prop_assert_eq!(got, want);
                }
                QsOp::Pop => {
                    let want = if stack { model.pop_back() } else { model.pop_front() };
                    let got = map.pop(&mut out).map(|()| out);
                    prop_assert_eq!(got, want.ok_or(OpError::NotFound));
                }
                QsOp::Peek => {
                    let want = if stack { model.back() } else { model.front() }.copied();
                    let got = map.peek(&mut out).map(|()| out);
                    prop_assert_eq!(got, want.ok_or(OpError::NotFound));
                    prop_assert_eq!(map.lookup_user(&[]).ok(), want.map(|v| v.to_vec()));
                }
            }
        }
        let mut order: Vec<Vec<u8>> = model.iter().map(|v| v.to_vec()).collect();
        if stack {
            order.reverse();
        }
        prop_assert_eq!(map.entries().into_iter().map(|e| e.values[0].clone()).collect::<Vec<_>>(), order);
    }
}

#[test]
fn queue_rules() {
    assert!(Map::new("q", def(map_type::QUEUE, 4, 4, 4, 0), 1).is_err(), "key_size must be 0");
    assert!(Map::new("q", def(map_type::QUEUE, 0, 0, 4, 0), 1).is_err());
    assert!(Map::new("q", def(map_type::QUEUE, 0, 4, 0, 0), 1).is_err());
    assert!(Map::new("q", def(map_type::QUEUE, 0, 4, 4, map_flags::NO_PREALLOC), 1).is_err());
    let q = Map::new("q", def(map_type::QUEUE, 0, 4, 4, 0), 1).unwrap();
    assert_eq!(q.delete(&[]), Err(OpError::Invalid));
    assert_eq!(q.next_key(None), Err(OpError::Invalid));
    assert!(q.lookup(&[], 0).is_none());
    assert_eq!(q.pop(&mut [0; 3]), Err(OpError::Invalid));
}

// ---------------------------------------------------------------------------------------------
// Ring buffer against a queue of records with the kernel's space accounting.

#[derive(Debug, Clone)]
enum RbOp {
    Reserve { len: u16 },
    Submit { which: usize, discard: bool },
    Output { len: u16 },
    Consume,
}

fn rec_len(len: u64) -> u64 {
    (len + 8).next_multiple_of(8)
}

proptest! {
    #[test]
    fn ringbuf_matches_a_record_queue(ops in prop::collection::vec(prop_oneof![
        3 => (0u16..1500).prop_map(|len| RbOp::Reserve { len }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(which, discard)| RbOp::Submit { which, discard }),
        2 => (0u16..1500).prop_map(|len| RbOp::Output { len }),
        2 => Just(RbOp::Consume),
    ], 0..120)) {
        let size = 4096u64;
        let map = Map::new("rb", def(map_type::RINGBUF, 0, 0, size as u32, 0), 1).unwrap();
        // Model: records in reservation order as (tag, len, state) with state 0 busy, 1 ready,
        // 2 discarded; `prod` and `cons` as the kernel counts them.
        let mut recs: VecDeque<(u8, u64, u8)> = VecDeque::new();
        let mut pending: Vec<(u8, std::ptr::NonNull<u8>)> = Vec::new();
        let (mut prod, mut cons) = (0u64, 0u64);
        let mut tag = 0u8;
        for op in ops {
            match op {
                RbOp::Reserve { len } | RbOp::Output { len } => {
                    tag = tag.wrapping_add(1);
                    let fits = prod + rec_len(len.into()) - cons < size;
                    let data = vec![tag; len as usize];
                    if let RbOp::Output { .. } = op {
                        let got = map.ringbuf_output(&data, 0);
                        prop_assert_eq!(got, if fits { Ok(()) } else { Err(OpError::Again) });
                        if fits {
                            recs.push_back((tag, len.into(), 1));
                            prod += rec_len(len.into());
                        }
                    } else {
                        let got = map.ringbuf_reserve(len.into(), 0);
                        prop_assert_eq!(got.is_some(), fits);
                        if let Some(p) = got {
                            prop_assert_eq!(p.as_ptr() as usize % 8, 0);
                            prop_assert!(len == 0 || map.contains_value(p.as_ptr() as usize, len as usize));
                            // The program writes its record through the pointer.
                            // SAFETY: `p` is a fresh reservation of `len` bytes in `map`'s data
                            // area (checked with contains_value), which outlives this write; no
                            // other thread touches this ring.
                            unsafe { std::ptr::write_bytes(p.as_ptr(), tag, len as usize) };
                            recs.push_back((tag, len.into(), 0));
                            pending.push((tag, p));
                            prod += rec_len(len.into());
                        }
                    }
                }
                RbOp::Submit { which, discard } => {
                    if pending.is_empty() {
                        continue;
                    }
                    let (t, p) = pending.swap_remove(which % pending.len());
                    let got = if discard { map.ringbuf_discard(p, 0) } else { map.ringbuf_submit(p, BPF_RB_FORCE_WAKEUP) };
                    prop_assert_eq!(got, Ok(()));
                    prop_assert_eq!(map.ringbuf_submit(p, 0), Err(OpError::Invalid), "double submit");
                    let r = recs.iter_mut().find(|r| r.0 == t && r.2 == 0).unwrap();
                    r.2 = if discard { 2 } else { 1 };
                }
                RbOp::Consume => {
                    let mut want = Vec::new();
                    while let Some(&(t, len, state)) = recs.front() {
                        if state == 0 {
                            break;
                        }
                        if state == 1 {
                            want.push(vec![t; len as usize]);
                        }
                        cons += rec_len(len);
                        recs.pop_front();
                    }
                    let mut got = Vec::new();
                    let n = map.ringbuf_consume(|r| got.push(r.to_vec()));
                    prop_assert_eq!(n, want.len());
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(map.ringbuf_status().unwrap().0, prod - cons);
        }
    }
}

#[test]
fn ringbuf_rules() {
    let rb = |size, key, value, flags| Map::new("rb", def(map_type::RINGBUF, key, value, size, flags), 1);
    assert!(rb(4096, 0, 0, 0).is_ok());
    assert!(rb(4096 * 3, 0, 0, 0).is_err(), "not a power of two");
    assert!(rb(2048, 0, 0, 0).is_err(), "not a page multiple");
    assert!(rb(4096, 4, 0, 0).is_err());
    assert!(rb(4096, 0, 4, 0).is_err());
    assert!(rb(4096, 0, 0, map_flags::NO_PREALLOC).is_err());
    let m = rb(4096, 0, 0, 0).unwrap();
    assert!(m.ringbuf_reserve(8, 1).is_none(), "reserve flags must be 0");
    assert!(m.ringbuf_reserve(4096 - 8, 0).is_none(), "record plus header over the ring");
    assert_eq!(m.ringbuf_output(&[1], 4), Err(OpError::Invalid));
    for e in [m.lookup_user(&[]), m.next_key(None)] {
        assert_eq!(e, Err(OpError::Unsupported));
    }
    assert_eq!(m.update_user(&[], &[], 0), Err(OpError::Unsupported));
    assert_eq!(m.delete(&[]), Err(OpError::Unsupported));
    assert_eq!(OpError::Unsupported.errno(), 524);
    // Records wrap around the end and come out whole and in order.
    for round in 0..40u8 {
        m.ringbuf_output(&[round; 1000], 0).unwrap();
        m.ringbuf_output(&[round; 77], 0).unwrap();
        let mut got = Vec::new();
        m.ringbuf_consume(|r| got.push(r.to_vec()));
        assert_eq!(got, [vec![round; 1000], vec![round; 77]]);
    }
}

// ---------------------------------------------------------------------------------------------
// Slot maps.

#[test]
fn prog_array_slots() {
    let m = Map::new("progs", def(map_type::PROG_ARRAY, 4, 4, 4, 0), 1).unwrap();
    assert!(Map::new("p", def(map_type::PROG_ARRAY, 4, 8, 4, 0), 1).is_err(), "value is a u32 id");
    assert_eq!(m.prog_id(0), None);
    m.update_user(&1u32.to_ne_bytes(), &7u32.to_ne_bytes(), BPF_ANY).unwrap();
    assert_eq!(m.prog_id(1), Some(7));
    assert_eq!(m.lookup_user(&1u32.to_ne_bytes()).unwrap(), 7u32.to_ne_bytes());
    assert_eq!(m.update_user(&1u32.to_ne_bytes(), &8u32.to_ne_bytes(), BPF_EXIST), Err(OpError::Invalid));
    assert_eq!(m.update_user(&4u32.to_ne_bytes(), &8u32.to_ne_bytes(), BPF_ANY), Err(OpError::TooBig));
    assert!(m.lookup(&1u32.to_ne_bytes(), 0).is_none(), "programs do not look prog arrays up");
    assert_eq!(m.delete(&1u32.to_ne_bytes()), Ok(()));
    assert_eq!(m.delete(&1u32.to_ne_bytes()), Err(OpError::NotFound));
    assert_eq!(m.delete(&9u32.to_ne_bytes()), Err(OpError::TooBig));
    assert_eq!(m.prog_id(1), None);
    assert_eq!(m.prog_id(100), None);
    assert_eq!(m.next_key(None).unwrap(), 0u32.to_ne_bytes());
    assert_eq!(maps::MAX_TAIL_CALL_CNT, 33);
}

#[test]
fn devmap_xskmap_and_devmap_hash() {
    let dm = Map::new("dm", def(map_type::DEVMAP, 4, 8, 4, 0), 1).unwrap();
    assert_eq!(
        dm.update_user(&0u32.to_ne_bytes(), &[3, 0, 0, 0, 0, 0, 0, 0], BPF_NOEXIST),
        Err(OpError::Exists)
    );
    dm.update_user(&0u32.to_ne_bytes(), &[3, 0, 0, 0, 0, 0, 0, 0], BPF_ANY).unwrap();
    assert_eq!(dm.redirect_target(0), Some(3));
    let p = dm.lookup(&0u32.to_ne_bytes(), 0).unwrap();
    assert!(dm.contains_value(p.as_ptr() as usize, 8));
    dm.update_user(&0u32.to_ne_bytes(), &[0; 8], BPF_ANY).unwrap();
    assert_eq!(dm.redirect_target(0), None, "ifindex 0 empties the slot");
    assert_eq!(dm.delete(&9u32.to_ne_bytes()), Err(OpError::Invalid));
    assert_eq!(dm.delete(&1u32.to_ne_bytes()), Ok(()), "devmap delete of an empty slot is fine");

    let xs = Map::new("xs", def(map_type::XSKMAP, 4, 4, 4, 0), 1).unwrap();
    assert_eq!(xs.update_user(&2u32.to_ne_bytes(), &5u32.to_ne_bytes(), BPF_EXIST), Err(OpError::NotFound));
    xs.update_user(&2u32.to_ne_bytes(), &5u32.to_ne_bytes(), BPF_NOEXIST).unwrap();
    assert_eq!(xs.update_user(&2u32.to_ne_bytes(), &5u32.to_ne_bytes(), BPF_NOEXIST), Err(OpError::Exists));
    assert_eq!(xs.redirect_target(2), Some(5));
    assert_eq!(xs.lookup_user(&2u32.to_ne_bytes()), Err(OpError::NotSupported));

    let dh = Map::new("dh", def(map_type::DEVMAP_HASH, 4, 4, 2, 0), 1).unwrap();
    dh.update_user(&100u32.to_ne_bytes(), &4u32.to_ne_bytes(), BPF_EXIST).unwrap();
    assert_eq!(dh.redirect_target(100), Some(4));
    assert_eq!(dh.update_user(&1u32.to_ne_bytes(), &0u32.to_ne_bytes(), BPF_ANY), Err(OpError::Invalid));
    assert_eq!(dh.redirect_target(1), None);
}

#[test]
fn maps_of_maps() {
    let inner_def = def(map_type::ARRAY, 4, 8, 2, 0);
    let outer = Map::with_inner("outer", def(map_type::ARRAY_OF_MAPS, 4, 4, 2, 0), 1, inner_def).unwrap();
    assert!(Map::new("outer", def(map_type::ARRAY_OF_MAPS, 4, 4, 2, 0), 1).is_err(), "needs a template");
    let a = Arc::new(Map::new("a", inner_def, 1).unwrap());
    let wrong = Arc::new(Map::new("w", def(map_type::ARRAY, 4, 8, 3, 0), 1).unwrap());
    assert_eq!(outer.set_inner_map(&0u32.to_ne_bytes(), wrong, BPF_ANY), Err(OpError::Invalid));
    outer.set_inner_map(&0u32.to_ne_bytes(), a.clone(), BPF_ANY).unwrap();
    a.update_user(&1u32.to_ne_bytes(), &[5; 8], BPF_ANY).unwrap();
    let inner = outer.inner_map(&0u32.to_ne_bytes()).unwrap();
    assert_eq!(inner.lookup_user(&1u32.to_ne_bytes()).unwrap(), [5; 8]);
    assert!(outer.inner_map(&1u32.to_ne_bytes()).is_none());
    // The reference a program got survives the slot being emptied.
    outer.delete(&0u32.to_ne_bytes()).unwrap();
    assert!(outer.inner_map(&0u32.to_ne_bytes()).is_none());
    assert_eq!(inner.lookup_user(&1u32.to_ne_bytes()).unwrap(), [5; 8]);

    let flex = def(map_type::ARRAY, 4, 4, 8, 1 << 12); // BPF_F_INNER_MAP: any max_entries
    let hom = Map::with_inner("hom", def(map_type::HASH_OF_MAPS, 8, 4, 4, 0), 1, flex).unwrap();
    let h = Arc::new(Map::new("h", def(map_type::ARRAY, 4, 4, 100, 1 << 12), 1).unwrap());
    hom.set_inner_map(&[1; 8], h.clone(), BPF_NOEXIST).unwrap();
    assert_eq!(hom.set_inner_map(&[1; 8], h, BPF_NOEXIST), Err(OpError::Exists));
    assert!(hom.inner_map(&[1; 8]).is_some_and(|m| m.name() == "h"));
    assert!(hom.inner_map(&[2; 8]).is_none());
    assert_eq!(
        hom.update_user(&[1; 8], &[0; 4], BPF_ANY),
        Err(OpError::Invalid),
        "inner maps go in by handle"
    );
}

#[test]
fn perf_event_array() {
    let m = Map::new("events", def(map_type::PERF_EVENT_ARRAY, 4, 4, 2, 0), 2).unwrap();
    assert_eq!(m.perf_output(0, 0, &[1], &[]), Err(OpError::NotFound), "no buffer yet");
    m.perf_open(0, 4096, 10).unwrap();
    m.perf_open(1, 4096, 11).unwrap();
    m.perf_output(BPF_F_CURRENT_CPU, 1, &[1, 2, 3], &[9]).unwrap();
    m.perf_output(0, 1, &[4; 5], &[]).unwrap();
    assert_eq!(m.perf_output(2, 0, &[1], &[]), Err(OpError::TooBig));
    assert_eq!(m.perf_output(1 << 60, 0, &[1], &[]), Err(OpError::Invalid));
    let mut got = Vec::new();
    assert_eq!(m.perf_consume(1, |s| got.push(s.to_vec())), 1);
    assert_eq!(got, [vec![1, 2, 3, 9]]);
    got.clear();
    m.perf_consume(0, |s| got.push(s.to_vec()));
    assert_eq!(got, [vec![4; 5]]);
    // A full buffer loses samples with ENOSPC.
    let mut lost = 0;
    for _ in 0..100 {
        if m.perf_output(0, 0, &[0; 100], &[]) == Err(OpError::NoSpace) {
            lost += 1;
        }
    }
    assert!(lost > 0);
}

#[test]
fn every_type_is_creatable() {
    let inner = def(map_type::ARRAY, 4, 4, 1, 0);
    for (t, k, v, n, f) in [
        (map_type::LRU_HASH, 4, 4, 4, 0),
        (map_type::LRU_PERCPU_HASH, 4, 4, 4, 0),
        (map_type::LPM_TRIE, 8, 4, 4, map_flags::NO_PREALLOC),
        (map_type::QUEUE, 0, 4, 4, 0),
        (map_type::STACK, 0, 4, 4, 0),
        (map_type::RINGBUF, 0, 0, 4096, 0),
        (map_type::PROG_ARRAY, 4, 4, 4, 0),
        (map_type::PERF_EVENT_ARRAY, 4, 4, 4, 0),
        (map_type::DEVMAP, 4, 4, 4, 0),
        (map_type::DEVMAP_HASH, 4, 8, 4, 0),
        (map_type::XSKMAP, 4, 4, 4, 0),
        (map_type::ARRAY_OF_MAPS, 4, 4, 4, 0),
        (map_type::HASH_OF_MAPS, 4, 4, 4, 0),
    ] {
        let m =
            Map::with_inner("m", def(t, k, v, n, f), 2, inner).unwrap_or_else(|e| panic!("type {t}: {e}"));
        assert_eq!(m.def().map_type, t);
        assert!(m.array_base().is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Slot maps against a Vec<Option<value>> with each type's flag rules.

#[derive(Debug, Clone)]
enum SlotOp {
    Update { index: u32, id: u32, flags: u64 },
    Delete { index: u32 },
    Lookup { index: u32 },
}

proptest! {
    #[test]
    fn slot_maps_match_a_vector(t in prop::sample::select(vec![map_type::PROG_ARRAY, map_type::DEVMAP, map_type::XSKMAP]),
        ops in prop::collection::vec(prop_oneof![
            3 => (0u32..6, 0u32..3, prop::sample::select(vec![BPF_ANY, BPF_NOEXIST, BPF_EXIST, 4]))
                .prop_map(|(index, id, flags)| SlotOp::Update { index, id, flags }),
            1 => (0u32..6).prop_map(|index| SlotOp::Delete { index }),
            2 => (0u32..6).prop_map(|index| SlotOp::Lookup { index }),
        ], 0..60)) {
        let max = 4u32;
        let map = Map::new("slots", def(t, 4, 4, max, 0), 1).unwrap();
        let mut model: Vec<Option<u32>> = vec![None; max as usize];
        for op in ops {
            match op {
                SlotOp::Update { index, id, flags } => {
                    let present = model.get(index as usize).is_some_and(Option::is_some);
                    let want = match t {
                        map_type::PROG_ARRAY if flags != BPF_ANY => Err(OpError::Invalid),
                        _ if flags > BPF_EXIST => Err(OpError::Invalid),
                        _ if index >= max => Err(OpError::TooBig),
                        map_type::DEVMAP if flags == BPF_NOEXIST => Err(OpError::Exists),
                        map_type::XSKMAP if present && flags == BPF_NOEXIST => Err(OpError::Exists),
                        map_type::XSKMAP if !present && flags == BPF_EXIST => Err(OpError::NotFound),
                        _ => {
                            // A devmap value with ifindex 0 empties the slot.
                            model[index as usize] = if t == map_type::DEVMAP && id == 0 { None } else { Some(id) };
                            Ok(())
                        }
                    };
                    prop_assert_eq!(map.update_user(&index.to_ne_bytes(), &id.to_ne_bytes(), flags), want, "{:?}", op);
                }
                SlotOp::Delete { index } => {
                    let want = if index >= max {
                        Err(if t == map_type::PROG_ARRAY { OpError::TooBig } else { OpError::Invalid })
                    } else if model[index as usize].take().is_none() && t == map_type::PROG_ARRAY {
                        Err(OpError::NotFound)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(map.delete(&index.to_ne_bytes()), want, "{:?}", op);
                }
                SlotOp::Lookup { index } => {
                    let want = model.get(index as usize).copied().flatten();
                    let got = if t == map_type::PROG_ARRAY { map.prog_id(index) } else { map.redirect_target(index) };
                    prop_assert_eq!(got, want, "{:?}", op);
                    if t != map_type::PROG_ARRAY {
                        prop_assert_eq!(map.lookup(&index.to_ne_bytes(), 0).is_some(), want.is_some());
                    }
                }
            }
        }
        let listed: Vec<(Vec<u8>, Vec<u8>)> = map.entries().into_iter().map(|e| (e.key, e.values[0].clone())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| ((i as u32).to_ne_bytes().to_vec(), v.to_ne_bytes().to_vec())))
            .collect();
        prop_assert_eq!(listed, want);
    }
}
