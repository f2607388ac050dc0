//! Callbacks in raw bytecode: shapes the C corpus (`dataplane/tests/bpf/callbacks.c` and
//! `unsafe/callback_*.c`, both against the kernel) does not reach.

use super::{ErrorKind, ProgramType, verify};
use crate::insn::*;

const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn::new(code, dst, src, off, imm)
}
const EXIT: Insn = i(0x95, 0, 0, 0, 0);
const LOOP: i32 = 181;

/// `r2 = func at (pc + 1 + rel)` as two slots.
fn func(rel: i32) -> [Insn; 2] {
    [i(0x18, 2, BPF_PSEUDO_FUNC, 0, rel), i(0, 0, 0, 0, 0)]
}

fn prog(parts: &[&[Insn]]) -> Vec<Insn> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// `while (1) bpf_loop(1, cb, NULL, 0);` never ends: the loop around the call is an infinite
/// loop even though the walk also goes back to the call after each callback run.
#[test]
fn a_loop_around_bpf_loop_that_never_ends_is_refused() {
    // 0: r1 = 1; 1: r2 = func (the callback at 7); 3: r3 = 0; 4: r4 = 0; 5: call bpf_loop;
    // 6: goto 0; 7: r0 = 0; 8: exit.
    let p = prog(&[
        &[i(0xb7, 1, 0, 0, 1)],
        &func(5),
        &[i(0xb7, 3, 0, 0, 0), i(0xb7, 4, 0, 0, 0), i(0x85, 0, 0, 0, LOOP), i(0x05, 0, 0, -7, 0)],
        &[i(0xb7, 0, 0, 0, 0), EXIT],
    ]);
    let err = verify(&p, &[], ProgramType::Xdp).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InfiniteLoop, "{err}");
}

/// A callback that counts in its context without a bound converges (the count is widened to
/// unknown after two walks); one that indexes the caller's 8-byte buffer with that count is
/// refused unless it checks the count first.
#[test]
fn a_counter_in_the_context_converges_and_stays_checked() {
    // Caller: *(u64 *)(fp-8) = 0; bpf_loop(100, cb, fp-16, 0); r0 = 0; exit.
    let caller = |cb: &[Insn]| {
        let mut p = vec![
            i(0x7a, 10, 0, -8, 0),
            i(0x7a, 10, 0, -16, 0),
            i(0xb7, 1, 0, 0, 100),
            i(0x18, 2, BPF_PSEUDO_FUNC, 0, 0),
            i(0, 0, 0, 0, 0),
            i(0xbf, 3, 10, 0, 0),
            i(0x07, 3, 0, 0, -16),
            i(0xb7, 4, 0, 0, 0),
            i(0x85, 0, 0, 0, LOOP),
            i(0xb7, 0, 0, 0, 2),
            EXIT,
        ];
        p[3].imm = (p.len() - 4) as i32;
        p.extend_from_slice(cb);
        p
    };
    // cb(i, ctx): ctx->count (at ctx+8) += 1; return 0.
    let count = [i(0x79, 1, 2, 8, 0), i(0x07, 1, 0, 0, 1), i(0x7b, 2, 1, 8, 0), i(0xb7, 0, 0, 0, 0), EXIT];
    let v = verify(&caller(&count), &[], ProgramType::Xdp).expect("a counter converges");
    assert!(v.processed_insns < 200, "{} instructions processed", v.processed_insns);
    // cb: n = ctx->count; ctx->buf[n] = 1 (buf: ctx+0..8); ctx->count = n + 1; return 0.
    let unchecked = [
        i(0x79, 1, 2, 8, 0),
        i(0xbf, 3, 2, 0, 0),
        i(0x0f, 3, 1, 0, 0),
        i(0x72, 3, 0, 0, 1),
        i(0x07, 1, 0, 0, 1),
        i(0x7b, 2, 1, 8, 0),
        i(0xb7, 0, 0, 0, 0),
        EXIT,
    ];
    assert!(verify(&caller(&unchecked), &[], ProgramType::Xdp).is_err(), "index past the buffer");
    // The same with `if (n > 7) return 1;` first.
    let checked = [
        i(0x79, 1, 2, 8, 0),
        i(0xb7, 0, 0, 0, 1),
        i(0x25, 1, 0, 6, 7),
        i(0xbf, 3, 2, 0, 0),
        i(0x0f, 3, 1, 0, 0),
        i(0x72, 3, 0, 0, 1),
        i(0x07, 1, 0, 0, 1),
        i(0x7b, 2, 1, 8, 0),
        i(0xb7, 0, 0, 0, 0),
        EXIT,
    ];
    verify(&caller(&checked), &[], ProgramType::Xdp).expect("a checked index");
}

