//! Helpers for tracing programs: reading and writing the traced process's memory, and who is
//! running. In the kernel these read "user memory" of the current task; here the current task is
//! this process, so they read and write its memory — through fault-safe copies
//! ([`super::user_copy`]): a bad address returns `-EFAULT`, it never crashes the process.
//!
//! The `probe_read_kernel` variants (what `BPF_CORE_READ` and `PT_REGS_PARM1_CORE` call) read
//! the same memory: in userspace there is no other address space to read.

use std::cell::Cell;

use super::{id, user_copy};
use crate::memory::Memory;

/// Tracing helpers and their kernel names.
pub const HELPERS: &[(u32, &str)] = &[
    (id::PROBE_READ, "bpf_probe_read"),
    (id::GET_CURRENT_PID_TGID, "bpf_get_current_pid_tgid"),
    (id::GET_CURRENT_COMM, "bpf_get_current_comm"),
    (id::PROBE_WRITE_USER, "bpf_probe_write_user"),
    (id::PROBE_READ_STR, "bpf_probe_read_str"),
    (id::PROBE_READ_USER, "bpf_probe_read_user"),
    (id::PROBE_READ_KERNEL, "bpf_probe_read_kernel"),
    (id::PROBE_READ_USER_STR, "bpf_probe_read_user_str"),
    (id::PROBE_READ_KERNEL_STR, "bpf_probe_read_kernel_str"),
    (id::GET_FUNC_IP, "bpf_get_func_ip"),
];

/// `TASK_COMM_LEN`.
pub const TASK_COMM_LEN: usize = 16;

/// Whether an XDP program may call tracing helper `helper`: the kernel gives XDP programs of a
/// `CAP_PERFMON` loader the `probe_read` family (`bpf_base_func_proto`), not the rest.
#[must_use]
pub fn xdp_allows(helper: u32) -> bool {
    !HELPERS.iter().any(|(i, _)| *i == helper)
        || matches!(
            helper,
            id::PROBE_READ_USER | id::PROBE_READ_USER_STR | id::PROBE_READ_KERNEL | id::PROBE_READ_KERNEL_STR
        )
}

thread_local! {
    /// `(tgid << 32) | tid`, read once per thread.
    static PID_TGID: Cell<u64> = const { Cell::new(0) };
    /// The thread's name (`comm`), read once per thread: `PR_GET_NAME` is a system call.
    static COMM: Cell<Option<[u8; TASK_COMM_LEN]>> = const { Cell::new(None) };
}

/// `bpf_get_current_pid_tgid`: the process id in the upper 32 bits, the thread id in the lower.
#[must_use]
pub fn current_pid_tgid() -> u64 {
    PID_TGID.with(|c| {
        if c.get() == 0 {
            let tgid = u64::from(std::process::id());
            let tid = crate::sys::gettid();
            c.set((tgid << 32) | u64::from(tid));
        }
        c.get()
    })
}

/// The calling thread's name as `bpf_get_current_comm` copies it (NUL-padded).
#[must_use]
pub fn current_comm() -> [u8; TASK_COMM_LEN] {
    COMM.with(|c| {
        if let Some(v) = c.get() {
            return v;
        }
        let v = crate::sys::thread_name();
        c.set(Some(v));
        v
    })
}

/// Runs tracing helper `helper` (`None`: not one of those handled here, or an argument the
/// program may not pass, which the caller turns into a fault).
#[inline]
pub(crate) fn call(helper: u32, regs: &[u64; 16], mem: &Memory<'_>) -> Option<u64> {
    let r = match helper {
        id::PROBE_READ | id::PROBE_READ_USER | id::PROBE_READ_KERNEL => {
            user_copy::probe_read(mem, regs[1], regs[3], regs[2] as u32 as usize, false)?
        }
        id::PROBE_READ_STR | id::PROBE_READ_USER_STR | id::PROBE_READ_KERNEL_STR => {
            user_copy::probe_read(mem, regs[1], regs[3], regs[2] as u32 as usize, true)?
        }
        id::PROBE_WRITE_USER => user_copy::probe_write(mem, regs[1], regs[2], regs[3] as u32 as usize)?,
        id::GET_CURRENT_PID_TGID => return Some(current_pid_tgid()),
        id::GET_CURRENT_COMM => {
            let size = regs[2] as u32 as usize;
            if size == 0 {
                return None;
            }
            let comm = current_comm();
            let mut out = vec![0u8; size];
            let n = size.min(TASK_COMM_LEN);
            out[..n].copy_from_slice(&comm[..n]);
            out[size - 1] = 0;
            user_copy::fill(mem, regs[1], &out)?;
            0
        }
        _ => return None,
    };
    Some(r as u64)
}

/// Whether [`call`] handles `helper`.
#[must_use]
pub(crate) fn handles(helper: u32) -> bool {
    helper != id::GET_FUNC_IP && HELPERS.iter().any(|(i, _)| *i == helper)
}
