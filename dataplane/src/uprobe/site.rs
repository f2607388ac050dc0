//! Probe sites compiled into the dataplane: the places a tracer wants, each a 5-byte NOP that
//! costs next to nothing until a program attaches, and a USDT note so `bpftrace` and libbpf can
//! attach kernel-side too (`bpftrace -e 'usdt:/path/to/dataplane:dataplane:rx { ... }'`).
//!
//! Every site takes four `u64` arguments in `rdi`, `rsi`, `rdx`, `rcx`: what `PT_REGS_PARM1..4`
//! read, and what the note's argument spec (`8@%rdi 8@%rsi 8@%rdx 8@%rcx`) tells `bpftrace`
//! (`arg0..arg3`). The NOP is 8-byte aligned, so enabling it is one aligned 8-byte store of a
//! `call` to the site's trampoline; the trampoline preserves every general-purpose register. The
//! xmm registers and the flags are declared clobbered: saving sixteen xmm registers would be a
//! third of a hit's cost, while the compiler keeps next to nothing in them across a site in
//! integer packet code (and spills only what it does, so a disabled site still costs nothing
//! but its NOP). The upper halves of ymm/zmm and the AVX-512 registers are not touched by the
//! handler's own code (baseline x86-64) and hold nothing live in the dataplane's code.
#![expect(unsafe_code, reason = "the probe sites' inline assembly (a NOP and its USDT note)")]

/// The probe sites, by name.
pub const SITES: &[(&str, &str)] = &[
    ("rx", "a packet received: (ifindex, queue, length, worker slot)"),
    ("batch", "a burst received: (ifindex, queue, frames, worker slot)"),
    ("verdict", "a program's verdict: (ifindex, queue, verdict, worker slot)"),
    ("tx", "a burst handed to the TX ring: (ifindex, queue, frames it took, worker slot)"),
    (
        "drop",
        "a packet of the packet path dropped: (ifindex, queue, reason = stats::DROP_* index, worker slot)",
    ),
    (
        "map_update",
        "a map updated from the control path: (map index in the running program, key address, key length, value address)",
    ),
];

macro_rules! site {
    ($(#[$doc:meta])* $fun:ident, $name:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $fun(a0: u64, a1: u64, a2: u64, a3: u64) {
            // SAFETY: disabled, the block is a NOP. Enabled, it calls a trampoline that saves
            // and restores every register the asm does not declare clobbered (flags), using
            // the stack below the stack pointer, which `asm!` without `nostack` allows. The
            // note sections are data the process never reads through this code.
            unsafe {
                core::arch::asm!(
                    ".balign 8",
                    "990: .byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
                    ".pushsection .note.stapsdt, \"\", \"note\"",
                    ".balign 4",
                    ".4byte 992f-991f, 994f-993f, 3",
                    "991: .asciz \"stapsdt\"",
                    "992: .balign 4",
                    "993: .8byte 990b",
                    ".8byte _.stapsdt.base",
                    ".8byte 0",
                    ".asciz \"dataplane\"",
                    concat!(".asciz \"", $name, "\""),
                    ".asciz \"8@%rdi 8@%rsi 8@%rdx 8@%rcx\"",
                    "994: .balign 4",
                    ".popsection",
                    ".ifndef _.stapsdt.base",
                    ".pushsection .stapsdt.base, \"aG\", \"progbits\", .stapsdt.base, comdat",
                    ".weak _.stapsdt.base",
                    ".hidden _.stapsdt.base",
                    "_.stapsdt.base: .space 1",
                    ".size _.stapsdt.base, 1",
                    ".popsection",
                    ".endif",
                    in("rdi") a0,
                    in("rsi") a1,
                    in("rdx") a2,
                    in("rcx") a3,
                    out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                    out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                    out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                    out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                );
            }
        }
    };
}

site!(
    /// A packet received (the userspace `netif_receive_skb`).
    rx, "rx"
);
site!(
    /// A burst of packets received from one queue.
    batch, "batch"
);
site!(
    /// The program's verdict on one packet.
    verdict, "verdict"
);
site!(
    /// A burst handed to the TX ring.
    tx, "tx"
);
site!(
    /// A packet dropped; `reason` is a `stats::DROP_*` index.
    drop, "drop"
);
site!(
    /// A map updated from the control path.
    map_update, "map_update"
);
