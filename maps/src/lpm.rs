//! `BPF_MAP_TYPE_LPM_TRIE` (kernel `kernel/bpf/lpm_trie.c`, as of Linux 6.13+).
//!
//! Keys are `struct bpf_lpm_trie_key_u8`: a native-endian `u32` prefix length, then
//! `key_size - 4` bytes of data read most significant bit first (network order). Lookups find the
//! longest stored prefix that matches the key's first `prefixlen` bits; update and delete work on
//! the exact (prefix length, prefix) pair. The structure is the kernel's: a binary trie of nodes
//! holding a prefix, with intermediate nodes (no value) where two prefixes diverge, so
//! [`next_key`](LpmTrie::next_key) walks the same post-order the kernel's `trie_get_next_key` does
//! (more specific prefixes before less specific ones, and a key that is not present restarts from
//! the first) and the data bytes a key was stored with are the bytes it is returned with.
//!
//! Flags and errors follow 6.13+: `BPF_NOEXIST` on a present prefix is `EEXIST`, `BPF_EXIST` on an
//! absent one `ENOENT`, a new prefix in a full trie `ENOSPC`; replacing works when full. Creation
//! requires `BPF_F_NO_PREALLOC` as the kernel does.
//!
//! # Memory and concurrency
//!
//! Nodes live in a preallocated slab of `2 * max_entries + 1` nodes (a binary trie whose
//! intermediate nodes have two children has fewer intermediate nodes than prefixes, and one spare
//! covers a replacement), words only: `child[0] | child[1] << 32`, `prefixlen | flags << 32`, then
//! the data. Values are a separate [`Values`] store indexed by node. Writers serialize on a mutex,
//! like the kernel's trie spinlock, and bracket every change with a sequence counter; program-side
//! lookups take no lock: they walk optimistically and retry if the counter moved (a seqlock), and
//! after a few retries take the writer lock. Freed nodes are reused oldest first, so a value pointer
//! a program got stays the same value as long as possible; it always stays valid memory, as with
//! the preallocated hash maps.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::create_flags::{self as f, access_ok};
use crate::lock::SeqCount;
use crate::slab::{Slab, pad_word};
use crate::values::Values;
use crate::{BPF_EXIST, BPF_NOEXIST, Entry, MapDef, MapError, OpError};

const NIL: u32 = u32::MAX;
/// Intermediate node: no value, only there to branch.
const FLAG_IM: u32 = 1;
const DATA_SIZE_MAX: u32 = 256;
/// `KMALLOC_MAX_SIZE - LPM_DATA_SIZE_MAX - sizeof(struct lpm_trie_node)` on x86-64.
const VAL_SIZE_MAX: u32 = (4 << 20) - DATA_SIZE_MAX - 24;

/// Writer-side state, under the writer lock.
#[derive(Debug)]
struct Writer {
    free: VecDeque<u32>,
    n_entries: u32,
}

/// An LPM trie.
#[derive(Debug)]
pub(crate) struct LpmTrie {
    key_size: usize,
    value_size: usize,
    max_prefixlen: u32,
    max_entries: u32,
    /// Words per node: two header words and the data.
    nwords: usize,
    nodes: Slab,
    values: Values,
    root: AtomicU32,
    /// Even when no write is in progress.
    seq: SeqCount,
    writer: Mutex<Writer>,
}

/// Where a node hangs: the root or a child link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Root,
    Child(u32, usize),
}

