//! Fault-safe copies to and from any address of this process: what `bpf_probe_read_user` and
//! friends need, since a tracing program may hand them any pointer it found in a register.
//!
//! Why not `process_vm_readv` on our own pid: it is a system call (hundreds of nanoseconds), and
//! `bpf_probe_read_user` has to cost a few. Instead the copies are two tiny assembly routines
//! with a recovery point, like the kernel's exception tables: a `SIGSEGV`/`SIGBUS` whose faulting
//! instruction lies inside them resumes at `dp_user_fixup`, which returns `-EFAULT`. A fault
//! anywhere else goes to the handler that was installed before ours (Rust's stack-overflow
//! handler, or the default action), so a genuine crash stays a crash.
//!
//! Invariants: the routines touch no memory besides the source and destination ranges and their
//! own stack; they are leaves (no frame of their own), so resuming at the fixup with the stack
//! pointer of the fault returns straight to the caller.
#![expect(unsafe_code, reason = "the fault-recovering copy routines and their signal handler")]

use std::sync::OnceLock;

use crate::memory::Memory;

// Every routine starts by naming, in `r8`/`r9`, the destination range the fixup zeroes when a
// fault stops it (`r9 = 0`: nothing, for writes into the traced process), so the routines return
// the kernel's result on their own: JIT code calls `dp_user_read` directly ([`direct`]).
std::arch::global_asm!(
    ".pushsection .text.dp_user_copy,\"ax\",@progbits",
    ".p2align 4",
    ".globl dp_user_copy_begin",
    ".hidden dp_user_copy_begin",
    ".globl dp_user_read",
    ".hidden dp_user_read",
    ".globl dp_user_write",
    ".hidden dp_user_write",
    ".globl dp_user_str",
    ".hidden dp_user_str",
    ".globl dp_user_copy_end",
    ".hidden dp_user_copy_end",
    ".globl dp_user_fixup",
    ".hidden dp_user_fixup",
    "dp_user_copy_begin:",
    // dp_user_read(dst: rdi, src: rsi, len: rdx) -> 0, or -EFAULT with dst zeroed
    "dp_user_read:",
    "    mov r8, rdi",
    "    mov r9, rdx",
    "    jmp 1f",
    // dp_user_write(dst: rdi, src: rsi, len: rdx) -> 0, or -EFAULT
    "dp_user_write:",
    "    xor r9d, r9d",
    "1:  cmp rdx, 8",
    "    jne 2f",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    xor eax, eax",
    "    ret",
    "2:  cmp rdx, 16",
    "    jne 3f",
    "    mov rax, qword ptr [rsi]",
    "    mov rcx, qword ptr [rsi + 8]",
    "    mov qword ptr [rdi], rax",
    "    mov qword ptr [rdi + 8], rcx",
    "    xor eax, eax",
    "    ret",
    "3:  cmp rdx, 4",
    "    jne 6f",
    "    mov eax, dword ptr [rsi]",
    "    mov dword ptr [rdi], eax",
    "    xor eax, eax",
    "    ret",
    // Other sizes: 8-byte words, then bytes (`rep movsb` starts slowly for small copies).
    "6:  cmp rdx, 64",
    "    ja 9f",
    "7:  cmp rdx, 8",
    "    jb 8f",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rdx, 8",
    "    jmp 7b",
    "8:  test rdx, rdx",
    "    jz 10f",
    "    movzx eax, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rdx",
    "    jmp 8b",
    "9:  mov rcx, rdx",
    "    rep movsb",
    "10: xor eax, eax",
    "    ret",
    // dp_user_str(dst: rdi, src: rsi, max: rdx > 0) -> bytes written including the NUL, or
    // -EFAULT with the max bytes of dst zeroed
    "dp_user_str:",
    "    mov r8, rdi",
    "    mov r9, rdx",
    "    xor eax, eax",
    "4:  movzx ecx, byte ptr [rsi + rax]",
    "    mov byte ptr [rdi + rax], cl",
    "    inc rax",
    "    test ecx, ecx",
    "    jz 5f",
    "    cmp rax, rdx",
    "    jb 4b",
    "    mov byte ptr [rdi + rax - 1], 0",
    "5:  ret",
    "dp_user_copy_end:",
    "dp_user_fixup:",
    "    mov rdi, r8",
    "    mov rcx, r9",
    "    xor eax, eax",
    "    rep stosb",
    "    mov rax, -14",
    "    ret",
    ".popsection",
);

unsafe extern "C" {
    fn dp_user_read(dst: *mut u8, src: *const u8, len: usize) -> i64;
    fn dp_user_write(dst: *mut u8, src: *const u8, len: usize) -> i64;
    fn dp_user_str(dst: *mut u8, src: *const u8, max: usize) -> i64;
    fn dp_user_copy_begin();
    fn dp_user_copy_end();
    fn dp_user_fixup();
}

/// The handlers that were installed before ours, for `SIGSEGV` and `SIGBUS`.
static PREVIOUS: OnceLock<[libc::sigaction; 2]> = OnceLock::new();

