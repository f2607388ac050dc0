//! The raw `bpf(2)` and `sched_setaffinity(2)` calls: the only unsafe code of the kernel oracle.
//!
//! Every attribute struct mirrors one anonymous member of `union bpf_attr`
//! (`include/uapi/linux/bpf.h`), field for field, with explicit zeroed padding so no uninitialised
//! byte reaches the kernel. A struct shorter than the kernel's union is fine: the kernel zero-fills
//! the rest.
//!
//! Invariant that makes the element calls sound: the kernel reads `key_size` bytes through a key
//! pointer and writes (or reads) a map's full value buffer through a value pointer, so every
//! element call goes through [`Map`], which remembers those sizes from its own `BPF_MAP_CREATE`
//! and checks every slice against them before the call.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_cmd` values used here.
mod cmd {
    pub const MAP_CREATE: libc::c_long = 0;
    pub const MAP_LOOKUP_ELEM: libc::c_long = 1;
    pub const MAP_UPDATE_ELEM: libc::c_long = 2;
    pub const MAP_DELETE_ELEM: libc::c_long = 3;
    pub const MAP_GET_NEXT_KEY: libc::c_long = 4;
    pub const PROG_LOAD: libc::c_long = 5;
    pub const PROG_TEST_RUN: libc::c_long = 10;
    pub const MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    pub const MAP_FREEZE: libc::c_long = 22;
    pub const BTF_LOAD: libc::c_long = 18;
    pub const LINK_CREATE: libc::c_long = 28;
}

/// `BPF_XDP`, the XDP attach type of `enum bpf_attach_type`.
const ATTACH_TYPE_XDP: u32 = 37;

/// Length of the kernel's object names (`BPF_OBJ_NAME_LEN`), NUL included.
pub(super) const OBJ_NAME_LEN: usize = 16;

/// The `BPF_MAP_CREATE` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}

/// The `BPF_MAP_*_ELEM` / `BPF_MAP_GET_NEXT_KEY` member (`value` doubles as `next_key`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `BPF_MAP_FREEZE` member (only `map_fd` is read).
#[repr(C)]
#[derive(Default)]
struct MapFdAttr {
    map_fd: u32,
}

/// The `BPF_PROG_LOAD` member, up to `log_true_size` (Linux 6.4+; older kernels see a zero tail).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
    core_relos: u64,
    core_relo_rec_size: u32,
    log_true_size: u32,
}

/// The `BPF_PROG_TEST_RUN` member.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The `BPF_LINK_CREATE` member, up to `flags` (the rest of the union is zero-filled).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