impl LpmTrie {
    /// Validates `def` as `trie_alloc` does, then preallocates the nodes.
    pub(crate) fn new(name: &str, def: &MapDef) -> Result<LpmTrie, MapError> {
        let invalid = |reason| MapError::InvalidDefinition { name: name.to_owned(), reason };
        if def.max_entries == 0 {
            return Err(invalid("max_entries is zero"));
        }
        if def.map_flags & f::NO_PREALLOC == 0 {
            return Err(invalid("LPM tries need BPF_F_NO_PREALLOC"));
        }
        if def.map_flags & !(f::NO_PREALLOC | f::NUMA_NODE | f::ACCESS_MASK) != 0 || !access_ok(def.map_flags)
        {
            return Err(invalid("unknown map flags for an LPM trie"));
        }
        if def.key_size < 5 || def.key_size > 4 + DATA_SIZE_MAX {
            return Err(invalid("LPM key_size must be 4 + 1..=256"));
        }
        if def.value_size == 0 || def.value_size > VAL_SIZE_MAX {
            return Err(invalid("LPM value_size out of range"));
        }
        let oom = |bytes| MapError::OutOfMemory { name: name.to_owned(), bytes };
        let data_size = def.key_size as usize - 4;
        let nwords = 2 + data_size.div_ceil(8);
        let capacity = (def.max_entries as usize).checked_mul(2).and_then(|n| n.checked_add(1));
        let capacity = capacity.filter(|&n| n < NIL as usize).ok_or_else(|| oom(usize::MAX))?;
        let nodes =
            capacity.checked_mul(nwords).and_then(Slab::zeroed).ok_or_else(|| oom(capacity * nwords * 8))?;
        let values = Values::new(def.value_size as usize, capacity, 1).map_err(oom)?;
        let mut free = VecDeque::new();
        free.try_reserve_exact(capacity).map_err(|_| oom(capacity * 4))?;
        free.extend(0..capacity as u32);
        Ok(LpmTrie {
            key_size: def.key_size as usize,
            value_size: def.value_size as usize,
            max_prefixlen: data_size as u32 * 8,
            max_entries: def.max_entries,
            nwords,
            nodes,
            values,
            root: AtomicU32::new(NIL),
            seq: SeqCount::default(),
            writer: Mutex::new(Writer { free, n_entries: 0 }),
        })
    }

    fn word(&self, n: u32, i: usize) -> &AtomicU64 {
        self.nodes.word(n as usize * self.nwords + i)
    }

    fn child(&self, n: u32, bit: usize) -> u32 {
        (self.word(n, 0).load(Ordering::Relaxed) >> (32 * bit)) as u32
    }

    fn set_child(&self, n: u32, bit: usize, c: u32) {
        let w = self.word(n, 0);
        let old = w.load(Ordering::Relaxed);
        let shift = 32 * bit;
        w.store(old & !(u64::from(u32::MAX) << shift) | u64::from(c) << shift, Ordering::Relaxed);
    }

    fn prefixlen(&self, n: u32) -> u32 {
        self.word(n, 1).load(Ordering::Relaxed) as u32
    }

    fn flags(&self, n: u32) -> u32 {
        (self.word(n, 1).load(Ordering::Relaxed) >> 32) as u32
    }

    fn set_header(&self, n: u32, prefixlen: u32, flags: u32) {
        self.word(n, 1).store(u64::from(flags) << 32 | u64::from(prefixlen), Ordering::Relaxed);
    }

    fn get(&self, slot: Slot) -> u32 {
        match slot {
            Slot::Root => self.root.load(Ordering::Relaxed),
            Slot::Child(n, bit) => self.child(n, bit),
        }
    }

    fn set(&self, slot: Slot, node: u32) {
        match slot {
            Slot::Root => self.root.store(node, Ordering::Relaxed),
            Slot::Child(n, bit) => self.set_child(n, bit, node),
        }
    }

    /// Bit `i` of `data`, most significant first.
    fn bit(data: &[u8], i: u32) -> usize {
        usize::from(data[i as usize / 8] >> (7 - i % 8) & 1)
    }

    fn node_bit(&self, n: u32, i: u32) -> usize {
        let word = self.word(n, 2 + i as usize / 64).load(Ordering::Relaxed);
        (u64::from_be_bytes(word.to_ne_bytes()) >> (63 - i % 64) & 1) as usize
    }

    /// How many leading bits of node `n` and `(key_prefixlen, data)` agree, at most the shorter
    /// prefix length (the kernel's `longest_prefix_match`).
    fn match_len(&self, n: u32, key_prefixlen: u32, data: &[u8]) -> u32 {
        let limit = self.prefixlen(n).min(key_prefixlen);
        let mut len = 0;
        for (i, chunk) in data.chunks(8).enumerate() {
            if len >= limit {
                break;
            }
            let node = u64::from_be_bytes(self.word(n, 2 + i).load(Ordering::Relaxed).to_ne_bytes());
            let key = u64::from_be_bytes(pad_word(chunk).to_ne_bytes());
            let diff = node ^ key;
            if diff != 0 {
                len += diff.leading_zeros();
                break;
            }
            len += 64;
        }
        len.min(limit)
    }

