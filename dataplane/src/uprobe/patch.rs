//! Everything unsafe the uprobe subsystem does, in one place: the register-saving entry and
//! return stubs, the handlers they call, writing to our own code, stopping the other threads,
//! trampoline memory, and the per-thread shadow stack of uretprobes.
//!
//! A hit runs either through the Rust handlers (`on_entry`, `on_return`) or, in the usual case,
//! through the stubs' own assembly fast paths (`fast_entry`, `fast_return`), which do the same
//! steps in the same order on the same per-thread state; whatever they cannot do goes to the
//! handlers with nothing changed.
//!
//! Invariants this module keeps:
//! - A [`Probe`] is leaked (`&'static`) and never freed, nor is its trampoline page, so code that
//!   a thread is executing (a stub, a trampoline, the displaced instructions) stays valid forever.
//! - [`Probe::attached`] is either null or an `Arc<Attached>` turned into a raw pointer. A hit
//!   loads it once, while its thread's `Block::state` counts it busy (written before the load,
//!   on the thread's own cache line); a pending uretprobe return keeps the thread busy until the
//!   function has returned and its return programs ran. [`publish`] swaps the pointer, runs a
//!   `membarrier` (after which every busy count of a hit that loaded the old pointer is
//!   visible), and frees the old programs only once each thread that was busy then has been
//!   idle since (its epoch moved on): a grace period, as RCU, checked without waiting. So a
//!   detached program is never freed while a thread runs it or will run it at a return.
//! - Code is only written with every other thread stopped in a signal handler at an address
//!   outside the bytes being replaced ([`patch_function`]), or, for a probe site, by one aligned
//!   8-byte store that replaces one whole instruction ([`patch_site`]); both end with
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`, so every thread serializes its
//!   instruction stream before the patch call returns.
#![expect(unsafe_code, reason = "code patching, register stubs, signal handlers: the named unsafe module")]

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering, compiler_fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use xdp_vm::context::{PtRegs, TraceState, Uprobe};
use xdp_vm::jit::frame::env as raw_env;
use xdp_vm::jit::{JitFrame, JitProgram, JitRunner};

use super::{Attached, Hook, Hooks, Probe};

/// Bytes the stubs reserve: xmm0-7 (128) then `struct pt_regs` (168), then 8 to keep the
/// stack 16-byte aligned (the return stub enters at a different alignment and uses 8 less).
const FRAME: usize = 304;
const XMM: usize = 0;
const REGS: usize = 128;

// Every general-purpose register into `struct pt_regs` at `rsp + 128`, the constants the kernel
// puts there for user mode (`orig_ax` = -1, `cs`, `ss`) and the flags; `ip` and `sp` are filled
// in by the stub and the handler.
macro_rules! save_gprs {
    () => {
        concat!(
            "mov [rsp + 128], r15\n",
            "mov [rsp + 136], r14\n",
            "mov [rsp + 144], r13\n",
            "mov [rsp + 152], r12\n",
            "mov [rsp + 160], rbp\n",
            "mov [rsp + 168], rbx\n",
            "mov [rsp + 176], r11\n",
            "mov [rsp + 184], r10\n",
            "mov [rsp + 192], r9\n",
            "mov [rsp + 200], r8\n",
            "mov [rsp + 208], rax\n",
            "mov [rsp + 216], rcx\n",
            "mov [rsp + 224], rdx\n",
            "mov [rsp + 232], rsi\n",
            "mov [rsp + 240], rdi\n",
            "mov qword ptr [rsp + 248], -1\n",
            "mov qword ptr [rsp + 264], 0x33\n",
            "mov qword ptr [rsp + 288], 0x2b\n",
            // The flags as the probed code left them (nothing before this changed them: the
            // stubs make room with `lea`, not `sub`): the arithmetic ones from `lahf` and
            // `seto`, IF and the always-set bit 1 as in any user-mode code, DF clear as the ABI
            // has it at a call and Rust everywhere. Not `pushfq`: before a program's `lock`ed
            // instruction it costs about 4 ns on this machine; `lahf` costs nothing.
            "lahf\n",
            "seto al\n",
            "movzx ecx, al\n",
            "shl ecx, 11\n",
            "movzx eax, ah\n",
            "or eax, ecx\n",
            "or eax, 0x202\n",
            "mov [rsp + 272], rax\n",
        )
    };
}

// The registers a C function (the handler) may change: the callee-saved ones it keeps itself.
macro_rules! restore_caller_saved {
    () => {
        concat!(
            "mov r11, [rsp + 176]\n",
            "mov r10, [rsp + 184]\n",
            "mov r9, [rsp + 192]\n",
            "mov r8, [rsp + 200]\n",
            "mov rax, [rsp + 208]\n",
            "mov rcx, [rsp + 216]\n",
            "mov rdx, [rsp + 224]\n",
            "mov rsi, [rsp + 232]\n",
            "mov rdi, [rsp + 240]\n",
        )
    };
}

macro_rules! save_xmm0_3 {
    () => {
        concat!(
            "movaps [rsp + 0], xmm0\n",
            "movaps [rsp + 16], xmm1\n",
            "movaps [rsp + 32], xmm2\n",
            "movaps [rsp + 48], xmm3\n",
        )
    };
}

macro_rules! save_xmm0_7 {
    () => {
        concat!(
            save_xmm0_3!(),
            "movaps [rsp + 64], xmm4\n",
            "movaps [rsp + 80], xmm5\n",
            "movaps [rsp + 96], xmm6\n",
            "movaps [rsp + 112], xmm7\n",
        )
    };
}

macro_rules! restore_xmm0_3 {
    () => {
        concat!(
            "movaps xmm0, [rsp + 0]\n",
            "movaps xmm1, [rsp + 16]\n",
            "movaps xmm2, [rsp + 32]\n",
            "movaps xmm3, [rsp + 48]\n",
        )
    };
}

macro_rules! restore_xmm0_7 {
    () => {
        concat!(
            restore_xmm0_3!(),
            "movaps xmm4, [rsp + 64]\n",
            "movaps xmm5, [rsp + 80]\n",
            "movaps xmm6, [rsp + 96]\n",
            "movaps xmm7, [rsp + 112]\n",
        )
    };
}

// The fast paths of the stubs, right after `save_gprs`: when the probe has at most one entry
// and at most one return program (`Attached::fast_entry`, `fast_ret`), this thread has their
// frames prepared for raw runs (`Block::fast`) and knows its per-CPU slot (`Block::cpu`), the
// stubs do what `on_entry` and `on_return` do, without the Rust handlers: mark the thread in a
// hit and busy, load the programs (after the busy mark, as `on_entry`; the grace period of
// `publish` covers them), run the program (`run_prog`), take the return address onto the
// shadow stack (entry) or take it back (return), end the hit. Anything else (no block yet, a
// nested hit, several programs, no frame, no slot, a full shadow stack, a return that is not
// the top one) goes to the handler with nothing changed. They use rbx (the block), r12 (the
// frame) and r13, callee-saved, restored from `pt_regs`.

// Runs the program of hook rdx with `bpf_get_func_ip` = rsi on the block in rbx, the context
// being the stub's `pt_regs` (whose `ip` the caller set): fills in the frame's environment
// (`xdp_vm::jit::frame`), calls the code, hands a fault to `on_fast_fault` (Rust: `$fault`
// keeps what that call must not change). Jumps to 76 with nothing changed when the frame or
// the slot is not there.
macro_rules! run_prog {
    ($fault:expr) => {
        concat!(
            "mov r12, qword ptr [rbx + {b_cpu}]\n",
            "test r12, r12\n",
            "jz 76f\n",
            "mov eax, dword ptr [r12]\n",
            "test eax, eax\n",
            "js 76f\n",
            "mov r12d, edx\n",
            "and r12d, {frames_mask}\n",
            "shl r12d, 5\n",
            "lea r12, [rbx + r12 + {b_fast}]\n",
            "cmp qword ptr [r12], rdx\n",
            "jne 76f\n",
            "mov rdi, qword ptr [r12 + 16]\n",
            "mov qword ptr [rdi + {e_slot}], rax\n",
            "mov qword ptr [rbx + {b_trace_ip}], rsi\n",
            "lea rax, [rsp + 128]\n",
            "mov qword ptr [rdi + {e_ctx}], rax\n",
            "mov qword ptr [rbx + {b_trace_regs}], rax\n",
            "lea rax, [rbx + {b_trace}]\n",
            "mov qword ptr [rdi + {e_state}], rax\n",
            "xor eax, eax\n",
            "mov qword ptr [rdi + {e_backward}], rax\n",
            "lea rsi, [rsp + 128]\n",
            "call qword ptr [r12 + 8]\n",
            "mov rdi, qword ptr [r12 + 16]\n",
            "cmp qword ptr [rdi + {e_faulted}], 0\n",
            "je 75f\n",
            $fault,
            "mov rdi, rbx\n",
            "mov rsi, qword ptr [r12]\n",
            "call {fault}\n",
            "75:\n",
        )
    };
}

// rbx, r12, r13, r14 back from `pt_regs`.
macro_rules! restore_fast_regs {
    () => {
        concat!(
            "mov rbx, qword ptr [rsp + 168]\n",
            "mov r12, qword ptr [rsp + 152]\n",
            "mov r13, qword ptr [rsp + 144]\n",
            "mov r14, qword ptr [rsp + 136]\n",
        )
    };
}

// A fast path keeps the vector registers the probed code may still need (`$save`: xmm0-7
// at an entry, the return values in xmm0-3 at a return) only around a program that may change
// them (the word at `$plain` is 0: `Attached::fast_entry_plain` / `fast_ret_plain`); r14 says
// whether it did.
macro_rules! save_xmm_unless_plain {
    ($plain:literal, $save:expr) => {
        concat!("cmp qword ptr ", $plain, ", 0\n", "jne 70f\n", $save, "mov r14d, 1\n", "70:\n",)
    };
}

// Before a call into Rust (a fault): the registers `$save` keeps, kept if they were not (a
// program's code that leaves them alone cannot fault today — faults are raised by calls — but
// Rust may use them).
macro_rules! save_xmm_unless_saved {
    ($save:expr) => {
        concat!("test r14d, r14d\n", "jnz 70f\n", $save, "mov r14d, 1\n", "70:\n",)
    };
}

macro_rules! restore_xmm_if_saved {
    ($restore:expr) => {
        concat!("test r14d, r14d\n", "jz 70f\n", $restore, "70:\n",)
    };
}

// `Block::leave(s, 1)` and the end of the hit, on the block in rbx; then rbx, r12, r13 back.
macro_rules! leave_hit {
    () => {
        concat!(
            "mov rax, qword ptr [rbx + {b_state}]\n",
            "sub rax, 1\n",
            "test eax, {busy}\n",
            "jnz 77f\n",
            "add rax, {epoch}\n",
            "77:\n",
            "mov qword ptr [rbx + {b_state}], rax\n",
            "mov byte ptr [rbx + {b_in_hit}], 0\n",
            restore_fast_regs!(),
        )
    };
}

// The entry and site stubs' fast path; the probe at [rsp + 304]; `$save`/`$restore` keep the
// xmm registers the stub must keep around a program. Ends at 79 with eax = 1 when the return
// address was taken for a uretprobe, else 0; the handler's call follows it.
macro_rules! fast_entry {
    ($save:expr, $save_for_call:expr, $restore:expr) => {
        concat!(
            "xor r14d, r14d\n",
            "mov rax, qword ptr [rip + dp_uprobe_block@GOTTPOFF]\n",
            "mov rbx, qword ptr fs:[rax]\n",
            "test rbx, rbx\n",
            "jz 78f\n",
            "cmp byte ptr [rbx + {b_in_hit}], 0\n",
            "jne 78f\n",
            "mov byte ptr [rbx + {b_in_hit}], 1\n",
            "mov rax, qword ptr [rbx + {b_state}]\n",
            "add rax, 1\n",
            "mov qword ptr [rbx + {b_state}], rax\n",
            "mov rsi, qword ptr [rsp + 304]\n",
            "mov r13, qword ptr [rsi + {p_attached}]\n",
            "test r13, r13\n",
            "jz 74f\n",
            "mov rdx, qword ptr [r13 + {a_fast_entry}]\n",
            "mov rax, qword ptr [r13 + {a_fast_ret}]\n",
            "mov rcx, rax\n",
            "or rcx, rdx\n",
            "jz 76f\n",
            "test rax, rax\n",
            "jz 71f\n",
            "cmp qword ptr [rbx + {b_depth}], {max_depth}\n",
            "jae 76f\n",
            "71:\n",
            "test rdx, rdx\n",
            "jz 72f\n",
            "mov rsi, qword ptr [rsi + {p_func_ip}]\n",
            "mov qword ptr [rsp + 256], rsi\n",
            $save,
            run_prog!($save_for_call),
            $restore,
            "72:\n",
            "cmp qword ptr [r13 + {a_fast_ret}], 0\n",
            "je 74f\n",
            // The shadow stack's next entry: (return address, sp after the return, probe,
            // programs); the pending return keeps the thread busy.
            "mov rax, qword ptr [rbx + {b_depth}]\n",
            "mov rcx, rax\n",
            "shl rcx, 5\n",
            "lea rcx, [rbx + rcx + {b_pending}]\n",
            "mov rdx, qword ptr [rsp + 280]\n",
            "mov rsi, qword ptr [rdx]\n",
            "mov qword ptr [rcx + {pd_ret}], rsi\n",
            "add rdx, 8\n",
            "mov qword ptr [rcx + {pd_sp_after}], rdx\n",
            "mov rsi, qword ptr [rsp + 304]\n",
            "mov qword ptr [rcx + {pd_probe}], rsi\n",
            "mov qword ptr [rcx + {pd_attached}], r13\n",
            "add rax, 1\n",
            "mov qword ptr [rbx + {b_depth}], rax\n",
            "mov byte ptr [rbx + {b_in_hit}], 0\n",
            restore_fast_regs!(),
            "mov eax, 1\n",
            "jmp 79f\n",
            "74:\n",
            leave_hit!(),
            "xor eax, eax\n",
            "jmp 79f\n",
            "76:\n",
            leave_hit!(),
            "78:\n",
            restore_fast_regs!(),
        )
    };
}

// The return stub's fast path: the top of the shadow stack is this return (its `sp` matches)
// and its programs are one return program. Ends at 69 with rax = the real return address.
macro_rules! fast_return {
    () => {
        concat!(
            "xor r14d, r14d\n",
            "mov rax, qword ptr [rip + dp_uprobe_block@GOTTPOFF]\n",
            "mov rbx, qword ptr fs:[rax]\n",
            "test rbx, rbx\n",
            "jz 68f\n",
            "cmp byte ptr [rbx + {b_in_hit}], 0\n",
            "jne 68f\n",
            "mov rax, qword ptr [rbx + {b_depth}]\n",
            "test rax, rax\n",
            "jz 68f\n",
            "lea r13, [rax - 1]\n",
            "mov rcx, r13\n",
            "shl rcx, 5\n",
            "lea rcx, [rbx + rcx + {b_pending}]\n",
            "mov rax, qword ptr [rcx + {pd_sp_after}]\n",
            "cmp rax, qword ptr [rsp + 280]\n",
            "jne 68f\n",
            "mov rax, qword ptr [rcx + {pd_attached}]\n",
            "mov rdx, qword ptr [rax + {a_fast_ret}]\n",
            "test rdx, rdx\n",
            "jz 68f\n",
            "mov byte ptr [rbx + {b_in_hit}], 1\n",
            save_xmm_unless_plain!("[rax + {a_fast_ret_plain}]", save_xmm0_3!()),
            "mov rax, qword ptr [rcx + {pd_ret}]\n",
            "mov qword ptr [rsp + 256], rax\n",
            "mov rsi, qword ptr [rcx + {pd_probe}]\n",
            "mov rsi, qword ptr [rsi + {p_func_ip}]\n",
            run_prog!(save_xmm_unless_saved!(save_xmm0_3!())),
            restore_xmm_if_saved!(restore_xmm0_3!()),
            // Popped; the busy count the pending return held ends.
            "mov qword ptr [rbx + {b_depth}], r13\n",
            "shl r13, 5\n",
            "mov r13, qword ptr [rbx + r13 + {b_pending} + {pd_ret}]\n",
            "mov qword ptr [rsp + 312], r13\n",
            leave_hit!(),
            "mov rax, qword ptr [rsp + 312]\n",
            "jmp 69f\n",
            "76:\n",
            "mov byte ptr [rbx + {b_in_hit}], 0\n",
            "68:\n",
            restore_fast_regs!(),
        )
    };
}

// Three stubs, each saving what its kind of probe must keep and no more:
//
// - `dp_uprobe_entry`, a function's entry. A trampoline enters it with `push [probe]; call
//   [dp_uprobe_entry]`, so at entry: [rsp] = return into the trampoline, [rsp + 8] = the probe,
//   [rsp + 16] = the function's return address; the stack is 8 mod 16. Live at a function's
//   entry (SysV): the argument registers (rdi, rsi, rdx, rcx, r8, r9, xmm0-7, al for varargs,
//   r10 for a static chain) and the callee-saved ones, which the handler keeps as every C
//   function does; xmm8-15 and the flags are dead. The stub saves every general-purpose register
//   (the program's `pt_regs`) and xmm0-7 — on its fast path only when the program's compiled
//   code is not `TraceProgram::general_purpose_only` (saving them costs about 3 ns before a
//   program's locked instruction) —, and gives back the caller-saved ones. On the way out,
//   ZF tells the trampoline whether `on_entry` took the return address for a uretprobe (ZF
//   clear: take the return path).
// - `dp_uprobe_site`, a probe site: the same, but no xmm register, which the site's `asm!`
//   declares clobbered (see `site`), and no flag.
// - `dp_uprobe_return`, a uretprobed function's return: the trampoline calls it right after
//   the function returned into it, with one word reserved above the call for the real return
//   address (`[rsp + 8]`, where the function's return address was). Live: the return values
//   (rax, rdx, xmm0, xmm1 in C; LLVM's own conventions may also use rcx, r8 and xmm2-3) and the
//   callee-saved registers; the rest is dead after a return. It keeps all of those.
std::arch::global_asm!(
    ".pushsection .text.dp_uprobe,\"ax\",@progbits",
    ".p2align 4",
    ".globl dp_uprobe_entry",
    ".hidden dp_uprobe_entry",
    "dp_uprobe_entry:",
    "lea rsp, [rsp - 296]",
    save_gprs!(),
    "lea rax, [rsp + 312]",
    "mov [rsp + 280], rax",
    fast_entry!(
        save_xmm_unless_plain!("[r13 + {a_fast_entry_plain}]", save_xmm0_7!()),
        save_xmm_unless_saved!(save_xmm0_7!()),
        restore_xmm_if_saved!(restore_xmm0_7!())
    ),
    save_xmm0_7!(),
    "lea rdi, [rsp + 128]",
    "mov rsi, [rsp + 304]",
    "call {entry}",
    restore_xmm0_7!(),
    "79:",
    "test eax, eax",
    restore_caller_saved!(),
    "lea rsp, [rsp + 296]",
    "ret 8",
    ".p2align 4",
    ".globl dp_uprobe_site",
    ".hidden dp_uprobe_site",
    "dp_uprobe_site:",
    "lea rsp, [rsp - 296]",
    save_gprs!(),
    "lea rax, [rsp + 320]",
    "mov [rsp + 280], rax",
    fast_entry!("", "", ""),
    "lea rdi, [rsp + 128]",
    "mov rsi, [rsp + 304]",
    "call {entry}",
    "79:",
    restore_caller_saved!(),
    "add rsp, 296",
    "ret 8",
    ".p2align 4",
    ".globl dp_uprobe_return",
    ".hidden dp_uprobe_return",
    "dp_uprobe_return:",
    "lea rsp, [rsp - 304]",
    save_gprs!(),
    "lea rax, [rsp + 320]",
    "mov [rsp + 280], rax",
    fast_return!(),
    save_xmm0_3!(),
    "lea rdi, [rsp + 128]",
    "call {ret}",
    restore_xmm0_3!(),
    "69:",
    "mov [rsp + 312], rax",
    restore_caller_saved!(),
    "add rsp, 304",
    "ret",
    ".popsection",
    // This thread's `Block` once set up (null before and after), for the stubs: `BLOCK` is
    // Rust's, whose address assembly cannot name.
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl dp_uprobe_block",
    ".hidden dp_uprobe_block",
    ".type dp_uprobe_block,@object",
    ".size dp_uprobe_block, 8",
    "dp_uprobe_block:",
    ".zero 8",
    ".popsection",
    entry = sym on_entry,
    ret = sym on_return,
    fault = sym on_fast_fault,
    b_state = const std::mem::offset_of!(Block, state),
    b_in_hit = const std::mem::offset_of!(Block, in_hit),
    b_cpu = const std::mem::offset_of!(Block, cpu),
    b_fast = const std::mem::offset_of!(Block, fast),
    b_trace = const std::mem::offset_of!(Block, trace),
    b_trace_regs = const std::mem::offset_of!(Block, trace) + std::mem::offset_of!(TraceState<'static>, regs),
    b_trace_ip = const std::mem::offset_of!(Block, trace) + std::mem::offset_of!(TraceState<'static>, func_ip),
    p_attached = const std::mem::offset_of!(Probe, attached),
    p_func_ip = const std::mem::offset_of!(Probe, func_ip),
    a_fast_entry = const std::mem::offset_of!(Attached, fast_entry),
    a_fast_ret = const std::mem::offset_of!(Attached, fast_ret),
    a_fast_entry_plain = const std::mem::offset_of!(Attached, fast_entry_plain),
    a_fast_ret_plain = const std::mem::offset_of!(Attached, fast_ret_plain),
    b_depth = const std::mem::offset_of!(Block, depth),
    b_pending = const std::mem::offset_of!(Block, pending),
    pd_ret = const std::mem::offset_of!(Pending, ret),
    pd_sp_after = const std::mem::offset_of!(Pending, sp_after),
    pd_probe = const std::mem::offset_of!(Pending, probe),
    pd_attached = const std::mem::offset_of!(Pending, attached),
    max_depth = const MAX_DEPTH,
    frames_mask = const FRAMES - 1,
    busy = const BUSY,
    epoch = const EPOCH,
    e_ctx = const raw_env::CTX,
    e_slot = const raw_env::SLOT,
    e_state = const raw_env::STATE,
    e_backward = const raw_env::BACKWARD,
    e_faulted = const raw_env::FAULTED,
);

const _: () = assert!(XMM == 0 && REGS == 128 && REGS + std::mem::size_of::<PtRegs>() + 8 == FRAME);

unsafe extern "C" {
    fn dp_uprobe_entry();
    fn dp_uprobe_site();
    fn dp_uprobe_return();
}

/// Address of the function entry stub, for function trampolines.
pub(super) fn entry_stub() -> u64 {
    dp_uprobe_entry as *const () as u64
}

/// Address of the probe site stub, for site trampolines.
pub(super) fn site_stub() -> u64 {
    dp_uprobe_site as *const () as u64
}

/// Address of the return stub, for function trampolines.
pub(super) fn return_stub() -> u64 {
    dp_uprobe_return as *const () as u64
}

// ---- Hits
//
// Each thread that hits a probe owns a `Block`: its hit state, its program stack and its shadow
// stack of pending returns. A hit touches nothing else but the probe and the programs (no lock,
// no allocation, no reference count, no system call): one thread-local load finds the block.

/// Pending returns a thread keeps at most; deeper calls of uretprobed functions run their entry
/// programs but not their return programs (the kernel's `MAX_URETPROBE_DEPTH` is the same 64).
const MAX_DEPTH: usize = 64;

/// `Block::state`: the busy count (in a hit, plus pending returns) in the low bits, and an epoch
/// that moves on each time the count drops to zero.
const BUSY: u64 = (1 << 24) - 1;
const EPOCH: u64 = 1 << 24;

/// A uretprobe waiting for its function to return (32 bytes, as the stubs index them).
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// The real return address.
    ret: u64,
    /// The stack pointer after the return (where the return address was, plus 8).
    sp_after: u64,
    probe: *const Probe,
    /// The programs of the hit (`Arc<Attached>` as a raw pointer, kept alive by the thread's
    /// busy count).
    attached: *const Attached,
}

const _: () = assert!(std::mem::size_of::<Pending>() == 32);

const NO_PENDING: Pending =
    Pending { ret: 0, sp_after: 0, probe: std::ptr::null(), attached: std::ptr::null() };

/// One thread's hit state. Leaked, and reused by a later thread once its thread has exited
/// (`BLOCKS` has them all, `FREE` the unused ones).
#[repr(C, align(64))]
struct Block {
    /// `BUSY` | `EPOCH` counts, written only by the owning thread, read by [`publish`].
    state: AtomicU64,
    /// The fields below belong to the owning thread alone.
    in_hit: Cell<bool>,
    /// The per-CPU map slot ([`set_slot`]), `usize::MAX` for the CPU of the hit.
    slot: Cell<usize>,
    /// For the stubs' fast path: where the slot is — `slot_word` after [`set_slot`], else this
    /// thread's `struct rseq` `cpu_id` (the CPU it runs on, kept by the kernel, as
    /// `sched_getcpu` reads it), or null (no rseq: the handler asks `sched_getcpu`).
    cpu: Cell<*const u32>,
    slot_word: Cell<u32>,
    depth: Cell<usize>,
    runner: UnsafeCell<JitRunner>,
    /// Run environments of the programs this thread ran last, by `Hook::id % FRAMES`.
    frames: UnsafeCell<[Option<Frame>; FRAMES]>,
    /// The same frames as the stubs' fast path finds them: `fast[i]` describes `frames[i]`
    /// once prepared for raw runs (id 0: none).
    fast: UnsafeCell<[FastFrame; FRAMES]>,
    /// The fast path's `TraceState` (the helpers' view of a hit), written by the stub per hit.
    trace: UnsafeCell<MaybeUninit<TraceState<'static>>>,
    pending: UnsafeCell<[Pending; MAX_DEPTH]>,
}

/// A frame prepared for raw runs (`xdp_vm::jit::frame`), as the stubs read it: 32 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct FastFrame {
    /// The `Hook::id` of `Block::frames[id % FRAMES]`.
    id: u64,
    entry: u64,
    env: u64,
    _pad: u64,
}

