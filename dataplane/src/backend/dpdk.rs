//! DPDK ports as worker [`Queue`]s: the system DPDK (22.11) through `dpdk-sys`.
//!
//! The EAL is initialised once per process ([`init`]; DPDK cannot do it twice) with the
//! configured arguments plus defaults that make it run on any machine: `--no-huge` (with a
//! warning) when no huge pages are reserved, `--in-memory` so parallel processes never share
//! runtime files, `-l <core>` and `--no-telemetry`. Each port is a device probed with
//! `rte_dev_probe` (a PCI address or a virtual device: `net_pcap`, `net_ring`, `net_af_packet`,
//! `net_tap`, ...), configured with one RX and one TX queue per worker (RSS across them when the
//! device can), and its own mbuf pool. Dropping a [`Port`] stops, closes and removes the device
//! and frees its pool; [`cleanup`] ends the EAL.
//!
//! Mbuf layout and `XdpBuff` without copying: DPDK receives a packet `RTE_PKTMBUF_HEADROOM`
//! (128) bytes into the mbuf's buffer, but XDP promises 256 bytes of headroom for
//! `bpf_xdp_adjust_head`. The pool gives every mbuf a [`PRIV`]-byte private area, which DPDK
//! places right before the buffer and leaves to the application, so the frame an XDP program
//! sees starts 256 bytes before the packet, inside the private area, and ends at the end of the
//! buffer: [`FRAME`] bytes in all, as `BPF_PROG_TEST_RUN`'s page (the same tailroom rules). A
//! packet the program leaves inside the buffer is sent from where it is (`data_off` moved); only
//! one whose start moved more than 128 bytes forward into the private area is moved back into the
//! buffer before transmission (a copy within the mbuf).
//!
//! Ownership: an mbuf returned by `rte_eth_rx_burst` belongs to the worker until it is passed to
//! `rte_eth_tx_burst` (which takes the ones it accepts) or freed; [`DpdkQueue`] hands out its
//! buffer only in between, and only for a plain single-segment mbuf of its own pool.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;

use dpdk_sys as sys;
use xdp_vm::context::{XDP_PACKET_HEADROOM, XdpBuff};

use super::queue::{Lend, Queue};
use crate::config::{DpdkConfig, PortConfig};

/// Bytes of private area before each mbuf's buffer: headroom beyond DPDK's 128 bytes.
pub const PRIV: usize = 128;
/// The frame an XDP program sees: private area plus buffer, one page as in the kernel.
pub const FRAME: usize = 4096;
/// The mbuf data room (`buf_len`): DPDK's headroom, then room for the packet and the tail.
const DATA_ROOM: u16 = (FRAME - PRIV) as u16;
/// Per-lcore mbuf cache of each pool.
const POOL_CACHE: u32 = 256;
/// Empty polls before an idle worker starts sleeping 50 µs between polls.
const SPIN_BEFORE_SLEEP: u32 = 20_000;

/// What can go wrong with DPDK.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("cannot initialise DPDK (rte_eal_init {args}): {reason}")]
    Eal { args: String, reason: String },
    #[error("DPDK was already shut down in this process")]
    Finished,
    #[error("{device}: cannot read {key} file {path}")]
    Pcap {
        device: String,
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot probe DPDK device {device:?}: {reason}")]
    Probe { device: String, reason: String },
    #[error("DPDK device {name} is not an ethernet port")]
    NoPort { name: String },
    #[error("{name} has at most {max} queue(s); {queues} configured")]
    Queues { name: String, queues: usize, max: u16 },
    #[error("cannot set up DPDK port {name}: {step}: {reason}")]
    Setup { name: String, step: &'static str, reason: String },
}

/// `rte_strerror` of `errno` (DPDK's codes and the system's).
fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a NUL-terminated string, static or in a
    // per-thread buffer, valid until the next call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(errno.abs())) }.to_string_lossy().into_owned()
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno; no arguments.
    unsafe { sys::dp_errno() }
}

#[derive(Debug)]
enum EalState {
    Down,
    Up,
    Failed(String),
    Finished,
}

static EAL: Mutex<EalState> = Mutex::new(EalState::Down);

