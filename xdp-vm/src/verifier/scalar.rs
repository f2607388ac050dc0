//! What is known about a scalar: its known bits and its signed and unsigned ranges, both as a
//! 64-bit value and as its low 32 bits (the kernel's `var_off` and `[su](32_)?(min|max)_value`).
//!
//! Invariant after [`Scalar::sync`]: every range is non-empty and consistent with the others and
//! with the tnum. An operation whose ranges come out empty describes a path that cannot run; the
//! branch code treats that as an infeasible edge.

use super::tnum::Tnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Scalar {
    pub var: Tnum,
    pub umin: u64,
    pub umax: u64,
    pub smin: i64,
    pub smax: i64,
    pub u32min: u32,
    pub u32max: u32,
    pub s32min: i32,
    pub s32max: i32,
}

/// An interval of one width, held wide so that overflow is visible.
#[derive(Debug, Clone, Copy)]
struct Ival {
    lo: i128,
    hi: i128,
}

fn umax_of(w: u32) -> i128 {
    (1i128 << w) - 1
}
fn smin_of(w: u32) -> i128 {
    -(1i128 << (w - 1))
}
fn smax_of(w: u32) -> i128 {
    (1i128 << (w - 1)) - 1
}

/// Wraps an unsigned interval computed without overflow back into `w` bits: exact when both ends
/// wrapped by the same amount, else the full range.
fn wrap_u(i: Ival, w: u32) -> Ival {
    let m = 1i128 << w;
    if i.lo < 0 || i.hi < 0 {
        if i.lo < 0 && i.hi < 0 && i.lo >= -m {
            return Ival { lo: i.lo + m, hi: i.hi + m };
        }
        return Ival { lo: 0, hi: umax_of(w) };
    }
    let (ql, qh) = (i.lo >> w, i.hi >> w);
    if ql == qh { Ival { lo: i.lo - ql * m, hi: i.hi - qh * m } } else { Ival { lo: 0, hi: umax_of(w) } }
}

fn wrap_s(i: Ival, w: u32) -> Ival {
    if i.lo >= smin_of(w) && i.hi <= smax_of(w) { i } else { Ival { lo: smin_of(w), hi: smax_of(w) } }
}

impl Scalar {
    pub fn unknown() -> Self {
        Self {
            var: Tnum::UNKNOWN,
            umin: 0,
            umax: u64::MAX,
            smin: i64::MIN,
            smax: i64::MAX,
            u32min: 0,
            u32max: u32::MAX,
            s32min: i32::MIN,
            s32max: i32::MAX,
        }
    }

    pub fn konst(v: u64) -> Self {
        Self {
            var: Tnum::konst(v),
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
            u32min: v as u32,
            u32max: v as u32,
            s32min: v as u32 as i32,
            s32max: v as u32 as i32,
        }
    }

    /// An unknown value of `bytes` bytes, zero-extended (what a narrow load gives).
    pub fn unknown_bytes(bytes: u32) -> Self {
        if bytes >= 8 {
            return Self::unknown();
        }
        let max = (1u64 << (bytes * 8)) - 1;
        Self::from_urange(0, max)
    }

    pub fn from_urange(min: u64, max: u64) -> Self {
        let mut s = Self::unknown();
        s.umin = min;
        s.umax = max;
        s.var = Tnum::range(min, max);
        s.sync();
        s
    }

    pub fn from_srange(min: i64, max: i64) -> Self {
        let mut s = Self::unknown();
        s.smin = min;
        s.smax = max;
        s.sync();
        s
    }

    pub fn is_const(&self) -> bool {
        self.var.is_const()
    }

    pub fn const_value(&self) -> Option<u64> {
        self.var.is_const().then_some(self.var.value)
    }