const NO_FAST: FastFrame = FastFrame { id: 0, entry: 0, env: 0, _pad: 0 };
const _: () = assert!(std::mem::size_of::<FastFrame>() == 32 && FRAMES.is_power_of_two());

/// Run environments a thread keeps: a hit whose program has one runs it writing only the
/// context and the run counters ([`JitFrame::run`]); another program's replaces it.
const FRAMES: usize = 4;

/// A program's run environment on one thread.
struct Frame {
    /// The `Hook::id` it was made for.
    id: u64,
    /// Borrows the hook's program: used only by a hit running that hook (so while the program
    /// lives, see `Block::run_one`), left unused once the program is gone (ids are not reused).
    frame: JitFrame<'static, Uprobe>,
}

// SAFETY: other threads only read `state` (an atomic); every other field is used by the thread
// that owns the block (the one whose `BLOCK` points at it) and by no other until that thread has
// exited and the block was taken from `FREE`, which the `FREE` lock orders.
unsafe impl Sync for Block {}

static BLOCKS: Mutex<Vec<&'static Block>> = Mutex::new(Vec::new());
static FREE: Mutex<Vec<&'static Block>> = Mutex::new(Vec::new());

/// `BLOCK` while the block is being set up (which may allocate, and so hit a probe on the
/// allocator).
const SETTING_UP: *const Block = std::ptr::dangling();

