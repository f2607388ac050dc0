//! Trampoline code: what runs when a probe fires, built as bytes for the address it will live
//! at (no `unsafe` here; `patch` maps and writes it).
//!
//! A function probe's trampoline, at `T` (page-aligned):
//!
//! ```text
//! T+0   0f 1f 44 00 00  nop                      the switch: on (this NOP) or off (jmp T+26)
//! T+5   0f 1f 00        nop
//! T+8   ff 35 rel32     push qword [probe]        the handler's argument
//! T+14  ff 15 rel32     call qword [entry stub]   saves registers, runs the programs, `ret 8`
//! T+20  0f 85 rel32     jnz RET                   the stub took the return address (uretprobe)
//! T+26  ...             the function's first instructions, relocated for T+26 (iced-x86)
//!       ff 25 rel32     jmp qword [resume]        back to the first byte not displaced
//! RET:  48 8d 64 24 08  lea rsp, [rsp + 8]        drop the return address (kept by the stub)
//!       e8 rel32        call T+26                 run the function, returning here
//!       48 8d 64 24 f8  lea rsp, [rsp - 8]        the word for the real return address
//!       ff 15 rel32     call qword [return stub]  runs the return programs, fills the word
//!       c3              ret                       to the caller
//!       (data)          probe, entry stub, resume, return stub: 8 bytes each
//! ```
//!
//! and the function's first 5 bytes become `jmp rel32 T`, once (with the other threads stopped);
//! attaching and detaching afterwards flip the switch, one aligned 8-byte store, as a probe site
//! is flipped. A uretprobe calls the function from its trampoline rather than swapping the
//! return address for a stub's: every `ret` then goes back where its `call` came from, so the
//! CPU's return-address predictions all hold (a swapped return address costs two mispredicted
//! returns per call). The function sees the stack it would have seen, the return address
//! slot holding the trampoline's instead of its caller's.
//!
//! A probe site's trampoline is `push`, `call` and `ret`: the site's `call` returns behind its
//! 5-byte instruction.

use std::collections::{HashMap, HashSet};

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, CpuidFeature, Decoder, DecoderOptions, EncodingKind, FlowControl,
    Instruction, InstructionBlock, OpKind,
};

/// Bytes a `jmp rel32` / `call rel32` takes: what a probe replaces.
pub const PATCH_LEN: usize = 5;

/// The first instructions of a function, to be displaced into a trampoline.
#[derive(Debug, Clone)]
pub struct Displaced {
    pub instructions: Vec<Instruction>,
    /// Bytes they take (at least [`PATCH_LEN`]).
    pub len: usize,
}

/// Decides which instructions of the function at `addr` (whose whole code is `code`) a probe
/// displaces, and refuses what cannot be relocated safely.
///
/// # Errors
/// A reason: the function is shorter than a jump, ends (or jumps away) within the bytes to
/// replace, something branches into those bytes, or an instruction cannot be decoded.
pub fn displace(addr: u64, code: &[u8]) -> Result<Displaced, String> {
    if code.len() < PATCH_LEN {
        return Err(format!(
            "the function is {} bytes long, shorter than the {PATCH_LEN}-byte jump",
            code.len()
        ));
    }
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut all = Vec::new();
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            if all.iter().map(Instruction::len).sum::<usize>() < PATCH_LEN {
                return Err(format!("cannot decode the instruction at +{:#x}", insn.ip() - addr));
            }
            break; // Data or padding after the code: only the displaced part must decode.
        }
        all.push(insn);
    }
    let mut len = 0;
    let mut displaced = Vec::new();
    for insn in &all {
        if len >= PATCH_LEN {
            break;
        }
        let ends = matches!(
            insn.flow_control(),
            FlowControl::Return
                | FlowControl::UnconditionalBranch
                | FlowControl::IndirectBranch
                | FlowControl::Interrupt
                | FlowControl::Exception
        );
        len += insn.len();
        displaced.push(*insn);
        if ends && len < PATCH_LEN {
            return Err(format!(
                "the function is too short: it leaves at +{:#x}, inside the {PATCH_LEN} bytes a probe replaces",
                insn.ip() - addr
            ));
        }
        if matches!(insn.flow_control(), FlowControl::Interrupt | FlowControl::Exception) {
            return Err(format!(
                "instruction at +{:#x} ({:?}) cannot be relocated",
                insn.ip() - addr,
                insn.mnemonic()
            ));
        }
    }
    let inside = |t: u64| t > addr && t < addr + len as u64;
    for insn in &all {
        let target = match insn.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                Some(insn.near_branch_target())
            }
            _ => None,
        };
        let rip_rel = insn.is_ip_rel_memory_operand().then(|| insn.ip_rel_memory_address());
        if let Some(t) = target.or(rip_rel).filter(|&t| inside(t)) {
            return Err(format!(
                "the instruction at +{:#x} ({:?}) refers to +{:#x}, inside the {len} bytes a probe replaces",
                insn.ip() - addr,
                insn.mnemonic(),
                t - addr
            ));
        }
    }
    Ok(Displaced { instructions: displaced, len })
}

