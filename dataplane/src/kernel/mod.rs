//! The kernel as oracle and rival: loading objects through the bpf syscall and running them with
//! `BPF_PROG_TEST_RUN`.
//!
//! [`KernelProgram::load`] takes the same [`Object`] our own engines run — maps as
//! [`MapSpec`]s, programs whose map references are `BPF_PSEUDO_MAP_IDX(_VALUE)` indices — creates
//! every map in the kernel, rewrites the references to map fds, and loads the program. Its
//! [`test_run`](KernelProgram::test_run) and [`maps`](KernelProgram::maps) give the retval, output
//! bytes and map contents the differential tests compare our engines with.
//!
//! `BPF_PROG_TEST_RUN` runs the program on the calling CPU: pin the thread
//! ([`pin_current_thread`]) before running a program that uses per-CPU maps or
//! `bpf_get_smp_processor_id()`.
//!
//! ```no_run
//! # fn demo(obj: &xdp_vm::elf::Object) -> Result<(), dataplane::kernel::KernelError> {
//! use dataplane::kernel::{KernelProgram, pin_current_thread};
//!
//! pin_current_thread(0)?;
//! let prog = KernelProgram::load(obj, &obj.programs[0])?;
//! let run = prog.test_run(&[0u8; 98], 1)?;
//! println!("retval {} after {} ns", run.retval, run.duration_ns);
//! for map in prog.maps() {
//!     println!("{}: {:?}", map.name(), map.entries()?);
//! }
//! # Ok(()) }
//! ```

#[expect(unsafe_code, reason = "the raw bpf(2) and sched_setaffinity(2) calls")]
mod sys;

mod perf;
pub use perf::UprobeLink;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use maps::{Entry, MapDef, map_flags, map_type};
use xdp_vm::elf::{MapKind, MapSpec, Object, ProgramKind, ProgramSpec};
use xdp_vm::insn::{self, Insn};

/// `enum bpf_prog_type` values this module loads.
mod prog_type {
    pub const KPROBE: u32 = 2;
    pub const XDP: u32 = 6;
}

/// Initial verifier log buffer; grown (up to [`LOG_MAX`]) when the kernel reports it too small.
const LOG_INITIAL: usize = 256 * 1024;
const LOG_MAX: usize = 64 * 1024 * 1024;
/// Room for the output packet beyond the input: `bpf_xdp_adjust_tail` can only grow into the
/// rest of a 4 KiB page.
const DATA_OUT_SLACK: usize = 4096;

/// What can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A bpf (or other) system call failed.
    #[error("{cmd} failed")]
    Syscall {
        cmd: &'static str,
        #[source]
        source: io::Error,
    },
    /// The verifier refused the program; `log` is its full log.
    #[error("the kernel verifier rejected the program:\n{log}")]
    Rejected { log: String },
    /// A `lddw` refers to a map the object does not have.
    #[error("instruction {insn} refers to map index {index}, but the object has {count} maps")]
    BadMapIndex { insn: usize, index: i32, count: usize },
    /// The program kind has no kernel program type here.
    #[error("program {name} (section {section}) has no kernel program type")]
    UnsupportedProgram { name: String, section: String },
    /// The license string cannot be passed to the kernel.
    #[error("the license contains a NUL byte")]
    BadLicense,
    /// A key or value of the wrong size for the map.
    #[error("map {map}: {what} is {actual} bytes, expected {expected}")]
    Size { map: String, what: &'static str, expected: usize, actual: usize },
    /// `/sys/devices/system/cpu/possible` could not be read or understood.
    #[error("cannot read the possible CPUs from {text:?}")]
    PossibleCpus {
        text: String,
        #[source]
        source: Option<io::Error>,
    },
}

fn syscall(cmd: &'static str) -> impl FnOnce(io::Error) -> KernelError {
    move |source| KernelError::Syscall { cmd, source }
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (the XDP action).
    pub retval: u32,
    /// The packet after the program ran, head and tail adjustments applied. It starts at
    /// `data_meta`: metadata a program added with `bpf_xdp_adjust_meta` comes first.
    pub data_out: Vec<u8>,
    /// The kernel's average time per run, in nanoseconds.
    pub duration_ns: u32,
}

/// A program loaded in the kernel, with the maps it uses; both are closed on drop.
#[derive(Debug)]
pub struct KernelProgram {
    fd: OwnedFd,
    /// Shared by the programs [`KernelProgram::load_all`] loads together.
    maps: std::sync::Arc<Vec<KernelMap>>,
    log: String,
}