/// The runtime directory the EAL made for our `--file-prefix`, removed by [`cleanup`].
static RUNTIME_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Whether the system has free 2 MiB huge pages (`/proc/meminfo`).
fn huge_pages_free() -> bool {
    std::fs::read_to_string("/proc/meminfo").is_ok_and(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("HugePages_Free:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

/// The EAL arguments: the configured ones plus the defaults described in the module docs.
/// `mem_mb` is the memory to ask for without huge pages, `prefix` the runtime-file prefix to use
/// then (`--in-memory` cannot be combined with `--no-huge`); the second value says whether
/// `--no-huge` was added.
#[must_use]
pub fn eal_args(
    cfg: &DpdkConfig,
    first_core: usize,
    mem_mb: usize,
    huge_free: bool,
    prefix: &str,
) -> (Vec<String>, bool) {
    let given = |names: &[&str]| {
        cfg.eal_args.iter().any(|a| names.iter().any(|n| a == n || a.starts_with(&format!("{n}="))))
    };
    let mut args = cfg.eal_args.clone();
    if !given(&["-l", "-c", "--lcores"]) {
        args.extend(["-l".into(), first_core.to_string()]);
    }
    if !given(&["--no-telemetry", "--telemetry"]) {
        args.push("--no-telemetry".into());
    }
    if !given(&["--log-level"]) {
        args.push("--log-level=*:warning".into());
    }
    let mut added_no_huge = false;
    if !given(&["--no-huge"]) && !huge_free {
        args.push("--no-huge".into());
        added_no_huge = true;
    }
    let no_huge = added_no_huge || given(&["--no-huge"]);
    if no_huge && !given(&["-m", "--socket-mem"]) {
        args.extend(["-m".into(), mem_mb.to_string()]);
    }
    if !given(&["--in-memory", "--file-prefix"]) {
        if no_huge {
            args.extend([format!("--file-prefix={prefix}"), "--no-shconf".into()]);
        } else {
            args.push("--in-memory".into());
        }
    }
    (args, added_no_huge)
}

/// What DPDK printed during a call, to condense into one line: meanwhile the process's stderr
/// (DPDK's log, getopt's complaints) goes to a memory file and its stdout (where the EAL prints
/// its usage text) to /dev/null. Only used before the workers start.
struct Quiet {
    saved: [i32; 2],
    capture: i32,
}

impl Quiet {
    fn begin() -> Self {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // SAFETY: plain descriptor operations: duplicates of fds 1 and 2 are kept to restore
        // them in `end`, a fresh memfd and /dev/null take their places; nothing is read or
        // written through raw pointers but the literal C strings.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            let saved = [libc::dup(1), libc::dup(2)];
            let capture = libc::memfd_create(c"dpdk-log".as_ptr(), libc::MFD_CLOEXEC);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if saved[0] >= 0 && null >= 0 {
                libc::dup2(null, 1);
            }
            if saved[1] >= 0 && capture >= 0 {
                libc::dup2(capture, 2);
            }
            if null >= 0 {
                libc::close(null);
            }
            Self { saved, capture }
        }
    }

    /// Restores stdout and stderr; returns what was written to stderr meanwhile.
    fn end(self) -> String {
        use std::io::{Read as _, Seek as _};
        // SAFETY: C's buffers are flushed into the redirections, then fds 1 and 2 get their
        // saved duplicates back, each closed once.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            for (fd, saved) in [(1, self.saved[0]), (2, self.saved[1])] {
                if saved >= 0 {
                    libc::dup2(saved, fd);
                    libc::close(saved);
                }
            }
        }
        if self.capture < 0 {
            return String::new();
        }
        // SAFETY: `capture` is the memfd made in `begin`, owned by nobody else; the File
        // closes it.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(self.capture) };
        let mut text = String::new();
        let _ = f.rewind().and_then(|()| f.read_to_string(&mut text));
        text
    }
}

/// The specific messages of what DPDK printed, on one line, without `EAL: ` and program-name
/// prefixes and without the generic follow-ups.
fn condense(log: &str) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for l in log.lines() {
        let l = l.trim().trim_start_matches("EAL:").trim_start_matches("dataplane:").trim();
        let generic = l.contains("Invalid 'command line' arguments")
            || l.starts_with("Failed to attach device on primary")
            || l.starts_with("Detected")
            || l.starts_with("warning: no huge pages");
        if !l.is_empty() && !generic && !seen.contains(&l) {
            seen.push(l);
        }
    }
    (!seen.is_empty()).then(|| seen.join("; "))
}

/// Initialises the EAL with `args` (after the program name) unless it is up already; the
/// calling thread's CPU affinity, which the EAL narrows to its main lcore, is restored.
///
/// # Errors
/// [`DpdkError::Eal`] with DPDK's reason; a failed initialisation is not retried (DPDK cannot).
pub fn init(args: &[String]) -> Result<(), DpdkError> {
    let mut state = EAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let shown = args.join(" ");
    match &*state {
        EalState::Up => return Ok(()),
        EalState::Failed(reason) => return Err(DpdkError::Eal { args: shown, reason: reason.clone() }),
        EalState::Finished => return Err(DpdkError::Finished),
        EalState::Down => {}
    }
    let bad = |reason: String| DpdkError::Eal { args: shown.clone(), reason };
    let mut owned = vec![CString::new("dataplane").expect("no NUL")];
    for a in args {
        owned.push(CString::new(a.as_str()).map_err(|_| bad(format!("argument {a:?} contains a NUL byte")))?);
    }
    // The EAL may keep pointers into argv (it parses in place): the strings live for the
    // process, as the real argv would.
    let owned: &'static [CString] = Vec::leak(owned);
    let argv: &'static mut [*mut libc::c_char] =
        Vec::leak(owned.iter().map(|c| c.as_ptr().cast_mut()).chain([std::ptr::null_mut()]).collect());
    if let Some(prefix) = args.iter().find_map(|a| a.strip_prefix("--file-prefix=")) {
        // DPDK's runtime directory: /var/run/dpdk as root, else $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk.
        // SAFETY: getuid cannot fail.
        let base = if unsafe { libc::getuid() } == 0 {
            PathBuf::from("/var/run/dpdk")
        } else {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map_or_else(|| PathBuf::from("/tmp/dpdk"), |d| PathBuf::from(d).join("dpdk"))
        };
        let dir = base.join(prefix);
        if !dir.exists() {
            *RUNTIME_DIR.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(dir);
        }
    }
    let affinity = Affinity::get();
    let quiet = Quiet::begin();
    // SAFETY: argc/argv describe `owned.len()` NUL-terminated strings followed by a null
    // pointer, all alive for the rest of the process; the EAL is initialised at most once
    // (state `Down`, under the lock).
    let r = unsafe { sys::rte_eal_init(owned.len() as i32, argv.as_mut_ptr()) };
    let errno = rte_errno();
    let log = quiet.end();
    if let Some(a) = affinity {
        a.set();
    }
    if r < 0 {
        let reason = condense(&log).unwrap_or_else(|| strerror(errno));
        *state = EalState::Failed(reason.clone());
        return Err(bad(reason));
    }
    *state = EalState::Up;
    if (r as usize) < args.len() {
        return Err(bad(format!("unexpected argument(s) {}", args[r as usize..].join(" "))));
    }
    Ok(())
}