/// Gives the thread's block back to `FREE` when the thread exits.
struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        set_fast_block(std::ptr::null());
        let b = BLOCK.with(|c| c.replace(SETTING_UP));
        if b.is_null() || b == SETTING_UP {
            return;
        }
        // SAFETY: a non-sentinel `BLOCK` is a leaked `&'static Block` (see `block`).
        let b = unsafe { &*b };
        // Returns that never happened (the thread left through them) hold nothing any more.
        let s = b.state.load(Ordering::Relaxed);
        b.state.store((s & !BUSY) + EPOCH, Ordering::Release);
        b.depth.set(0);
        b.in_hit.set(false);
        b.slot.set(usize::MAX);
        b.cpu.set(std::ptr::null());
        FREE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(b);
    }
}

thread_local! {
    /// This thread's block: null before the first hit (and after the thread's exit began).
    static BLOCK: Cell<*const Block> = const { Cell::new(std::ptr::null()) };
    static OWNER: Owner = const { Owner };
}

/// This thread's block, set up on its first use; `None` while being set up or once the thread
/// is exiting.
#[inline]
fn block() -> Option<&'static Block> {
    let b = BLOCK.with(Cell::get);
    if b.is_null() {
        return block_slow();
    }
    // SAFETY: `BLOCK` is null, the sentinel, or a leaked `&'static Block` this thread owns.
    (b != SETTING_UP).then(|| unsafe { &*b })
}