impl KernelProgram {
    /// Creates every map of `obj` in the kernel and loads `prog` against them.
    ///
    /// Global-data maps get their initial contents; read-only ones (`.rodata`) are created with
    /// `BPF_F_RDONLY_PROG` and frozen after the write, as libbpf does, so the verifier can rely on
    /// their contents. Kernel map and program names are the first 15 characters of ours, with
    /// characters the kernel refuses replaced by `_`. Map references are rewritten from
    /// `BPF_PSEUDO_MAP_IDX` / `_IDX_VALUE` to `BPF_PSEUDO_MAP_FD` / `_VALUE`.
    ///
    /// # Errors
    ///
    /// [`KernelError::Rejected`] with the verifier log when the verifier refuses the program;
    /// [`KernelError::Syscall`] when a map cannot be created or written (or the load fails
    /// without a log, e.g. without privilege); the other variants for malformed input.
    pub fn load(obj: &Object, prog: &ProgramSpec) -> Result<Self, KernelError> {
        let maps = obj.maps.iter().map(KernelMap::create).collect::<Result<Vec<_>, _>>()?;
        Self::load_with(obj, prog, std::sync::Arc::new(maps))
    }

    /// Loads several programs of `obj` against one set of maps, as libbpf loads an object: what
    /// one program writes into a map the others see, and a prog array can hold them all for
    /// `bpf_tail_call` (fill it with [`KernelMap::update`] and each program's fd).
    ///
    /// # Errors
    ///
    /// As [`KernelProgram::load`], for the first program that fails.
    pub fn load_all(obj: &Object, progs: &[&ProgramSpec]) -> Result<Vec<Self>, KernelError> {
        let maps =
            std::sync::Arc::new(obj.maps.iter().map(KernelMap::create).collect::<Result<Vec<_>, _>>()?);
        progs.iter().map(|p| Self::load_with(obj, p, maps.clone())).collect()
    }

    fn load_with(
        obj: &Object,
        prog: &ProgramSpec,
        maps: std::sync::Arc<Vec<KernelMap>>,
    ) -> Result<Self, KernelError> {
        let prog_type = match prog.kind {
            ProgramKind::Xdp => prog_type::XDP,
            ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. } => prog_type::KPROBE,
            ProgramKind::Other => {
                return Err(KernelError::UnsupportedProgram {
                    name: prog.name.clone(),
                    section: prog.section.clone(),
                });
            }
        };
        let license = CString::new(obj.license.as_str()).map_err(|_| KernelError::BadLicense)?;
        let insns = relocate(&prog.insns, &maps)?;
        // Function references (callbacks) need BTF func info; the object's own BTF is not
        // kept, so each function gets a minimal `int fN(void)` of static linkage.
        let func_info = match func_btf(&insns) {
            Some((btf, records)) => {
                let fd = sys::btf_load(&btf).map_err(syscall("BPF_BTF_LOAD"))?;
                Some((fd, records))
            }
            None => None,
        };
        let load = sys::ProgLoad {
            prog_type,
            insns: &insn::encode_all(&insns),
            license: &license,
            name: kernel_name(&prog.name),
            func_info: func_info.as_ref().map(|(fd, r)| (fd.as_fd(), &r[..])),
        };
        let (fd, log) = load_with_log(&load)?;
        Ok(Self { fd, maps, log })
    }

    /// Runs the program once per `repeat` (0 counts as 1, as in the kernel) over `data_in`.
    ///
    /// The kernel does not reset the packet between repeats: head and tail adjustments
    /// accumulate, and `data_out` is the packet after the last run.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] when the kernel refuses the run (e.g. `data_in` shorter than an
    /// Ethernet header, or larger than a page minus head- and tailroom).
    pub fn test_run(&self, data_in: &[u8], repeat: u32) -> Result<TestRun, KernelError> {
        let mut out = vec![0u8; data_in.len() + DATA_OUT_SLACK];
        let run = sys::prog_test_run(self.fd.as_fd(), data_in, &mut out, repeat.max(1))
            .map_err(syscall("BPF_PROG_TEST_RUN"))?;
        out.truncate(run.size_out as usize);
        Ok(TestRun { retval: run.retval, data_out: out, duration_ns: run.duration })
    }

    /// The program's maps, in [`Object::maps`] order.
    #[must_use]
    pub fn maps(&self) -> &[KernelMap] {
        &self.maps
    }

    /// The map called `name` (the [`MapSpec`] name, e.g. `.bss`).
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&KernelMap> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The verifier's log of the successful load (level 1: mostly the statistics line).
    #[must_use]
    pub fn verifier_log(&self) -> &str {
        &self.log
    }
}

