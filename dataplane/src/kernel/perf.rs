//! Kernel uprobes through `perf_event_open(2)` (the `uprobe` PMU) with a `BPF_PROG_TYPE_KPROBE`
//! program attached (`PERF_EVENT_IOC_SET_BPF`): the kernel side the userspace uprobes are
//! compared with, in the tests and the benchmarks.
#![expect(unsafe_code, reason = "perf_event_open(2) and its ioctls")]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{KernelError, KernelProgram, syscall};

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `PERF_ATTR_SIZE_VER5`: enough for `config1`/`config2` (the uprobe path and offset).
const ATTR_SIZE: u32 = 112;

/// A kernel uprobe with a program attached; detached when dropped (closing the event).
#[derive(Debug)]
pub struct UprobeLink {
    _event: OwnedFd,
}

fn pmu_type() -> Result<u32, KernelError> {
    let path = "/sys/bus/event_source/devices/uprobe/type";
    let text = std::fs::read_to_string(path).map_err(syscall("reading the uprobe PMU type"))?;
    text.trim().parse().map_err(|_| KernelError::Syscall {
        cmd: "reading the uprobe PMU type",
        source: io::Error::new(io::ErrorKind::InvalidData, text.trim().to_string()),
    })
}

impl KernelProgram {
    /// Attaches this (kprobe-type) program as a uprobe (or a uretprobe) at byte `offset` of the
    /// file `binary`, for the calling thread only (`pid = 0`, any CPU).
    ///
    /// # Errors
    /// [`KernelError::Syscall`] when the PMU is missing or the kernel refuses the event or the
    /// program.
    pub fn attach_uprobe(&self, binary: &Path, offset: u64, ret: bool) -> Result<UprobeLink, KernelError> {
        self.attach_uprobe_for(binary, offset, ret, 0, -1)
    }

    /// [`KernelProgram::attach_uprobe`] for every task that runs on CPU `cpu` (`pid = -1`), as
    /// `bpftrace` attaches a USDT probe system-wide: how a worker thread pinned to that CPU is
    /// traced by the kernel.
    ///
    /// # Errors
    /// As [`KernelProgram::attach_uprobe`].
    pub fn attach_uprobe_on_cpu(
        &self,
        binary: &Path,
        offset: u64,
        ret: bool,
        cpu: u32,
    ) -> Result<UprobeLink, KernelError> {
        let cpu = libc::c_int::try_from(cpu).map_err(|_| KernelError::Syscall {
            cmd: "perf_event_open",
            source: io::Error::new(io::ErrorKind::InvalidInput, "CPU number out of range"),
        })?;
        self.attach_uprobe_for(binary, offset, ret, -1, cpu)
    }

    fn attach_uprobe_for(
        &self,
        binary: &Path,
        offset: u64,
        ret: bool,
        pid: libc::pid_t,
        cpu: libc::c_int,
    ) -> Result<UprobeLink, KernelError> {
        let path = CString::new(binary.as_os_str().as_encoded_bytes()).map_err(|_| KernelError::Syscall {
            cmd: "perf_event_open",
            source: io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"),
        })?;
        // struct perf_event_attr, as little-endian words: type/size, config, sample_period,
        // sample_type, read_format, flags, wakeup_events/bp_type, config1, config2, ...
        let mut attr = [0u64; 16];
        attr[0] = u64::from(pmu_type()?) | (u64::from(ATTR_SIZE) << 32);
        attr[1] = u64::from(ret); // config bit 0: retprobe
        attr[7] = path.as_ptr() as u64; // config1: uprobe_path
        attr[8] = offset; // config2: probe_offset
        // SAFETY: `attr` is a zero-padded perf_event_attr of at least ATTR_SIZE bytes and the
        // path it points to lives until the call returns; the kernel copies both.
        let fd = unsafe {
            libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
        };
        if fd < 0 {
            return Err(syscall("perf_event_open (uprobe)")(io::Error::last_os_error()));
        }
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: ioctls on our perf event with an integer argument (a program fd, or 0).
        unsafe {
            if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, self.fd.as_raw_fd()) != 0 {
                return Err(syscall("PERF_EVENT_IOC_SET_BPF")(io::Error::last_os_error()));
            }
            if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) != 0 {
                return Err(syscall("PERF_EVENT_IOC_ENABLE")(io::Error::last_os_error()));
            }
        }
        Ok(UprobeLink { _event: event })
    }
}