pub(crate) fn install() {
    PREVIOUS.get_or_init(|| {
        let mut old = [
            // SAFETY: `sigaction` is plain data; all-zero is a valid (empty) value.
            unsafe { std::mem::zeroed::<libc::sigaction>() },
            // SAFETY: as above.
            unsafe { std::mem::zeroed::<libc::sigaction>() },
        ];
        for (i, sig) in [libc::SIGSEGV, libc::SIGBUS].into_iter().enumerate() {
            // SAFETY: as above.
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction =
                on_fault as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            // SAFETY: `act` is initialised, `old[i]` is writable; the handler is async-signal-safe
            // (it reads the saved registers and a `OnceLock` that is set before it is installed...
            // and only written once, here, under the `OnceLock`'s initialisation).
            unsafe {
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, &mut old[i]);
            }
        }
        old
    });
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let begin = dp_user_copy_begin as *const () as usize as i64;
    let end = dp_user_copy_end as *const () as usize as i64;
    let uc = uc.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid `ucontext_t` to an `SA_SIGINFO` handler; this thread
    // owns it until the handler returns.
    let gregs = unsafe { &mut (*uc).uc_mcontext.gregs };
    let rip = gregs[libc::REG_RIP as usize];
    if rip >= begin && rip < end {
        gregs[libc::REG_RIP as usize] = dp_user_fixup as *const () as usize as i64;
        return;
    }
    // Not ours: hand it to whoever handled it before, or let the default action happen when the
    // faulting instruction runs again.
    let index = usize::from(sig == libc::SIGBUS);
    let prev = PREVIOUS.get().map(|p| p[index]);
    match prev {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an `SA_SIGINFO` handler has this signature; it gets our arguments.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                f(sig, info, uc.cast());
            } else {
                // SAFETY: a plain handler has this signature.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // SAFETY: restoring the default disposition; the fault repeats and kills the process
            // as it would have without us.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// Copies `len` bytes from `src` (any address of the process) to `dst`; `-EFAULT` when `src`
/// is not readable, with `dst` zeroed as the kernel zeroes it.
///
/// # Safety
/// `dst` is valid for writes of `len` bytes and does not overlap `src`.
unsafe fn read(dst: *mut u8, src: u64, len: usize) -> i64 {
    if len == 0 {
        return 0;
    }
    install();
    // SAFETY: `dst` is writable (caller); a bad `src` faults inside the routine, which returns
    // -EFAULT through the fixup after zeroing `dst` (module doc).
    unsafe { dp_user_read(dst, src as usize as *const u8, len) }
}

/// Copies a NUL-terminated string of at most `max` bytes (NUL included) from `src` to `dst`;
/// the bytes written including the NUL, or `-EFAULT` (with `dst` zeroed).
///
/// # Safety
/// `dst` is valid for writes of `max` bytes and does not overlap `src`.
unsafe fn read_str(dst: *mut u8, src: u64, max: usize) -> i64 {
    if max == 0 {
        return 0;
    }
    install();
    // SAFETY: as in `read`.
    unsafe { dp_user_str(dst, src as usize as *const u8, max) }
}

/// The routine compiled code may call directly, as `extern "C" fn(dst, src, size) -> i64`, for
/// `helper` with a constant `size` (non-zero for the string helpers) and the program's side of
/// the copy proved to lie in its stack: `bpf_probe_read{,_user,_kernel}` (`dp_user_read`), their
/// `_str` variants (`dp_user_str`) and `bpf_probe_write_user` (`dp_user_write`). Their results
/// are the helpers' (the kernel's), zeroing included, with no dispatch and no checks left to do.
/// Installs the fault handler the routines rely on; `None` for any other helper.
pub(crate) fn direct(helper: u32) -> Option<u64> {
    use super::id;
    let f: unsafe extern "C" fn(*mut u8, *const u8, usize) -> i64 = match helper {
        id::PROBE_READ | id::PROBE_READ_USER | id::PROBE_READ_KERNEL => dp_user_read,
        id::PROBE_READ_STR | id::PROBE_READ_USER_STR | id::PROBE_READ_KERNEL_STR => dp_user_str,
        id::PROBE_WRITE_USER => dp_user_write,
        _ => return None,
    };
    install();
    Some(f as usize as u64)
}

/// `bpf_probe_read_user`: `size` bytes from any address `src` into program memory at `dst`
/// (its stack or a writable map value, checked here); `None` when `dst` is not such memory.
pub(crate) fn probe_read(mem: &Memory<'_>, dst: u64, src: u64, size: usize, string: bool) -> Option<i64> {
    if size == 0 {
        return Some(0);
    }
    if !mem.check(dst, size, true) {
        return None;
    }
    let dst = dst as usize as *mut u8;
    // SAFETY: `check` proved `dst..dst + size` lies in writable program memory (the stack or a
    // map value, live for the run); program memory never overlaps a source the copy reads
    // while writing, and if the program passed an overlapping source the bytes are its own.
    Some(unsafe { if string { read_str(dst, src, size) } else { read(dst, src, size) } })
}

/// `bpf_probe_write_user`: `size` bytes of program memory at `src` (checked) to any address
/// `dst`; `-EFAULT` when `dst` is not writable, `None` when `src` is not program memory.
pub(crate) fn probe_write(mem: &Memory<'_>, dst: u64, src: u64, size: usize) -> Option<i64> {
    if size == 0 {
        return Some(0);
    }
    if !mem.check(src, size, false) {
        return None;
    }
    install();
    // SAFETY: `src` was checked readable; a bad `dst` faults inside the routine and returns
    // -EFAULT. Writing wherever the program asks is `bpf_probe_write_user`'s contract, as
    // unsafe for the traced process as the kernel's.
    Some(unsafe { dp_user_write(dst as usize as *mut u8, src as usize as *const u8, size) })
}

/// Writes `bytes` into program memory at `dst` (checked); `None` when not allowed.
pub(crate) fn fill(mem: &Memory<'_>, dst: u64, bytes: &[u8]) -> Option<()> {
    if !mem.check(dst, bytes.len(), true) {
        return None;
    }
    // SAFETY: checked writable program memory; `bytes` is a distinct Rust buffer.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as usize as *mut u8, bytes.len()) };
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_good_memory_and_survives_bad() {
        let src: Vec<u8> = (1..=200).collect();
        for len in [1, 2, 4, 7, 8, 15, 16, 24, 63, 64, 65, 200] {
            let mut dst = [0xffu8; 201];
            // SAFETY: `dst` holds more than `len` bytes.
            assert_eq!(unsafe { read(dst.as_mut_ptr(), src.as_ptr() as u64, len) }, 0);
            assert_eq!(dst[..len], src[..len], "{len} bytes");
            assert_eq!(dst[len], 0xff, "{len} bytes: not one more");
        }
        let mut dst = [0xffu8; 100];
        for bad in [0u64, 8, 0xdead_0000_0000, u64::MAX - 3] {
            for len in [16, 8, 5, 100] {
                dst.fill(0xff);
                // SAFETY: `dst` holds 100 bytes.
                assert_eq!(unsafe { read(dst.as_mut_ptr(), bad, len) }, -14);
                assert!(dst[..len].iter().all(|&b| b == 0), "zeroed on failure");
                assert!(dst[len..].iter().all(|&b| b == 0xff), "and nothing past it");
            }
            dst.fill(0xff);
            // SAFETY: as above.
            assert_eq!(unsafe { read_str(dst.as_mut_ptr(), bad, 16) }, -14);
            assert_eq!(dst[..16], [0; 16]);
        }
        // A copy that faults halfway (the source runs into an unmapped page) is zeroed whole.
        let page = 4096;
        // SAFETY: two fresh anonymous pages, the second made inaccessible; unmapped below.
        let p = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::mprotect(p.cast::<u8>().add(page).cast(), page, libc::PROT_NONE);
            std::ptr::write_bytes(p.cast::<u8>(), 0x5a, page);
            p
        };
        for len in [16, 40, 100] {
            dst.fill(0xff);
            let src = p as u64 + page as u64 - 10;
            // SAFETY: `dst` holds 100 bytes.
            assert_eq!(unsafe { read(dst.as_mut_ptr(), src, len) }, -14, "{len} bytes across");
            assert!(dst[..len].iter().all(|&b| b == 0), "{len}: zeroed whole");
        }
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p, 2 * page) };
    }

    #[test]
    fn direct_routines_are_the_helpers() {
        use super::super::id;
        assert!(direct(id::PROBE_READ_USER).is_some() && direct(id::PROBE_READ_KERNEL_STR).is_some());
        assert!(direct(id::PROBE_WRITE_USER).is_some() && direct(id::MAP_LOOKUP_ELEM).is_none());
    }

    #[test]
    fn strings_stop_at_the_nul_or_the_limit() {
        let s = b"eth0\0junk";
        let mut dst = [0xffu8; 16];
        // SAFETY: `dst` holds 16 bytes.
        assert_eq!(unsafe { read_str(dst.as_mut_ptr(), s.as_ptr() as u64, 16) }, 5);
        assert_eq!(&dst[..5], b"eth0\0");
        // SAFETY: as above.
        assert_eq!(unsafe { read_str(dst.as_mut_ptr(), s.as_ptr() as u64, 3) }, 3);
        assert_eq!(&dst[..3], b"et\0");
    }

    #[test]
    fn writes_refuse_read_only_memory() {
        let src = [1u8, 2, 3, 4];
        let mut target = [0u8; 4];
        install();
        // SAFETY: `src` is readable; the destination is our own buffer.
        assert_eq!(unsafe { dp_user_write(target.as_mut_ptr(), src.as_ptr(), 4) }, 0);
        assert_eq!(target, src);
        // Code is mapped read-execute: a write there is -EFAULT, not a crash.
        let code = reads_good_memory_and_survives_bad as *const () as *mut u8;
        // SAFETY: as above; the write faults and is recovered.
        assert_eq!(unsafe { dp_user_write(code, src.as_ptr(), 4) }, -14);
    }
}