#[cold]
fn block_slow() -> Option<&'static Block> {
    BLOCK.with(|c| c.set(SETTING_UP));
    // Registers `Owner`'s destructor; fails once the thread's destructors are running.
    OWNER.try_with(|_| ()).ok()?;
    let reused = FREE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
    let b = reused.unwrap_or_else(|| {
        let b: &'static Block = Box::leak(Box::new(Block {
            state: AtomicU64::new(0),
            in_hit: Cell::new(false),
            slot: Cell::new(usize::MAX),
            cpu: Cell::new(std::ptr::null()),
            slot_word: Cell::new(0),
            depth: Cell::new(0),
            runner: UnsafeCell::new(JitRunner::new()),
            frames: UnsafeCell::new([const { None }; FRAMES]),
            fast: UnsafeCell::new([NO_FAST; FRAMES]),
            trace: UnsafeCell::new(MaybeUninit::uninit()),
            pending: UnsafeCell::new([NO_PENDING; MAX_DEPTH]),
        }));
        BLOCKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(b);
        b
    });
    b.cpu.set(rseq_cpu_id());
    BLOCK.with(|c| c.set(b));
    set_fast_block(b);
    Some(b)
}

/// Makes `b` (or null) this thread's block for the stubs' fast path (`dp_uprobe_block`).
fn set_fast_block(b: *const Block) {
    // SAFETY: writes this thread's own `dp_uprobe_block` (an 8-byte TLS variable defined with
    // the stubs), through its initial-exec TLS offset; nothing else is touched.
    unsafe {
        std::arch::asm!(
            "mov {t}, qword ptr [rip + dp_uprobe_block@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {b}",
            t = out(reg) _,
            b = in(reg) b,
            options(nostack, preserves_flags),
        );
    }
}