/// Ends the EAL (`rte_eal_cleanup`) if it is up, and removes the runtime directory it made for
/// us; every port must have been dropped. Call it once, at the end of the process.
pub fn cleanup() {
    let mut state = EAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if matches!(*state, EalState::Up) {
        // SAFETY: the EAL is up and no port is left open (callers drop ports first); no DPDK
        // call follows (state `Finished`).
        unsafe { sys::rte_eal_cleanup() };
        *state = EalState::Finished;
    }
    if let Some(dir) = RUNTIME_DIR.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A thread's CPU affinity mask, saved and restored around `rte_eal_init`.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn get() -> Option<Self> {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid (empty) value.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; the kernel writes at most `size_of` bytes into
        // the exclusively borrowed set.
        let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        (r == 0).then_some(Self(set))
    }

    fn set(&self) {
        // SAFETY: pid 0 is the calling thread; the kernel only reads the set.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// Key-value arguments of a device string (`name,key=value,...`).
fn device_args(device: &str) -> impl Iterator<Item = (&str, &str)> {
    device.split(',').skip(1).filter_map(|kv| kv.split_once('='))
}

/// Frames in a pcap file (classic format, either byte order, µs or ns timestamps).
///
/// # Errors
/// When the file cannot be read or is not a pcap file.
pub fn pcap_frames(path: &Path) -> std::io::Result<u64> {
    Ok(pcap_records(&std::fs::read(path)?)?.len() as u64)
}

/// The frames of a pcap file, in order.
///
/// # Errors
/// When the file cannot be read or is not a pcap file.
pub fn pcap_read(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path)?;
    Ok(pcap_records(&data)?.into_iter().map(<[u8]>::to_vec).collect())
}

fn pcap_records(data: &[u8]) -> std::io::Result<Vec<&[u8]>> {
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a pcap file: {what}"));
    let magic = data.get(..4).ok_or_else(|| bad("shorter than its header"))?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(bad("unknown magic number")),
    };
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= data.len() {
        let b: [u8; 4] = data[at + 8..at + 12].try_into().expect("4 bytes");
        let caplen = if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) } as usize;
        let rec = data.get(at + 16..at + 16 + caplen).ok_or_else(|| bad("truncated record"))?;
        out.push(rec);
        at += 16 + caplen;
    }
    Ok(out)
}

/// Frames the port's receive side will ever deliver, when it is a set of pcap files replayed
/// once (`rx_pcap` without `infinite_rx`): the count to drain before a replay is done.
///
/// # Errors
/// [`DpdkError::Pcap`] when an `rx_pcap` file cannot be read.
pub fn finite_rx(device: &str) -> Result<Option<u64>, DpdkError> {
    let name = device.split(',').next().unwrap_or_default();
    if !name.starts_with("net_pcap") {
        return Ok(None);
    }
    let mut total = 0;
    let mut any = false;
    for (k, v) in device_args(device) {
        match k {
            "rx_pcap" => {
                any = true;
                total += pcap_frames(Path::new(v)).map_err(|source| DpdkError::Pcap {
                    device: name.into(),
                    key: "rx_pcap",
                    path: v.into(),
                    source,
                })?;
            }
            "infinite_rx" if v != "0" => return Ok(None),
            "rx_iface" | "rx_iface_in" | "iface" => return Ok(None),
            _ => {}
        }
    }
    Ok(any.then_some(total))
}

/// Checks what can be checked before DPDK sees a device string: pcap files to read exist and
/// are pcap files, the directories of pcap files to write exist.
///
/// # Errors
/// [`DpdkError::Pcap`] naming the file.
pub fn precheck(device: &str) -> Result<(), DpdkError> {
    let name = device.split(',').next().unwrap_or_default();
    finite_rx(device)?;
    for (k, v) in device_args(device) {
        if k == "tx_pcap" {
            let dir = Path::new(v).parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(DpdkError::Pcap {
                    device: name.into(),
                    key: "tx_pcap",
                    path: v.into(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
                });
            }
        }
    }
    Ok(())
}

