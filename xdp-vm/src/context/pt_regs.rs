//! Uprobe programs: `struct pt_regs` as the x86-64 kernel lays it out.
//!
//! A uprobe program's `r1` points at the registers of the probed thread, saved by the probe's
//! trampoline in the kernel's `struct pt_regs` layout (21 `u64`s, 168 bytes), so
//! `PT_REGS_PARM1(ctx)` .. `PT_REGS_PARM6(ctx)`, `PT_REGS_RC(ctx)`, `PT_REGS_IP(ctx)` and
//! `PT_REGS_SP(ctx)` from libbpf's `bpf_tracing.h` read what they read in the kernel. The kernel's
//! access rules apply (`kprobe_prog_is_valid_access`): reads only, of 1, 2, 4 or 8 bytes at an
//! offset that is a multiple of the size, inside the structure. The registers are the program's
//! to read, never to write: the kernel refuses context stores for these programs and so do we.

use super::{Context, FieldLoad};

/// `struct pt_regs` (x86-64, `arch/x86/include/asm/ptrace.h`): field names as the kernel spells
/// them, in its order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

/// Byte offsets of [`PtRegs`] fields, as `offsetof(struct pt_regs, ...)`.
pub mod off {
    use super::PtRegs;
    use std::mem::offset_of;
    pub const R15: usize = offset_of!(PtRegs, r15);
    pub const BP: usize = offset_of!(PtRegs, bp);
    pub const BX: usize = offset_of!(PtRegs, bx);
    pub const R9: usize = offset_of!(PtRegs, r9);
    pub const R8: usize = offset_of!(PtRegs, r8);
    pub const AX: usize = offset_of!(PtRegs, ax);
    pub const CX: usize = offset_of!(PtRegs, cx);
    pub const DX: usize = offset_of!(PtRegs, dx);
    pub const SI: usize = offset_of!(PtRegs, si);
    pub const DI: usize = offset_of!(PtRegs, di);
    pub const IP: usize = offset_of!(PtRegs, ip);
    pub const SP: usize = offset_of!(PtRegs, sp);
}

/// `sizeof(struct pt_regs)` on x86-64.
pub const SIZE: usize = std::mem::size_of::<PtRegs>();
const _: () = assert!(SIZE == 168);

/// The field names of `struct pt_regs` in order, for CO-RE relocations and messages.
pub const FIELDS: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];

/// The byte offset of a `struct pt_regs` field by name: the kernel's names (`di`) and the
/// userspace `<asm/ptrace.h>` ones (`rdi`, `eflags`, `orig_rax`) alike.
#[must_use]
pub fn field_offset(name: &str) -> Option<usize> {
    let kernel = match name {
        "rbp" => "bp",
        "rbx" => "bx",
        "rax" => "ax",
        "rcx" => "cx",
        "rdx" => "dx",
        "rsi" => "si",
        "rdi" => "di",
        "orig_rax" => "orig_ax",
        "rip" => "ip",
        "eflags" => "flags",
        "rsp" => "sp",
        other => other,
    };
    FIELDS.iter().position(|f| *f == kernel).map(|i| i * 8)
}

impl PtRegs {
    /// The structure as the program reads it: 168 bytes in memory order.
    #[must_use]
    pub fn as_words(&self) -> [u64; 21] {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.bp,
            self.bx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.ax,
            self.cx,
            self.dx,
            self.si,
            self.di,
            self.orig_ax,
            self.ip,
            self.cs,
            self.flags,
            self.sp,
            self.ss,
        ]
    }
}

/// Uprobe and uretprobe programs (`SEC("uprobe/...")`, `SEC("uretprobe/...")`): `struct pt_regs`
/// over a [`TraceState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Uprobe;

/// One hit of a probe as its programs see it: the saved registers and the probed address.
#[derive(Debug)]
pub struct TraceState<'a> {
    /// The probed thread's registers at the probe (for a uretprobe: at the return).
    pub regs: &'a PtRegs,
    /// What `bpf_get_func_ip` returns: the probed function's (or probe site's) address.
    pub func_ip: u64,
}

impl<'a> TraceState<'a> {
    /// A hit with these registers at `func_ip`.
    #[must_use]
    pub fn new(regs: &'a PtRegs, func_ip: u64) -> Self {
        Self { regs, func_ip }
    }
}