/// The address of this thread's `struct rseq` `cpu_id` (glibc registers one per thread and
/// exports where: `__rseq_offset` from the thread pointer, `__rseq_size` non-zero when
/// registered), or null.
fn rseq_cpu_id() -> *const u32 {
    static OFFSET: OnceLock<Option<isize>> = OnceLock::new();
    let off = *OFFSET.get_or_init(|| {
        let sym = |name: &std::ffi::CStr| {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the name up.
            unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
        };
        let (offset, size) = (sym(c"__rseq_offset"), sym(c"__rseq_size"));
        if offset.is_null() || size.is_null() {
            return None;
        }
        // SAFETY: glibc's `ptrdiff_t __rseq_offset` and `unsigned int __rseq_size`, constant
        // after start-up.
        let (offset, size) = unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) };
        (size >= 8).then_some(offset)
    });
    let Some(off) = off else { return std::ptr::null() };
    let tp: usize;
    // SAFETY: on x86-64 Linux the thread pointer's first word holds its own address (the TCB's
    // `self`); reading it touches nothing else.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    // `struct rseq { u32 cpu_id_start; u32 cpu_id; ... }`: the thread's own, alive as long as it.
    tp.wrapping_add_signed(off).wrapping_add(4) as *const u32
}

/// Sets the per-CPU map slot that programs run from this thread use (a worker's slot);
/// without it, the CPU the hit runs on.
pub(super) fn set_slot(slot: usize) {
    if let Some(b) = block() {
        b.slot.set(slot);
        match u32::try_from(slot) {
            Ok(w) if w <= i32::MAX as u32 => {
                b.slot_word.set(w);
                b.cpu.set(b.slot_word.as_ptr());
            }
            _ => b.cpu.set(std::ptr::null()),
        }
    }
}

impl Block {
    /// Marks the thread busy; the caller then loads a probe's programs.
    #[inline]
    fn enter(&self) -> u64 {
        let s = self.state.load(Ordering::Relaxed) + 1;
        self.state.store(s, Ordering::Relaxed);
        // Paired with the membarrier in `publish`: the busy count is visible to it before the
        // load of the programs that follows (on every path to it).
        compiler_fence(Ordering::SeqCst);
        s
    }