/// An mbuf pool (freed on drop).
#[derive(Debug)]
struct Pool(NonNull<sys::rte_mempool>);

// SAFETY: a mempool is DPDK's multi-producer, multi-consumer structure, made to be used from
// several threads; the handle is only a pointer to it.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the pool was created by rte_pktmbuf_pool_create and is freed once, after
        // the device that used it was closed (field order of `Port`).
        unsafe { sys::rte_mempool_free(self.0.as_ptr()) };
    }
}

/// One open DPDK port: stopped, closed and removed on drop.
#[derive(Debug)]
pub struct Port {
    pub name: String,
    pub port_id: u16,
    /// `ingress_ifindex` for its frames: the kernel interface behind it, or 0.
    pub ifindex: u32,
    /// Frames a finite replay (pcap) delivers, after which the port is drained.
    pub finite_rx: Option<u64>,
    started: bool,
    queues: u16,
    device: *mut sys::rte_device,
    pool: Pool,
}

// SAFETY: the device pointer is only used in `drop`, by the thread that drops the port; DPDK's
// control functions may be called from any thread that is not running the port's fast path.
unsafe impl Send for Port {}

impl Port {
    /// The port's counters as DPDK keeps them: `(ipackets, ierrors + imissed + rx_nombuf,
    /// opackets)`.
    #[must_use]
    pub fn stats(&self) -> (u64, u64, u64) {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: the port is open; DPDK writes into the exclusively borrowed struct.
        let r = unsafe { sys::rte_eth_stats_get(self.port_id, &mut s) };
        if r != 0 {
            return (0, 0, 0);
        }
        (s.ipackets, s.ierrors + s.imissed + s.rx_nombuf, s.opackets)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // Frames still waiting in the device go back to the pool before it is freed: a ring
        // device (net_ring) keeps its rings past close and would otherwise hand the next port
        // of that name mbufs of a freed pool. Bounded: a pcap file is not read to its end.
        if self.started {
            let mut burst = [std::ptr::null_mut::<sys::rte_mbuf>(); 32];
            for q in 0..self.queues {
                for _ in 0..128 {
                    // SAFETY: the port is started and its workers have stopped (joined before
                    // ports are dropped), so this thread is the queue's only poller; `burst` has
                    // room for 32 pointers.
                    let n = unsafe { sys::dp_rx_burst(self.port_id, q, burst.as_mut_ptr(), 32) };
                    if n == 0 {
                        break;
                    }
                    // SAFETY: the `n` mbufs just received are ours, freed once.
                    unsafe { sys::rte_pktmbuf_free_bulk(burst.as_mut_ptr(), u32::from(n)) };
                }
            }
        }
        // SAFETY: the port is open (or configured) and its workers have stopped (they are
        // joined before ports are dropped); stop, close and remove are each called once.
        unsafe {
            if self.started {
                sys::rte_eth_dev_stop(self.port_id);
            }
            sys::rte_eth_dev_close(self.port_id);
            if !self.device.is_null() {
                sys::rte_dev_remove(self.device);
            }
        }
    }
}