    fn u64_ival(&self) -> Ival {
        Ival { lo: i128::from(self.umin), hi: i128::from(self.umax) }
    }
    fn s64_ival(&self) -> Ival {
        Ival { lo: i128::from(self.smin), hi: i128::from(self.smax) }
    }
    fn u32_ival(&self) -> Ival {
        Ival { lo: i128::from(self.u32min), hi: i128::from(self.u32max) }
    }
    fn s32_ival(&self) -> Ival {
        Ival { lo: i128::from(self.s32min), hi: i128::from(self.s32max) }
    }

    fn with_ivals(var: Tnum, u: Ival, s: Ival, u32: Ival, s32: Ival) -> Self {
        let mut r = Self {
            var,
            umin: u.lo as u64,
            umax: u.hi as u64,
            smin: s.lo as i64,
            smax: s.hi as i64,
            u32min: u32.lo as u32,
            u32max: u32.hi as u32,
            s32min: s32.lo as i32,
            s32max: s32.hi as i32,
        };
        r.sync();
        r
    }

    /// Tightens every range from the others; `false` when they contradict (an infeasible path).
    pub fn sync(&mut self) -> bool {
        for _ in 0..3 {
            // Known bits bound the ranges.
            let v = self.var;
            self.umin = self.umin.max(v.value);
            self.umax = self.umax.min(v.max());
            let sub = v.subreg();
            self.u32min = self.u32min.max(sub.value as u32);
            self.u32max = self.u32max.min(sub.max() as u32);
            // Signed from the tnum: the sign bit known or not.
            let sign = 1u64 << 63;
            if v.mask & sign == 0 {
                let lo = v.value as i64;
                let hi = (v.value | v.mask) as i64;
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                self.smin = self.smin.max(lo);
                self.smax = self.smax.min(hi);
            }
            let sign32 = 1u64 << 31;
            if sub.mask & sign32 == 0 {
                let lo = sub.value as u32 as i32;
                let hi = (sub.value | sub.mask) as u32 as i32;
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                self.s32min = self.s32min.max(lo);
                self.s32max = self.s32max.min(hi);
            }
            // 64-bit unsigned <-> signed, when the range does not cross the sign boundary.
            if (self.umin as i64) <= (self.umax as i64) {
                self.smin = self.smin.max(self.umin as i64);
                self.smax = self.smax.min(self.umax as i64);
            }
            if (self.smin as u64) <= (self.smax as u64) {
                self.umin = self.umin.max(self.smin as u64);
                self.umax = self.umax.min(self.smax as u64);
            }
            // 32-bit unsigned <-> signed.
            if (self.u32min as i32) <= (self.u32max as i32) {
                self.s32min = self.s32min.max(self.u32min as i32);
                self.s32max = self.s32max.min(self.u32max as i32);
            }
            if (self.s32min as u32) <= (self.s32max as u32) {
                self.u32min = self.u32min.max(self.s32min as u32);
                self.u32max = self.u32max.min(self.s32max as u32);
            }
            // 64 -> 32: when the upper halves of the bounds agree, the low halves are a range.
            if self.umin >> 32 == self.umax >> 32 && (self.umin as u32) <= (self.umax as u32) {
                self.u32min = self.u32min.max(self.umin as u32);
                self.u32max = self.u32max.min(self.umax as u32);
            }
            if self.smin >> 32 == self.smax >> 32 && (self.smin as i32) <= (self.smax as i32) {
                self.s32min = self.s32min.max(self.smin as i32);
                self.s32max = self.s32max.min(self.smax as i32);
            }
            // 32 -> 64: when the upper 32 bits are fixed.
            if self.umin >> 32 == self.umax >> 32 {
                let hi = self.umin & !0xffff_ffff;
                self.umin = self.umin.max(hi | u64::from(self.u32min));
                self.umax = self.umax.min(hi | u64::from(self.u32max));
            }
            // Ranges bound the tnum.
            if self.umin > self.umax
                || self.smin > self.smax
                || self.u32min > self.u32max
                || self.s32min > self.s32max
            {
                return false;
            }
            let r = Tnum::range(self.umin, self.umax);
            if !self.var.overlaps(r) {
                return false;
            }
            let mut var = self.var.intersect(r);
            let r32 = Tnum::range(u64::from(self.u32min), u64::from(self.u32max));
            if !var.subreg().overlaps(r32) {
                return false;
            }
            var = var.with_subreg(var.subreg().intersect(r32));
            self.var = var;
        }
        self.umin <= self.umax
            && self.smin <= self.smax
            && self.u32min <= self.u32max
            && self.s32min <= self.s32max
    }