/// Whether a `size`-byte read at `off` is one the kernel allows on `struct pt_regs`.
#[must_use]
pub fn valid_access(off: u64, size: usize) -> bool {
    matches!(size, 1 | 2 | 4 | 8) && off.is_multiple_of(size as u64) && off + size as u64 <= SIZE as u64
}

impl Context for Uprobe {
    type State<'a> = TraceState<'a>;
    const NAME: &'static str = "uprobe";
    const SIZE: u64 = SIZE as u64;

    fn allows_helper(id: u32) -> bool {
        use crate::helpers::id;
        crate::helpers::name(id).is_some()
            && !matches!(
                id,
                id::XDP_ADJUST_HEAD
                    | id::XDP_ADJUST_META
                    | id::XDP_ADJUST_TAIL
                    | id::CSUM_DIFF
                    | id::REDIRECT
                    | id::REDIRECT_MAP
            )
    }

    fn address(state: &TraceState<'_>) -> u64 {
        std::ptr::from_ref(state.regs) as u64
    }

    fn load(state: &TraceState<'_>, off: u64, size: usize) -> Option<u64> {
        if !valid_access(off, size) {
            return None;
        }
        let word = state.regs.as_words()[(off / 8) as usize];
        let shift = (off % 8) * 8;
        let mask = if size == 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
        Some((word >> shift) & mask)
    }

    fn memory(_state: &mut TraceState<'_>) -> (usize, usize) {
        (0, 0)
    }

    fn call(state: &mut TraceState<'_>, id: u32, _args: &[u64; 5]) -> Option<u64> {
        (id == crate::helpers::id::GET_FUNC_IP).then_some(state.func_ip)
    }

