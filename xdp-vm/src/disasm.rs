//! Instructions as text, in the syntax `bpftool prog dump xlated` and the kernel's verifier log
//! use: `r1 = *(u32 *)(r2 +4)`, `if w1 s> 0x5 goto pc+3`, `call bpf_map_lookup_elem#1`.

use std::fmt::Write;

use crate::helpers;
use crate::insn::*;

/// Renders one instruction; `next` is the following slot (the upper half of an `lddw`), and
/// `map_name` names map `i` of the program's map table.
#[must_use]
pub fn format_insn(insn: Insn, next: Option<Insn>, map_name: &dyn Fn(usize) -> Option<String>) -> String {
    let Insn { code, dst, src, off, imm } = insn;
    let class = insn.class();
    let op = code & 0xf0;
    let x = code & BPF_X != 0;
    let mut s = String::new();
    match class {
        BPF_ALU | BPF_ALU64 => {
            let r = if class == BPF_ALU64 { 'r' } else { 'w' };
            let operand = if x { format!("{r}{src}") } else { format!("{imm}") };
            let signed = if off == 1 { "s" } else { "" };
            let _ = match op {
                BPF_NEG => write!(s, "{r}{dst} = -{r}{dst}"),
                BPF_MOV if x && off != 0 => write!(s, "{r}{dst} = (s{off}){r}{src}"),
                BPF_MOV => write!(s, "{r}{dst} = {operand}"),
                BPF_END if class == BPF_ALU64 => write!(s, "r{dst} = bswap{imm} r{dst}"),
                BPF_END => write!(s, "r{dst} = {}{imm} r{dst}", if x { "be" } else { "le" }),
                _ => {
                    let sym = match op {
                        BPF_ADD => "+=",
                        BPF_SUB => "-=",
                        BPF_MUL => "*=",
                        BPF_DIV => "/=",
                        BPF_OR => "|=",
                        BPF_AND => "&=",
                        BPF_LSH => "<<=",
                        BPF_RSH => ">>=",
                        BPF_MOD => "%=",
                        BPF_XOR => "^=",
                        BPF_ARSH => "s>>=",
                        _ => return format!("invalid alu opcode {code:#04x}"),
                    };
                    let signed = if matches!(op, BPF_DIV | BPF_MOD) { signed } else { "" };
                    write!(s, "{r}{dst} {signed}{sym} {operand}")
                }
            };
        }
        BPF_JMP | BPF_JMP32 => {
            let r = if class == BPF_JMP { 'r' } else { 'w' };
            let _ = match op {
                BPF_JA if class == BPF_JMP32 => write!(s, "gotol pc{imm:+}"),
                BPF_JA => write!(s, "goto pc{off:+}"),
                BPF_EXIT => write!(s, "exit"),
                BPF_CALL if src == BPF_PSEUDO_CALL => write!(s, "call pc{imm:+}"),
                BPF_CALL if src == BPF_PSEUDO_KFUNC_CALL => write!(s, "call kfunc#{imm}"),
                BPF_CALL => match u32::try_from(imm).ok().and_then(helpers::name) {
                    Some(name) => write!(s, "call {name}#{imm}"),
                    None => write!(s, "call #{imm}"),
                },
                _ => {
                    let sym = match op {
                        BPF_JEQ => "==",
                        BPF_JGT => ">",
                        BPF_JGE => ">=",
                        BPF_JSET => "&",
                        BPF_JNE => "!=",
                        BPF_JSGT => "s>",
                        BPF_JSGE => "s>=",
                        BPF_JLT => "<",
                        BPF_JLE => "<=",
                        BPF_JSLT => "s<",
                        BPF_JSLE => "s<=",
                        _ => return format!("invalid jmp opcode {code:#04x}"),
                    };
                    let operand = if x { format!("{r}{src}") } else { format!("{:#x}", imm) };
                    write!(s, "if {r}{dst} {sym} {operand} goto pc{off:+}")
                }
            };
        }
        BPF_LD if insn.is_lddw() => {
            let hi = next.map_or(0, |n| n.imm as u32);
            let _ = match src {
                BPF_PSEUDO_MAP_IDX | BPF_PSEUDO_MAP_FD => {
                    let name = map_name(imm as usize).unwrap_or_else(|| format!("#{imm}"));
                    write!(s, "r{dst} = map[{name}]")
                }
                BPF_PSEUDO_MAP_IDX_VALUE | BPF_PSEUDO_MAP_VALUE => {
                    let name = map_name(imm as usize).unwrap_or_else(|| format!("#{imm}"));
                    write!(s, "r{dst} = map[{name}]+{hi}")
                }
                BPF_PSEUDO_FUNC => write!(s, "r{dst} = func pc{imm:+}"),
                _ => write!(s, "r{dst} = {:#x} ll", u64::from(imm as u32) | (u64::from(hi) << 32)),
            };
        }
        BPF_LDX | BPF_ST | BPF_STX => {
            let size = match code & 0x18 {
                BPF_W => 32,
                BPF_H => 16,
                BPF_B => 8,
                _ => 64,
            };
            let mode = code & 0xe0;
            let mem = |base: u8| format!("(u{size} *)(r{base} {off:+})");
            let _ = match (class, mode) {
                (BPF_LDX, BPF_MEM) => write!(s, "r{dst} = *{}", mem(src)),
                (BPF_LDX, BPF_MEMSX) => write!(s, "r{dst} = *(s{size} *)(r{src} {off:+})"),
                (BPF_ST, BPF_MEM) => write!(s, "*{} = {imm}", mem(dst)),
                (BPF_STX, BPF_MEM) => write!(s, "*{} = r{src}", mem(dst)),
                (BPF_STX, BPF_ATOMIC) => {
                    let r = if size == 64 { 'r' } else { 'w' };
                    let name = match imm & !BPF_FETCH {
                        0x00 => "add",
                        0x40 => "or",
                        0x50 => "and",
                        0xa0 => "xor",
                        _ => "",
                    };
                    if imm == BPF_XCHG {
                        write!(s, "{r}{src} = xchg({}, {r}{src})", mem(dst))
                    } else if imm == BPF_CMPXCHG {
                        write!(s, "{r}0 = cmpxchg({}, {r}0, {r}{src})", mem(dst))
                    } else if imm & BPF_FETCH != 0 {
                        write!(s, "{r}{src} = atomic_fetch_{name}({}, {r}{src})", mem(dst))
                    } else {
                        let sym = match name {
                            "add" => "+=",
                            "or" => "|=",
                            "and" => "&=",
                            _ => "^=",
                        };
                        write!(s, "lock *{} {sym} {r}{src}", mem(dst))
                    }
                }
                _ => write!(s, "invalid opcode {code:#04x}"),
            };
        }
        _ => {
            let _ = write!(s, "invalid opcode {code:#04x}");
        }
    }
    s
}