/// Opens `cfg`'s device with one queue per configured queue and a pool of `mbufs` (0: sized
/// for its rings). EAL must be up.
///
/// # Errors
/// [`DpdkError`] naming the device and the step that failed; nothing stays open.
pub fn open_port(cfg: &PortConfig, mbufs: u32) -> Result<(Port, Vec<DpdkQueue>), DpdkError> {
    let device = cfg.device.clone().unwrap_or_default();
    let name = cfg.name().to_string();
    precheck(&device)?;
    let finite_rx = finite_rx(&device)?;
    let dev_c = CString::new(device.as_str())
        .map_err(|_| DpdkError::Probe { device: device.clone(), reason: "contains a NUL byte".into() })?;
    let quiet = Quiet::begin();
    // SAFETY: a NUL-terminated device string, only read.
    let r = unsafe { sys::rte_dev_probe(dev_c.as_ptr()) };
    let log = quiet.end();
    if r != 0 {
        let reason = condense(&log).unwrap_or_else(|| strerror(r));
        return Err(DpdkError::Probe { device, reason });
    }
    if !log.trim().is_empty() {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), log.as_bytes());
    }
    let name_c = CString::new(name.as_str()).expect("checked: no NUL");
    let mut port_id = 0u16;
    // SAFETY: a NUL-terminated name and a u16 to write.
    let r = unsafe { sys::rte_eth_dev_get_port_by_name(name_c.as_ptr(), &mut port_id) };
    if r != 0 {
        return Err(DpdkError::NoPort { name });
    }
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: a valid port id; DPDK writes the exclusively borrowed struct.
    let r = unsafe { sys::rte_eth_dev_info_get(port_id, &mut info) };
    let setup =
        |step: &'static str, r: i32| DpdkError::Setup { name: name.clone(), step, reason: strerror(r) };
    // From here the port exists: a `Port` value closes it on every error path.
    let nq = cfg.queues.len();
    let per_queue = cfg.rx_ring + cfg.tx_ring + 2 * cfg.batch;
    let n = if mbufs > 0 {
        mbufs
    } else {
        (per_queue * nq as u32 + POOL_CACHE * 2 + 1024).next_power_of_two() - 1
    };
    let pool_name = CString::new(format!("dp_pool_{port_id}")).expect("no NUL");
    // SAFETY: a valid port id.
    let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
    // SAFETY: a NUL-terminated name; sizes within DPDK's limits (priv a multiple of 8).
    let pool = unsafe {
        sys::rte_pktmbuf_pool_create(pool_name.as_ptr(), n, POOL_CACHE, PRIV as u16, DATA_ROOM, socket)
    };
    let Some(pool) = NonNull::new(pool) else {
        // Close the probed device before reporting.
        let e = DpdkError::Setup { name: name.clone(), step: "mbuf pool", reason: strerror(rte_errno()) };
        // SAFETY: the port was probed above and is neither started nor used elsewhere.
        unsafe {
            sys::rte_eth_dev_close(port_id);
            if !info.device.is_null() {
                sys::rte_dev_remove(info.device);
            }
        }
        return Err(e);
    };
    let mut port = Port {
        name: name.clone(),
        port_id,
        ifindex: info.if_index,
        finite_rx,
        started: false,
        queues: 0,
        device: info.device,
        pool: Pool(pool),
    };
    if r != 0 {
        return Err(setup("device info", r));
    }
    let max = info.max_rx_queues.min(info.max_tx_queues);
    if nq > usize::from(max) {
        return Err(DpdkError::Queues { name, queues: nq, max });
    }
    let mut conf = sys::rte_eth_conf::default();
    // SAFETY: reads a constant.
    let rss = unsafe { sys::dp_rss_ip_tcp_udp() } & info.flow_type_rss_offloads;
    if nq > 1 && rss != 0 {
        conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss;
    }
    // SAFETY: a valid, stopped port; `conf` lives across the call, which copies it.
    let r = unsafe { sys::rte_eth_dev_configure(port_id, nq as u16, nq as u16, &conf) };
    if r != 0 {
        return Err(setup("configure", r));
    }
    let (mut rxd, mut txd) =
        (cfg.rx_ring.min(u32::from(u16::MAX)) as u16, cfg.tx_ring.min(u32::from(u16::MAX)) as u16);
    // SAFETY: a configured port and two u16s to adjust.
    let r = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &mut rxd, &mut txd) };
    if r != 0 {
        return Err(setup("descriptor counts", r));
    }
    for q in 0..nq as u16 {
        // SAFETY: a configured port, a queue below the configured count, our pool; null
        // configs ask for the driver's defaults.
        let r = unsafe {
            sys::rte_eth_rx_queue_setup(port_id, q, rxd, socket as u32, std::ptr::null(), pool.as_ptr())
        };
        if r != 0 {
            return Err(setup("rx queue", r));
        }
        // SAFETY: as above.
        let r = unsafe { sys::rte_eth_tx_queue_setup(port_id, q, txd, socket as u32, std::ptr::null()) };
        if r != 0 {
            return Err(setup("tx queue", r));
        }
    }
    // SAFETY: a configured port with every queue set up.
    let r = unsafe { sys::rte_eth_dev_start(port_id) };
    if r != 0 {
        return Err(setup("start", r));
    }
    port.started = true;
    port.queues = nq as u16;
    // Not every device can (pcap files, rings): not an error.
    // SAFETY: a started port.
    let _ = unsafe { sys::rte_eth_promiscuous_enable(port_id) };
    let queues = (0..nq as u16)
        .map(|q| DpdkQueue {
            port: port_id,
            queue: q,
            pool,
            free: Vec::with_capacity(512),
            held: 0,
            registered: false,
            report_drops: q == 0,
        })
        .collect();
    Ok((port, queues))
}

/// Sends `frames` out of queue 0 of `port`, `copies` times over: traffic for a loopback device
/// (`net_ring`), which returns what it is sent, so the frames then circulate through the
/// worker. Returns how many went out.
///
/// # Errors
/// When mbufs cannot be allocated or a frame does not fit one.
pub fn inject(port: &Port, frames: &[Vec<u8>], copies: usize) -> Result<usize, DpdkError> {
    let mut sent = 0;
    let err = |reason: String| DpdkError::Setup { name: port.name.clone(), step: "inject", reason };
    for _ in 0..copies {
        for f in frames {
            if f.len() > FRAME - XDP_PACKET_HEADROOM - xdp_vm::context::XDP_TAILROOM {
                return Err(err(format!("a {}-byte frame does not fit an mbuf", f.len())));
            }
            let mut m: *mut sys::rte_mbuf = std::ptr::null_mut();
            // SAFETY: our pool, one slot to write.
            if unsafe { sys::dp_pktmbuf_alloc_bulk(port.pool.0.as_ptr(), &mut m, 1) } != 0 {
                return Err(err("mbuf pool exhausted".into()));
            }
            // SAFETY: a freshly allocated, reset mbuf of our pool (data_off = 128, a buffer of
            // DATA_ROOM bytes): the frame fits after data_off (checked above), nobody else
            // holds it.
            unsafe {
                let mb = &mut *m;
                let dst = mb.buf_addr.cast::<u8>().add(usize::from(mb.data_off));
                std::ptr::copy_nonoverlapping(f.as_ptr(), dst, f.len());
                mb.data_len = f.len() as u16;
                mb.pkt_len = f.len() as u32;
            }
            // SAFETY: one mbuf we own; tx_burst takes it when it returns 1.
            let n = unsafe { sys::dp_tx_burst(port.port_id, 0, &mut m, 1) };
            if n == 0 {
                // SAFETY: not taken by the device: still ours to free.
                unsafe { sys::dp_pktmbuf_free(m) };
                return Ok(sent);
            }
            sent += 1;
        }
    }
    Ok(sent)
}