    /// Ends `n` busy counts (`s` is the state now); the epoch moves on when none is left.
    #[inline]
    fn leave(&self, s: u64, n: u64) {
        let mut s = s - n;
        if s & BUSY == 0 {
            s += EPOCH;
        }
        self.state.store(s, Ordering::Release);
    }

    /// Runs `progs` on one hit: one program (the usual case) straight, several in a loop kept
    /// out of the way.
    #[inline(always)]
    fn run(&self, hooks: &Hooks, regs: &PtRegs, func_ip: u64) {
        match hooks {
            Hooks::None => {}
            Hooks::One(h) => self.run_one(h, regs, func_ip),
            Hooks::Many(v) => self.run_all(v, regs, func_ip),
        }
    }

    /// Runs one program, in its run environment kept by this thread.
    #[inline(always)]
    fn run_one(&self, h: &Hook, regs: &PtRegs, func_ip: u64) {
        let slot = match self.slot.get() {
            usize::MAX => xdp_vm::sys::current_cpu(),
            s => s,
        };
        // SAFETY: the runner and the frames belong to this thread's block, and no other run
        // uses them now: a hit does not nest in another (`in_hit`).
        let (runner, frames) = unsafe { (&mut *self.runner.get(), &mut *self.frames.get()) };
        let i = (h.id % FRAMES as u64) as usize;
        let f = &mut frames[i];
        let fresh = f.as_ref().is_none_or(|f| f.id != h.id);
        if fresh {
            new_frame(f, h);
        }
        let Some(f) = f.as_mut() else { return };
        let mut st = TraceState::new(regs, func_ip);
        if fresh {
            // From now on the stubs run this hook's program on this thread themselves.
            let raw = f.frame.raw(runner, &mut st);
            // SAFETY: this thread's own fast frames, not borrowed elsewhere (`in_hit`).
            unsafe {
                (*self.fast.get())[i] = FastFrame { id: h.id, entry: raw.entry, env: raw.env, _pad: 0 }
            };
        }
        // A faulting program stops; the traced code goes on, as with the kernel's.
        let _ = f.frame.run(runner, &mut st, slot);
    }

    #[inline(never)]
    fn run_all(&self, progs: &[Hook], regs: &PtRegs, func_ip: u64) {
        for h in progs {
            self.run_one(h, regs, func_ip);
        }
    }

    /// Takes the return address of the function a hit entered onto the shadow stack, for its
    /// return programs (`attached`); `false` when the shadow stack is full.
    #[inline(never)]
    fn push_return(&self, regs: &PtRegs, probe: &Probe, attached: *const Attached) -> bool {
        let depth = self.depth.get();
        if depth >= MAX_DEPTH {
            return false;
        }
        // SAFETY: at a function's entry `sp` points at its return address, on this thread's
        // stack; the trampoline's return path replaces it with its own `call`.
        let ret = unsafe { (regs.sp as usize as *const u64).read() };
        let p = Pending { ret, sp_after: regs.sp + 8, probe, attached };
        // SAFETY: this thread's own shadow stack, not borrowed elsewhere (`in_hit`).
        unsafe { (*self.pending.get())[depth] = p };
        self.depth.set(depth + 1);
        true
    }
}

/// Makes `slot` the run environment of `h`'s program.
#[cold]
#[inline(never)]
fn new_frame(slot: &mut Option<Frame>, h: &Hook) {
    // SAFETY: the frame borrows the program for longer than `h` guarantees, but it is only run
    // by a hit running the hook of the same id (`Block::run_one`), whose `Attached` — holding the
    // program — the hit keeps alive (module invariant); ids are never reused, so once that
    // program is gone the frame is never run again (only overwritten, which reads nothing
    // through its borrows).
    let jit: &'static JitProgram<Uprobe> = unsafe { &*Arc::as_ptr(&h.jit) };
    *slot = Some(Frame { id: h.id, frame: jit.frame() });
}

/// A run of the stubs' fast path faulted: clears the fault from the frame of hook `id` (the
/// program stops, as with the kernel's; the traced code goes on).
extern "C" fn on_fast_fault(b: *const Block, id: u64) {
    // SAFETY: the stub passes this thread's block (`dp_uprobe_block`), which is in a hit
    // (`in_hit`), so its frames are this call's alone.
    let frames = unsafe { &mut *(*b).frames.get() };
    if let Some(f) = frames[(id % FRAMES as u64) as usize].as_mut().filter(|f| f.id == id) {
        let _ = f.frame.take_fault();
    }
}

/// A hit: runs the entry programs; for a function with uretprobes, takes its return address
/// onto the shadow stack and returns 1 (the trampoline then calls the function and comes back
/// through the return stub), else 0.
extern "C" fn on_entry(regs: *mut PtRegs, probe: *const Probe) -> u64 {
    // SAFETY: the entry stub passes its own frame's `pt_regs`, live and unaliased for this
    // call, and the probe pointer its trampoline holds, a leaked `&'static Probe`.
    let (regs, probe) = unsafe { (&mut *regs, &*probe) };
    let Some(b) = block() else { return 0 };
    if b.in_hit.replace(true) {
        // A probe hit by a program or a helper (or a signal handler) during a hit: not run, as
        // the kernel skips a BPF program that would recurse.
        return 0;
    }
    compiler_fence(Ordering::SeqCst);
    let s = b.enter();
    let ptr = probe.attached.load(Ordering::Acquire);
    // SAFETY: a non-null `attached` is a live `Arc<Attached>` while this thread is busy
    // (module invariant: `publish` frees it only after the busy count fell to zero).
    let taken = match unsafe { ptr.as_ref() } {
        None => false,
        Some(att) => {
            regs.ip = probe.func_ip;
            b.run(&att.entry, regs, probe.func_ip);
            // Only functions have return programs (`attach` refuses them on a site). The
            // pending return keeps the thread busy in place of the hit.
            !matches!(att.ret, Hooks::None) && b.push_return(regs, probe, ptr)
        }
    };
    if !taken {
        b.leave(s, 1);
    }
    compiler_fence(Ordering::SeqCst);
    b.in_hit.set(false);
    u64::from(taken)
}

