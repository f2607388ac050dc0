//! The eBPF instruction encoding (RFC 9669), as raw 8-byte slots.
//!
//! An [`Insn`] is one 64-bit slot exactly as the kernel's `struct bpf_insn` lays it out; the wide
//! `lddw` instruction occupies two slots, the second carrying the upper 32 bits of the immediate in
//! its `imm`. Everything here is pure data: no interpretation of what an instruction means beyond
//! field extraction and the constants that name the fields.

/// Size in bytes of one instruction slot.
pub const INSN_SIZE: usize = 8;

// Instruction classes (low 3 bits of the opcode).
pub const BPF_LD: u8 = 0x00;
pub const BPF_LDX: u8 = 0x01;
pub const BPF_ST: u8 = 0x02;
pub const BPF_STX: u8 = 0x03;
pub const BPF_ALU: u8 = 0x04;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_JMP32: u8 = 0x06;
pub const BPF_ALU64: u8 = 0x07;

// Size modifiers for load/store (bits 3-4).
pub const BPF_W: u8 = 0x00;
pub const BPF_H: u8 = 0x08;
pub const BPF_B: u8 = 0x10;
pub const BPF_DW: u8 = 0x18;

// Mode modifiers for load/store (bits 5-7).
pub const BPF_IMM: u8 = 0x00;
pub const BPF_ABS: u8 = 0x20;
pub const BPF_IND: u8 = 0x40;
pub const BPF_MEM: u8 = 0x60;
pub const BPF_MEMSX: u8 = 0x80;
pub const BPF_ATOMIC: u8 = 0xc0;

// Source modifier (bit 3) for ALU and JMP.
pub const BPF_K: u8 = 0x00;
pub const BPF_X: u8 = 0x08;

// ALU operations (bits 4-7).
pub const BPF_ADD: u8 = 0x00;
pub const BPF_SUB: u8 = 0x10;
pub const BPF_MUL: u8 = 0x20;
pub const BPF_DIV: u8 = 0x30;
pub const BPF_OR: u8 = 0x40;
pub const BPF_AND: u8 = 0x50;
pub const BPF_LSH: u8 = 0x60;
pub const BPF_RSH: u8 = 0x70;
pub const BPF_NEG: u8 = 0x80;
pub const BPF_MOD: u8 = 0x90;
pub const BPF_XOR: u8 = 0xa0;
pub const BPF_MOV: u8 = 0xb0;
pub const BPF_ARSH: u8 = 0xc0;
pub const BPF_END: u8 = 0xd0;

// JMP operations (bits 4-7).
pub const BPF_JA: u8 = 0x00;
pub const BPF_JEQ: u8 = 0x10;
pub const BPF_JGT: u8 = 0x20;
pub const BPF_JGE: u8 = 0x30;
pub const BPF_JSET: u8 = 0x40;
pub const BPF_JNE: u8 = 0x50;
pub const BPF_JSGT: u8 = 0x60;
pub const BPF_JSGE: u8 = 0x70;
pub const BPF_CALL: u8 = 0x80;
pub const BPF_EXIT: u8 = 0x90;
pub const BPF_JLT: u8 = 0xa0;
pub const BPF_JLE: u8 = 0xb0;
pub const BPF_JSLT: u8 = 0xc0;
pub const BPF_JSLE: u8 = 0xd0;

// Byte-swap direction (the source bit of BPF_END): to little or big endian.
pub const BPF_TO_LE: u8 = 0x00;
pub const BPF_TO_BE: u8 = 0x08;

// Atomic operations (the `imm` of a BPF_ATOMIC instruction).
pub const BPF_FETCH: i32 = 0x01;
pub const BPF_XCHG: i32 = 0xe0 | BPF_FETCH;
pub const BPF_CMPXCHG: i32 = 0xf0 | BPF_FETCH;