fn rel32(from_next: u64, to: u64) -> Result<[u8; 4], String> {
    let d = to.wrapping_sub(from_next) as i64;
    i32::try_from(d).map(i32::to_le_bytes).map_err(|_| format!("{to:#x} is out of reach of {from_next:#x}"))
}

/// `ff /6`, `ff /2`, `ff /4` with a RIP-relative operand: push, call, jmp through memory.
fn indirect(out: &mut Vec<u8>, modrm: u8, at: u64, data: u64) -> Result<(), String> {
    out.extend_from_slice(&[0xff, modrm]);
    let next = at + out.len() as u64 + 4;
    out.extend_from_slice(&rel32(next, data)?);
    Ok(())
}

const PUSH_RIP: u8 = 0x35;
const CALL_RIP: u8 = 0x15;
const JMP_RIP: u8 = 0x25;

/// Where the displaced instructions start in a function trampoline.
const DISPLACED_AT: u64 = 26;

/// The stubs a trampoline calls.
#[derive(Debug, Clone, Copy)]
pub struct Stubs {
    pub entry: u64,
    pub ret: u64,
}

/// A function probe's trampoline at `at` (see the module doc).
///
/// # Errors
/// When a displaced instruction cannot be encoded at the new address.
pub fn function(at: u64, func: u64, d: &Displaced, probe: u64, stubs: Stubs) -> Result<Vec<u8>, String> {
    let block = InstructionBlock::new(&d.instructions, at + DISPLACED_AT);
    let relocated = BlockEncoder::encode(64, block, BlockEncoderOptions::NONE)
        .map_err(|e| format!("cannot relocate the first instructions: {e}"))?
        .code_buffer;
    // The return path after the relocated code and its jump back, then the data, 8-aligned.
    let ret_at = DISPLACED_AT as usize + relocated.len() + 6;
    let data = (ret_at + 5 + 5 + 5 + 6 + 1).next_multiple_of(8) as u64;
    let mut out = Vec::with_capacity(data as usize + 32);
    out.extend_from_slice(&SWITCH_ON);
    indirect(&mut out, PUSH_RIP, at, at + data)?;
    indirect(&mut out, CALL_RIP, at, at + data + 8)?;
    out.extend_from_slice(&[0x0f, 0x85]);
    out.extend_from_slice(&rel32(at + out.len() as u64 + 4, at + ret_at as u64)?);
    debug_assert_eq!(out.len() as u64, DISPLACED_AT);
    out.extend_from_slice(&relocated);
    indirect(&mut out, JMP_RIP, at, at + data + 16)?;
    debug_assert_eq!(out.len(), ret_at);
    out.extend_from_slice(&[0x48, 0x8d, 0x64, 0x24, 0x08]);
    out.push(CALL);
    out.extend_from_slice(&rel32(at + out.len() as u64 + 4, at + DISPLACED_AT)?);
    out.extend_from_slice(&[0x48, 0x8d, 0x64, 0x24, 0xf8]);
    indirect(&mut out, CALL_RIP, at, at + data + 24)?;
    out.push(0xc3);
    out.resize(data as usize, 0xcc);
    for v in [probe, stubs.entry, func + d.len as u64, stubs.ret] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// A probe site's trampoline at `at`.
///
/// # Errors
/// Never in practice (the data is next to the code).
pub fn site(at: u64, probe: u64, entry_stub: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(32);
    indirect(&mut out, PUSH_RIP, at, at + 16)?;
    indirect(&mut out, CALL_RIP, at, at + 24)?;
    out.push(0xc3);
    out.resize(16, 0xcc);
    out.extend_from_slice(&probe.to_le_bytes());
    out.extend_from_slice(&entry_stub.to_le_bytes());
    Ok(out)
}

/// `jmp rel32` (or `call rel32` for a site) from `from` to `to`.
///
/// # Errors
/// When `to` is more than 2 GiB away.
pub fn branch(opcode: u8, from: u64, to: u64) -> Result<[u8; PATCH_LEN], String> {
    let r = rel32(from + PATCH_LEN as u64, to)?;
    Ok([opcode, r[0], r[1], r[2], r[3]])
}

/// A function trampoline's first 8 bytes when its programs run: a 5-byte and a 3-byte NOP.
pub const SWITCH_ON: [u8; 8] = [0x0f, 0x1f, 0x44, 0x00, 0x00, 0x0f, 0x1f, 0x00];
/// ... and when they do not: `jmp T+26` (the relocated instructions), then the 3-byte NOP.
pub const SWITCH_OFF: [u8; 8] = [0xe9, DISPLACED_AT as u8 - 5, 0, 0, 0, 0x0f, 0x1f, 0x00];

/// Instructions [`leaves_vector_registers_alone`] follows at most.
const SCAN_LIMIT: usize = 20_000;

/// Whether the machine code at `entry` — every instruction it can reach, through branches and
/// direct calls — leaves the vector registers (xmm/ymm/zmm, x87, MMX, the mask registers and
/// MXCSR) alone: each is a general-purpose instruction (legacy encoding, CPUID features of the
/// 8086 to 486, x86-64, CMOV, CMPXCHG16B, BMI1/2, LZCNT, POPCNT, MOVBE, ADX, multi-byte NOP,
/// PAUSE), and none is an indirect call or jump (whose target cannot be followed). `false` when
/// in doubt (something cannot be read or decoded, more than 20,000 instructions). The entry
/// stub keeps xmm0-7 for a program only when its compiled code is not such code. `page` reads
/// the 4 KiB page at an address (`None`: unmapped).
pub fn leaves_vector_registers_alone(entry: u64, page: &mut impl FnMut(u64) -> Option<Vec<u8>>) -> bool {
    const PAGE: u64 = 4096;
    let mut pages: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    // Up to 15 bytes at `at` (fewer only where the next page is unmapped).
    let mut bytes = |at: u64| -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(15);
        let mut a = at;
        while out.len() < 15 {
            let base = a & !(PAGE - 1);
            let p = pages.entry(base).or_insert_with(|| page(base)).as_ref();
            let Some(p) = p else { break };
            let from = (a - base) as usize;
            let n = (15 - out.len()).min(p.len().saturating_sub(from));
            if n == 0 {
                break;
            }
            out.extend_from_slice(&p[from..from + n]);
            a += n as u64;
        }
        (!out.is_empty()).then_some(out)
    };
    let plain = |insn: &Instruction| {
        insn.encoding() == EncodingKind::Legacy
            && insn.cpuid_features().iter().all(|f| {
                matches!(
                    f,
                    CpuidFeature::INTEL8086
                        | CpuidFeature::INTEL186
                        | CpuidFeature::INTEL286
                        | CpuidFeature::INTEL386
                        | CpuidFeature::INTEL486
                        | CpuidFeature::X64
                        | CpuidFeature::CMOV
                        | CpuidFeature::CMPXCHG16B
                        | CpuidFeature::BMI1
                        | CpuidFeature::BMI2
                        | CpuidFeature::LZCNT
                        | CpuidFeature::POPCNT
                        | CpuidFeature::MOVBE
                        | CpuidFeature::ADX
                        | CpuidFeature::MULTIBYTENOP
                        | CpuidFeature::PAUSE
                )
            })
    };
    let mut todo = vec![entry];
    let mut seen = HashSet::new();
    let mut count = 0;
    while let Some(start) = todo.pop() {
        let mut at = start;
        while seen.insert(at) {
            count += 1;
            let Some(code) = bytes(at).filter(|_| count <= SCAN_LIMIT) else { return false };
            let insn = Decoder::with_ip(64, &code, at, DecoderOptions::NONE).decode();
            if insn.is_invalid() || !plain(&insn) {
                return false;
            }
            let target = matches!(insn.op0_kind(), OpKind::NearBranch64).then(|| insn.near_branch_target());
            match insn.flow_control() {
                FlowControl::Next => {}
                FlowControl::ConditionalBranch | FlowControl::Call => match target {
                    Some(t) => todo.push(t),
                    None => return false,
                },
                FlowControl::UnconditionalBranch => match target {
                    Some(t) => {
                        todo.push(t);
                        break;
                    }
                    None => return false,
                },
                // A trap (`ud2`) ends the process; a return goes back to what called.
                FlowControl::Return | FlowControl::Exception => break,
                FlowControl::IndirectBranch
                | FlowControl::IndirectCall
                | FlowControl::Interrupt
                | FlowControl::XbeginXabortXend => return false,
            }
            at = insn.next_ip();
        }
    }
    true
}

