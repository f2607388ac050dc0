//! rbpf 0.4.1 as a peer: its interpreter and its x86-64 JIT, on bytecode our loader relocated
//! (map references become the addresses of our `Map`s), with map helpers registered that call
//! our map store — the same store our engines use.
//!
//! rbpf hands a program its context as raw memory (`EbpfVmRaw`): here a `struct xdp_md` whose
//! `u32` `data` and `data_end` hold the packet's real address, which therefore lives in memory
//! mapped below 4 GiB (`MAP_32BIT`). rbpf has no `xdp_md` rewrite, no atomics (its verifier
//! refuses `XADD`, its JIT has it as `unimplemented!()`) and only the helpers registered here
//! (`map_lookup_elem`, `map_update_elem`).
#![expect(
    unsafe_code,
    reason = "rbpf's JIT entry, helpers that dereference our map pointers, a MAP_32BIT mapping"
)]

use std::sync::Arc;

use maps::Map;
use xdp_vm::Program;
use xdp_vm::context::{XDP_FRAME_SIZE, XDP_PACKET_HEADROOM, Xdp};
use xdp_vm::insn::{Insn, encode_all};

/// A packet buffer below 4 GiB, so that a `u32` `xdp_md` field can hold its address.
pub struct LowFrame {
    ptr: *mut u8,
    len: usize,
}

impl LowFrame {
    /// A zeroed `XDP_FRAME_SIZE` mapping below 4 GiB with `packet` after the headroom.
    ///
    /// # Errors
    /// When the kernel has no such memory, or the packet does not fit.
    pub fn new(packet: &[u8]) -> anyhow::Result<Self> {
        let len = XDP_FRAME_SIZE;
        anyhow::ensure!(XDP_PACKET_HEADROOM + packet.len() <= len, "packet too long");
        // SAFETY: an anonymous private mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        anyhow::ensure!(ptr != libc::MAP_FAILED, "mmap MAP_32BIT: {}", std::io::Error::last_os_error());
        let frame = Self { ptr: ptr.cast(), len };
        // SAFETY: `ptr` is a fresh mapping of `len` writable bytes, owned by `frame`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(frame.ptr, len) };
        bytes[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + packet.len()].copy_from_slice(packet);
        Ok(frame)
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl std::fmt::Debug for LowFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LowFrame").field("addr", &self.ptr).field("len", &self.len).finish()
    }
}