/// A uretprobed function returned: runs its return programs; returns the real return address.
extern "C" fn on_return(regs: *mut PtRegs) -> u64 {
    // SAFETY: the return stub passes its own frame's `pt_regs`.
    let regs = unsafe { &mut *regs };
    let Some(b) = block().filter(|b| b.depth.get() > 0) else {
        // No return address to go back to: the only safe thing left is to stop.
        eprintln!("dataplane: uretprobe return without a pending call; aborting");
        std::process::abort();
    };
    let nested = b.in_hit.replace(true);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: this thread's own shadow stack (`in_hit` keeps a signal handler's hit off it).
    let pending = unsafe { &*b.pending.get() };
    let mut depth = b.depth.get();
    let mut found = None;
    // Frames a longjmp skipped never returned: drop them on the way.
    while depth > 0 {
        depth -= 1;
        if pending[depth].sp_after == regs.sp {
            found = Some(pending[depth]);
            break;
        }
    }
    let Some(p) = found else {
        eprintln!("dataplane: uretprobe return at an unknown stack pointer; aborting");
        std::process::abort();
    };
    let dropped = (b.depth.get() - depth) as u64;
    b.depth.set(depth);
    if !nested {
        // SAFETY: the pending return kept the thread busy since its entry, so `publish` has
        // not freed the programs; the probe is leaked.
        let (att, probe) = unsafe { (&*p.attached, &*p.probe) };
        regs.ip = p.ret;
        b.run(&att.ret, regs, probe.func_ip);
    }
    b.leave(b.state.load(Ordering::Relaxed), dropped);
    compiler_fence(Ordering::SeqCst);
    b.in_hit.set(nested);
    p.ret
}