    /// The low 32 bits as a 64-bit value (what an ALU32 operation reads).
    pub fn low32(&self) -> Self {
        let mut s = Self {
            var: self.var.subreg(),
            umin: u64::from(self.u32min),
            umax: u64::from(self.u32max),
            smin: i64::from(self.u32min),
            smax: i64::from(self.u32max),
            u32min: self.u32min,
            u32max: self.u32max,
            s32min: self.s32min,
            s32max: self.s32max,
        };
        s.sync();
        s
    }

    /// Truncates to the low `bytes` bytes, zero-extended.
    pub fn truncate(&self, bytes: u32) -> Self {
        if bytes >= 8 {
            return *self;
        }
        if bytes == 4 {
            return self.low32();
        }
        let mask = (1u64 << (bytes * 8)) - 1;
        if let Some(c) = self.const_value() {
            return Self::konst(c & mask);
        }
        if self.umax <= mask {
            return *self;
        }
        let mut s = Self::unknown_bytes(bytes);
        s.var = self.var.and(Tnum::konst(mask));
        s.sync();
        s
    }

    /// Sign-extends the low `bits` bits to 64 bits.
    pub fn sign_extend(&self, bits: u32) -> Self {
        if let Some(c) = self.const_value() {
            let sh = 64 - bits;
            return Self::konst((((c << sh) as i64) >> sh) as u64);
        }
        let half = 1i64 << (bits - 1);
        if self.umax < half as u64 {
            return *self;
        }
        Self::from_srange(-half, half - 1)
    }

    pub fn add(&self, b: &Self) -> Self {
        let f = |x: Ival, y: Ival| Ival { lo: x.lo + y.lo, hi: x.hi + y.hi };
        Self::with_ivals(
            self.var.add(b.var),
            wrap_u(f(self.u64_ival(), b.u64_ival()), 64),
            wrap_s(f(self.s64_ival(), b.s64_ival()), 64),
            wrap_u(f(self.u32_ival(), b.u32_ival()), 32),
            wrap_s(f(self.s32_ival(), b.s32_ival()), 32),
        )
    }

    pub fn sub(&self, b: &Self) -> Self {
        let f = |x: Ival, y: Ival| Ival { lo: x.lo - y.hi, hi: x.hi - y.lo };
        Self::with_ivals(
            self.var.sub(b.var),
            wrap_u(f(self.u64_ival(), b.u64_ival()), 64),
            wrap_s(f(self.s64_ival(), b.s64_ival()), 64),
            wrap_u(f(self.u32_ival(), b.u32_ival()), 32),
            wrap_s(f(self.s32_ival(), b.s32_ival()), 32),
        )
    }

    pub fn mul(&self, b: &Self) -> Self {
        let umul = |x: Ival, y: Ival, w: u32| {
            let hi = x.hi.checked_mul(y.hi).filter(|&h| h <= umax_of(w));
            match hi {
                Some(hi) => Ival { lo: x.lo * y.lo, hi },
                None => Ival { lo: 0, hi: umax_of(w) },
            }
        };
        let smul = |x: Ival, y: Ival, w: u32| {
            let c = [x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi];
            let lo = c.iter().copied().min().unwrap_or(0);
            let hi = c.iter().copied().max().unwrap_or(0);
            wrap_s(Ival { lo, hi }, w)
        };
        Self::with_ivals(
            self.var.mul(b.var),
            umul(self.u64_ival(), b.u64_ival(), 64),
            smul(self.s64_ival(), b.s64_ival(), 64),
            umul(self.u32_ival(), b.u32_ival(), 32),
            smul(self.s32_ival(), b.s32_ival(), 32),
        )
    }