    fn field_load(off: u64, size: usize) -> Option<FieldLoad> {
        valid_access(off, size).then_some(FieldLoad::Plain { at: off as usize })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_kernels() {
        assert_eq!(off::DI, 112);
        assert_eq!(off::SI, 104);
        assert_eq!(off::AX, 80);
        assert_eq!(off::IP, 128);
        assert_eq!(off::SP, 152);
        assert_eq!(field_offset("rdi"), Some(112));
        assert_eq!(field_offset("di"), Some(112));
        assert_eq!(field_offset("ss"), Some(160));
        assert_eq!(field_offset("xmm0"), None);
    }

    #[test]
    fn loads_follow_the_kernels_rules() {
        let regs = PtRegs { di: 0x1122_3344_5566_7788, ..PtRegs::default() };
        let st = TraceState::new(&regs, 0);
        assert_eq!(Uprobe::load(&st, 112, 8), Some(0x1122_3344_5566_7788));
        assert_eq!(Uprobe::load(&st, 112, 4), Some(0x5566_7788));
        assert_eq!(Uprobe::load(&st, 116, 4), Some(0x1122_3344));
        assert_eq!(Uprobe::load(&st, 119, 1), Some(0x11));
        assert_eq!(Uprobe::load(&st, 114, 4), None, "misaligned");
        assert_eq!(Uprobe::load(&st, 168, 1), None, "past the end");
        assert_eq!(Uprobe::load(&st, 160, 8), Some(0));
        assert_eq!(Uprobe::load(&st, 0, 3), None);
    }

    use crate::insn::Insn;
    use crate::jit::JitProgram;
    use crate::program::{LoadError, Program};
    use crate::verifier::ErrorKind;

    const EXIT: Insn = Insn::new(0x95, 0, 0, 0, 0);

    /// Runs `insns` (verified) through the interpreter and the JIT; both results.
    fn both(insns: &[Insn], regs: &PtRegs) -> [u64; 2] {
        let prog = Program::<Uprobe>::from_insns_verified("t", insns, &[]).expect("verifies");
        let interp = crate::Interpreter::new().run(&prog, &mut TraceState::new(regs, 0x1234), 0).unwrap();
        let jit = JitProgram::compile(&prog).unwrap().run(&mut TraceState::new(regs, 0x1234), 0).unwrap();
        [interp, jit]
    }

    #[test]
    fn programs_read_arguments_in_both_engines() {
        // return PT_REGS_PARM2(ctx) + PT_REGS_PARM3(ctx): the seed's `return b + c`.
        let insns = [
            Insn::new(0x79, 0, 1, off::SI as i16, 0),
            Insn::new(0x79, 2, 1, off::DX as i16, 0),
            Insn::new(0x0f, 0, 2, 0, 0),
            EXIT,
        ];
        let regs = PtRegs { si: 40, dx: 2, ..PtRegs::default() };
        assert_eq!(both(&insns, &regs), [42, 42]);
        // A narrow read of the low half of ax.
        let insns = [Insn::new(0x61, 0, 1, off::AX as i16, 0), EXIT];
        let regs = PtRegs { ax: 0xffff_ffff_0000_0007, ..PtRegs::default() };
        assert_eq!(both(&insns, &regs), [7, 7]);
        // bpf_get_func_ip(ctx).
        let insns = [Insn::new(0x85, 0, 0, 0, crate::helpers::id::GET_FUNC_IP as i32), EXIT];
        assert_eq!(both(&insns, &regs), [0x1234, 0x1234]);
    }

    #[test]
    fn probe_read_user_reads_memory_and_reports_bad_pointers() {
        // r1 = fp - 8; r2 = 8; r3 = ctx->di; call probe_read_user; r0 = ret == 0 ? *(fp-8) : ret.
        let insns = [
            Insn::new(0x79, 3, 1, off::DI as i16, 0),
            Insn::new(0xbf, 1, 10, 0, 0),
            Insn::new(0x07, 1, 0, 0, -8),
            Insn::new(0xb7, 2, 0, 0, 8),
            Insn::new(0x85, 0, 0, 0, crate::helpers::id::PROBE_READ_USER as i32),
            Insn::new(0x55, 0, 0, 1, 0),
            Insn::new(0x79, 0, 10, -8, 0),
            EXIT,
        ];
        let value = 0x0123_4567_89ab_cdefu64;
        let regs = PtRegs { di: std::ptr::from_ref(&value) as u64, ..PtRegs::default() };
        assert_eq!(both(&insns, &regs), [value, value]);
        let regs = PtRegs { di: 16, ..PtRegs::default() };
        let efault = (-14i64) as u64;
        assert_eq!(both(&insns, &regs), [efault, efault], "a bad pointer is -EFAULT, not a crash");
    }

    #[test]
    fn pid_tgid_is_this_thread() {
        let insns = [Insn::new(0x85, 0, 0, 0, crate::helpers::id::GET_CURRENT_PID_TGID as i32), EXIT];
        let [a, b] = both(&insns, &PtRegs::default());
        assert_eq!(a, b);
        assert_eq!(a >> 32, u64::from(std::process::id()));
        assert_eq!(a as u32, crate::sys::gettid());
    }

    #[test]
    fn the_verifier_applies_the_kernels_pt_regs_rules() {
        let refuse = |insns: &[Insn]| match Program::<Uprobe>::from_insns_verified("t", insns, &[]) {
            Err(LoadError::Verifier { source }) => source.kind,
            other => panic!("expected a verifier error, got {other:?}"),
        };
        // A write to the context.
        let kind = refuse(&[Insn::new(0x7b, 1, 1, 0, 0), Insn::new(0xb7, 0, 0, 0, 0), EXIT]);
        assert!(matches!(kind, ErrorKind::CtxAccess { write: true, .. }), "{kind}");
        // A misaligned read, a read past the end.
        let kind = refuse(&[Insn::new(0x79, 0, 1, 4, 0), EXIT]);
        assert!(matches!(kind, ErrorKind::CtxAccess { off: 4, size: 8, write: false }), "{kind}");
        let kind = refuse(&[Insn::new(0x71, 0, 1, 168, 0), EXIT]);
        assert!(matches!(kind, ErrorKind::CtxAccess { off: 168, .. }), "{kind}");
        // An XDP helper.
        let adjust = Insn::new(0x85, 0, 0, 0, crate::helpers::id::XDP_ADJUST_HEAD as i32);
        assert!(matches!(
            Program::<Uprobe>::from_insns_verified("t", &[Insn::new(0xb7, 2, 0, 0, 0), adjust, EXIT], &[]),
            Err(LoadError::Insn { .. })
        ));
        // And XDP programs may not ask for the function's address.
        let ip = Insn::new(0x85, 0, 0, 0, crate::helpers::id::GET_FUNC_IP as i32);
        assert!(matches!(
            Program::<crate::Xdp>::from_insns_verified("t", &[ip, EXIT], &[]),
            Err(LoadError::Insn { .. })
        ));
    }
}
