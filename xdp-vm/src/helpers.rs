//! Helper functions: ids from `include/uapi/linux/bpf.h` and the parts of their semantics that
//! do not depend on an engine (checksums, `bpf_trace_printk` formatting, time, randomness).

use std::cell::Cell;
use std::io::Write;

pub(crate) mod callbacks;
pub(crate) mod map_ops;
pub mod redirect;
pub mod tracing;
mod user_copy;

/// Helper ids (`enum bpf_func_id`).
pub mod id {
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const KTIME_GET_NS: u32 = 5;
    pub const TRACE_PRINTK: u32 = 6;
    pub const GET_PRANDOM_U32: u32 = 7;
    pub const GET_SMP_PROCESSOR_ID: u32 = 8;
    pub const TAIL_CALL: u32 = 12;
    pub const REDIRECT: u32 = 23;
    pub const PERF_EVENT_OUTPUT: u32 = 25;
    pub const CSUM_DIFF: u32 = 28;
    pub const XDP_ADJUST_HEAD: u32 = 44;
    pub const REDIRECT_MAP: u32 = 51;
    pub const XDP_ADJUST_META: u32 = 54;
    pub const XDP_ADJUST_TAIL: u32 = 65;
    pub const MAP_PUSH_ELEM: u32 = 87;
    pub const MAP_POP_ELEM: u32 = 88;
    pub const MAP_PEEK_ELEM: u32 = 89;
    pub const RINGBUF_OUTPUT: u32 = 130;
    pub const RINGBUF_RESERVE: u32 = 131;
    pub const RINGBUF_SUBMIT: u32 = 132;
    pub const RINGBUF_DISCARD: u32 = 133;
    pub const RINGBUF_QUERY: u32 = 134;
    pub const TRACE_VPRINTK: u32 = 177;
    pub const FOR_EACH_MAP_ELEM: u32 = 164;
    pub const LOOP: u32 = 181;
    // Tracing (`helpers::tracing`).
    pub const PROBE_READ: u32 = 4;
    pub const GET_CURRENT_PID_TGID: u32 = 14;
    pub const GET_CURRENT_COMM: u32 = 16;
    pub const PROBE_WRITE_USER: u32 = 36;
    pub const PROBE_READ_STR: u32 = 45;
    pub const PROBE_READ_USER: u32 = 112;
    pub const PROBE_READ_KERNEL: u32 = 113;
    pub const PROBE_READ_USER_STR: u32 = 114;
    pub const PROBE_READ_KERNEL_STR: u32 = 115;
    pub const GET_FUNC_IP: u32 = 173;
}

/// Every helper this runtime implements, with its kernel name.
pub const HELPERS: &[(u32, &str)] = &[
    (id::MAP_LOOKUP_ELEM, "bpf_map_lookup_elem"),
    (id::MAP_UPDATE_ELEM, "bpf_map_update_elem"),
    (id::MAP_DELETE_ELEM, "bpf_map_delete_elem"),
    (id::KTIME_GET_NS, "bpf_ktime_get_ns"),
    (id::TRACE_PRINTK, "bpf_trace_printk"),
    (id::GET_PRANDOM_U32, "bpf_get_prandom_u32"),
    (id::GET_SMP_PROCESSOR_ID, "bpf_get_smp_processor_id"),
    (id::TAIL_CALL, "bpf_tail_call"),
    (id::REDIRECT, "bpf_redirect"),
    (id::PERF_EVENT_OUTPUT, "bpf_perf_event_output"),
    (id::CSUM_DIFF, "bpf_csum_diff"),
    (id::XDP_ADJUST_HEAD, "bpf_xdp_adjust_head"),
    (id::REDIRECT_MAP, "bpf_redirect_map"),
    (id::XDP_ADJUST_META, "bpf_xdp_adjust_meta"),
    (id::XDP_ADJUST_TAIL, "bpf_xdp_adjust_tail"),
    (id::MAP_PUSH_ELEM, "bpf_map_push_elem"),
    (id::MAP_POP_ELEM, "bpf_map_pop_elem"),
    (id::MAP_PEEK_ELEM, "bpf_map_peek_elem"),
    (id::RINGBUF_OUTPUT, "bpf_ringbuf_output"),
    (id::RINGBUF_RESERVE, "bpf_ringbuf_reserve"),
    (id::RINGBUF_SUBMIT, "bpf_ringbuf_submit"),
    (id::RINGBUF_DISCARD, "bpf_ringbuf_discard"),
    (id::RINGBUF_QUERY, "bpf_ringbuf_query"),
    (id::TRACE_VPRINTK, "bpf_trace_vprintk"),
    (id::FOR_EACH_MAP_ELEM, "bpf_for_each_map_elem"),
    (id::LOOP, "bpf_loop"),
];

/// The kernel name of a helper this runtime implements.
#[must_use]
pub fn name(helper: u32) -> Option<&'static str> {
    HELPERS.iter().chain(tracing::HELPERS).find(|(i, _)| *i == helper).map(|(_, n)| *n)
}