/// An received mbuf, as a worker holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Mbuf(*mut sys::rte_mbuf);

impl Default for Mbuf {
    fn default() -> Self {
        Self(std::ptr::null_mut())
    }
}

/// One RX/TX queue pair of a port, owned by its worker.
#[derive(Debug)]
pub struct DpdkQueue {
    port: u16,
    queue: u16,
    pool: NonNull<sys::rte_mempool>,
    /// Released mbufs, freed in bulk at the end of a batch.
    free: Vec<*mut sys::rte_mbuf>,
    /// Received and neither sent nor released.
    held: usize,
    /// Whether this thread registered itself as an EAL thread (for the pool's per-lcore cache).
    registered: bool,
    /// Queue 0 reports the port's drop counters (they are per port).
    report_drops: bool,
}

// SAFETY: a queue is used by one worker thread at a time; it moves to that thread once. The
// port's queue `queue` is polled only through this value, as DPDK requires (queues are not
// thread-safe, distinct queues are independent).
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    /// Where the XDP frame of `m` starts (in its private area or buffer) and the headroom before
    /// its packet there: up to 256 bytes, as much as the mbuf has.
    ///
    /// # Safety
    /// `m` is a valid mbuf of this queue's pool that the caller owns.
    #[inline]
    unsafe fn frame_start(m: &sys::rte_mbuf) -> (*mut u8, usize) {
        let headroom = (PRIV + usize::from(m.data_off)).min(XDP_PACKET_HEADROOM);
        let data = m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off));
        (data.wrapping_sub(headroom), headroom)
    }
}

/// An mbuf of a queue's pool lent to another worker to fill with a packet for that queue to send
/// ([`Queue::lend`]). Dropped without being given back, it is freed to its pool.
#[derive(Debug)]
pub struct LentMbuf {
    m: NonNull<sys::rte_mbuf>,
    len: usize,
}

// SAFETY: the token owns its mbuf (freshly allocated, referenced nowhere else) until it is
// given back or dropped; mbufs may be filled and freed from any thread (the pool's put is
// multi-producer safe).
unsafe impl Send for LentMbuf {}

impl Lend for LentMbuf {
    fn fill(&mut self, packet: &[u8]) -> bool {
        if packet.is_empty() || packet.len() > FRAME - XDP_PACKET_HEADROOM - xdp_vm::context::XDP_TAILROOM {
            return false;
        }
        // SAFETY: a reset mbuf of a pool of ours (data_off 128, DATA_ROOM bytes of buffer) that
        // this token alone owns: the packet fits after data_off (checked above).
        unsafe {
            let mb = &mut *self.m.as_ptr();
            let dst = mb.buf_addr.cast::<u8>().add(usize::from(mb.data_off));
            std::ptr::copy_nonoverlapping(packet.as_ptr(), dst, packet.len());
            mb.data_len = packet.len() as u16;
            mb.pkt_len = packet.len() as u32;
        }
        self.len = packet.len();
        true
    }

    fn filled(&self) -> bool {
        self.len > 0
    }
}

impl Drop for LentMbuf {
    fn drop(&mut self) {
        // SAFETY: the token owns the mbuf (see `Send`); it is freed once, here. A token given
        // back is forgotten (`into_raw`), so this runs only for one that was not.
        unsafe { sys::dp_pktmbuf_free(self.m.as_ptr()) };
    }
}

impl LentMbuf {
    fn into_raw(self) -> *mut sys::rte_mbuf {
        let m = self.m.as_ptr();
        std::mem::forget(self);
        m
    }
}

impl Queue for DpdkQueue {
    type Frame = Mbuf;
    type Lent = LentMbuf;

    #[inline]
    fn recv(&mut self, out: &mut [Mbuf]) -> usize {
        if !self.registered {
            // SAFETY: registers the calling (worker) thread with the EAL, giving it an lcore id
            // and so a per-lcore pool cache; failure only means no cache.
            let _ = unsafe { sys::rte_thread_register() };
            self.registered = true;
        }
        let n = out.len().min(usize::from(u16::MAX)) as u16;
        // SAFETY: `Mbuf` is a transparent `*mut rte_mbuf`, so `out` is room for `n` mbuf
        // pointers; the queue is polled only by this thread.
        let got = usize::from(unsafe { sys::dp_rx_burst(self.port, self.queue, out.as_mut_ptr().cast(), n) });
        self.held += got;
        got
    }

