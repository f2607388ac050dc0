//! Programs whose time goes into the helpers this project added for the map types beyond
//! lookup/update/delete — tail calls, `bpf_redirect_map`, queue and stack — run by our
//! interpreter, our JIT and the kernel (`BPF_PROG_TEST_RUN`) on the same frame, alternating.
//!
//! Each row loads one object of `dataplane/tests/bpf/` on every side the way `prog run` and
//! libbpf do (all its XDP programs against one set of maps; prog arrays filled from the
//! object's `.values` initialiser: program fds in the kernel, program ids here) and fills any
//! devmap with the loopback interface.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use dataplane::kernel::{self, KernelProgram};
use dataplane::prog_run;
use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
use xdp_vm::elf::{Object, ProgramKind, ProgramSpec, SlotTarget};
use xdp_vm::jit::{JitProgram, JitWorker};
use xdp_vm::{Interpreter, Xdp, create_maps};

use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, clock, cpu_ns_per};

/// The helper-heavy programs.
#[derive(Debug)]
pub struct Helpers;

const INTERP: &str = "ours, interpreter";
const JIT: &str = "ours, JIT";
const KERNEL: &str = "kernel";

impl Comparison for Helpers {
    fn name(&self) -> &'static str {
        "helpers"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let repeat: u32 = mode.pick(5_000, 1_000_000);
        let rounds = mode.pick(3, 7);
        kernel::pin_current_thread(0)?;
        let mut slot1 = vec![0x11u8; 60];
        slot1[14] = 1;
        let mut redirect = vec![0xaau8; 14];
        redirect.extend([1u8, 0]);
        redirect.extend(1u64.to_le_bytes());
        redirect.extend(0u64.to_le_bytes());
        redirect.extend([0u8; 28]);
        let cases: [(&str, &str, &str, Vec<u8>); 4] = [
            ("tail_call", "tail_count", "tail_count: 34 programs, 33 tail calls per run", vec![0x11; 60]),
            ("tail_call", "tail_entry", "tail_entry: one tail call to tail_pass", slot1),
            ("redirect", "redirect", "bpf_redirect_map on a DEVMAP hit", redirect),
            ("queue_stack", "queue_stack", "queue and stack push/pop/peek", pktgen::craft::icmp_echo()),
        ];
        let mut rows = Vec::new();
        for (object, program, label, frame) in cases {
            rows.push(row(object, program, label, &frame, repeat, rounds)?);
        }
        Ok(vec![Table {
            id: "helpers".into(),
            title: "Tail calls, redirects, queues: ns per program run".into(),
            method: format!(
                "Programs of dataplane/tests/bpf/, every XDP program of the object loaded against one set of maps and \
                 prog arrays filled from the object's initialiser; {repeat} runs per batch on the same frame, {rounds} \
                 rounds alternating the contestants, pinned to CPU 0; thread CPU time per run (the kernel: around \
                 its `BPF_PROG_TEST_RUN` syscall). Reference: the kernel."
            ),
            row_header: "program".into(),
            unit: "ns/run".into(),
            better: Better::Lower,
            rows,
        }])
    }
}

fn row(
    object: &str,
    program: &str,
    label: &str,
    frame: &[u8],
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<Row> {
    let path = std::path::Path::new(dataplane::BPF_OBJ_DIR).join(format!("{object}.o"));
    let bytes = std::fs::read(&path)?;
    let (obj, extras) = Object::parse_with_extras(&bytes)?;
    let specs: Vec<&ProgramSpec> = obj.programs.iter().filter(|p| p.kind == ProgramKind::Xdp).collect();
    let index =
        specs.iter().position(|p| p.name == program).ok_or_else(|| anyhow::anyhow!("no {program}"))?;
    let lo = 1u32.to_le_bytes();

    // The kernel: one set of maps, prog arrays with fds, devmaps with the loopback device.
    let kern = KernelProgram::load_all(&obj, &specs)?;
    for (m, slots) in obj.maps.iter().zip(&extras.slots) {
        let k = kern[0].map(&m.name).ok_or_else(|| anyhow::anyhow!("no kernel map {}", m.name))?;
        for s in slots {
            if let SlotTarget::Program(name) = &s.target {
                let id =
                    specs.iter().position(|p| &p.name == name).ok_or_else(|| anyhow::anyhow!("no {name}"))?;
                k.update(&s.index.to_le_bytes(), &kern[id].as_fd().as_raw_fd().to_le_bytes(), 0)?;
            }
        }
        if m.def.map_type == maps::map_type::DEVMAP {
            k.update(&1u32.to_le_bytes(), &lo, 0)?;
        }
    }

    // Ours, twice (each engine its own maps): as `prog run` loads it.
    let slots = prog_run::cpu_slots();
    let ours = || -> anyhow::Result<(Vec<xdp_vm::Program<Xdp>>, usize)> {
        let maps = create_maps(&obj, slots)?;
        let loaded = prog_run::load_linked(&path, &obj, &extras, &maps, specs[index], true)?;
        for m in &maps {
            if m.def().map_type == maps::map_type::DEVMAP {
                m.update_user(&1u32.to_le_bytes(), &lo, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(loaded)
    };
    let (interp_progs, at) = ours()?;
    let (jit_progs, _) = ours()?;
    let jits: Vec<Arc<JitProgram<Xdp>>> =
        jit_progs.iter().map(|p| JitProgram::compile(p).map(Arc::new)).collect::<Result<_, _>>()?;
    xdp_vm::jit::link_tail_calls(&jits)?;
    let (interp_prog, jit) = (&interp_progs[at], &jits[at]);

    let mut interp_frame = vec![0u8; XDP_FRAME_SIZE];
    let mut interp_buff = XdpBuff::load(&mut interp_frame, frame)?;
    interp_buff.ingress_ifindex = 1;
    let mut jit_frame = vec![0u8; XDP_FRAME_SIZE];
    let mut jit_buff = XdpBuff::load(&mut jit_frame, frame)?;
    jit_buff.ingress_ifindex = 1;
    let mut vm = Interpreter::new();
    let mut jit = JitWorker::new(jit.clone(), 0);
    let names = [INTERP, JIT, KERNEL];
    let samples = alternate(rounds, names.len(), |_, c| {
        let mut fault = None;
        let ns = match names[c] {
            INTERP => cpu_ns_per(u64::from(repeat), || {
                if let Err(e) = vm.run(interp_prog, &mut interp_buff, 0) {
                    fault = Some(e);
                }
            }),
            JIT => cpu_ns_per(u64::from(repeat), || {
                if let Err(e) = jit.run(&mut jit_buff) {
                    fault = Some(e);
                }
            }),
            _ => {
                let c0 = clock::thread_cpu_ns();
                kern[index].test_run(frame, repeat)?;
                (clock::thread_cpu_ns() - c0) as f64 / f64::from(repeat)
            }
        };
        if let Some(f) = fault {
            anyhow::bail!("{program} faulted: {f}");
        }
        Ok(ns)
    })?;
    let cells = names.iter().zip(samples).map(|(n, s)| Cell::new(n, s)).collect();
    Ok(Row { label: label.to_string(), reference: KERNEL.into(), cells })
}