/// Programs replaced while some thread was busy (in a hit, or with a pending return) and may
/// still use them: freed once each such thread has been idle since (its epoch moved on).
struct Retired {
    ptr: usize,
    waiting: Vec<(&'static Block, u64)>,
}

static RETIRED: Mutex<Vec<Retired>> = Mutex::new(Vec::new());

/// Makes `new` (or nothing) the probe's programs. No hit that starts after this returns runs
/// the previous ones; they are freed as soon as no thread can still be running them (at once,
/// or at a later call, without waiting for slow threads).
pub(super) fn publish(probe: &Probe, new: Option<Arc<Attached>>) -> io::Result<()> {
    let raw = new.map_or(std::ptr::null_mut(), |a| Arc::into_raw(a).cast_mut());
    let old = probe.attached.swap(raw, Ordering::SeqCst);
    let mut retired = RETIRED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !old.is_null() {
        // After this every thread's busy count from a hit that loaded `old` is visible here.
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)?;
        let waiting: Vec<(&'static Block, u64)> = BLOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|b| (*b, b.state.load(Ordering::Acquire)))
            .filter(|(_, s)| s & BUSY != 0)
            .collect();
        retired.push(Retired { ptr: old as usize, waiting });
    }
    retired.retain_mut(|r| {
        r.waiting.retain(|(b, s)| (b.state.load(Ordering::Acquire) & !BUSY) == (s & !BUSY));
        if r.waiting.is_empty() {
            // SAFETY: `ptr` came from `Arc::into_raw` (module invariant) and no hit can still
            // see it: every thread that could have loaded it has been idle since (its epoch
            // moved on), later hits load the newer pointer.
            drop(unsafe { Arc::from_raw(r.ptr as *const Attached) });
            false
        } else {
            true
        }
    });
    Ok(())
}

// ---- membarrier

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

fn membarrier(cmd: libc::c_int) -> io::Result<()> {
    static REGISTERED: OnceLock<Result<(), i32>> = OnceLock::new();
    let reg = REGISTERED.get_or_init(|| {
        for c in
            [MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE]
        {
            // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches no memory.
            if unsafe { libc::syscall(libc::SYS_membarrier, c, 0, 0) } != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    if let Err(e) = reg {
        return Err(io::Error::from_raw_os_error(*e));
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---- Our own image

/// The run-time address of the executable's entry point (`AT_ENTRY`).
pub(super) fn runtime_entry() -> u64 {
    // SAFETY: getauxval reads the auxiliary vector the kernel gave the process; no arguments
    // are pointers.
    unsafe { libc::getauxval(libc::AT_ENTRY) }
}

/// The `len` bytes of code at `addr` as they are now in memory.
///
/// Only called on addresses inside the executable's text (symbols and notes of
/// `/proc/self/exe` moved by the load bias), which is mapped for the life of the process.
pub(super) fn code_bytes(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: see above; text is readable, and it only changes under `patch_*`, which hold
    // the control lock the callers hold too.
    unsafe { std::slice::from_raw_parts(addr as usize as *const u8, len) }.to_vec()
}

// ---- Trampoline memory

const PAGE: u64 = 4096;

/// Maps one page within ±1 GiB of `near`, writes `code` into it (placed at the returned
/// address, which the caller chose `code` for, see `build`), and makes it read-execute. The page
/// is never unmapped.
pub(super) fn alloc_trampoline(
    near: u64,
    build: impl Fn(u64) -> Result<Vec<u8>, String>,
) -> Result<u64, String> {
    const RANGE: u64 = 1 << 30;
    let base = near & !(PAGE - 1);
    for i in 1..(RANGE / (16 * PAGE)) {
        for addr in [base.wrapping_sub(i * 16 * PAGE), base.wrapping_add(i * 16 * PAGE)] {
            // SAFETY: an anonymous private mapping at a hint, refused (not replaced) where
            // anything is mapped already.
            let p = unsafe {
                libc::mmap(
                    addr as usize as *mut libc::c_void,
                    PAGE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                continue;
            }
            if p as u64 != addr {
                // Old kernels treat the flag as a hint; not near enough is no use.
                // SAFETY: unmapping the page just mapped, which nothing else refers to.
                unsafe { libc::munmap(p, PAGE as usize) };
                continue;
            }
            let code = match build(addr) {
                Ok(c) if c.len() as u64 <= PAGE => c,
                Ok(_) => {
                    // SAFETY: as above.
                    unsafe { libc::munmap(p, PAGE as usize) };
                    return Err("trampoline longer than a page".into());
                }
                Err(e) => {
                    // SAFETY: as above.
                    unsafe { libc::munmap(p, PAGE as usize) };
                    return Err(e);
                }
            };
            // SAFETY: the page is ours, writable, and `code` fits in it; it becomes read-execute
            // before its address is handed out, never writable and executable at once.
            unsafe {
                std::ptr::copy_nonoverlapping(code.as_ptr(), p.cast::<u8>(), code.len());
                if libc::mprotect(p, PAGE as usize, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                    return Err(format!("mprotect: {}", io::Error::last_os_error()));
                }
            }
            return Ok(addr);
        }
    }
    Err("no free page within 1 GiB of the target for a trampoline".into())
}

// ---- Writing code

/// Writes `bytes` at `addr` in our text: the pages become writable for the copy (keeping
/// execute, since other threads may be running code on them) and read-execute again.
///
/// # Safety
/// No thread executes `addr..addr + bytes.len()` during the write, or the write is one aligned
/// 8-byte store of whole instructions (`atomic`).
unsafe fn write_code(addr: u64, bytes: &[u8], atomic: bool) -> io::Result<()> {
    let start = addr & !(PAGE - 1);
    let end = (addr + bytes.len() as u64).next_multiple_of(PAGE);
    let len = (end - start) as usize;
    let p = start as usize as *mut libc::c_void;
    // SAFETY: the range is part of our executable's text mapping (callers pass probe
    // addresses); adding write permission to a private mapping copies the pages on write.
    if unsafe { libc::mprotect(p, len, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if atomic {
        debug_assert!(addr.is_multiple_of(8) && bytes.len() == 8);
        let word = u64::from_le_bytes(bytes.try_into().unwrap_or([0x90; 8]));
        // SAFETY: `addr` is 8-byte aligned and now writable (above); other threads execute
        // either the old or the new instruction, as the caller guarantees.
        unsafe { AtomicU64::from_ptr(addr as usize as *mut u64).store(word, Ordering::SeqCst) };
    } else {
        // SAFETY: writable (above), and no thread executes it (caller).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as usize as *mut u8, bytes.len()) };
    }
    // SAFETY: as above, back to what the text mapping was.
    if unsafe { libc::mprotect(p, len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)
}

/// Flips a toggle: a probe site in our text, or a function trampoline's entry. `word` is the
/// whole aligned 8-byte word holding the 5-byte instruction (a NOP, or a `call`/`jmp`) and the
/// 3 bytes after it, unchanged.
pub(super) fn toggle(addr: u64, word: [u8; 8]) -> io::Result<()> {
    if !addr.is_multiple_of(8) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "probe site is not 8-byte aligned"));
    }
    // SAFETY: one aligned 8-byte store replacing the 5-byte instruction at `addr` (an aligned
    // word never crosses a cache line) and rewriting the 3 bytes after it with what they hold;
    // nothing branches into the replaced instruction's other bytes: a site's asm is that one
    // instruction, a trampoline's toggle is only entered at its first byte.
    unsafe { write_code(addr, &word, true) }
}

// ---- Stopping the world

static STOP_GEN: AtomicU64 = AtomicU64::new(0);
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
const MAX_THREADS: usize = 4096;
static STOPPED: [(AtomicU64, AtomicU64); MAX_THREADS] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_THREADS];

fn stop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn on_stop(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let round = STOP_GEN.load(Ordering::Acquire);
    if round.is_multiple_of(2) {
        // A late signal of a round that is over.
        return;
    }
    // SAFETY: the kernel passes a valid `ucontext_t` to an `SA_SIGINFO` handler.
    let rip = unsafe { (*uc.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] } as u64;
    let tid = u64::from(xdp_vm::sys::gettid());
    let i = ARRIVED.fetch_add(1, Ordering::AcqRel);
    if let Some((t, r)) = STOPPED.get(i) {
        r.store(rip, Ordering::Relaxed);
        t.store(tid, Ordering::Release);
    }
    let started = Instant::now();
    // Parked: sleep (nanosleep is async-signal-safe), so the patching thread and the threads
    // still to stop get the CPUs.
    while STOP_GEN.load(Ordering::Acquire) == round {
        std::thread::sleep(Duration::from_micros(20));
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
}

fn install_stop_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: plain data, zero is a valid empty value.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction =
            on_stop as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `act` is initialised; the handler only uses atomics and reads its ucontext.
        let rc = unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(stop_signal(), &act, std::ptr::null_mut())
        };
        if rc != 0 { Err(io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(()) }
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// Why a function could not be patched now.
#[derive(Debug)]
pub(super) enum StopError {
    /// A thread kept executing inside the bytes to replace.
    Busy,
    /// Threads did not stop (they block the signal, or are stuck).
    NoStop {
        stopped: usize,
        expected: usize,
    },
    Io(io::Error),
}

/// Writes `bytes` at `addr` (the first instructions of a function) with every other thread of
/// the process stopped at an address outside `addr + 1 .. addr + bytes.len()`.
pub(super) fn patch_function(addr: u64, bytes: &[u8]) -> Result<(), StopError> {
    install_stop_handler().map_err(StopError::Io)?;
    let me = xdp_vm::sys::gettid();
    let pid = std::process::id() as libc::pid_t;
    let inside = |rip: u64| rip > addr && rip < addr + bytes.len() as u64;
    for _attempt in 0..200 {
        let tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .map_err(StopError::Io)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&t| t != me)
            .collect();
        let mut seen = vec![false; tids.len()];
        // Nothing below allocates until the threads are released: a stopped thread may hold
        // the allocator's lock.
        ARRIVED.store(0, Ordering::Release);
        STOP_GEN.fetch_add(1, Ordering::AcqRel);
        let mut expected = 0usize;
        for (i, &t) in tids.iter().enumerate() {
            // SAFETY: tgkill sends a signal to one of our own threads; no memory is passed.
            let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, t as libc::pid_t, stop_signal()) };
            if rc == 0 {
                expected += 1;
            } else {
                seen[i] = true; // Gone already.
            }
        }
        let started = Instant::now();
        let mut stopped;
        loop {
            let arrived = ARRIVED.load(Ordering::Acquire).min(MAX_THREADS);
            stopped = 0;
            for (t, _) in &STOPPED[..arrived] {
                let tid = t.load(Ordering::Acquire) as u32;
                if let Some(i) = tids.iter().position(|&x| x == tid) {
                    seen[i] = true;
                }
            }
            for s in &seen {
                stopped += usize::from(*s);
            }
            if stopped == tids.len() || started.elapsed() > Duration::from_secs(2) {
                break;
            }
            // Sleep rather than spin: a thread to stop may be waiting for this CPU.
            std::thread::sleep(Duration::from_micros(10));
        }
        let arrived = ARRIVED.load(Ordering::Acquire).min(MAX_THREADS);
        let busy = STOPPED[..arrived].iter().any(|(_, r)| inside(r.load(Ordering::Relaxed)));
        let result = if stopped < tids.len() {
            Err(StopError::NoStop { stopped, expected })
        } else if busy {
            Err(StopError::Busy)
        } else {
            // SAFETY: every other thread is parked in `on_stop` at an address outside the
            // replaced bytes (checked above) and resumes only after the write and the
            // core-serializing membarrier.
            unsafe { write_code(addr, bytes, false) }.map_err(StopError::Io)
        };
        for (t, _) in &STOPPED[..arrived] {
            t.store(0, Ordering::Relaxed);
        }
        STOP_GEN.fetch_add(1, Ordering::AcqRel);
        match result {
            Err(StopError::Busy) => std::thread::sleep(Duration::from_micros(50)),
            other => return other,
        }
    }
    Err(StopError::Busy)
}

/// Leaks a probe: it lives as long as the process (module invariant).
pub(super) fn leak(probe: Probe) -> &'static Probe {
    Box::leak(Box::new(probe))
}

/// An empty `attached` slot.
pub(super) fn no_programs() -> AtomicPtr<Attached> {
    AtomicPtr::new(std::ptr::null_mut())
}
