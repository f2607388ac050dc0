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

/// For compiled code, a `bpf_probe_read` or `bpf_probe_write_user` variant it may run as a
/// direct call `routine(dst, src, size) -> i64` (the helper's result, zeroing included) instead
/// of through the helper dispatch, when register `buf` — the program's side of the copy — is
/// proved to point into the program's stack for `size`, the constant in register `size`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectCopy {
    pub routine: u64,
    /// The registers passed as the routine's `dst` and `src`.
    pub dst: u8,
    pub src: u8,
    /// The register holding the program-memory buffer, and the one holding the size.
    pub buf: u8,
    pub size: u8,
    /// Size 0 is not for the routine (the string reads, which need room for the NUL).
    pub nonzero: bool,
}

/// The direct form of `helper`, if it has one (see [`DirectCopy`]).
#[must_use]
pub(crate) fn direct_copy(helper: u32) -> Option<DirectCopy> {
    let string = matches!(helper, id::PROBE_READ_STR | id::PROBE_READ_USER_STR | id::PROBE_READ_KERNEL_STR);
    let routine = user_copy::direct(helper)?;
    Some(if helper == id::PROBE_WRITE_USER {
        // bpf_probe_write_user(dst, src, len): the program's buffer is the source.
        DirectCopy { routine, dst: 1, src: 2, buf: 2, size: 3, nonzero: false }
    } else {
        // bpf_probe_read*(dst, size, src): the program's buffer is the destination.
        DirectCopy { routine, dst: 1, src: 3, buf: 1, size: 2, nonzero: string }
    })
}

/// Whether [`call`] handles `helper`.
#[must_use]
pub(crate) fn handles(helper: u32) -> bool {
    helper != id::GET_FUNC_IP && HELPERS.iter().any(|(i, _)| *i == helper)
}

#[cfg(test)]
mod tests {
    use crate::context::{PtRegs, TraceState, Uprobe, pt_regs::off};
    use crate::helpers::id;
    use crate::insn::Insn;
    use crate::jit::JitProgram;
    use crate::program::Program;

    const EXIT: Insn = Insn::new(0x95, 0, 0, 0, 0);

    /// `r0 = helper(fp - 16, size, ctx->di)`, then `r0 = (r0 << 32) ^ *(u64 *)(fp - 16)`, through
    /// the interpreter and the JIT (whose call is direct for a constant size into the frame).
    fn read(helper: u32, size: i32, src: u64) -> [u64; 2] {
        let insns = [
            Insn::new(0x7a, 10, 0, -16, 0x5a5a_5a5a), // *(u64 *)(fp - 16) = 0x5a5a5a5a
            Insn::new(0x7a, 10, 0, -8, 0x5a5a_5a5a),
            Insn::new(0x79, 3, 1, off::DI as i16, 0),
            Insn::new(0xbf, 1, 10, 0, 0),
            Insn::new(0x07, 1, 0, 0, -16),
            Insn::new(0xb7, 2, 0, 0, size),
            Insn::new(0x85, 0, 0, 0, helper as i32),
            Insn::new(0x67, 0, 0, 0, 32),
            Insn::new(0x79, 1, 10, -16, 0),
            Insn::new(0xaf, 0, 1, 0, 0),
            EXIT,
        ];
        let regs = PtRegs { di: src, ..PtRegs::default() };
        let prog = Program::<Uprobe>::from_insns_verified("t", &insns, &[]).expect("verifies");
        let interp = crate::Interpreter::new().run(&prog, &mut TraceState::new(&regs, 0), 0).unwrap();
        let jit = JitProgram::compile(&prog).unwrap().run(&mut TraceState::new(&regs, 0), 0).unwrap();
        [interp, jit]
    }

    #[test]
    fn writes_agree_between_the_engines() {
        // *(u64 *)(fp - 8) = 0x11223344; r0 = bpf_probe_write_user(ctx->di, fp - 8, 8)
        let insns = [
            Insn::new(0x7a, 10, 0, -8, 0x1122_3344),
            Insn::new(0x79, 1, 1, off::DI as i16, 0),
            Insn::new(0xbf, 2, 10, 0, 0),
            Insn::new(0x07, 2, 0, 0, -8),
            Insn::new(0xb7, 3, 0, 0, 8),
            Insn::new(0x85, 0, 0, 0, id::PROBE_WRITE_USER as i32),
            EXIT,
        ];
        let prog = Program::<Uprobe>::from_insns_verified("t", &insns, &[]).expect("verifies");
        let jit = JitProgram::compile(&prog).unwrap();
        let mut target = [0u64; 2];
        for (i, slot) in target.iter_mut().enumerate() {
            let regs = PtRegs { di: std::ptr::from_mut(slot) as u64, ..PtRegs::default() };
            let r = if i == 0 {
                crate::Interpreter::new().run(&prog, &mut TraceState::new(&regs, 0), 0).unwrap()
            } else {
                jit.run(&mut TraceState::new(&regs, 0), 0).unwrap()
            };
            assert_eq!(r, 0);
        }
        assert_eq!(target, [0x1122_3344; 2], "interpreter, JIT");
        let regs = PtRegs { di: 24, ..PtRegs::default() };
        let efault = -14i64 as u64;
        let interp = crate::Interpreter::new().run(&prog, &mut TraceState::new(&regs, 0), 0).unwrap();
        assert_eq!([interp, jit.run(&mut TraceState::new(&regs, 0), 0).unwrap()], [efault; 2]);
    }

    #[test]
    fn reads_of_every_kind_agree_between_the_engines() {
        let s = *b"eth0\0abcdefghijk";
        let src = s.as_ptr() as u64;
        let word = u64::from_le_bytes(s[..8].try_into().unwrap());
        let efault = (-14i64 as u64) << 32;
        for helper in [id::PROBE_READ, id::PROBE_READ_USER, id::PROBE_READ_KERNEL] {
            assert_eq!(read(helper, 8, src), [word; 2], "helper {helper}");
            assert_eq!(read(helper, 16, src), [word; 2], "helper {helper}, 16 bytes");
            assert_eq!(read(helper, 3, src), [word & 0xff_ffff | 0x5a00_0000; 2], "helper {helper}, 3 bytes");
            assert_eq!(read(helper, 8, 24), [efault; 2], "helper {helper}: -EFAULT, zeroed");
            assert_eq!(read(helper, 0, 24), [0x5a5a_5a5a; 2], "helper {helper}: nothing to read");
        }
        for helper in [id::PROBE_READ_STR, id::PROBE_READ_USER_STR, id::PROBE_READ_KERNEL_STR] {
            let expected = (5u64 << 32) ^ u64::from_le_bytes([b'e', b't', b'h', b'0', 0, 0, 0, 0]);
            assert_eq!(read(helper, 8, src), [expected; 2], "helper {helper}");
            let expected = (3u64 << 32) ^ u64::from_le_bytes([b'e', b't', 0, 0x5a, 0, 0, 0, 0]);
            assert_eq!(read(helper, 3, src), [expected; 2], "helper {helper}, cut at 3");
            assert_eq!(read(helper, 8, 24), [efault; 2], "helper {helper}: -EFAULT, zeroed");
            assert_eq!(read(helper, 0, src), [0x5a5a_5a5a; 2], "helper {helper}: size 0");
        }
    }
}