// `src_reg` values of a BPF_CALL.
/// Call of a helper function by id (`imm`).
pub const CALL_HELPER: u8 = 0;
/// bpf-to-bpf call: `imm` is the offset, in slots, from the next instruction.
pub const BPF_PSEUDO_CALL: u8 = 1;
/// Call of a kernel function by BTF id (kfunc): unsupported here.
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

// `src_reg` values of a `lddw` (BPF_LD | BPF_IMM | BPF_DW).
/// `imm` is a map file descriptor (kernel only).
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `imm` is a map file descriptor, the second slot's `imm` an offset into its value (kernel only).
pub const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `imm` is an index into the program's map table: how the loader hands programs to engines.
pub const BPF_PSEUDO_MAP_IDX: u8 = 5;
/// `imm` is an index into the map table, the second slot's `imm` an offset into value 0.
pub const BPF_PSEUDO_MAP_IDX_VALUE: u8 = 6;
/// `imm` is the offset of a subprogram (a function pointer for callbacks).
pub const BPF_PSEUDO_FUNC: u8 = 4;

/// Registers: r0..r10; r10 is the read-only frame pointer.
pub const NUM_REGS: usize = 11;
/// The frame pointer register.
pub const REG_FP: u8 = 10;
/// Bytes of stack per frame.
pub const STACK_SIZE: usize = 512;
/// Call frames the kernel allows (`MAX_CALL_FRAMES`): the main program plus seven nested calls.
pub const MAX_CALL_FRAMES: usize = 8;

/// One instruction slot, field for field as `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    pub code: u8,
    /// Destination register (low nibble of byte 1).
    pub dst: u8,
    /// Source register (high nibble of byte 1).
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Builds an instruction from its fields.
    #[must_use]
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self { code, dst, src, off, imm }
    }

    /// Decodes one slot (little-endian, as every object here is).
    #[must_use]
    pub fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes one slot.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [self.code, (self.dst & 0x0f) | (self.src << 4), off[0], off[1], imm[0], imm[1], imm[2], imm[3]]
    }

    /// The instruction class (`code & 0x07`).
    #[must_use]
    pub const fn class(self) -> u8 {
        self.code & 0x07
    }

    /// True for the first slot of the 16-byte `lddw`.
    #[must_use]
    pub const fn is_lddw(self) -> bool {
        self.code == (BPF_LD | BPF_IMM | BPF_DW)
    }

    /// True for a call of a helper function by id.
    #[must_use]
    pub const fn is_helper_call(self) -> bool {
        self.code == (BPF_JMP | BPF_CALL) && self.src == CALL_HELPER
    }

    /// True for a bpf-to-bpf call.
    #[must_use]
    pub const fn is_pseudo_call(self) -> bool {
        self.code == (BPF_JMP | BPF_CALL) && self.src == BPF_PSEUDO_CALL
    }
}

/// Decodes a byte slice of whole slots; the caller checks that the length is a multiple of 8.
#[must_use]
pub fn decode_all(bytes: &[u8]) -> Vec<Insn> {
    bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| Insn::from_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// Encodes instructions back to bytes.
#[must_use]
pub fn encode_all(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        // r1 = *(u32 *)(r2 - 4)  (ldxw)
        let bytes = [0x61, 0x21, 0xfc, 0xff, 0x78, 0x56, 0x34, 0x12];
        let insn = Insn::from_bytes(bytes);
        assert_eq!(insn.code, BPF_LDX | BPF_MEM | BPF_W);
        assert_eq!((insn.dst, insn.src, insn.off, insn.imm), (1, 2, -4, 0x1234_5678));
        assert_eq!(insn.to_bytes(), bytes);
        assert_eq!(insn.class(), BPF_LDX);
    }

    #[test]
    fn recognizes_lddw_and_calls() {
        assert!(Insn::new(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 3).is_lddw());
        assert!(Insn::new(0x85, 0, 0, 0, 1).is_helper_call());
        assert!(Insn::new(0x85, 0, 1, 0, 7).is_pseudo_call());
        assert!(!Insn::new(0x85, 0, 1, 0, 7).is_helper_call());
    }
}