// The layouts above must be the kernel's; these offsets are the ones `bpf.h` implies.
const _: () = {
    assert!(size_of::<MapCreateAttr>() == 72);
    assert!(std::mem::offset_of!(MapCreateAttr, map_name) == 28);
    assert!(std::mem::offset_of!(MapCreateAttr, map_extra) == 64);
    assert!(size_of::<ElemAttr>() == 32);
    assert!(size_of::<ProgLoadAttr>() == 144);
    assert!(std::mem::offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(std::mem::offset_of!(ProgLoadAttr, fd_array) == 120);
    assert!(std::mem::offset_of!(ProgLoadAttr, log_true_size) == 140);
    assert!(size_of::<TestRunAttr>() == 80);
    assert!(std::mem::offset_of!(TestRunAttr, flags) == 64);
    assert!(size_of::<LinkCreateAttr>() == 16);
};

/// Calls `bpf(cmd, attr, sizeof attr)`; returns the non-negative result or the errno.
///
/// # Safety
///
/// `T` must be the attribute struct above that matches `command`, and every user pointer in
/// `attr` must be valid for the kernel to read (or, for output buffers, write) the number of bytes
/// the command implies from the other fields, for the duration of the call.
unsafe fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = size_of::<T>() as libc::c_long;
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` struct of `size` bytes, so the
    // kernel may read and write it; the pointers inside it are valid per this fn's contract, and
    // the kernel keeps none of them after returning.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, command, std::ptr::from_mut(attr), size) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Wraps a file descriptor the kernel just returned.
///
/// # Safety
///
/// `fd` must be a descriptor just created for this process that nothing else owns.
unsafe fn owned(fd: libc::c_long) -> OwnedFd {
    let raw = i32::try_from(fd).expect("the kernel returns fds that fit an int");
    // SAFETY: `raw` is a fresh descriptor nothing else owns, per this fn's contract.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// A pointer as the kernel's `__aligned_u64`.
fn ptr(p: *const u8) -> u64 {
    p as usize as u64
}

/// A key pointer: NULL for the empty keys of `key_size == 0` maps (queue, stack), which the
/// kernel requires (`___bpf_copy_key` refuses a non-NULL key there).
fn key_ptr(key: &[u8]) -> u64 {
    if key.is_empty() { 0 } else { ptr(key.as_ptr()) }
}

/// A map this process created, with the buffer sizes its element calls need.
#[derive(Debug)]
pub(super) struct Map {
    fd: OwnedFd,
    key_size: usize,
    /// Bytes the kernel copies for one value: `value_size`, or for per-CPU maps
    /// `round_up(value_size, 8) * possible CPUs`.
    value_len: usize,
}

impl Map {
    /// `BPF_MAP_CREATE`. `value_len` is the buffer size element calls will use, which the caller
    /// computes from the map type (see [`super::value_len`]).
    pub(super) fn create(def: &maps::MapDef, name: [u8; OBJ_NAME_LEN], value_len: usize) -> io::Result<Self> {
        let mut attr = MapCreateAttr {
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            map_flags: def.map_flags,
            map_name: name,
            ..MapCreateAttr::default()
        };
        // SAFETY: the create attribute holds no pointer (`map_name` is an inline array).
        let fd = unsafe { bpf(cmd::MAP_CREATE, &mut attr) }?;
        // SAFETY: a successful BPF_MAP_CREATE returns a new map fd owned by nobody yet.
        let fd = unsafe { owned(fd) };
        Ok(Self { fd, key_size: def.key_size as usize, value_len })
    }

    pub(super) fn key_size(&self) -> usize {
        self.key_size
    }

    pub(super) fn value_len(&self) -> usize {
        self.value_len
    }

    fn check(&self, key: &[u8], value: usize) -> io::Result<()> {
        if key.len() == self.key_size && value == self.value_len {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        }
    }

    /// `BPF_MAP_UPDATE_ELEM`; `value` must be the full value buffer (all CPUs for per-CPU maps).
    pub(super) fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        self.check(key, value.len())?;
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key_ptr(key),
            value: ptr(value.as_ptr()),
            flags,
            ..ElemAttr::default()
        };
        // SAFETY: `check` proved `key` has `key_size` bytes and
        // `value` has `value_len` bytes, exactly what the kernel reads for this map.
        unsafe { bpf(cmd::MAP_UPDATE_ELEM, &mut attr) }.map(drop)
    }

    /// `BPF_MAP_LOOKUP_ELEM` into `value` (the full value buffer); `Ok(false)` when absent.
    pub(super) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, value.len())?;
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key_ptr(key),
            value: ptr(value.as_mut_ptr()),
            ..ElemAttr::default()
        };
        // SAFETY: `check` proved `key` has `key_size` bytes and the
        // exclusively borrowed `value` has `value_len` bytes, exactly what the kernel accesses.
        found(unsafe { bpf(cmd::MAP_LOOKUP_ELEM, &mut attr) })
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first key for `None`) into `next`;
    /// `Ok(false)` at the end.
    pub(super) fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
        if key.is_some_and(|k| k.len() != self.key_size) || next.len() != self.key_size {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.map_or(0, |k| ptr(k.as_ptr())),
            value: ptr(next.as_mut_ptr()),
            ..ElemAttr::default()
        };
        // SAFETY: both `key` (or NULL, which the kernel accepts as
        // "first key") and the exclusively borrowed `next` were just checked to be `key_size`
        // bytes, what the kernel reads and writes.
        found(unsafe { bpf(cmd::MAP_GET_NEXT_KEY, &mut attr) })
    }

    /// `BPF_MAP_DELETE_ELEM`.
    pub(super) fn delete(&self, key: &[u8]) -> io::Result<()> {
        if key.len() != self.key_size {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut attr =
            ElemAttr { map_fd: self.fd.as_raw_fd() as u32, key: key_ptr(key), ..ElemAttr::default() };
        // SAFETY: `key` was just checked to be `key_size` bytes (or NULL for key_size 0), all the
        // kernel reads for a delete.
        unsafe { bpf(cmd::MAP_DELETE_ELEM, &mut attr) }.map(drop)
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` into `value` (queue and stack pop); `Ok(false)` when
    /// absent.
    pub(super) fn lookup_and_delete(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, value.len())?;
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key_ptr(key),
            value: ptr(value.as_mut_ptr()),
            ..ElemAttr::default()
        };
        // SAFETY: `check` proved `key` has `key_size` bytes (NULL when 0) and the exclusively
        // borrowed `value` has `value_len` bytes, exactly what the kernel accesses.
        found(unsafe { bpf(cmd::MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) })
    }

    /// `BPF_MAP_FREEZE`: no more writes from user space.
    pub(super) fn freeze(&self) -> io::Result<()> {
        let mut attr = MapFdAttr { map_fd: self.fd.as_raw_fd() as u32 };
        // SAFETY: the freeze attribute holds no pointer, only the fd.
        unsafe { bpf(cmd::MAP_FREEZE, &mut attr) }.map(drop)
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What `BPF_PROG_LOAD` needs besides the log buffer.
pub(super) struct ProgLoad<'a> {
    pub prog_type: u32,
    /// Encoded instructions, 8 bytes per slot.
    pub insns: &'a [u8],
    pub license: &'a CStr,
    pub name: [u8; OBJ_NAME_LEN],
    /// BTF and `struct bpf_func_info` records (8 bytes each: `insn_off`, `type_id`), one per
    /// function: the kernel wants them for programs with function references (callbacks).
    pub func_info: Option<(BorrowedFd<'a>, &'a [u8])>,
}