/// How an XDP program is attached to an interface (`XDP_FLAGS_*_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): veth and most NICs support it.
    Native,
    /// Generic XDP on the skb (`XDP_FLAGS_SKB_MODE`): works on every interface, slower.
    Skb,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Skb => 1 << 1,
            XdpMode::Native => 1 << 2,
        }
    }
}

/// An XDP program attached to an interface through a bpf link. Dropping it detaches the
/// program; so does the process ending in any way (the kernel closes the link with the last
/// descriptor), which is why nothing stays attached after a crash or `SIGKILL`.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    ifindex: u32,
}

impl XdpLink {
    /// The interface the program is attached to.
    #[must_use]
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl AsFd for XdpLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl KernelProgram {
    /// Attaches this (XDP) program to interface `ifindex` with `BPF_LINK_CREATE`.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] (`BPF_LINK_CREATE`) when the interface does not exist, already
    /// has an XDP program (`EBUSY`/`EEXIST`), or the driver lacks the mode (`EOPNOTSUPP`).
    pub fn attach_xdp(&self, ifindex: u32, mode: XdpMode) -> Result<XdpLink, KernelError> {
        let fd = sys::link_create_xdp(self.fd.as_fd(), ifindex, mode.flags())
            .map_err(syscall("BPF_LINK_CREATE"))?;
        Ok(XdpLink { fd, ifindex })
    }
}

impl AsFd for KernelProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Loads with a level-1 log, growing the buffer while the kernel reports it too small
/// (`ENOSPC`, which since Linux 6.4 fails even a program that verified), and falling back to a
/// level-2 log when a failure left the level-1 log empty.
fn load_with_log(load: &sys::ProgLoad<'_>) -> Result<(OwnedFd, String), KernelError> {
    let mut level = 1;
    let mut size = LOG_INITIAL;
    loop {
        let mut log = vec![0u8; size];
        let (err, needed) = match sys::prog_load(load, level, &mut log) {
            Ok(fd) => return Ok((fd, log_text(&log))),
            Err(failure) => failure,
        };
        let text = log_text(&log);
        if err.raw_os_error() == Some(libc::ENOSPC) && size < LOG_MAX {
            size = (needed as usize).max(size * 4).min(LOG_MAX);
        } else if text.trim().is_empty() && level == 1 {
            level = 2;
        } else if text.trim().is_empty() {
            return Err(KernelError::Syscall { cmd: "BPF_PROG_LOAD", source: err });
        } else {
            return Err(KernelError::Rejected { log: text });
        }
    }
}

fn log_text(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

/// Rewrites loader map references to the kernel's fd-based ones.
fn relocate(insns: &[Insn], maps: &[KernelMap]) -> Result<Vec<Insn>, KernelError> {
    let mut out = insns.to_vec();
    for (i, ins) in out.iter_mut().enumerate() {
        if !ins.is_lddw() {
            continue;
        }
        let src = match ins.src {
            insn::BPF_PSEUDO_MAP_IDX => insn::BPF_PSEUDO_MAP_FD,
            insn::BPF_PSEUDO_MAP_IDX_VALUE => insn::BPF_PSEUDO_MAP_VALUE,
            _ => continue,
        };
        let map = usize::try_from(ins.imm)
            .ok()
            .and_then(|idx| maps.get(idx))
            .ok_or(KernelError::BadMapIndex { insn: i, index: ins.imm, count: maps.len() })?;
        ins.src = src;
        ins.imm = map.raw_fd();
    }
    Ok(out)
}

/// For a program with function references (`lddw` with `BPF_PSEUDO_FUNC`): raw BTF with one
/// `FUNC` `fN` (static, `int (void)`) per function, and the `bpf_func_info` records naming them
/// at each function's first instruction (the program's, call targets and referenced functions,
/// in order, as the kernel splits the program). `None` when the program has no reference.
fn func_btf(insns: &[Insn]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut starts = std::collections::BTreeSet::from([0usize]);
    let mut has_func = false;
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        let target = usize::try_from(pc as i64 + 1 + i64::from(i.imm)).ok();
        if i.is_lddw() && i.src == insn::BPF_PSEUDO_FUNC {
            has_func = true;
            starts.extend(target);
        } else if i.is_pseudo_call() {
            starts.extend(target);
        }
        pc += if i.is_lddw() { 2 } else { 1 };
    }
    if !has_func {
        return None;
    }
    const KIND_INT: u32 = 1;
    const KIND_FUNC: u32 = 12;
    const KIND_FUNC_PROTO: u32 = 13;
    let mut types: Vec<u32> = Vec::new();
    let mut strings = b"\0int\0".to_vec();
    // 1: int; 2: int (void); 3..: the functions.
    types.extend([1, KIND_INT << 24, 4, (1 << 24) | 32]);
    types.extend([0, KIND_FUNC_PROTO << 24, 1]);
    let mut records = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let name_off = strings.len() as u32;
        strings.extend_from_slice(format!("f{n}\0").as_bytes());
        types.extend([name_off, KIND_FUNC << 24, 2]);
        records.extend_from_slice(&(start as u32).to_le_bytes());
        records.extend_from_slice(&(3 + n as u32).to_le_bytes());
    }
    let type_bytes: Vec<u8> = types.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut btf = Vec::new();
    btf.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    btf.extend_from_slice(&[1, 0]); // version, flags
    for field in [24, 0, type_bytes.len() as u32, type_bytes.len() as u32, strings.len() as u32] {
        btf.extend_from_slice(&field.to_le_bytes());
    }
    btf.extend_from_slice(&type_bytes);
    btf.extend_from_slice(&strings);
    Some((btf, records))
}