/// The callback must be a function reference; a call nested eight frames deep is refused; a
/// callback's stack pointer must not stay behind in its caller's frame.
#[test]
fn callback_arguments_and_frames_are_checked() {
    // bpf_loop(1, r2 = 0, NULL, 0).
    let scalar = [
        i(0xb7, 1, 0, 0, 1),
        i(0xb7, 2, 0, 0, 0),
        i(0xb7, 3, 0, 0, 0),
        i(0xb7, 4, 0, 0, 0),
        i(0x85, 0, 0, 0, LOOP),
        i(0xb7, 0, 0, 0, 2),
        EXIT,
    ];
    let err = verify(&scalar, &[], ProgramType::Xdp).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::HelperArg { arg: 2, .. }), "{err}");
    // cb(i, ctx): *(u64 *)ctx = fp (its own stack, left in the caller's frame).
    let mut leak = vec![
        i(0x7a, 10, 0, -8, 0),
        i(0xb7, 1, 0, 0, 1),
        i(0x18, 2, BPF_PSEUDO_FUNC, 0, 0),
        i(0, 0, 0, 0, 0),
        i(0xbf, 3, 10, 0, 0),
        i(0x07, 3, 0, 0, -8),
        i(0xb7, 4, 0, 0, 0),
        i(0x85, 0, 0, 0, LOOP),
        i(0xb7, 0, 0, 0, 2),
        EXIT,
    ];
    leak[2].imm = (leak.len() - 3) as i32;
    leak.extend_from_slice(&[i(0xbf, 1, 10, 0, 0), i(0x7b, 2, 1, 0, 0), i(0xb7, 0, 0, 0, 0), EXIT]);
    let err = verify(&leak, &[], ProgramType::Xdp).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::StackSpill { .. }), "{err}");
    // A callback that calls bpf_loop with itself: recursion.
    let mut rec = vec![
        i(0xb7, 1, 0, 0, 1),
        i(0x18, 2, BPF_PSEUDO_FUNC, 0, 0),
        i(0, 0, 0, 0, 0),
        i(0xb7, 3, 0, 0, 0),
        i(0xb7, 4, 0, 0, 0),
        i(0x85, 0, 0, 0, LOOP),
        i(0xb7, 0, 0, 0, 2),
        EXIT,
    ];
    rec[1].imm = (rec.len() - 2) as i32;
    let cb = rec.len() as i32;
    rec.extend_from_slice(&[i(0xb7, 1, 0, 0, 1), i(0x18, 2, BPF_PSEUDO_FUNC, 0, 0), i(0, 0, 0, 0, 0)]);
    let at = rec.len() as i32 - 2;
    rec[at as usize].imm = cb - at - 1;
    rec.extend_from_slice(&[
        i(0xb7, 3, 0, 0, 0),
        i(0xb7, 4, 0, 0, 0),
        i(0x85, 0, 0, 0, LOOP),
        i(0xb7, 0, 0, 0, 0),
        EXIT,
    ]);
    let err = verify(&rec, &[], ProgramType::Xdp).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Recursion, "{err}");
}