/// The `BPF_BTF_LOAD` member, up to `btf_log_true_size`.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    btf_log_true_size: u32,
}

/// `BPF_BTF_LOAD` of the raw BTF `btf` (header, types, strings).
pub(super) fn btf_load(btf: &[u8]) -> io::Result<OwnedFd> {
    let btf_size = u32::try_from(btf.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let mut attr = BtfLoadAttr { btf: ptr(btf.as_ptr()), btf_size, ..BtfLoadAttr::default() };
    // SAFETY: the kernel reads `btf_size` (= `btf.len()`) bytes of `btf`; no log buffer.
    let fd = unsafe { bpf(cmd::BTF_LOAD, &mut attr) }?;
    // SAFETY: a successful BPF_BTF_LOAD returns a new BTF fd owned by nobody yet.
    Ok(unsafe { owned(fd) })
}

/// `BPF_PROG_LOAD` with a verifier log in `log`. On failure, also returns the log size the
/// kernel needed (`log_true_size`, 0 on kernels before 6.4).
pub(super) fn prog_load(
    load: &ProgLoad<'_>,
    log_level: u32,
    log: &mut [u8],
) -> Result<OwnedFd, (io::Error, u32)> {
    let insn_cnt =
        u32::try_from(load.insns.len() / 8).map_err(|_| (io::Error::from_raw_os_error(libc::E2BIG), 0))?;
    let log_size = u32::try_from(log.len()).map_err(|_| (io::Error::from_raw_os_error(libc::EINVAL), 0))?;
    let mut attr = ProgLoadAttr {
        prog_type: load.prog_type,
        insn_cnt,
        insns: ptr(load.insns.as_ptr()),
        license: ptr(load.license.as_ptr().cast()),
        log_level,
        log_size,
        log_buf: if log.is_empty() { 0 } else { ptr(log.as_mut_ptr()) },
        prog_name: load.name,
        ..ProgLoadAttr::default()
    };
    if let Some((btf, records)) = load.func_info {
        attr.prog_btf_fd = btf.as_raw_fd() as u32;
        attr.func_info_rec_size = 8;
        attr.func_info = ptr(records.as_ptr());
        attr.func_info_cnt = (records.len() / 8) as u32;
    }
    // SAFETY: the kernel reads `insn_cnt * 8` bytes of `insns`
    // (`insn_cnt` is its length / 8), `func_info_cnt * 8` bytes of the func info records (a
    // whole number of records, borrowed with the BTF fd for the call), the NUL-terminated
    // `license`, and writes at most
    // `log_size` (= `log.len()`) bytes into the exclusively borrowed `log`.
    match unsafe { bpf(cmd::PROG_LOAD, &mut attr) } {
        // SAFETY: a successful BPF_PROG_LOAD returns a new program fd owned by nobody yet.
        Ok(fd) => Ok(unsafe { owned(fd) }),
        Err(e) => Err((e, attr.log_true_size)),
    }
}

/// What one `BPF_PROG_TEST_RUN` reports.
pub(super) struct TestRunOut {
    pub retval: u32,
    /// The output length the kernel reported (at most `data_out.len()` on success).
    pub size_out: u32,
    pub duration: u32,
}

/// `BPF_PROG_TEST_RUN` of `prog` over `data_in`, the output packet written to `data_out`.
pub(super) fn prog_test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    data_out: &mut [u8],
    repeat: u32,
) -> io::Result<TestRunOut> {
    let too_big = |_| io::Error::from_raw_os_error(libc::E2BIG);
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: u32::try_from(data_in.len()).map_err(too_big)?,
        data_size_out: u32::try_from(data_out.len()).map_err(too_big)?,
        data_in: ptr(data_in.as_ptr()),
        data_out: ptr(data_out.as_mut_ptr()),
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: the kernel reads `data_size_in` (= `data_in.len()`)
    // bytes and copies at most `data_size_out` (= `data_out.len()`) bytes into the exclusively
    // borrowed `data_out` (it fails with ENOSPC rather than write more); no context buffers.
    unsafe { bpf(cmd::PROG_TEST_RUN, &mut attr) }?;
    Ok(TestRunOut { retval: attr.retval, size_out: attr.data_size_out, duration: attr.duration })
}

