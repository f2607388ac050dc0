//! Tristate numbers: which bits of a value are known, and what they are (the kernel's `tnum`).
//!
//! A bit is unknown when it is set in `mask`; a known bit has its value in `value`. Invariant:
//! `value & mask == 0`.

/// A 64-bit value some of whose bits are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tnum {
    pub value: u64,
    pub mask: u64,
}

impl Tnum {
    pub const UNKNOWN: Tnum = Tnum { value: 0, mask: u64::MAX };

    pub const fn new(value: u64, mask: u64) -> Self {
        Self { value: value & !mask, mask }
    }

    pub const fn konst(v: u64) -> Self {
        Self { value: v, mask: 0 }
    }

    /// The smallest tnum holding every value of `min..=max`.
    pub fn range(min: u64, max: u64) -> Self {
        let chi = min ^ max;
        let bits = 64 - chi.leading_zeros();
        if bits > 63 {
            return Self::UNKNOWN;
        }
        let delta = (1u64 << bits) - 1;
        Self::new(min & !delta, delta)
    }

    pub const fn is_const(self) -> bool {
        self.mask == 0
    }

    /// Largest value it may hold.
    pub const fn max(self) -> u64 {
        self.value | self.mask
    }

    pub fn add(self, b: Self) -> Self {
        let sm = self.mask.wrapping_add(b.mask);
        let sv = self.value.wrapping_add(b.value);
        let sigma = sm.wrapping_add(sv);
        let chi = sigma ^ sv;
        let mu = chi | self.mask | b.mask;
        Self::new(sv & !mu, mu)
    }

    pub fn sub(self, b: Self) -> Self {
        let dv = self.value.wrapping_sub(b.value);
        let alpha = dv.wrapping_add(self.mask);
        let beta = dv.wrapping_sub(b.mask);
        let chi = alpha ^ beta;
        let mu = chi | self.mask | b.mask;
        Self::new(dv & !mu, mu)
    }

    pub fn and(self, b: Self) -> Self {
        let alpha = self.value | self.mask;
        let beta = b.value | b.mask;
        let v = self.value & b.value;
        Self::new(v, alpha & beta & !v)
    }

    pub fn or(self, b: Self) -> Self {
        let v = self.value | b.value;
        let mu = self.mask | b.mask;
        Self::new(v, mu & !v)
    }

    pub fn xor(self, b: Self) -> Self {
        let v = self.value ^ b.value;
        let mu = self.mask | b.mask;
        Self::new(v & !mu, mu)
    }

    pub fn mul(self, b: Self) -> Self {
        let acc_v = self.value.wrapping_mul(b.value);
        let mut acc_m = Tnum::konst(0);
        let (mut a, mut b) = (self, b);
        while a.value != 0 || a.mask != 0 {
            if a.value & 1 != 0 {
                acc_m = acc_m.add(Tnum::new(0, b.mask));
            } else if a.mask & 1 != 0 {
                acc_m = acc_m.add(Tnum::new(0, b.value | b.mask));
            }
            a = a.rsh(1);
            b = b.lsh(1);
        }
        Tnum::konst(acc_v).add(acc_m)
    }

    pub fn lsh(self, s: u32) -> Self {
        Self::new(self.value.wrapping_shl(s), self.mask.wrapping_shl(s))
    }

    pub fn rsh(self, s: u32) -> Self {
        Self::new(self.value.wrapping_shr(s), self.mask.wrapping_shr(s))
    }

    /// Arithmetic shift right as a `width`-bit value (32 or 64).
    pub fn arsh(self, s: u32, width: u32) -> Self {
        if width == 32 {
            let v = ((self.value as u32 as i32) >> s) as u32;
            let m = ((self.mask as u32 as i32) >> s) as u32;
            Self::new(u64::from(v), u64::from(m))
        } else {
            Self::new(((self.value as i64) >> s) as u64, ((self.mask as i64) >> s) as u64)
        }
    }

    /// Values both may hold (callers make sure they overlap).
    pub fn intersect(self, b: Self) -> Self {
        let v = self.value | b.value;
        let mu = self.mask & b.mask;
        Self::new(v & !mu, mu)
    }

    /// Whether the two can hold a common value.
    pub fn overlaps(self, b: Self) -> bool {
        let known_both = !self.mask & !b.mask;
        (self.value ^ b.value) & known_both == 0
    }

    /// The low 32 bits, zero-extended.
    pub const fn subreg(self) -> Self {
        Self { value: self.value & 0xffff_ffff, mask: self.mask & 0xffff_ffff }
    }

    /// The value with its low 32 bits replaced by those of `low`.
    pub const fn with_subreg(self, low: Self) -> Self {
        Self {
            value: (self.value & !0xffff_ffff) | (low.value & 0xffff_ffff),
            mask: (self.mask & !0xffff_ffff) | (low.mask & 0xffff_ffff),
        }
    }

    /// Whether every value `b` may hold is one `self` may hold.
    pub fn contains(self, b: Self) -> bool {
        if b.mask & !self.mask != 0 {
            return false;
        }
        self.value == b.value & !self.mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_keeps_known_bits() {
        let a = Tnum::range(0, 7);
        assert_eq!(a, Tnum::new(0, 7));
        assert_eq!(a.add(Tnum::konst(8)), Tnum::new(8, 7));
        assert_eq!(Tnum::konst(6).mul(Tnum::konst(7)), Tnum::konst(42));
        assert_eq!(Tnum::UNKNOWN.and(Tnum::konst(0xff)), Tnum::new(0, 0xff));
        assert!(Tnum::new(0, 0xff).contains(Tnum::konst(3)));
        assert!(!Tnum::konst(3).contains(Tnum::new(0, 0xff)));
        assert!(Tnum::konst(2).overlaps(Tnum::new(0, 2)));
        assert!(!Tnum::konst(1).overlaps(Tnum::new(0, 2)));
    }
}