    #[inline]
    fn xdp_buff(&mut self, frame: Mbuf) -> Option<XdpBuff<'_>> {
        // SAFETY: `frame` came from `recv` and is held (not yet sent or released): a valid mbuf
        // only this worker uses.
        let m = unsafe { &*frame.0 };
        let direct = m.ol_flags & (sys::RTE_MBUF_F_INDIRECT | sys::RTE_MBUF_F_EXTERNAL) == 0;
        if m.pool != self.pool.as_ptr() || m.nb_segs != 1 || m.refcnt != 1 || !direct {
            return None;
        }
        let (off, len, buf_len) = (usize::from(m.data_off), usize::from(m.data_len), usize::from(m.buf_len));
        if off + len > buf_len {
            return None;
        }
        // SAFETY: `m` is of our pool, direct and owned.
        let (start, headroom) = unsafe { Self::frame_start(m) };
        let frame_len = headroom + (buf_len - off);
        // SAFETY: the frame runs from `headroom` bytes before the packet (at most PRIV bytes
        // before the buffer: inside the mbuf's private area, which directly precedes the
        // buffer in a pool made with priv_size PRIV) to the end of the buffer. The mbuf is
        // owned by this worker (received, refcnt 1, direct): neither DPDK nor another thread
        // touches it until it is sent or freed, which needs `&mut self` again.
        let bytes = unsafe { std::slice::from_raw_parts_mut(start, frame_len) };
        XdpBuff::new(bytes, headroom, len).ok()
    }

    #[inline]
    fn reframe(&mut self, frame: Mbuf, start: usize, len: usize) -> Option<Mbuf> {
        // SAFETY: as in `xdp_buff`: the frame is held, and its `data_off` is unchanged since.
        let m = unsafe { &mut *frame.0 };
        // SAFETY: as above.
        let (base, _) = unsafe { Self::frame_start(m) };
        let buf = m.buf_addr.cast::<u8>();
        let data = base.wrapping_add(start);
        let buf_len = usize::from(m.buf_len);
        let off = if data >= buf {
            data as usize - buf as usize
        } else {
            // The program grew the packet into the private area: move it to the buffer's start.
            if len > buf_len {
                return None;
            }
            // SAFETY: source (inside the frame the program saw) and destination (the buffer's
            // first `len` bytes) both lie in this owned mbuf; `copy` allows overlap.
            unsafe { std::ptr::copy(data, buf, len) };
            0
        };
        if off + len > buf_len {
            return None;
        }
        m.data_off = off as u16;
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        Some(frame)
    }

    #[inline]
    fn send(&mut self, frames: &[Mbuf]) -> usize {
        if frames.is_empty() {
            return 0;
        }
        let n = frames.len().min(usize::from(u16::MAX)) as u16;
        // SAFETY: `frames` are held mbufs (transparent pointers); tx_burst takes the first
        // `sent` and leaves the rest to us. It does not write the array (the cast to *mut is
        // the C signature's).
        let sent = usize::from(unsafe {
            sys::dp_tx_burst(self.port, self.queue, frames.as_ptr().cast_mut().cast(), n)
        });
        self.held -= sent;
        sent
    }

    #[inline]
    fn release(&mut self, frame: Mbuf) {
        self.held -= 1;
        self.free.push(frame.0);
    }

    fn alloc_copy(&mut self, packet: &[u8]) -> Option<Mbuf> {
        if packet.len() > FRAME - XDP_PACKET_HEADROOM - xdp_vm::context::XDP_TAILROOM {
            return None;
        }
        let mut m: *mut sys::rte_mbuf = std::ptr::null_mut();
        // SAFETY: our pool, one slot to write.
        if unsafe { sys::dp_pktmbuf_alloc_bulk(self.pool.as_ptr(), &mut m, 1) } != 0 {
            return None;
        }
        // SAFETY: a freshly allocated, reset mbuf of our pool (data_off 128, DATA_ROOM bytes of
        // buffer): the packet fits after data_off (checked above); nobody else holds it.
        unsafe {
            let mb = &mut *m;
            let dst = mb.buf_addr.cast::<u8>().add(usize::from(mb.data_off));
            std::ptr::copy_nonoverlapping(packet.as_ptr(), dst, packet.len());
            mb.data_len = packet.len() as u16;
            mb.pkt_len = packet.len() as u32;
        }
        self.held += 1;
        Some(Mbuf(m))
    }

    fn lend(&mut self) -> Option<LentMbuf> {
        let mut m: *mut sys::rte_mbuf = std::ptr::null_mut();
        // SAFETY: our pool, one slot to write.
        if unsafe { sys::dp_pktmbuf_alloc_bulk(self.pool.as_ptr(), &mut m, 1) } != 0 {
            return None;
        }
        Some(LentMbuf { m: NonNull::new(m)?, len: 0 })
    }

    fn accept(&mut self, lent: LentMbuf) -> Option<Mbuf> {
        // SAFETY: reading the pool pointer of the mbuf the token owns.
        let ours = unsafe { (*lent.m.as_ptr()).pool } == self.pool.as_ptr();
        if !ours || !lent.filled() {
            return None; // the token's drop frees it
        }
        self.held += 1;
        Some(Mbuf(lent.into_raw()))
    }

    fn reclaim(&mut self, lent: LentMbuf) {
        drop(lent);
    }

    #[inline]
    fn flush(&mut self) {
        if !self.free.is_empty() {
            // SAFETY: every pointer in `free` is an mbuf this worker released and owns; each is
            // freed once (the list is cleared).
            unsafe { sys::rte_pktmbuf_free_bulk(self.free.as_mut_ptr(), self.free.len() as u32) };
            self.free.clear();
        }
    }

    fn idle(&mut self, idle: u32) {
        self.flush();
        if idle >= SPIN_BEFORE_SLEEP {
            std::thread::sleep(std::time::Duration::from_micros(50));
        } else {
            std::hint::spin_loop();
        }
    }

    fn device_drops(&self) -> Option<[u64; 3]> {
        if !self.report_drops {
            return None;
        }
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: the port is open; DPDK writes into the exclusively borrowed struct.
        let r = unsafe { sys::rte_eth_stats_get(self.port, &mut s) };
        (r == 0).then_some([s.ierrors, s.imissed, s.rx_nombuf])
    }

    fn drain(&mut self) {
        self.flush();
        if self.registered {
            // SAFETY: this thread registered itself in `recv` (drain runs on the worker thread
            // at its end).
            unsafe { sys::rte_thread_unregister() };
            self.registered = false;
        }
    }

    fn held(&self) -> usize {
        self.held
    }
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The EAL arguments and memory for `cfg`'s DPDK ports, with the warning to print when huge
/// pages were missing.
#[must_use]
pub fn plan(cfg: &crate::config::Config) -> (Vec<String>, Option<String>) {
    let dcfg = cfg.dpdk.clone().unwrap_or_default();
    let first = cfg.workers.cores.first().copied().unwrap_or(0);
    let per_port: usize = cfg
        .ports
        .iter()
        .map(|p| {
            let n =
                dcfg.mbufs.unwrap_or((p.rx_ring + p.tx_ring + 2 * p.batch) * p.queues.len() as u32 + 1536);
            n as usize * (FRAME + 256)
        })
        .sum();
    let mem_mb = (per_port >> 20) * 2 + 128;
    let prefix = format!("dataplane{}", std::process::id());
    let (args, no_huge) = eal_args(&dcfg, first, mem_mb, huge_pages_free(), &prefix);
    let warning = no_huge
        .then(|| "warning: no huge pages reserved; DPDK memory on 4 KiB pages (--no-huge)".to_string());
    (args, warning)
}