/// `jmp rel32`.
pub const JMP: u8 = 0xe9;
/// `call rel32`.
pub const CALL: u8 = 0xe8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displaces_whole_instructions_and_refuses_what_cannot_move() {
        // push rbp; mov rbp, rsp; mov eax, edi; pop rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x89, 0xf8, 0x5d, 0xc3];
        let d = displace(0x1000, &code).unwrap();
        assert_eq!((d.instructions.len(), d.len), (3, 6));
        // lea rax, [rip + 0x100]; ret: RIP-relative, relocated by the encoder.
        let code = [0x48, 0x8d, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3];
        let d = displace(0x1000, &code).unwrap();
        let t = function(0x2000, 0x1000, &d, 1, Stubs { entry: 2, ret: 3 }).unwrap();
        let moved = Decoder::with_ip(64, &t[26..], 0x201a, DecoderOptions::NONE).decode();
        assert_eq!(moved.ip_rel_memory_address(), 0x1107, "still points at the same byte");
        // xor eax, eax; ret: too short.
        assert!(displace(0x1000, &[0x31, 0xc0, 0xc3, 0xcc, 0xcc, 0xcc]).unwrap_err().contains("too short"));
        assert!(displace(0x1000, &[0xc3]).unwrap_err().contains("shorter"));
        // test edi, edi; je +1 (into the patched bytes); nop; ret...
        let code = [0x85, 0xff, 0x74, 0x00, 0x90, 0x90, 0xc3];
        assert!(displace(0x1000, &code).unwrap_err().contains("refers to +0x4"));
        let code = [0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xeb, 0xf9];
        let err = displace(0x1000, &code).unwrap_err();
        assert!(err.contains("refers to +0x1"), "{err}");
    }

    #[test]
    fn vector_free_code_is_general_purpose_instructions_only_and_every_path_is_followed() {
        let at = 0x10_000u64;
        let scan = |code: &[u8]| {
            let mut page = code.to_vec();
            page.resize(4096, 0xcc);
            leaves_vector_registers_alone(at, &mut |p| (p == at).then(|| page.clone()))
        };
        // mov rax, [rdi]; lock xadd [rsi], rax; ret
        assert!(scan(&[0x48, 0x8b, 0x07, 0xf0, 0x48, 0x0f, 0xc1, 0x06, 0xc3]));
        // movaps [rsp], xmm0; ret
        assert!(!scan(&[0x0f, 0x29, 0x04, 0x24, 0xc3]));
        // call rax; ret: an indirect call
        assert!(!scan(&[0xff, 0xd0, 0xc3]));
        // je +1; ret; pxor xmm0, xmm0; ret: the branch target uses xmm0
        assert!(!scan(&[0x74, 0x01, 0xc3, 0x66, 0x0f, 0xef, 0xc0, 0xc3]));
        // call +2; ret; ret; pxor xmm0, xmm0; ret: a direct call into code using xmm0
        assert!(!scan(&[0xe8, 0x02, 0x00, 0x00, 0x00, 0xc3, 0xc3, 0x66, 0x0f, 0xef, 0xc0, 0xc3]));
        // call +1; ret; xor eax, eax; ret: a direct call into plain code
        assert!(scan(&[0xe8, 0x01, 0x00, 0x00, 0x00, 0xc3, 0x31, 0xc0, 0xc3]));
        // fld qword ptr [rdi] (x87, no register operand); ret
        assert!(!scan(&[0xdd, 0x07, 0xc3]));
        // Running off the readable code.
        assert!(!leaves_vector_registers_alone(at, &mut |_| None));
    }

    #[test]
    fn a_function_trampoline_runs_the_stub_then_the_function_or_calls_it_for_its_return() {
        // push rbp; mov rbp, rsp; mov eax, edi; pop rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x89, 0xf8, 0x5d, 0xc3];
        let d = displace(0x1000, &code).unwrap();
        let at = 0x2000;
        let stubs = Stubs { entry: 0xbbbb, ret: 0xcccc };
        let t = function(at, 0x1000, &d, 0xaaaa, stubs).unwrap();
        let word = |addr: u64| {
            let i = (addr - at) as usize;
            u64::from_le_bytes(t[i..i + 8].try_into().unwrap())
        };
        let mut dec = Decoder::with_ip(64, &t, at, DecoderOptions::NONE);
        let mut next = || dec.decode();
        let (a, b) = (next(), next());
        assert_eq!((a.len(), b.len()), (5, 3), "the 8-byte switch: two NOPs");
        let push = next();
        assert_eq!((push.mnemonic(), word(push.ip_rel_memory_address())), (iced_x86::Mnemonic::Push, 0xaaaa));
        let call = next();
        assert_eq!((call.mnemonic(), word(call.ip_rel_memory_address())), (iced_x86::Mnemonic::Call, 0xbbbb));
        let jnz = next();
        assert_eq!(jnz.mnemonic(), iced_x86::Mnemonic::Jne);
        let displaced: Vec<_> = (0..3).map(|_| next()).collect();
        assert_eq!(displaced[0].ip(), at + DISPLACED_AT);
        assert_eq!(displaced.iter().map(Instruction::len).sum::<usize>(), 6);
        let back = next();
        assert_eq!((back.mnemonic(), word(back.ip_rel_memory_address())), (iced_x86::Mnemonic::Jmp, 0x1006));
        let lea = next();
        assert_eq!(lea.ip(), jnz.near_branch_target(), "the return path");
        assert_eq!((lea.mnemonic(), lea.memory_displacement64()), (iced_x86::Mnemonic::Lea, 8));
        let call_fn = next();
        assert_eq!(
            (call_fn.mnemonic(), call_fn.near_branch_target()),
            (iced_x86::Mnemonic::Call, at + DISPLACED_AT)
        );
        let lea = next();
        assert_eq!((lea.mnemonic(), lea.memory_displacement64() as i64), (iced_x86::Mnemonic::Lea, -8));
        let call_ret = next();
        assert_eq!(
            (call_ret.mnemonic(), word(call_ret.ip_rel_memory_address())),
            (iced_x86::Mnemonic::Call, 0xcccc)
        );
        assert_eq!(next().mnemonic(), iced_x86::Mnemonic::Ret);
        // Switched off, the trampoline jumps straight to the displaced instructions.
        let off = Decoder::with_ip(64, &SWITCH_OFF, at, DecoderOptions::NONE).decode();
        assert_eq!(off.near_branch_target(), at + DISPLACED_AT);
    }
}