/// Negative errno as a helper returns it in `r0`.
#[must_use]
pub const fn errno_ret(errno: i32) -> u64 {
    (-(errno as i64)) as u64
}

/// x86's `csum_partial`: a 32-bit one's-complement sum of `buf` (read as little-endian words,
/// a short tail zero-padded) and `seed`. Only its value modulo 0xffff matters to callers, which
/// fold it to 16 bits.
fn csum_partial(buf: &[u8], seed: u32) -> u32 {
    let mut sum = u64::from(seed);
    let mut words = buf.chunks_exact(4);
    for c in &mut words {
        sum += u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut last = [0u8; 4];
        last[..tail.len()].copy_from_slice(tail);
        sum += u64::from(u32::from_le_bytes(last));
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// The kernel's `csum_from32to16`: folds a 32-bit sum to 16 bits with end-around carry.
fn fold16(sum: u32) -> u16 {
    (sum.wrapping_add(sum.rotate_right(16)) >> 16) as u16
}

/// One's-complement subtraction (`csum_sub`).
fn csum_sub(a: u32, b: u32) -> u32 {
    let (r, carry) = a.overflowing_add(!b);
    r.wrapping_add(u32::from(carry))
}

/// `bpf_csum_diff` as Linux 6.18 computes it: the difference between the one's-complement sums
/// of `to` and `from` on top of `seed`, folded to 16 bits (not inverted). Any sizes are
/// accepted; with neither buffer it returns the seed.
#[must_use]
pub fn csum_diff(from: &[u8], to: &[u8], seed: u32) -> u64 {
    let folded = match (from.is_empty(), to.is_empty()) {
        (true, true) => return u64::from(seed),
        (true, false) => fold16(csum_partial(to, seed)),
        (false, true) => fold16(!csum_partial(from, !seed)),
        (false, false) => fold16(csum_sub(csum_partial(to, seed), csum_partial(from, 0))),
    };
    u64::from(folded)
}

thread_local! {
    static PRANDOM: Cell<u64> = Cell::new(crate::sys::monotonic_ns() | 1);
}

/// `bpf_get_prandom_u32`: a per-thread xorshift generator (the kernel's is per CPU).
#[must_use]
pub fn prandom_u32() -> u64 {
    PRANDOM.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        u64::from((x >> 16) as u32)
    })
}

/// One `bpf_trace_printk` argument source: reads a NUL-terminated string for `%s`.
pub trait StrReader {
    /// Appends the string at `addr` (at most `max` bytes, without its NUL) to `out`; `false`
    /// when the address cannot be read.
    fn read_str(&self, addr: u64, max: usize, out: &mut Vec<u8>) -> bool;
}

/// Largest output of one `bpf_trace_printk` (`MAX_BPRINTF_BUF`).
const MAX_PRINTK: usize = 1024;
/// Longest `%s` argument copied (`MAX_BPRINTF_STR_LEN`).
const MAX_PRINTK_STR: usize = 128;

/// Most arguments `bpf_trace_vprintk` takes (`MAX_BPRINTF_VARARGS`).
pub const MAX_VPRINTK_ARGS: usize = 12;

/// `bpf_trace_printk` (three arguments) and `bpf_trace_vprintk` (up to twelve): validates and
/// formats `fmt` (which must hold its NUL) with `args`, as `bpf_bprintf_prepare` + `bstr_printf` do; writes the line to stderr and
/// returns the formatted length, or `-EINVAL` for a format the kernel refuses.
pub fn trace_printk(fmt: &[u8], args: &[u64], strings: &dyn StrReader) -> u64 {
    match format_printk(fmt, args, strings) {
        Some(line) => {
            let shown = &line[..line.len().min(MAX_PRINTK - 1)];
            let mut err = std::io::stderr().lock();
            // A trace line that cannot be written (stderr closed) is lost, as the kernel's
            // trace buffer loses lines when nobody reads it; the program is not affected.
            let _ = err
                .write_all(shown)
                .and_then(|()| if shown.ends_with(b"\n") { Ok(()) } else { err.write_all(b"\n") });
            line.len().min(MAX_PRINTK - 1) as u64
        }
        None => errno_ret(libc::EINVAL),
    }
}