/// Paths the pcap devices of `cfg` write (`tx_pcap`), for tests and messages.
#[must_use]
pub fn tx_pcaps(device: &str) -> Vec<PathBuf> {
    device_args(device).filter(|(k, _)| *k == "tx_pcap").map(|(_, v)| PathBuf::from(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_defaults_fill_in_what_is_not_given() {
        let cfg = DpdkConfig { eal_args: vec!["--no-pci".into()], mbufs: None };
        let (a, no_huge) = eal_args(&cfg, 1, 300, false, "p");
        assert!(no_huge);
        let want =
            ["--no-pci", "-l", "1", "--no-telemetry", "--log-level=*:warning", "--no-huge", "-m", "300"];
        assert_eq!(a, [&want[..], &["--file-prefix=p", "--no-shconf"]].concat());
        let (a, _) = eal_args(&cfg, 1, 300, true, "p");
        assert_eq!(a, ["--no-pci", "-l", "1", "--no-telemetry", "--log-level=*:warning", "--in-memory"]);
        let cfg =
            DpdkConfig { eal_args: vec!["-l".into(), "0-1".into(), "--file-prefix=x".into()], mbufs: None };
        let (a, no_huge) = eal_args(&cfg, 0, 300, true, "p");
        assert!(!no_huge);
        assert_eq!(a, ["-l", "0-1", "--file-prefix=x", "--no-telemetry", "--log-level=*:warning"]);
    }

    #[test]
    fn device_arguments_and_finite_replays() {
        assert_eq!(
            device_args("net_pcap0,rx_pcap=a,tx_pcap=b").collect::<Vec<_>>(),
            [("rx_pcap", "a"), ("tx_pcap", "b")]
        );
        assert_eq!(finite_rx("net_ring0").unwrap(), None);
        assert_eq!(finite_rx("net_pcap0,iface=lo").unwrap(), None);
        assert!(matches!(finite_rx("net_pcap0,rx_pcap=/nonexistent/x.pcap"), Err(DpdkError::Pcap { .. })));
        assert_eq!(tx_pcaps("net_pcap0,rx_pcap=a,tx_pcap=/tmp/b.pcap"), [PathBuf::from("/tmp/b.pcap")]);
    }

    #[test]
    fn pcap_records_are_counted() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1];
        f.extend([0u8; 20]);
        for len in [60u32, 98] {
            f.extend([0u8; 8]);
            f.extend(len.to_le_bytes());
            f.extend(len.to_le_bytes());
            f.extend(vec![0u8; len as usize]);
        }
        let path = std::env::temp_dir().join(format!("dp-pcap-count-{}.pcap", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        assert_eq!(pcap_frames(&path).unwrap(), 2);
        std::fs::write(&path, &f[..f.len() - 1]).unwrap();
        assert!(pcap_frames(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