/// Renders a whole program, one instruction per line as `bpftool prog dump xlated` prints it:
/// `   9: (18) r1 = map[pkt_len_count]`. The second slot of an `lddw` gets no line of its own.
#[must_use]
pub fn format_program(insns: &[Insn], map_names: &[String]) -> String {
    let width = insns.len().to_string().len().max(2);
    let name = |i: usize| map_names.get(i).cloned();
    let mut out = String::new();
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        let next = insns.get(pc + 1).copied();
        let _ = writeln!(out, "{pc:>width$}: ({:02x}) {}", insn.code, format_insn(insn, next, &name));
        pc += if insn.is_lddw() { 2 } else { 1 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> String {
        format_insn(Insn::new(code, dst, src, off, imm), None, &|i| (i == 0).then(|| "counts".to_string()))
    }

    #[test]
    fn renders_like_bpftool() {
        assert_eq!(f(0x61, 7, 1, 4, 0), "r7 = *(u32 *)(r1 +4)");
        assert_eq!(f(0x63, 10, 1, -4, 0), "*(u32 *)(r10 -4) = r1");
        assert_eq!(f(0x07, 2, 0, 0, -4), "r2 += -4");
        assert_eq!(f(0xbc, 1, 2, 0, 0), "w1 = w2");
        assert_eq!(f(0xbf, 1, 2, 8, 0), "r1 = (s8)r2");
        assert_eq!(f(0x3f, 1, 2, 1, 0), "r1 s/= r2");
        assert_eq!(f(0xdc, 1, 0, 0, 16), "r1 = be16 r1");
        assert_eq!(f(0xd7, 1, 0, 0, 64), "r1 = bswap64 r1");
        assert_eq!(f(0x2d, 1, 7, 43, 0), "if r1 > r7 goto pc+43");
        assert_eq!(f(0xc6, 1, 0, -2, 5), "if w1 s< 0x5 goto pc-2");
        assert_eq!(f(0x85, 0, 0, 0, 1), "call bpf_map_lookup_elem#1");
        assert_eq!(f(0x85, 0, 1, 0, 7), "call pc+7");
        assert_eq!(f(0x95, 0, 0, 0, 0), "exit");
        assert_eq!(f(0x06, 0, 0, 0, -3), "gotol pc-3");
        assert_eq!(f(0xc3, 0, 8, 0, 0), "lock *(u32 *)(r0 +0) += w8");
        assert_eq!(f(0xdb, 1, 2, 8, 0xe1), "r2 = xchg((u64 *)(r1 +8), r2)");
        assert_eq!(f(0xdb, 1, 2, 0, 0xf1), "r0 = cmpxchg((u64 *)(r1 +0), r0, r2)");
        assert_eq!(f(0xdb, 1, 2, 0, 0x01), "r2 = atomic_fetch_add((u64 *)(r1 +0), r2)");
        assert_eq!(f(0x91, 1, 2, 3, 0), "r1 = *(s8 *)(r2 +3)");
        assert_eq!(f(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0), "r1 = map[counts]");
    }

    #[test]
    fn lddw_takes_two_slots() {
        let prog = [
            Insn::new(0x18, 1, 0, 0, 0x5566_7788),
            Insn::new(0, 0, 0, 0, 0x11),
            Insn::new(0x18, 2, BPF_PSEUDO_MAP_IDX_VALUE, 0, 0),
            Insn::new(0, 0, 0, 0, 8),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        let text = format_program(&prog, &[".rodata".into()]);
        assert_eq!(text, " 0: (18) r1 = 0x1155667788 ll\n 2: (18) r2 = map[.rodata]+8\n 4: (95) exit\n");
    }
}