    fn bitwise(&self, b: &Self, var: Tnum, umin64: u64, umax64: u64, umin32: u32, umax32: u32) -> Self {
        let mut r = Self::unknown();
        r.var = var;
        r.umin = umin64;
        r.umax = umax64;
        r.u32min = umin32;
        r.u32max = umax32;
        if self.smin >= 0 && b.smin >= 0 && umax64 <= i64::MAX as u64 {
            r.smin = umin64 as i64;
            r.smax = umax64 as i64;
        }
        if self.s32min >= 0 && b.s32min >= 0 && umax32 <= i32::MAX as u32 {
            r.s32min = umin32 as i32;
            r.s32max = umax32 as i32;
        }
        r.sync();
        r
    }

    pub fn and(&self, b: &Self) -> Self {
        let var = self.var.and(b.var);
        let sub = var.subreg();
        self.bitwise(b, var, var.value, self.umax.min(b.umax), sub.value as u32, self.u32max.min(b.u32max))
    }

    pub fn or(&self, b: &Self) -> Self {
        let var = self.var.or(b.var);
        let sub = var.subreg();
        self.bitwise(b, var, self.umin.max(b.umin), var.max(), self.u32min.max(b.u32min), sub.max() as u32)
    }

    pub fn xor(&self, b: &Self) -> Self {
        let var = self.var.xor(b.var);
        let sub = var.subreg();
        self.bitwise(b, var, var.value, var.max(), sub.value as u32, sub.max() as u32)
    }

    /// Shift left by `b` as a `width`-bit operation (the result's upper 32 bits are junk for
    /// width 32; the caller truncates).
    pub fn lsh(&self, b: &Self, width: u32) -> Self {
        let Some(k) = b.const_value().filter(|&k| k < u64::from(width)) else {
            return Self::unknown();
        };
        let k = k as u32;
        let var = self.var.lsh(k);
        let mut r = Self::unknown();
        r.var = var;
        if self.umax.leading_zeros() >= k {
            r.umin = self.umin << k;
            r.umax = self.umax << k;
        }
        if k < 32 && self.u32max.leading_zeros() >= k {
            r.u32min = self.u32min << k;
            r.u32max = self.u32max << k;
        }
        r.sync();
        r
    }

    pub fn rsh(&self, b: &Self, width: u32) -> Self {
        let Some(k) = b.const_value().filter(|&k| k < u64::from(width)) else {
            if b.umax < u64::from(width) && width == 64 {
                return Self::from_urange(self.umin >> b.umax, self.umax >> b.umin);
            }
            return Self::unknown();
        };
        let k = k as u32;
        let mut r = Self::unknown();
        r.var = self.var.rsh(k);
        r.umin = self.umin >> k;
        r.umax = self.umax >> k;
        if k < 32 {
            r.u32min = self.u32min >> k;
            r.u32max = self.u32max >> k;
        }
        r.sync();
        r
    }

    pub fn arsh(&self, b: &Self, width: u32) -> Self {
        let Some(k) = b.const_value().filter(|&k| k < u64::from(width)) else {
            return Self::unknown();
        };
        let k = k as u32;
        let mut r = Self::unknown();
        if width == 32 {
            r.var = self.var.arsh(k, 32);
            r.s32min = self.s32min >> k;
            r.s32max = self.s32max >> k;
        } else {
            r.var = self.var.arsh(k, 64);
            r.smin = self.smin >> k;
            r.smax = self.smax >> k;
        }
        r.sync();
        r
    }

