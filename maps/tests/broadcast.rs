//! `Map::for_each_redirect_target`, what a `BPF_F_BROADCAST` redirect walks per frame: every
//! interface index of a DEVMAP and a DEVMAP_HASH once, and no heap allocation doing it.

#![expect(unsafe_code, reason = "a counting global allocator forwarding to the system's")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use maps::{BPF_ANY, Map, MapDef, map_type};

/// The system allocator, counting the allocations of the calling thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the count is a side effect
// on a thread-local cell that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn every_target_once_and_no_allocation() {
    for map_type in [map_type::DEVMAP, map_type::DEVMAP_HASH] {
        let def = MapDef { map_type, key_size: 4, value_size: 4, max_entries: 64, map_flags: 0 };
        let map = Map::new("ports", def, 1).unwrap();
        let mut want: Vec<u32> = Vec::new();
        for k in [3u32, 17, 40, 63] {
            let ifindex = 100 + k;
            map.update_user(&k.to_ne_bytes(), &ifindex.to_ne_bytes(), BPF_ANY).unwrap();
            want.push(ifindex);
        }
        let mut got = Vec::with_capacity(16);
        let before = allocs();
        map.for_each_redirect_target(|t| got.push(t));
        assert_eq!(allocs(), before, "map type {map_type}: the walk allocated");
        got.sort_unstable();
        assert_eq!(got, want, "map type {map_type}");
    }
    // Not a device map: nothing.
    let def = MapDef { map_type: map_type::HASH, key_size: 4, value_size: 4, max_entries: 4, map_flags: 0 };
    let map = Map::new("h", def, 1).unwrap();
    map.update_user(&1u32.to_ne_bytes(), &5u32.to_ne_bytes(), BPF_ANY).unwrap();
    let mut n = 0;
    map.for_each_redirect_target(|_| n += 1);
    assert_eq!(n, 0);
}