/// `BPF_LINK_CREATE` of an XDP link: attaches `prog` to interface `ifindex` with the
/// `XDP_FLAGS_*` mode bits in `flags`. The link (and with it the attachment) lives as long as the
/// returned descriptor: closing it, or the process dying, detaches the program.
pub(super) fn link_create_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: ATTACH_TYPE_XDP,
        flags,
    };
    // SAFETY: the link-create attribute holds no pointer, only descriptors and integers.
    let fd = unsafe { bpf(cmd::LINK_CREATE, &mut attr) }?;
    // SAFETY: a successful BPF_LINK_CREATE returns a new link fd owned by nobody yet.
    Ok(unsafe { owned(fd) })
}

/// Reads every record a ring-buffer map holds, as a libbpf consumer does through `mmap`: the
/// consumer page (read-write) at offset 0, the producer page and the data pages (mapped twice
/// in a row, so a record that wraps is contiguous) after it. Records come in order up to the
/// first one still busy; discarded ones are skipped; the consumer position is advanced past
/// everything read, as in the kernel's ring.
pub(super) fn ringbuf_drain(map: BorrowedFd<'_>, size: usize) -> io::Result<Vec<Vec<u8>>> {
    const BUSY: u32 = 1 << 31;
    const DISCARD: u32 = 1 << 30;
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    if !size.is_power_of_two() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let fd = map.as_raw_fd();
    // SAFETY: a fresh shared mapping of the ring's consumer page at an address of the kernel's
    // choosing; it aliases no Rust object.
    let cons_page = unsafe {
        libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
    };
    if cons_page == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let prod_len = page + 2 * size;
    // SAFETY: as above, read-only, for the producer page and the doubly mapped data.
    let prod_page = unsafe {
        libc::mmap(std::ptr::null_mut(), prod_len, libc::PROT_READ, libc::MAP_SHARED, fd, page as i64)
    };
    if prod_page == libc::MAP_FAILED {
        let err = io::Error::last_os_error();
        // SAFETY: unmapping the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(cons_page, page) };
        return Err(err);
    }
    // SAFETY: both pages are mapped, page-aligned, and start with the kernel's `unsigned long`
    // positions, which the kernel updates concurrently: they are only accessed as atomics.
    let (cons_pos, prod_pos) = unsafe {
        (
            std::sync::atomic::AtomicU64::from_ptr(cons_page.cast::<u64>()),
            std::sync::atomic::AtomicU64::from_ptr(prod_page.cast::<u64>()),
        )
    };
    let data = prod_page.cast::<u8>().wrapping_add(page);
    let mut records = Vec::new();
    let mut cons = cons_pos.load(std::sync::atomic::Ordering::Acquire);
    loop {
        let prod = prod_pos.load(std::sync::atomic::Ordering::Acquire);
        if cons >= prod {
            break;
        }
        let off = (cons as usize) & (size - 1);
        // SAFETY: `off < size` and the data is mapped for `2 * size` bytes; headers are 8-byte
        // aligned u32s the kernel writes with release semantics.
        let word = unsafe { std::sync::atomic::AtomicU32::from_ptr(data.add(off).cast::<u32>()) }
            .load(std::sync::atomic::Ordering::Acquire);
        if word & BUSY != 0 {
            break;
        }
        let len = (word & !(BUSY | DISCARD)) as usize;
        if word & DISCARD == 0 {
            if off + 8 + len > 2 * size {
                break;
            }
            // SAFETY: the record lies inside the double mapping (checked), and the kernel no
            // longer writes a committed record.
            let bytes = unsafe { std::slice::from_raw_parts(data.add(off + 8), len) };
            records.push(bytes.to_vec());
        }
        cons += ((len + 8).next_multiple_of(8)) as u64;
        cons_pos.store(cons, std::sync::atomic::Ordering::Release);
    }
    // SAFETY: unmapping the two mappings made above; no reference into them outlives this.
    unsafe {
        libc::munmap(prod_page, prod_len);
        libc::munmap(cons_page, page);
    }
    Ok(records)
}