    /// Unsigned division (`signed` false) or modulo, by the eBPF rules (x/0 = 0, x%0 = x).
    pub fn udivmod(&self, b: &Self, modulo: bool, width: u32) -> Self {
        let (a, b) = if width == 32 { (self.low32(), b.low32()) } else { (*self, *b) };
        if let (Some(x), Some(y)) = (a.const_value(), b.const_value()) {
            return Self::konst(match (modulo, y) {
                (false, 0) => 0,
                (true, 0) => x,
                (false, y) => x / y,
                (true, y) => x % y,
            });
        }
        if let (Some(lo), Some(hi)) = (a.umin.checked_div(b.umax), a.umax.checked_div(b.umin)) {
            if modulo {
                return Self::from_urange(0, a.umax.min(b.umax - 1));
            }
            return Self::from_urange(lo, hi);
        }
        if modulo {
            return Self::from_urange(0, a.umax);
        }
        Self::from_urange(0, a.umax)
    }

    /// Signed division or modulo: constants only, else unknown.
    pub fn sdivmod(&self, b: &Self, modulo: bool, width: u32) -> Self {
        if let (Some(x), Some(y)) = (self.const_value(), b.const_value()) {
            if width == 32 {
                let (x, y) = (x as u32 as i32, y as u32 as i32);
                let r = match (modulo, y) {
                    (false, 0) => 0,
                    (true, 0) => x,
                    (false, y) => x.wrapping_div(y),
                    (true, y) => x.wrapping_rem(y),
                };
                return Self::konst(u64::from(r as u32));
            }
            let (x, y) = (x as i64, y as i64);
            let r = match (modulo, y) {
                (false, 0) => 0,
                (true, 0) => x,
                (false, y) => x.wrapping_div(y),
                (true, y) => x.wrapping_rem(y),
            };
            return Self::konst(r as u64);
        }
        Self::unknown()
    }

    /// Whether every value `b` may hold is one `self` may hold.
    pub fn contains(&self, b: &Self) -> bool {
        self.var.contains(b.var)
            && self.umin <= b.umin
            && self.umax >= b.umax
            && self.smin <= b.smin
            && self.smax >= b.smax
            && self.u32min <= b.u32min
            && self.u32max >= b.u32max
            && self.s32min <= b.s32min
            && self.s32max >= b.s32max
    }
}

/// A conditional jump's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Sgt,
    Sge,
    Slt,
    Sle,
    Set,
    NotSet,
}

impl Cmp {
    pub fn from_op(op: u8) -> Option<Self> {
        use crate::insn::*;
        Some(match op {
            BPF_JEQ => Cmp::Eq,
            BPF_JNE => Cmp::Ne,
            BPF_JGT => Cmp::Gt,
            BPF_JGE => Cmp::Ge,
            BPF_JLT => Cmp::Lt,
            BPF_JLE => Cmp::Le,
            BPF_JSGT => Cmp::Sgt,
            BPF_JSGE => Cmp::Sge,
            BPF_JSLT => Cmp::Slt,
            BPF_JSLE => Cmp::Sle,
            BPF_JSET => Cmp::Set,
            _ => return None,
        })
    }

    /// The comparison that holds on the other edge.
    pub fn negate(self) -> Self {
        match self {
            Cmp::Eq => Cmp::Ne,
            Cmp::Ne => Cmp::Eq,
            Cmp::Gt => Cmp::Le,
            Cmp::Ge => Cmp::Lt,
            Cmp::Lt => Cmp::Ge,
            Cmp::Le => Cmp::Gt,
            Cmp::Sgt => Cmp::Sle,
            Cmp::Sge => Cmp::Slt,
            Cmp::Slt => Cmp::Sge,
            Cmp::Sle => Cmp::Sgt,
            Cmp::Set => Cmp::NotSet,
            Cmp::NotSet => Cmp::Set,
        }
    }

    /// `b cmp' a` equivalent to `a cmp b`.
    pub fn swap(self) -> Self {
        match self {
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Sgt => Cmp::Slt,
            Cmp::Sge => Cmp::Sle,
            Cmp::Slt => Cmp::Sgt,
            Cmp::Sle => Cmp::Sge,
            c => c,
        }
    }
}