impl Drop for LowFrame {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once; nothing borrows it any more (`&mut self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `bpf_map_lookup_elem(map, key)`: `map` is the address of one of our `Map`s.
fn lookup(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the relocated program only passes map addresses `Rbpf` holds alive (see
    // `relocate`), and a key pointer into rbpf's stack of `key_size` bytes.
    let (m, k) = unsafe {
        let m = &*(map as usize as *const Map);
        (m, std::slice::from_raw_parts(key as usize as *const u8, m.def().key_size as usize))
    };
    m.lookup(k, 0).map_or(0, |p| p.as_ptr() as u64)
}

/// `bpf_map_update_elem(map, key, value, flags)`.
fn update(map: u64, key: u64, value: u64, flags: u64, _: u64) -> u64 {
    // SAFETY: as in `lookup`; the value pointer covers `value_size` bytes of rbpf's stack.
    let (m, k, v) = unsafe {
        let m = &*(map as usize as *const Map);
        let k = std::slice::from_raw_parts(key as usize as *const u8, m.def().key_size as usize);
        let v = std::slice::from_raw_parts(value as usize as *const u8, m.def().value_size as usize);
        (m, k, v)
    };
    m.update(k, v, flags, 0).map_or_else(|e| e.to_ret(), |()| 0)
}

// rbpf 0.4.1's JIT calls helpers with the stack 8 bytes off the 16-byte alignment the x86-64
// ABI promises at a call (its prologue makes a `call` into the program body after reserving
// the eBPF stack, and helper calls push nothing to compensate). Rust code may rely on that
// alignment (aligned SSE spills: our hash lookup faulted on a `movaps` to the stack). So the
// JIT gets these shims, which align the stack and call the helpers as C functions; rbpf's
// interpreter calls the Rust functions directly.
extern "C" fn lookup_c(map: u64, key: u64, a: u64, b: u64, c: u64) -> u64 {
    lookup(map, key, a, b, c)
}

extern "C" fn update_c(map: u64, key: u64, value: u64, flags: u64, c: u64) -> u64 {
    update(map, key, value, flags, c)
}

std::arch::global_asm!(
    ".pushsection .text.dataplane_rbpf_shims,\"ax\",@progbits",
    ".p2align 4",
    ".globl dataplane_rbpf_lookup_aligned",
    "dataplane_rbpf_lookup_aligned:",
    "push rbp",
    "mov rbp, rsp",
    "and rsp, -16",
    "call {lookup}",
    "leave",
    "ret",
    ".p2align 4",
    ".globl dataplane_rbpf_update_aligned",
    "dataplane_rbpf_update_aligned:",
    "push rbp",
    "mov rbp, rsp",
    "and rsp, -16",
    "call {update}",
    "leave",
    "ret",
    ".popsection",
    lookup = sym lookup_c,
    update = sym update_c,
);

unsafe extern "C" {
    fn dataplane_rbpf_lookup_aligned(map: u64, key: u64, a: u64, b: u64, c: u64) -> u64;
    fn dataplane_rbpf_update_aligned(map: u64, key: u64, value: u64, flags: u64, c: u64) -> u64;
}

/// The shim at `f` as the helper type rbpf stores. rbpf's JIT only takes its address and
/// calls it with the C convention (arguments in rdi, rsi, rdx, rcx, r8; result in rax), which
/// is what the shim implements; it is never called through this Rust-ABI pointer.
fn jit_helper(f: unsafe extern "C" fn(u64, u64, u64, u64, u64) -> u64) -> rbpf::ebpf::Helper {
    // SAFETY: both are plain code pointers of the same size; see above for how it is called.
    unsafe {
        std::mem::transmute::<unsafe extern "C" fn(u64, u64, u64, u64, u64) -> u64, rbpf::ebpf::Helper>(f)
    }
}

/// A program relocated for rbpf: our loader's bound instructions with each map handle replaced
/// by the map's address.
fn relocate(prog: &Program<Xdp>) -> Vec<u8> {
    let maps = prog.maps();
    let mut insns: Vec<Insn> = prog.insns().to_vec();
    let mut pc = 0;
    while pc < insns.len() {
        if insns[pc].is_lddw() {
            let value = u64::from(insns[pc].imm as u32) | u64::from(insns[pc + 1].imm as u32) << 32;
            // Our loader binds map references to `tag | index`.
            if value >> 32 == 0xffff_f0f0 && (value as u32 as usize) < maps.len() {
                let addr = Arc::as_ptr(&maps[value as u32 as usize]) as u64;
                insns[pc].imm = addr as u32 as i32;
                insns[pc + 1].imm = (addr >> 32) as u32 as i32;
            }
            pc += 2;
        } else {
            pc += 1;
        }
    }
    encode_all(&insns)
}

/// rbpf's interpreter and JIT on one program, with its maps and a frame.
pub struct Rbpf {
    _bytes: &'static [u8],
    vm: rbpf::EbpfVmRaw<'static>,
    _maps: Vec<Arc<Map>>,
    frame: LowFrame,
    ctx: Box<[u32; 6]>,
}

impl std::fmt::Debug for Rbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rbpf").field("frame", &self.frame).finish_non_exhaustive()
    }
}

impl Rbpf {
    /// Relocates `prog` for rbpf, registers the helpers, the packet and the map values as
    /// memory its interpreter may touch, and JIT-compiles it.
    ///
    /// # Errors
    /// rbpf's verifier or JIT refusing the program.
    pub fn new(prog: &Program<Xdp>, packet: &[u8]) -> anyhow::Result<Self> {
        // rbpf borrows the bytecode for the VM's lifetime; one leak per bench row.
        let bytes: &'static [u8] = Box::leak(relocate(prog).into_boxed_slice());
        let mut vm = rbpf::EbpfVmRaw::new(Some(bytes)).map_err(|e| anyhow::anyhow!("rbpf: {e}"))?;
        // The JIT embeds the helpers' addresses when it compiles: it gets the aligning shims.
        vm.register_helper(1, jit_helper(dataplane_rbpf_lookup_aligned))
            .map_err(|e| anyhow::anyhow!("rbpf: {e}"))?;
        vm.register_helper(2, jit_helper(dataplane_rbpf_update_aligned))
            .map_err(|e| anyhow::anyhow!("rbpf: {e}"))?;
        let frame = LowFrame::new(packet)?;
        vm.register_allowed_memory(frame.addr()..frame.addr() + frame.len as u64);
        for m in prog.maps() {
            if let Some(w) = m.hash_walk() {
                let end = w.values + w.slots * w.slot_stride;
                vm.register_allowed_memory(w.values as u64..end as u64);
            }
        }
        vm.jit_compile().map_err(|e| anyhow::anyhow!("rbpf jit: {e}"))?;
        // The interpreter looks helpers up at each call: it gets the Rust functions.
        vm.register_helper(1, lookup).map_err(|e| anyhow::anyhow!("rbpf: {e}"))?;
        vm.register_helper(2, update).map_err(|e| anyhow::anyhow!("rbpf: {e}"))?;
        let data = frame.addr() + XDP_PACKET_HEADROOM as u64;
        let ctx = Box::new([data as u32, (data + packet.len() as u64) as u32, data as u32, 1, 0, 0]);
        Ok(Self { _bytes: bytes, vm, _maps: prog.maps().to_vec(), frame, ctx })
    }

    fn ctx(&mut self) -> &'static mut [u8] {
        // SAFETY: the context lives in `self.ctx` (a box, so it never moves) for as long as
        // `self`; rbpf's signature wants the borrow for the program's lifetime, but it only uses
        // it during the call, and each call takes a fresh `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ctx.as_mut_ptr().cast(), 24) }
    }

    /// One run in rbpf's interpreter.
    ///
    /// # Errors
    /// rbpf's run-time errors (an access outside the registered memory).
    pub fn interpret(&mut self) -> anyhow::Result<u64> {
        let ctx = self.ctx();
        self.vm.execute_program(ctx).map_err(|e| anyhow::anyhow!("rbpf: {e}"))
    }

    /// One run of rbpf's JIT code.
    ///
    /// # Errors
    /// None in practice (rbpf returns `Ok` from compiled code).
    pub fn jit(&mut self) -> anyhow::Result<u64> {
        let ctx = self.ctx();
        // SAFETY: compiled by `jit_compile` in `new`; the program reads the context and writes
        // the packet through `data`/`data_end`, which point into `self.frame`, alive for the
        // call; map values come from our live maps.
        unsafe { self.vm.execute_program_jit(ctx) }.map_err(|e| anyhow::anyhow!("rbpf: {e}"))
    }

    /// The frame's packet bytes (`len` of them).
    #[must_use]
    pub fn packet(&self, len: usize) -> &[u8] {
        // SAFETY: the mapping is `self.frame.len` bytes, alive while `self` is borrowed.
        let all = unsafe { std::slice::from_raw_parts(self.frame.ptr, self.frame.len) };
        &all[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + len]
    }
}