/// A `PERF_COUNT_SW_BPF_OUTPUT` event on one CPU with its ring mapped: what a perf event array
/// slot needs for `bpf_perf_event_output` to reach userspace.
pub(super) struct PerfOutput {
    fd: OwnedFd,
    base: *mut libc::c_void,
    len: usize,
    page: usize,
}

impl PerfOutput {
    /// `perf_event_open` of a software BPF-output event on `cpu` (any process), sampling raw
    /// data, woken on every sample; then `mmap` of its ring (`1 + pages` pages, `pages` a power
    /// of two).
    pub(super) fn open(cpu: i32, pages: usize) -> io::Result<Self> {
        const PERF_TYPE_SOFTWARE: u32 = 1;
        const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
        const PERF_SAMPLE_RAW: u64 = 1 << 10;
        const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
        // `struct perf_event_attr` up to PERF_ATTR_SIZE_VER5 (112 bytes), as little-endian
        // words: type and size, config, sample_period, sample_type, read_format, the flag
        // bits, wakeup_events; the rest zero.
        let mut attr = [0u64; 14];
        attr[0] = u64::from(PERF_TYPE_SOFTWARE) | (112u64 << 32);
        attr[1] = PERF_COUNT_SW_BPF_OUTPUT;
        attr[2] = 1;
        attr[3] = PERF_SAMPLE_RAW;
        attr[6] = 1; // wakeup_events
        // SAFETY: `attr` is a 112-byte perf_event_attr the kernel only reads (its declared size).
        let fd = unsafe {
            libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1i32, cpu, -1i32, PERF_FLAG_FD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a successful perf_event_open returns a new fd owned by nobody yet.
        let fd = unsafe { owned(fd) };
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = page * (1 + pages.next_power_of_two());
        // SAFETY: a fresh shared mapping of the event's ring at an address of the kernel's
        // choosing; it aliases no Rust object.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, base, len, page })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The raw data of every `PERF_RECORD_SAMPLE` in the ring, in order (the kernel pads each
    /// to 8 bytes; the padding is included), and the count of samples it reported lost.
    pub(super) fn drain(&self) -> (Vec<Vec<u8>>, u64) {
        use std::sync::atomic::{AtomicU64, Ordering};
        const PERF_RECORD_LOST: u32 = 2;
        const PERF_RECORD_SAMPLE: u32 = 9;
        // SAFETY: the metadata page is mapped; `data_head` (offset 1024) and `data_tail` (1032)
        // are 8-byte aligned u64s shared with the kernel, only accessed as atomics.
        let (head, tail) = unsafe {
            let meta = self.base.cast::<u8>();
            (AtomicU64::from_ptr(meta.add(1024).cast()), AtomicU64::from_ptr(meta.add(1032).cast()))
        };
        let size = (self.len - self.page) as u64;
        // SAFETY: the data area follows the metadata page inside the mapping.
        let data = unsafe { self.base.cast::<u8>().add(self.page) };
        let read = |pos: u64, out: &mut [u8]| {
            for (i, b) in out.iter_mut().enumerate() {
                // SAFETY: the index is reduced modulo the data area's size.
                *b = unsafe { *data.add(((pos + i as u64) % size) as usize) };
            }
        };
        let end = head.load(Ordering::Acquire);
        let mut pos = tail.load(Ordering::Relaxed);
        let (mut samples, mut lost) = (Vec::new(), 0);
        while pos < end {
            let mut hdr = [0u8; 8];
            read(pos, &mut hdr);
            let kind = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let len = u64::from(u16::from_ne_bytes([hdr[6], hdr[7]]));
            if len < 8 {
                break;
            }
            if kind == PERF_RECORD_SAMPLE && len >= 12 {
                let mut raw_len = [0u8; 4];
                read(pos + 8, &mut raw_len);
                let n = u32::from_ne_bytes(raw_len) as usize;
                let mut raw = vec![0u8; n.min(len as usize - 12)];
                read(pos + 12, &mut raw);
                samples.push(raw);
            } else if kind == PERF_RECORD_LOST && len >= 24 {
                let mut n = [0u8; 8];
                read(pos + 16, &mut n);
                lost += u64::from_ne_bytes(n);
            }
            pos += len;
        }
        tail.store(pos, Ordering::Release);
        (samples, lost)
    }
}

impl Drop for PerfOutput {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping `open` made; nothing refers into it any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Restricts the calling thread to `cpu`.
pub(super) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is a plain bitmask struct for which all-zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` (checked above), so the bit lies inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid, initialised `cpu_set_t` and the size passed is its own; pid 0
    // means the calling thread.
    let ret = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// An element call's result as "found": `ENOENT` is the kernel's "no such element", not a failure.
fn found<T>(result: io::Result<T>) -> io::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