/// The kernel's name for an object: at most 15 bytes of `[A-Za-z0-9_.]`, the rest as `_`.
fn kernel_name(name: &str) -> [u8; sys::OBJ_NAME_LEN] {
    let mut out = [0u8; sys::OBJ_NAME_LEN];
    for (slot, b) in out.iter_mut().zip(name.bytes()).take(sys::OBJ_NAME_LEN - 1) {
        *slot = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' { b } else { b'_' };
    }
    out
}

fn is_percpu(map_type: u32) -> bool {
    matches!(map_type, map_type::PERCPU_HASH | map_type::PERCPU_ARRAY | map_type::LRU_PERCPU_HASH)
}

/// A map created in the kernel for a [`KernelProgram`].
#[derive(Debug)]
pub struct KernelMap {
    name: String,
    def: MapDef,
    /// 1, or the possible CPUs for per-CPU maps.
    slots: usize,
    map: sys::Map,
}

impl KernelMap {
    fn create(spec: &MapSpec) -> Result<Self, KernelError> {
        let mut def = spec.def;
        if spec.kind == (MapKind::Global { readonly: true }) {
            def.map_flags |= map_flags::RDONLY_PROG;
        }
        let slots = if is_percpu(def.map_type) { possible_cpus()? } else { 1 };
        let value_len =
            if is_percpu(def.map_type) { round8(def.value_size) * slots } else { def.value_size as usize };
        let map =
            sys::Map::create(&def, kernel_name(&spec.name), value_len).map_err(syscall("BPF_MAP_CREATE"))?;
        let this = Self { name: spec.name.clone(), def: spec.def, slots, map };
        if let MapKind::Global { readonly } = spec.kind {
            let mut value = spec.data.clone();
            value.resize(def.value_size as usize, 0);
            this.update(&0u32.to_ne_bytes(), &value, 0)?;
            if readonly {
                this.map.freeze().map_err(syscall("BPF_MAP_FREEZE"))?;
            }
        }
        Ok(this)
    }

    fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.map.as_fd().as_raw_fd()
    }

    /// The [`MapSpec`] name, untruncated.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition the map was created from (as the object declared it).
    #[must_use]
    pub fn def(&self) -> &MapDef {
        &self.def
    }

    /// Every entry, sorted by key. Per-CPU maps have one value per possible CPU (the kernel's
    /// 8-byte slot padding removed); other maps have one value.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] when iteration or lookup fails.
    pub fn entries(&self) -> Result<Vec<Entry>, KernelError> {
        let mut keys = Vec::new();
        let mut next = vec![0u8; self.map.key_size()];
        let mut prev: Option<Vec<u8>> = None;
        while self.map.next_key(prev.as_deref(), &mut next).map_err(syscall("BPF_MAP_GET_NEXT_KEY"))? {
            keys.push(next.clone());
            prev = Some(next.clone());
        }
        let mut entries = Vec::with_capacity(keys.len());
        let mut buf = vec![0u8; self.map.value_len()];
        for key in keys {
            // An entry deleted since the iteration (by a program run elsewhere) is skipped.
            if self.map.lookup(&key, &mut buf).map_err(syscall("BPF_MAP_LOOKUP_ELEM"))? {
                entries.push(Entry { key, values: self.split_values(&buf) });
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// The value(s) at `key`, one per slot as in [`entries`](Self::entries); `None` when absent.
    ///
    /// # Errors
    ///
    /// [`KernelError::Size`] for a key of the wrong size; [`KernelError::Syscall`] when the
    /// lookup fails.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, KernelError> {
        self.check_key(key)?;
        let mut buf = vec![0u8; self.map.value_len()];
        let found = self.map.lookup(key, &mut buf).map_err(syscall("BPF_MAP_LOOKUP_ELEM"))?;
        Ok(found.then(|| self.split_values(&buf)))
    }

    /// Writes one entry with `BPF_ANY` / `BPF_NOEXIST` / `BPF_EXIST` `flags`.
    ///
    /// `value` is `value_size` bytes; for a per-CPU map it may instead hold one value per
    /// possible CPU back to back (`value_size` bytes each), and a single value is written to
    /// every CPU's slot.
    ///
    /// # Errors
    ///
    /// [`KernelError::Size`] when the key or value has the wrong size; [`KernelError::Syscall`]
    /// with the kernel's errno otherwise (e.g. `EEXIST`, `ENOENT`, `E2BIG`, `EPERM` when frozen).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), KernelError> {
        self.check_key(key)?;
        let size = self.def.value_size as usize;
        let buf = if is_percpu(self.def.map_type) {
            let per_cpu: Vec<&[u8]> = if value.len() == size {
                vec![value; self.slots]
            } else if value.len() == size * self.slots {
                value.chunks_exact(size).collect()
            } else {
                return Err(self.size_error("value", size * self.slots, value.len()));
            };
            let stride = round8(self.def.value_size);
            let mut buf = vec![0u8; stride * self.slots];
            for (slot, v) in buf.chunks_exact_mut(stride).zip(per_cpu) {
                slot[..size].copy_from_slice(v);
            }
            buf
        } else if value.len() == size {
            value.to_vec()
        } else {
            return Err(self.size_error("value", size, value.len()));
        };
        self.map.update(key, &buf, flags).map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KernelError> {
        if key.len() == self.map.key_size() {
            Ok(())
        } else {
            Err(self.size_error("key", self.map.key_size(), key.len()))
        }
    }

    fn size_error(&self, what: &'static str, expected: usize, actual: usize) -> KernelError {
        KernelError::Size { map: self.name.clone(), what, expected, actual }
    }

    /// Creates a standalone map from a bare definition (`BPF_MAP_CREATE`), for differential tests
    /// of map operations through the syscalls. Per-CPU maps get one value per possible CPU.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] with the kernel's errno when it refuses the definition.
    pub fn create_standalone(name: &str, def: MapDef) -> Result<Self, KernelError> {
        let slots = if is_percpu(def.map_type) { possible_cpus()? } else { 1 };
        let value_len =
            if is_percpu(def.map_type) { round8(def.value_size) * slots } else { def.value_size as usize };
        let map = sys::Map::create(&def, kernel_name(name), value_len).map_err(syscall("BPF_MAP_CREATE"))?;
        Ok(Self { name: name.to_owned(), def, slots, map })
    }

    /// `BPF_MAP_DELETE_ELEM`.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] with the kernel's errno (`ENOENT` when absent, `EINVAL` for
    /// arrays and queues, ...).
    pub fn delete(&self, key: &[u8]) -> Result<(), KernelError> {
        self.map.delete(key).map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first for `None`); `None` at the end.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] with the kernel's errno.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, KernelError> {
        let mut next = vec![0u8; self.map.key_size()];
        let found = self.map.next_key(key, &mut next).map_err(syscall("BPF_MAP_GET_NEXT_KEY"))?;
        Ok(found.then_some(next))
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (a queue or stack pop with an empty key); `None` when
    /// there is nothing to take.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] with the kernel's errno.
    pub fn lookup_and_delete(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, KernelError> {
        let mut buf = vec![0u8; self.map.value_len()];
        let found =
            self.map.lookup_and_delete(key, &mut buf).map_err(syscall("BPF_MAP_LOOKUP_AND_DELETE_ELEM"))?;
        Ok(found.then(|| self.split_values(&buf)))
    }

    /// A ring buffer's records (`BPF_MAP_TYPE_RINGBUF`), read and consumed through `mmap` as a
    /// libbpf consumer would: in order, discarded ones skipped, up to the first still busy.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] (`mmap`) when the map is no ring buffer or cannot be mapped.
    pub fn ringbuf_drain(&self) -> Result<Vec<Vec<u8>>, KernelError> {
        sys::ringbuf_drain(self.map.as_fd(), self.def.max_entries as usize).map_err(syscall("mmap"))
    }

    fn split_values(&self, buf: &[u8]) -> Vec<Vec<u8>> {
        let size = self.def.value_size as usize;
        if is_percpu(self.def.map_type) {
            buf.chunks_exact(round8(self.def.value_size)).map(|slot| slot[..size].to_vec()).collect()
        } else {
            vec![buf.to_vec()]
        }
    }
}

impl AsFd for KernelMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}