/// Narrows `a` and `b` to the values for which `a cmp b` holds in `width` bits; `None` when it
/// never does.
pub(crate) fn refine(a: &Scalar, b: &Scalar, cmp: Cmp, width: u32) -> Option<(Scalar, Scalar)> {
    let (mut a, mut b) = (*a, *b);
    if width == 64 {
        match cmp {
            Cmp::Eq => {
                if !a.var.overlaps(b.var) {
                    return None;
                }
                let mut m = a;
                m.var = a.var.intersect(b.var);
                m.umin = a.umin.max(b.umin);
                m.umax = a.umax.min(b.umax);
                m.smin = a.smin.max(b.smin);
                m.smax = a.smax.min(b.smax);
                m.u32min = a.u32min.max(b.u32min);
                m.u32max = a.u32max.min(b.u32max);
                m.s32min = a.s32min.max(b.s32min);
                m.s32max = a.s32max.min(b.s32max);
                a = m;
                b = m;
            }
            Cmp::Ne => {
                if let (Some(x), Some(y)) = (a.const_value(), b.const_value()) {
                    if x == y {
                        return None;
                    }
                } else if let Some(c) = b.const_value() {
                    exclude64(&mut a, c);
                } else if let Some(c) = a.const_value() {
                    exclude64(&mut b, c);
                }
            }
            Cmp::Gt | Cmp::Ge => {
                let strict = u64::from(cmp == Cmp::Gt);
                a.umin = a.umin.max(b.umin.checked_add(strict)?);
                b.umax = b.umax.min(a.umax.checked_sub(strict)?);
            }
            Cmp::Lt | Cmp::Le => return refine(&b, &a, cmp.swap(), width).map(|(b, a)| (a, b)),
            Cmp::Sgt | Cmp::Sge => {
                let strict = i64::from(cmp == Cmp::Sgt);
                a.smin = a.smin.max(b.smin.checked_add(strict)?);
                b.smax = b.smax.min(a.smax.checked_sub(strict)?);
            }
            Cmp::Slt | Cmp::Sle => return refine(&b, &a, cmp.swap(), width).map(|(b, a)| (a, b)),
            Cmp::Set => {
                if let Some(c) = b.const_value() {
                    if a.var.max() & c == 0 {
                        return None;
                    }
                    if c.is_power_of_two() {
                        a.var = Tnum::new(a.var.value | c, a.var.mask & !c);
                    }
                }
            }
            Cmp::NotSet => {
                if let Some(c) = b.const_value() {
                    if a.var.value & c != 0 {
                        return None;
                    }
                    a.var = Tnum::new(a.var.value & !c, a.var.mask & !c);
                }
            }
        }
    } else {
        match cmp {
            Cmp::Eq => {
                if !a.var.subreg().overlaps(b.var.subreg()) {
                    return None;
                }
                let sub = a.var.subreg().intersect(b.var.subreg());
                let (lo, hi) = (a.u32min.max(b.u32min), a.u32max.min(b.u32max));
                let (slo, shi) = (a.s32min.max(b.s32min), a.s32max.min(b.s32max));
                for r in [&mut a, &mut b] {
                    r.var = r.var.with_subreg(sub);
                    r.u32min = lo;
                    r.u32max = hi;
                    r.s32min = slo;
                    r.s32max = shi;
                }
            }
            Cmp::Ne => {
                let (x, y) = (a.var.subreg(), b.var.subreg());
                if x.is_const() && y.is_const() {
                    if x.value == y.value {
                        return None;
                    }
                } else if y.is_const() {
                    exclude32(&mut a, y.value as u32);
                } else if x.is_const() {
                    exclude32(&mut b, x.value as u32);
                }
            }
            Cmp::Gt | Cmp::Ge => {
                let strict = u32::from(cmp == Cmp::Gt);
                a.u32min = a.u32min.max(b.u32min.checked_add(strict)?);
                b.u32max = b.u32max.min(a.u32max.checked_sub(strict)?);
            }
            Cmp::Lt | Cmp::Le => return refine(&b, &a, cmp.swap(), width).map(|(b, a)| (a, b)),
            Cmp::Sgt | Cmp::Sge => {
                let strict = i32::from(cmp == Cmp::Sgt);
                a.s32min = a.s32min.max(b.s32min.checked_add(strict)?);
                b.s32max = b.s32max.min(a.s32max.checked_sub(strict)?);
            }
            Cmp::Slt | Cmp::Sle => return refine(&b, &a, cmp.swap(), width).map(|(b, a)| (a, b)),
            Cmp::Set => {
                let c = b.var.subreg();
                if c.is_const() {
                    if a.var.subreg().max() & c.value == 0 {
                        return None;
                    }
                    if c.value.is_power_of_two() {
                        a.var = Tnum::new(a.var.value | c.value, a.var.mask & !c.value);
                    }
                }
            }
            Cmp::NotSet => {
                let c = b.var.subreg();
                if c.is_const() {
                    if a.var.value & c.value != 0 {
                        return None;
                    }
                    a.var = Tnum::new(a.var.value & !c.value, a.var.mask & !c.value);
                }
            }
        }
    }
    if !a.sync() || !b.sync() {
        return None;
    }
    Some((a, b))
}

