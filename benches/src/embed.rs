//! The embedded runtime (the seed's "embedding runtime" row): ns per call of a loaded, verified,
//! compiled program (`xdp_counter`) from Rust, the way `xdp-vm/examples/embed.rs` calls it, beside
//! the one way to call a kernel-loaded program from userspace, a `BPF_PROG_TEST_RUN` per call.
//!
//! The same table answers where a worker's time goes on the engine side: besides one frame run
//! again and again (the replay figure), the program runs over a ring of 64 distinct frames laid
//! out as in a UMEM (4 KiB apart), with an `XdpBuff` made per frame as the AF_XDP worker does,
//! through `JitWorker::run` (the worker's call: its run frame filled in once) and
//! `JitProgram::run_on` (a `JitRunner`: the whole run environment built per call); and over the ring with each frame's packet evicted from the caches before its
//! run (`clflush`), as a frame the kernel has just written from another CPU arrives. The cost of
//! the flush alone is its own row, to subtract.

use dataplane::kernel::{self, KernelProgram};
use dataplane::prog_run;
use xdp_vm::context::{XDP_FRAME_SIZE, XDP_PACKET_HEADROOM, XdpBuff};
use xdp_vm::elf::Object;
use xdp_vm::jit::{JitProgram, JitRunner, JitWorker};
use xdp_vm::{Program, Xdp, create_maps};

use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, clock, cpu_ns_per};

/// The embedded-runtime comparison.
#[derive(Debug)]
pub struct Embed;

const FRAMES: usize = 64;
const KERNEL: &str = "kernel: one BPF_PROG_TEST_RUN per call";

mod cache {
    #![expect(unsafe_code, reason = "clflush, to model a frame another CPU just wrote")]

    /// Evicts the cache lines of `bytes` from every cache level.
    pub fn flush(bytes: &[u8]) {
        for line in bytes.chunks(64) {
            // SAFETY: `clflush` on an address inside a live slice; x86-64 always has SSE2.
            unsafe { core::arch::x86_64::_mm_clflush(line.as_ptr()) };
        }
        // SAFETY: a fence, no memory operands.
        unsafe { core::arch::x86_64::_mm_mfence() };
    }
}

impl Comparison for Embed {
    fn name(&self) -> &'static str {
        "embed"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let calls: u64 = mode.pick(6_400, 3_200_000);
        let kernel_calls: u32 = mode.pick(200, 100_000);
        let rounds = mode.pick(3, 7);
        kernel::pin_current_thread(0)?;
        let path = crate::object("xdp_counter");
        let obj =
            Object::parse(&std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)?;
        let spec = obj.program(Some("xdp_counter"))?;
        let kern = KernelProgram::load(&obj, spec)?;
        let maps = create_maps(&obj, prog_run::cpu_slots())?;
        let prog = Program::<Xdp>::new(spec, &maps)?;
        let jit = std::sync::Arc::new(JitProgram::compile(&prog)?);
        let mut worker = JitWorker::new(jit.clone(), 0);
        let packet = pktgen::craft::icmp_echo();

        let mut one = vec![0u8; XDP_FRAME_SIZE];
        let mut one_buff = XdpBuff::load(&mut one, &packet)?;
        one_buff.ingress_ifindex = 1;
        let mut umem = vec![0u8; FRAMES * XDP_FRAME_SIZE];
        for chunk in umem.chunks_mut(XDP_FRAME_SIZE) {
            chunk[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + packet.len()].copy_from_slice(&packet);
        }
        let mut runner = JitRunner::new();
        let len = packet.len();

        let names = [
            "ours: JitWorker::run, one frame",
            "ours: XdpBuff::new + JitWorker::run, ring of 64 frames (the worker's call)",
            "ours: XdpBuff::new + JitProgram::run_on, ring of 64 frames",
            "ours: as the worker's call, each frame flushed from the caches first",
            "clflush of a frame alone (to subtract)",
            KERNEL,
        ];
        let mut fault = None;
        let samples = alternate(rounds, names.len(), |_, c| {
            let mut i = 0usize;
            let mut next = || {
                i = (i + 1) % FRAMES;
                i
            };
            Ok(match c {
                0 => cpu_ns_per(calls, || {
                    if let Err(e) = worker.run(&mut one_buff) {
                        fault = Some(e);
                    }
                }),
                1..=3 => cpu_ns_per(calls, || {
                    let chunk = &mut umem[next() * XDP_FRAME_SIZE..][..XDP_FRAME_SIZE];
                    if c == 3 {
                        cache::flush(&chunk[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + len]);
                    }
                    let Ok(mut buff) = XdpBuff::new(chunk, XDP_PACKET_HEADROOM, len) else { return };
                    buff.ingress_ifindex = 1;
                    let r =
                        if c == 2 { jit.run_on(&mut runner, &mut buff, 0) } else { worker.run(&mut buff) };
                    if let Err(e) = r {
                        fault = Some(e);
                    }
                }),
                4 => cpu_ns_per(calls, || {
                    let chunk = &umem[next() * XDP_FRAME_SIZE..][..XDP_FRAME_SIZE];
                    cache::flush(&chunk[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + len]);
                }),
                _ => {
                    let t = clock::thread_cpu_ns();
                    for _ in 0..kernel_calls {
                        kern.test_run(&packet, 1)?;
                    }
                    (clock::thread_cpu_ns() - t) as f64 / f64::from(kernel_calls)
                }
            })
        })?;
        if let Some(f) = fault {
            anyhow::bail!("xdp_counter faulted: {f}");
        }
        let cells = names.iter().zip(samples).map(|(n, s)| Cell::new(n, s)).collect();
        Ok(vec![Table {
            id: "embed".into(),
            title: "Embedded runtime: ns per call of xdp_counter from Rust".into(),
            method: format!(
                "One thread on CPU 0, {calls} calls per round ({kernel_calls} for the kernel), {rounds} rounds \
                 alternating; thread CPU time per call. Reference: the kernel, called once per packet through \
                 `BPF_PROG_TEST_RUN` (syscall included: what calling a kernel-loaded program from userspace costs)."
            ),
            row_header: "program".into(),
            unit: "ns/call".into(),
            better: Better::Lower,
            rows: vec![Row { label: "xdp_counter".into(), reference: KERNEL.into(), cells }],
        }])
    }
}