fn round8(n: u32) -> usize {
    (n as usize).div_ceil(8) * 8
}

/// A perf event for `bpf_perf_event_output`: a `PERF_COUNT_SW_BPF_OUTPUT` event on one CPU
/// with its ring buffer mapped, as `perf` or libbpf's `perf_buffer` opens it. Put
/// [`PerfOutput::fd`] into a perf event array slot; samples a program outputs on that CPU are
/// then read back with [`PerfOutput::drain`].
pub struct PerfOutput(sys::PerfOutput);

impl std::fmt::Debug for PerfOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfOutput").finish_non_exhaustive()
    }
}

impl PerfOutput {
    /// Opens the event on `cpu` with a ring of `pages` pages.
    ///
    /// # Errors
    ///
    /// [`KernelError::Syscall`] when `perf_event_open` or `mmap` fails (no privilege, no such
    /// CPU).
    pub fn open(cpu: u32, pages: usize) -> Result<Self, KernelError> {
        let cpu = i32::try_from(cpu).map_err(|_| KernelError::Syscall {
            cmd: "perf_event_open",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        sys::PerfOutput::open(cpu, pages).map(Self).map_err(syscall("perf_event_open"))
    }

    /// The event's fd, the value a perf event array slot takes.
    #[must_use]
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.0.fd().as_raw_fd()
    }

    /// The raw data of the samples written since the last drain, in order, each padded to the
    /// kernel's 8-byte record alignment; and the number of samples the kernel lost.
    #[must_use]
    pub fn drain(&self) -> (Vec<Vec<u8>>, u64) {
        self.0.drain()
    }
}

/// The number of possible CPUs, from `/sys/devices/system/cpu/possible` (e.g. `0-1` -> 2): the
/// count the kernel sizes per-CPU map values by.
///
/// # Errors
///
/// [`KernelError::PossibleCpus`] when the file is missing or malformed.
pub fn possible_cpus() -> Result<usize, KernelError> {
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(PATH)
        .map_err(|e| KernelError::PossibleCpus { text: PATH.to_string(), source: Some(e) })?;
    parse_cpu_list(text.trim()).ok_or(KernelError::PossibleCpus { text, source: None })
}

/// Counts the CPUs of a kernel CPU list such as `0-3,8-11` or `0`.
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
        count += hi.checked_sub(lo)? + 1;
    }
    (count > 0).then_some(count)
}

/// Pins the calling thread to `cpu`. `BPF_PROG_TEST_RUN` runs the program on the calling CPU,
/// so per-CPU map slots and `bpf_get_smp_processor_id()` are deterministic only when pinned.
///
/// # Errors
///
/// [`KernelError::Syscall`] (`sched_setaffinity`) when the CPU does not exist or is not allowed.
pub fn pin_current_thread(cpu: usize) -> Result<(), KernelError> {
    sys::pin_current_thread(cpu).map_err(syscall("sched_setaffinity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }

    #[test]
    fn sanitizes_and_truncates_names() {
        assert_eq!(&kernel_name(".rodata"), b".rodata\0\0\0\0\0\0\0\0\0");
        assert_eq!(&kernel_name("a_very_long_map_name"), b"a_very_long_map\0");
        assert_eq!(&kernel_name("x-y/z"), b"x_y_z\0\0\0\0\0\0\0\0\0\0\0");
    }
}