    /// Splits a key into its prefix length and data; `None` for a wrong size.
    fn split<'k>(&self, key: &'k [u8]) -> Option<(u32, &'k [u8])> {
        if key.len() != self.key_size {
            return None;
        }
        let (len, data) = key.split_first_chunk::<4>()?;
        Some((u32::from_ne_bytes(*len), data))
    }

    /// The longest-prefix walk; `None` when a torn read sent it astray (optimistic callers retry).
    fn walk(&self, prefixlen: u32, data: &[u8]) -> Option<u32> {
        let mut found = NIL;
        let mut node = self.root.load(Ordering::Relaxed);
        let mut steps = 0;
        while node != NIL {
            steps += 1;
            if steps > self.max_prefixlen + 2 || node as usize >= self.values_len() {
                return None;
            }
            let matchlen = self.match_len(node, prefixlen, data);
            if matchlen == self.max_prefixlen {
                found = node;
                break;
            }
            let node_len = self.prefixlen(node);
            if matchlen < node_len {
                break;
            }
            if self.flags(node) & FLAG_IM == 0 {
                found = node;
            }
            if node_len >= self.max_prefixlen {
                return None;
            }
            node = self.child(node, Self::bit(data, node_len));
        }
        Some(found)
    }

    fn values_len(&self) -> usize {
        self.nodes.len() / self.nwords
    }

    /// The longest match for `(prefixlen, data)`: optimistic under the sequence counter, then
    /// under the writer lock.
    fn find(&self, prefixlen: u32, data: &[u8]) -> Option<u32> {
        if let Some(found) = self.seq.read(|| self.walk(prefixlen, data)) {
            let found = found?;
            return (found != NIL).then_some(found);
        }
        let _writer = self.lock();
        self.walk(prefixlen, data).filter(|&n| n != NIL)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the lock is a bug in this module; the trie is still consistent
        // between sequence brackets, so carry on.
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[inline]
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<NonNull<u8>> {
        let (prefixlen, data) = self.split(key)?;
        if prefixlen > self.max_prefixlen {
            return None;
        }
        Some(self.values.ptr(self.find(prefixlen, data)? as usize, 0))
    }

    /// [`LpmTrie::lookup`] with the key's data given as one word, most significant byte first:
    /// the data's bytes in memory order, zero-padded to 8 (`u64::from_be_bytes`). The
    /// non-generic path compiled code calls: no key slice, and for a trie whose data fits a word
    /// (IPv4's 4 bytes) a walk with one compare per node. `None` when absent, and for data over
    /// 8 bytes ([`LpmTrie::has_word_lookup`]).
    #[inline]
    pub(crate) fn lookup_word(&self, prefixlen: u32, data: u64) -> Option<NonNull<u8>> {
        if !self.has_word_lookup() || prefixlen > self.max_prefixlen {
            return None;
        }
        let found = match self.seq.read(|| self.walk_word(prefixlen, data)) {
            Some(found) => found?,
            None => {
                let _writer = self.lock();
                self.walk_word(prefixlen, data)?
            }
        };
        (found != NIL).then(|| self.values.ptr(found as usize, 0))
    }

    /// Whether [`LpmTrie::lookup_word`] serves this trie: key data of at most 8 bytes.
    pub(crate) fn has_word_lookup(&self) -> bool {
        self.nwords == 3
    }

    /// [`LpmTrie::walk`] for data that fits one word (`nwords == 3`), `data` most significant
    /// byte first: a node's data word compared with one xor.
    #[inline]
    fn walk_word(&self, prefixlen: u32, data: u64) -> Option<u32> {
        let mut found = NIL;
        let mut node = self.root.load(Ordering::Relaxed);
        let nodes = self.values_len();
        let mut steps = 0;
        while node != NIL {
            steps += 1;
            if steps > self.max_prefixlen + 2 || node as usize >= nodes {
                return None;
            }
            let header = self.word(node, 1).load(Ordering::Relaxed);
            let node_len = header as u32;
            let bits = u64::from_be_bytes(self.word(node, 2).load(Ordering::Relaxed).to_ne_bytes());
            let matchlen = (bits ^ data).leading_zeros().min(node_len).min(prefixlen);
            if matchlen == self.max_prefixlen {
                found = node;
                break;
            }
            if matchlen < node_len {
                break;
            }
            if (header >> 32) as u32 & FLAG_IM == 0 {
                found = node;
            }
            if node_len >= self.max_prefixlen {
                return None;
            }
            // `node_len < max_prefixlen <= 64`.
            node = self.child(node, (data >> (63 - node_len) & 1) as usize);
        }
        Some(found)
    }

    pub(crate) fn lookup_user(&self, key: &[u8]) -> Result<Vec<u8>, OpError> {
        let (prefixlen, data) = self.split(key).ok_or(OpError::Invalid)?;
        if prefixlen > self.max_prefixlen {
            return Err(OpError::NotFound);
        }
        let _writer = self.lock();
        let n = self.walk(prefixlen, data).filter(|&n| n != NIL).ok_or(OpError::NotFound)?;
        let mut out = vec![0; self.value_size];
        self.values.read(n as usize, 0, &mut out);
        Ok(out)
    }

    fn check_add(&self, w: &mut Writer, flags: u64) -> Result<(), OpError> {
        if flags == BPF_EXIST {
            return Err(OpError::NotFound);
        }
        if w.n_entries == self.max_entries {
            return Err(OpError::NoSpace);
        }
        w.n_entries += 1;
        Ok(())
    }

    pub(crate) fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), OpError> {
        if flags > BPF_EXIST {
            return Err(OpError::Invalid);
        }
        let (prefixlen, data) = self.split(key).ok_or(OpError::Invalid)?;
        if value.len() != self.value_size || prefixlen > self.max_prefixlen {
            return Err(OpError::Invalid);
        }
        let mut w = self.lock();
        let new = w.free.pop_front().ok_or(OpError::NoMemory)?;
        // Not reachable by readers yet: fill it outside the sequence bracket.
        self.word(new, 0).store(u64::MAX, Ordering::Relaxed);
        self.set_header(new, prefixlen, 0);
        self.nodes.write(new as usize * self.nwords + 2, data);
        self.values.write(new as usize, 0, value);
        let result = self.insert(&mut w, new, prefixlen, data, flags);
        match result {
            Ok(Some(old)) => w.free.push_back(old),
            Ok(None) => {}
            Err(_) => w.free.push_front(new),
        }
        result.map(drop)
    }

    /// Links the filled node `new` in; returns the node it replaced, if any.
    fn insert(
        &self,
        w: &mut Writer,
        new: u32,
        prefixlen: u32,
        data: &[u8],
        flags: u64,
    ) -> Result<Option<u32>, OpError> {
        let mut slot = Slot::Root;
        let mut matchlen = 0;
        let mut node = self.get(slot);
        while node != NIL {
            matchlen = self.match_len(node, prefixlen, data);
            let node_len = self.prefixlen(node);
            if node_len != matchlen || node_len == prefixlen {
                break;
            }
            slot = Slot::Child(node, Self::bit(data, node_len));
            node = self.get(slot);
        }
        if node == NIL {
            self.check_add(w, flags)?;
            self.seq.begin();
            self.set(slot, new);
            self.seq.end();
            return Ok(None);
        }
        if self.prefixlen(node) == matchlen {
            if self.flags(node) & FLAG_IM == 0 {
                if flags == BPF_NOEXIST {
                    return Err(OpError::Exists);
                }
            } else {
                self.check_add(w, flags)?;
            }
            self.word(new, 0).store(self.word(node, 0).load(Ordering::Relaxed), Ordering::Relaxed);
            self.seq.begin();
            self.set(slot, new);
            self.seq.end();
            return Ok(Some(node));
        }
        self.check_add(w, flags)?;
        if matchlen == prefixlen {
            self.set_child(new, self.node_bit(node, matchlen), node);
            self.seq.begin();
            self.set(slot, new);
            self.seq.end();
            return Ok(None);
        }
        let Some(im) = w.free.pop_front() else {
            w.n_entries -= 1;
            return Err(OpError::NoMemory);
        };
        self.set_header(im, matchlen, FLAG_IM);
        for i in 0..self.nwords - 2 {
            self.word(im, 2 + i).store(self.word(node, 2 + i).load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let (c0, c1) = if Self::bit(data, matchlen) == 1 { (node, new) } else { (new, node) };
        self.word(im, 0).store(u64::from(c1) << 32 | u64::from(c0), Ordering::Relaxed);
        self.seq.begin();
        self.set(slot, im);
        self.seq.end();
        Ok(None)
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), OpError> {
        let (prefixlen, data) = self.split(key).ok_or(OpError::Invalid)?;
        if prefixlen > self.max_prefixlen {
            return Err(OpError::Invalid);
        }
        let mut w = self.lock();
        let (mut trim, mut trim2) = (Slot::Root, Slot::Root);
        let mut parent = NIL;
        let mut matchlen = 0;
        let mut node = self.get(trim);
        while node != NIL {
            matchlen = self.match_len(node, prefixlen, data);
            let node_len = self.prefixlen(node);
            if node_len != matchlen || node_len == prefixlen {
                break;
            }
            parent = node;
            trim2 = trim;
            trim = Slot::Child(node, Self::bit(data, node_len));
            node = self.get(trim);
        }
        if node == NIL
            || self.prefixlen(node) != prefixlen
            || self.prefixlen(node) != matchlen
            || self.flags(node) & FLAG_IM != 0
        {
            return Err(OpError::NotFound);
        }
        w.n_entries -= 1;
        let (c0, c1) = (self.child(node, 0), self.child(node, 1));
        self.seq.begin();
        if c0 != NIL && c1 != NIL {
            self.set_header(node, prefixlen, FLAG_IM);
            self.seq.end();
            return Ok(());
        }
        if parent != NIL && self.flags(parent) & FLAG_IM != 0 && c0 == NIL && c1 == NIL {
            let sibling =
                if self.child(parent, 0) == node { self.child(parent, 1) } else { self.child(parent, 0) };
            self.set(trim2, sibling);
            self.seq.end();
            w.free.push_back(parent);
            w.free.push_back(node);
            return Ok(());
        }
        self.set(trim, if c0 != NIL { c0 } else { c1 });
        self.seq.end();
        w.free.push_back(node);
        Ok(())
    }

    fn read_key(&self, n: u32) -> Vec<u8> {
        let mut key = vec![0; self.key_size];
        key[..4].copy_from_slice(&self.prefixlen(n).to_ne_bytes());
        self.nodes.read(n as usize * self.nwords + 2, &mut key[4..]);
        key
    }

    /// The first node in post-order under `root` (never an intermediate node).
    fn leftmost(&self, root: u32) -> u32 {
        let mut next = NIL;
        let mut node = root;
        while node != NIL {
            if self.flags(node) & FLAG_IM != 0 {
                node = self.child(node, 0);
            } else {
                next = node;
                node = self.child(node, 0);
                if node == NIL {
                    node = self.child(next, 1);
                }
            }
        }
        next
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, OpError> {
        let key = match key {
            Some(k) => Some(self.split(k).ok_or(OpError::Invalid)?),
            None => None,
        };
        let _w = self.lock();
        let root = self.root.load(Ordering::Relaxed);
        if root == NIL {
            return Err(OpError::NotFound);
        }
        let Some((prefixlen, data)) = key.filter(|(p, _)| *p <= self.max_prefixlen) else {
            return Ok(self.read_key(self.leftmost(root)));
        };
        let mut stack = Vec::new();
        let mut matchlen = 0;
        let mut node = root;
        while node != NIL {
            stack.push(node);
            matchlen = self.match_len(node, prefixlen, data);
            let node_len = self.prefixlen(node);
            if node_len != matchlen || node_len == prefixlen {
                break;
            }
            node = self.child(node, Self::bit(data, node_len));
        }
        if node == NIL || self.prefixlen(node) != matchlen || self.flags(node) & FLAG_IM != 0 {
            return Ok(self.read_key(self.leftmost(root)));
        }
        let mut node = stack.pop().expect("the matched node is on the stack");
        while let Some(&parent) = stack.last() {
            if self.child(parent, 0) == node {
                let right = self.child(parent, 1);
                if right != NIL {
                    return Ok(self.read_key(self.leftmost(right)));
                }
            }
            if self.flags(parent) & FLAG_IM == 0 {
                return Ok(self.read_key(parent));
            }
            node = parent;
            stack.pop();
        }
        Err(OpError::NotFound)
    }

    /// Every prefix, in `next_key` order.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        let _w = self.lock();
        let mut out = Vec::new();
        let mut todo = vec![(self.root.load(Ordering::Relaxed), false)];
        while let Some((n, children_done)) = todo.pop() {
            if n == NIL {
                continue;
            }
            if children_done {
                if self.flags(n) & FLAG_IM == 0 {
                    let mut v = vec![0; self.value_size];
                    self.values.read(n as usize, 0, &mut v);
                    out.push(Entry { key: self.read_key(n), values: vec![v] });
                }
            } else {
                todo.push((n, true));
                todo.push((self.child(n, 1), false));
                todo.push((self.child(n, 0), false));
            }
        }
        out
    }

    pub(crate) fn contains_value(&self, addr: usize, len: usize) -> bool {
        self.values.contains(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BPF_ANY;

    fn trie(data_size: u32, max_entries: u32) -> LpmTrie {
        let def = MapDef {
            map_type: crate::map_type::LPM_TRIE,
            key_size: 4 + data_size,
            value_size: 4,
            max_entries,
            map_flags: f::NO_PREALLOC,
        };
        LpmTrie::new("t", &def).unwrap()
    }

    fn key(prefixlen: u32, data: &[u8]) -> Vec<u8> {
        let mut k = prefixlen.to_ne_bytes().to_vec();
        k.extend_from_slice(data);
        k
    }

    fn word(data: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..data.len()].copy_from_slice(data);
        u64::from_be_bytes(w)
    }

    /// xorshift64*: deterministic inputs without a dependency.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn lookup_word_matches_lookup() {
        for data_size in [1u32, 2, 3, 4, 8] {
            let t = trie(data_size, 64);
            assert!(t.has_word_lookup());
            let mut s = 0x9e37_79b9_7f4a_7c15 ^ u64::from(data_size);
            let max = data_size * 8;
            let mut hits = 0;
            // Empty trie first, then prefixes clustered in a few /4s so that intermediate
            // nodes, nested prefixes and deletions all happen.
            for round in 0..200 {
                if round > 0 {
                    let len = (rng(&mut s) % u64::from(max + 1)) as u32;
                    let mut data = rng(&mut s).to_be_bytes()[..data_size as usize].to_vec();
                    data[0] &= 0x3f;
                    let k = key(len, &data);
                    if rng(&mut s).is_multiple_of(4) {
                        let _ = t.delete(&k);
                    } else {
                        let _ = t.update(&k, &(round as u32).to_ne_bytes(), BPF_ANY);
                    }
                }
                for _ in 0..20 {
                    let len = (rng(&mut s) % u64::from(max + 2)) as u32;
                    let mut data = rng(&mut s).to_be_bytes()[..data_size as usize].to_vec();
                    data[0] &= 0x3f;
                    let k = key(len, &data);
                    let got = t.lookup_word(len, word(&data));
                    assert_eq!(got, t.lookup(&k), "data size {data_size}, round {round}, key {k:?}");
                    hits += usize::from(got.is_some());
                }
            }
            assert!(hits > 500, "data size {data_size}: only {hits} of 4000 lookups found a prefix");
        }
    }

    #[test]
    fn lookup_word_finds_the_longest_prefix() {
        let t = trie(4, 8);
        for (len, addr, id) in [(8u32, [10u8, 0, 0, 0], 1u32), (16, [10, 1, 0, 0], 2), (32, [10, 1, 2, 3], 3)]
        {
            t.update(&key(len, &addr), &id.to_ne_bytes(), BPF_ANY).unwrap();
        }
        // The value behind a pointer the lookup gave: that node's value.
        let id = |len: u32, addr: [u8; 4]| {
            t.lookup_word(len, word(&addr)).map(|p| {
                let n = (0..t.values_len()).find(|&n| t.values.ptr(n, 0) == p).expect("a node's value");
                let mut v = [0u8; 4];
                t.values.read(n, 0, &mut v);
                u32::from_ne_bytes(v)
            })
        };
        assert_eq!(id(32, [10, 1, 2, 3]), Some(3));
        assert_eq!(id(32, [10, 1, 2, 4]), Some(2));
        assert_eq!(id(32, [10, 2, 0, 0]), Some(1));
        assert_eq!(id(31, [10, 1, 2, 3]), Some(2), "a key prefix shorter than the /32 stops above it");
        assert_eq!(id(7, [10, 1, 2, 3]), None);
        assert_eq!(id(32, [11, 0, 0, 0]), None);
        assert_eq!(id(33, [10, 1, 2, 3]), None, "a prefix length over the maximum");
    }

    #[test]
    fn no_word_lookup_for_long_data() {
        let t = trie(16, 4);
        assert!(!t.has_word_lookup());
        t.update(&key(0, &[0; 16]), &1u32.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(t.lookup_word(0, 0), None);
        assert!(t.lookup(&key(0, &[0; 16])).is_some());
    }
}