/// The formatting half of [`trace_printk`]; `None` when the kernel would return `-EINVAL`.
#[must_use]
pub fn format_printk(fmt: &[u8], args: &[u64], strings: &dyn StrReader) -> Option<Vec<u8>> {
    let end = fmt.iter().position(|&b| b == 0)?;
    let fmt = &fmt[..end];
    let mut out = Vec::with_capacity(fmt.len() + 16);
    let mut next = 0usize;
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        if !(c.is_ascii_graphic() || c.is_ascii_whitespace()) {
            return None;
        }
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        if fmt.get(i) == Some(&b'%') {
            out.push(b'%');
            i += 1;
            continue;
        }
        if next >= args.len() {
            return None;
        }
        let mut flags = Flags::default();
        while let Some(&f) = fmt.get(i) {
            match f {
                b'0' => flags.zero = true,
                b'-' => flags.left = true,
                b'+' => flags.plus = true,
                b' ' => flags.space = true,
                _ => break,
            }
            i += 1;
        }
        while let Some(&d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            flags.width = flags.width.saturating_mul(10).saturating_add(usize::from(d - b'0'));
            i += 1;
        }
        let mut longs = 0;
        while fmt.get(i) == Some(&b'l') && longs < 2 {
            longs += 1;
            i += 1;
        }
        let arg = args[next];
        next += 1;
        let conv = *fmt.get(i)?;
        i += 1;
        let digits: Vec<u8> = match conv {
            b'd' | b'i' => {
                let v = if longs == 0 { i64::from(arg as i32) } else { arg as i64 };
                let mut s = v.unsigned_abs().to_string().into_bytes();
                if v < 0 {
                    s.insert(0, b'-');
                } else if flags.plus {
                    s.insert(0, b'+');
                } else if flags.space {
                    s.insert(0, b' ');
                }
                s
            }
            b'u' => (if longs == 0 { arg & 0xffff_ffff } else { arg }).to_string().into_bytes(),
            b'x' => format!("{:x}", if longs == 0 { arg & 0xffff_ffff } else { arg }).into_bytes(),
            b'X' => format!("{:X}", if longs == 0 { arg & 0xffff_ffff } else { arg }).into_bytes(),
            b'c' if longs == 0 => vec![arg as u8],
            b'p' if longs == 0 => format!("0x{arg:x}").into_bytes(),
            b's' if longs == 0 => {
                let mut s = Vec::new();
                if !strings.read_str(arg, MAX_PRINTK_STR - 1, &mut s) {
                    s = b"(efault)".to_vec();
                }
                s
            }
            _ => return None,
        };
        pad(&mut out, &digits, flags, matches!(conv, b'd' | b'i' | b'u' | b'x' | b'X'));
    }
    Some(out)
}

#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    zero: bool,
    left: bool,
    plus: bool,
    space: bool,
    width: usize,
}

fn pad(out: &mut Vec<u8>, s: &[u8], f: Flags, numeric: bool) {
    let fill = f.width.saturating_sub(s.len());
    if f.left {
        out.extend_from_slice(s);
        out.resize(out.len() + fill, b' ');
    } else if f.zero && numeric {
        let sign = usize::from(s.first().is_some_and(|c| matches!(c, b'-' | b'+' | b' ')));
        out.extend_from_slice(&s[..sign]);
        out.resize(out.len() + fill, b'0');
        out.extend_from_slice(&s[sign..]);
    } else {
        out.resize(out.len() + fill, b' ');
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoStrings;
    impl StrReader for NoStrings {
        fn read_str(&self, addr: u64, _max: usize, out: &mut Vec<u8>) -> bool {
            if addr == 1 {
                out.extend_from_slice(b"eth0");
                true
            } else {
                false
            }
        }
    }

    fn fmt(f: &str, args: [u64; 3]) -> Option<String> {
        let args = &args[..];
        let mut bytes = f.as_bytes().to_vec();
        bytes.push(0);
        format_printk(&bytes, args, &NoStrings).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn formats_like_the_kernel() {
        assert_eq!(fmt("len %d", [u64::MAX, 0, 0]).as_deref(), Some("len -1"));
        assert_eq!(
            fmt("%u %x %llx", [u64::MAX, 255, u64::MAX]).as_deref(),
            Some("4294967295 ff ffffffffffffffff")
        );
        assert_eq!(fmt("[%5d|%-4u|%04x]", [42, 7, 10]).as_deref(), Some("[   42|7   |000a]"));
        assert_eq!(fmt("%s:%c%%", [1, u64::from(b'!'), 0]).as_deref(), Some("eth0:!%"));
        assert_eq!(fmt("%s", [2, 0, 0]).as_deref(), Some("(efault)"));
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        assert_eq!(fmt("%d %d %d %d", [1, 2, 3]), None, "four arguments");
        assert_eq!(fmt("%q", [1, 2, 3]), None, "unknown conversion");
        assert_eq!(format_printk(b"no nul", &[0; 3], &NoStrings), None);
    }

    #[test]
    fn csum_diff_folds_to_sixteen_bits() {
        let w = [0x12, 0x34, 0x56, 0x78];
        assert_eq!(csum_diff(&[], &[], 0xdead_beef), 0xdead_beef, "no buffers: the seed");
        // 0x7856 + 0x3412 = 0xac68 (little-endian 16-bit words).
        assert_eq!(csum_diff(&[], &w, 0), 0xac68);
        assert_eq!(csum_diff(&[], &[0xff, 0xff], 1), 1, "0xffff + 1 wraps around to 1");
        assert_eq!(csum_diff(&[1], &[], 0), u64::from(fold16(!csum_partial(&[1], !0))));
        // Replacing a word by itself changes nothing but the one's-complement zero form.
        assert_eq!(csum_diff(&w, &w, 0) % 0xffff, 0);
    }
}