fn exclude64(a: &mut Scalar, c: u64) {
    if a.umin == c {
        a.umin = a.umin.wrapping_add(1);
    }
    if a.umax == c {
        a.umax = a.umax.wrapping_sub(1);
    }
    if a.smin == c as i64 {
        a.smin = a.smin.wrapping_add(1);
    }
    if a.smax == c as i64 {
        a.smax = a.smax.wrapping_sub(1);
    }
}

fn exclude32(a: &mut Scalar, c: u32) {
    if a.u32min == c {
        a.u32min = a.u32min.wrapping_add(1);
    }
    if a.u32max == c {
        a.u32max = a.u32max.wrapping_sub(1);
    }
    if a.s32min == c as i32 {
        a.s32min = a.s32min.wrapping_add(1);
    }
    if a.s32max == c as i32 {
        a.s32max = a.s32max.wrapping_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_refine() {
        let x = Scalar::unknown_bytes(1);
        assert_eq!((x.umin, x.umax), (0, 255));
        let y = x.add(&Scalar::konst(10));
        assert_eq!((y.umin, y.umax, y.smin, y.smax), (10, 265, 10, 265));
        let (t, _) = refine(&Scalar::unknown(), &Scalar::konst(64), Cmp::Lt, 64).unwrap();
        assert_eq!((t.umin, t.umax), (0, 63));
        assert!(refine(&Scalar::konst(3), &Scalar::konst(3), Cmp::Ne, 64).is_none());
        assert!(refine(&Scalar::konst(3), &Scalar::konst(4), Cmp::Gt, 64).is_none());
        let (t, _) = refine(&Scalar::unknown(), &Scalar::konst(10), Cmp::Lt, 32).unwrap();
        assert_eq!((t.u32min, t.u32max), (0, 9));
        let (t, _) = refine(&Scalar::unknown().low32(), &Scalar::konst(10), Cmp::Lt, 32).unwrap();
        assert_eq!((t.umin, t.umax), (0, 9), "32-bit bounds reach 64 bits when the top is zero");
    }

    #[test]
    fn wraps_soundly() {
        let x = Scalar::from_urange(0, 10);
        let y = x.sub(&Scalar::konst(5));
        assert!(y.contains(&Scalar::konst(u64::MAX - 4)));
        assert!(y.contains(&Scalar::konst(5)));
        let z = Scalar::konst(u64::MAX).add(&Scalar::konst(2));
        assert_eq!(z.const_value(), Some(1));
        let m = Scalar::from_urange(0, 3).mul(&Scalar::konst(8));
        assert_eq!((m.umin, m.umax), (0, 24));
        let s = Scalar::konst(0xff).sign_extend(8);
        assert_eq!(s.const_value(), Some(u64::MAX));
    }
}
