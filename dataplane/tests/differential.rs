//! Differential tests: every XDP program of the project, over a table of frames, run by the
//! kernel (`BPF_PROG_TEST_RUN`) and by both our engines, the interpreter and the JIT — the same
//! return value, the same output bytes and the same contents in every map, after one run and
//! after several.
//!
//! Each program is loaded once on each side (each engine with its own maps) and fed the whole
//! frame table in order, so map state carries over from frame to frame identically on all. The thread is pinned to CPU 0,
//! the CPU the kernel then runs the program on, and our run uses slot 0.

use std::path::{Path, PathBuf};

use dataplane::kernel::{self, KernelProgram};
use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
use xdp_vm::elf::{Object, ProgramKind, ProgramSpec};
use xdp_vm::jit::JitProgram;
use xdp_vm::{Interpreter, Program, Redirect, Xdp, create_maps};

const REPEATS: [u32; 3] = [1, 4, 3];

fn objects() -> Vec<PathBuf> {
    let dir = Path::new(env!("BPF_OBJ_DIR"));
    let mut objs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the build wrote target/bpf")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        // loader_*.o are parser fixtures (map-in-map, bpf_loop, uprobes...), not all runnable.
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("loader_")))
        .collect();
    objs.sort();
    assert!(objs.len() >= 2, "expected the project's eBPF objects in {}", dir.display());
    objs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Interp,
    Jit,
}

const ENGINES: [Engine; 2] = [Engine::Interp, Engine::Jit];

enum Vm {
    Interp(Box<Interpreter>),
    Jit(JitProgram<Xdp>),
}

struct Ours {
    maps: Vec<std::sync::Arc<maps::Map>>,
    prog: Program<Xdp>,
    vm: Vm,
}

impl Ours {
    fn load(obj: &Object, spec: &ProgramSpec, slots: usize, engine: Engine) -> Self {
        let maps = create_maps(obj, slots).expect("our map store creates the object's maps");
        let prog = Program::<Xdp>::new(spec, &maps).expect("our loader accepts what the kernel accepts");
        let vm = match engine {
            Engine::Interp => Vm::Interp(Box::new(Interpreter::new())),
            Engine::Jit => {
                Vm::Jit(JitProgram::compile(&prog).unwrap_or_else(|e| panic!("{}: {e}", spec.name)))
            }
        };
        Self { maps, prog, vm }
    }

    /// Runs like BPF_PROG_TEST_RUN: `repeat` runs on one frame; `None` when the frame is refused.
    fn test_run(&mut self, data: &[u8], repeat: u32) -> Option<(u32, Vec<u8>)> {
        self.test_run_redirect(data, repeat).map(|(ret, out, _)| (ret, out))
    }

    /// [`Ours::test_run`], with the redirect target the runs left in the frame's state.
    fn test_run_redirect(&mut self, data: &[u8], repeat: u32) -> Option<(u32, Vec<u8>, Option<Redirect>)> {
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let mut buff = XdpBuff::load(&mut frame, data).ok()?;
        buff.ingress_ifindex = 1;
        let mut ret = 0;
        for _ in 0..repeat.max(1) {
            let r = match &mut self.vm {
                Vm::Interp(vm) => vm.run(&self.prog, &mut buff, 0),
                Vm::Jit(jit) => jit.run(&mut buff, 0),
            };
            ret = r.unwrap_or_else(|f| panic!("{}: fault {f}", self.prog.name()));
        }
        Some((ret as u32, buff.meta_and_packet().to_vec(), buff.redirect()))
    }
}

/// One map's contents as the differential tests compare them.
#[derive(Debug, PartialEq, Eq)]
enum Contents {
    /// Every entry, sorted by key.
    Entries(Vec<maps::Entry>),
    /// A queue's elements oldest first, a stack's newest first, a ring buffer's records in order.
    Sequence(Vec<Vec<u8>>),
    /// Not readable from userspace: the kernel refuses lookups in XSKMAPs (`EOPNOTSUPP`) and
    /// perf event arrays, and a program array's values are kernel program ids. Those maps are
    /// checked by their own tests.
    Skipped,
}

/// The kernel's maps after a run. Queues and stacks are read by popping every element and
/// pushing them back; ring buffers are drained (records consumed), so take one snapshot per run
/// and compare each engine with it ([`our_contents`] drains ours the same way).
fn kernel_contents(kern: &KernelProgram) -> Vec<(String, Contents)> {
    use maps::map_type as t;
    kern.maps()
        .iter()
        .map(|k| {
            let c = match k.def().map_type {
                t::XSKMAP | t::PERF_EVENT_ARRAY | t::PROG_ARRAY => Contents::Skipped,
                t::RINGBUF => {
                    Contents::Sequence(k.ringbuf_drain().expect("reading the kernel's ring buffer"))
                }
                t::QUEUE | t::STACK => {
                    let mut seq = Vec::new();
                    while let Some(v) = k.lookup_and_delete(&[]).expect("kernel pop") {
                        seq.push(v.concat());
                    }
                    push_back(&seq, k.def().map_type == t::STACK, |v| {
                        k.update(&[], v, 0).expect("kernel push");
                    });
                    Contents::Sequence(seq)
                }
                _ => Contents::Entries(
                    k.entries().unwrap_or_else(|e| panic!("dumping kernel map {}: {e}", k.name())),
                ),
            };
            (k.name().to_string(), c)
        })
        .collect()
}

/// Restores popped elements: a queue gets them back oldest first, a stack oldest (last popped)
/// first.
fn push_back(seq: &[Vec<u8>], stack: bool, mut push: impl FnMut(&[u8])) {
    if stack {
        seq.iter().rev().for_each(|v| push(v));
    } else {
        seq.iter().for_each(|v| push(v));
    }
}

/// Our maps, read as [`kernel_contents`] reads the kernel's.
fn our_contents(ours: &Ours) -> Vec<(String, Contents)> {
    use maps::map_type as t;
    ours.maps
        .iter()
        .map(|m| {
            let c = match m.def().map_type {
                t::XSKMAP | t::PERF_EVENT_ARRAY | t::PROG_ARRAY => Contents::Skipped,
                t::RINGBUF => {
                    let mut seq = Vec::new();
                    m.ringbuf_consume(|r| seq.push(r.to_vec()));
                    Contents::Sequence(seq)
                }
                t::QUEUE | t::STACK => {
                    let mut seq = Vec::new();
                    let mut buf = vec![0u8; m.def().value_size as usize];
                    while m.pop(&mut buf).is_ok() {
                        seq.push(buf.clone());
                    }
                    push_back(&seq, m.def().map_type == t::STACK, |v| m.push(v, 0).expect("our push"));
                    Contents::Sequence(seq)
                }
                _ => {
                    let mut e = m.entries();
                    e.sort();
                    Contents::Entries(e)
                }
            };
            (m.name().to_string(), c)
        })
        .collect()
}

fn compare_contents(ctx: &str, want: &[(String, Contents)], ours: &Ours) {
    let got = our_contents(ours);
    assert_eq!(got.len(), want.len());
    for ((name, g), (kname, w)) in got.iter().zip(want) {
        assert_eq!(name, kname);
        assert_eq!(g, w, "{ctx}: map {name} differs from the kernel's");
    }
}

fn compare_maps(ctx: &str, kern: &KernelProgram, ours: &Ours) {
    compare_contents(ctx, &kernel_contents(kern), ours);
}

#[test]
fn every_program_matches_the_kernel_on_every_frame() {
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let slots = kernel::possible_cpus().expect("possible CPUs");
    let frames = pktgen::craft::test_frames();
    let mut programs = 0;
    let mut runs = 0;
    let mut sequences = 0;
    for path in objects() {
        let bytes = std::fs::read(&path).expect("readable object");
        let obj = Object::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for spec in obj.programs.iter().filter(|p| p.kind == ProgramKind::Xdp) {
            let name = format!("{}:{}", path.file_name().unwrap().to_string_lossy(), spec.name);
            let kern = KernelProgram::load(&obj, spec)
                .unwrap_or_else(|e| panic!("{name}: the kernel refused it: {e}"));
            let mut ours: Vec<Ours> = ENGINES.iter().map(|&e| Ours::load(&obj, spec, slots, e)).collect();
            programs += 1;
            for (frame_name, frame) in &frames {
                for repeat in REPEATS {
                    let k = kern.test_run(frame, repeat).ok();
                    let want = kernel_contents(&kern);
                    sequences += want
                        .iter()
                        .map(|(_, c)| if let Contents::Sequence(s) = c { s.len() } else { 0 })
                        .sum::<usize>();
                    for (engine, ours) in ENGINES.iter().zip(&mut ours) {
                        let ctx = format!("{name} on {frame_name} x{repeat} ({engine:?})");
                        let o = ours.test_run(frame, repeat);
                        match (&k, &o) {
                            (None, None) => continue,
                            (Some(k), Some((ret, out))) => {
                                assert_eq!(*ret, k.retval, "{ctx}: return value");
                                assert_eq!(
                                    pktgen_hex(out),
                                    pktgen_hex(&k.data_out),
                                    "{ctx}: output frame ({} vs kernel {} bytes)",
                                    out.len(),
                                    k.data_out.len()
                                );
                            }
                            _ => panic!("{ctx}: kernel ran it: {}, we ran it: {}", k.is_some(), o.is_some()),
                        }
                        compare_contents(&ctx, &want, ours);
                        runs += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "{programs} programs, {runs} differential runs (interpreter and JIT) equal to the kernel's, \
         {sequences} queue/stack elements and ring-buffer records compared"
    );
    assert!(programs >= 10, "only {programs} XDP programs found");
    assert!(sequences >= 100, "queues, stacks and ring buffers were compared: {sequences} elements");
}

fn pktgen_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Instructions clang cannot be made to emit from C (`ja32`) and v4 corner cases, as raw
/// bytecode: each result is stored into the packet, so the output frame carries them all.
#[test]
fn raw_v4_bytecode_matches_the_kernel() {
    use xdp_vm::insn::Insn;
    const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn::new(code, dst, src, off, imm)
    }
    let store = |slot: i16, reg: u8| i(0x7b, 2, reg, slot * 8, 0);
    let mut body = vec![
        i(0xb7, 5, 0, 0, -7),
        i(0xb7, 6, 0, 0, 2),
        i(0x3f, 5, 6, 1, 0), // r5 s/= r6
        store(0, 5),
        i(0x18, 5, 0, 0, 0),
        i(0, 0, 0, 0, i32::MIN), // r5 = i64::MIN
        i(0xb7, 6, 0, 0, -1),
        i(0x9f, 5, 6, 1, 0), // r5 s%= r6
        store(1, 5),
        i(0xb4, 5, 0, 0, -9),
        i(0xb4, 6, 0, 0, 0),
        i(0x3c, 5, 6, 1, 0), // w5 s/= w6 (zero)
        i(0x9c, 6, 6, 1, 0), // w6 s%= w6 (zero)
        store(2, 5),
        i(0x91, 5, 2, 21, 0), // r5 = *(s8 *)(r2 + 21)
        i(0x89, 6, 2, 22, 0), // r6 = *(s16 *)(r2 + 22)
        i(0x81, 7, 2, 40, 0), // r7 = *(s32 *)(r2 + 40)
        store(3, 5),
        store(4, 6),
        store(5, 7),
        i(0xbf, 5, 7, 16, 0), // r5 = (s16)r7
        i(0xbc, 6, 7, 8, 0),  // w6 = (s8)w7
        i(0xd7, 7, 0, 0, 64), // r7 = bswap64 r7
        store(6, 5),
        store(7, 6),
        i(0x15, 5, 0, 1, 0x1234), // if r5 == 0x1234 goto +1: keeps the next-but-one reachable
        i(0x06, 0, 0, 0, 1),      // ja32 +1
        i(0xb7, 7, 0, 0, 99),
        store(8, 7),
        i(0xd7, 7, 0, 0, 16), // bswap16
        store(9, 7),
    ];
    let mut insns = vec![i(0x61, 2, 1, 0, 0), i(0x61, 3, 1, 4, 0), i(0xbf, 4, 2, 0, 0), i(0x07, 4, 0, 0, 80)];
    insns.push(i(0x2d, 4, 3, (body.len() + 2) as i16, 0)); // if r4 > r3 goto out
    insns.append(&mut body);
    insns.extend([i(0xb7, 0, 0, 0, 2), i(0x95, 0, 0, 0, 0), i(0xb7, 0, 0, 0, 1), i(0x95, 0, 0, 0, 0)]);

    let spec = ProgramSpec { name: "raw_v4".into(), section: "xdp".into(), kind: ProgramKind::Xdp, insns };
    let obj = Object { license: "GPL".into(), maps: Vec::new(), programs: vec![spec.clone()] };
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let kern = KernelProgram::load(&obj, &spec).unwrap_or_else(|e| panic!("the kernel refused raw_v4: {e}"));
    for engine in ENGINES {
        let mut ours = Ours::load(&obj, &spec, kernel::possible_cpus().unwrap(), engine);
        for (name, frame) in pktgen::craft::test_frames() {
            let k = kern.test_run(&frame, 1).ok();
            let o = ours.test_run(&frame, 1);
            match (k, o) {
                (None, None) => {}
                (Some(k), Some((ret, out))) => {
                    assert_eq!(ret, k.retval, "{name} ({engine:?})");
                    assert_eq!(pktgen_hex(&out), pktgen_hex(&k.data_out), "{name} ({engine:?})");
                }
                (k, o) => {
                    panic!("{name} ({engine:?}): kernel ran it: {}, we ran it: {}", k.is_some(), o.is_some())
                }
            }
        }
    }
}

/// The firewall with blocked prefixes in its LPM trie, the same entries written on every side:
/// longest-prefix matches, verdicts and per-rule counters equal to the kernel's.
#[test]
fn firewall_blocks_the_prefixes_the_kernel_blocks() {
    use pktgen::craft::{FrameSpec, L3};
    use std::net::Ipv4Addr;

    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let slots = kernel::possible_cpus().expect("possible CPUs");
    let path = Path::new(env!("BPF_OBJ_DIR")).join("xdp_firewall.o");
    let obj = Object::parse(&std::fs::read(&path).expect("built")).expect("parses");
    let spec = obj.program(Some("xdp_firewall")).expect("has the program");
    let blocked = obj.maps.iter().position(|m| m.name == "blocked_v4").expect("has blocked_v4");
    // (prefix length, address, rule id): nested prefixes, so the longest match decides the rule.
    let rules: [(u32, [u8; 4], u32); 4] =
        [(8, [10, 0, 0, 0], 1), (24, [10, 0, 0, 0], 2), (32, [10, 0, 0, 1], 3), (16, [192, 168, 0, 0], 4)];
    let entry = |(len, addr, rule): (u32, [u8; 4], u32)| {
        let mut key = len.to_le_bytes().to_vec();
        key.extend_from_slice(&addr);
        (key, rule.to_le_bytes())
    };

    let kern = KernelProgram::load(&obj, spec).expect("the kernel loads the firewall");
    let mut ours: Vec<Ours> = ENGINES.iter().map(|&e| Ours::load(&obj, spec, slots, e)).collect();
    for rule in rules {
        let (key, value) = entry(rule);
        kern.maps()[blocked].update(&key, &value, 0).expect("kernel LPM update");
        for o in &ours {
            o.maps[blocked].update_user(&key, &value, 0).expect("our LPM update");
        }
    }

    let from = |src: [u8; 4]| {
        let spec = FrameSpec {
            l3: L3::V4 { src: Ipv4Addr::from(src), dst: Ipv4Addr::new(10, 9, 9, 9) },
            ..FrameSpec::default()
        };
        (format!("from {}", Ipv4Addr::from(src)), spec.build().expect("valid frame"))
    };
    let mut frames = pktgen::craft::test_frames();
    frames.extend([from([10, 0, 0, 9]), from([10, 1, 2, 3]), from([172, 16, 0, 1]), from([192, 168, 5, 5])]);
    let (mut dropped, mut passed) = (0, 0);
    for (name, frame) in &frames {
        let Ok(k) = kern.test_run(frame, 1) else { continue };
        match k.retval {
            1 => dropped += 1,
            2 => passed += 1,
            _ => {}
        }
        for (engine, o) in ENGINES.iter().zip(&mut ours) {
            let ctx = format!("xdp_firewall on {name} ({engine:?})");
            let (ret, out) =
                o.test_run(frame, 1).unwrap_or_else(|| panic!("{ctx}: refused a frame the kernel ran"));
            assert_eq!(ret, k.retval, "{ctx}: verdict");
            assert_eq!(out, k.data_out, "{ctx}: output");
            compare_maps(&ctx, &kern, o);
        }
    }
    assert!(
        dropped >= 4 && passed >= 2,
        "the table exercises both verdicts: {dropped} dropped, {passed} passed"
    );
}

/// `bpf_redirect` and `bpf_redirect_map` on a DEVMAP, a DEVMAP_HASH and an XSKMAP: hits, misses
/// (the flags' low bits are the action), keys beyond 32 bits, unknown and broadcast flags, and
/// two calls in one run — return values and the `returns` map equal to the kernel's; the
/// target each run records in its `XdpBuff` is the one the last call named.
#[test]
fn redirects_match_the_kernel() {
    const BROADCAST: u64 = 1 << 3;
    const EXCLUDE_INGRESS: u64 = 1 << 4;
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let slots = kernel::possible_cpus().expect("possible CPUs");
    let path = Path::new(env!("BPF_OBJ_DIR")).join("redirect.o");
    let obj = Object::parse(&std::fs::read(&path).expect("built")).expect("parses");
    let spec = obj.program(Some("redirect")).expect("has the program");
    let index = |name: &str| obj.maps.iter().position(|m| m.name == name).expect("declared");
    let (tx_ports, tx_hash) = (index("tx_ports"), index("tx_hash"));

    // Interface 1 (loopback) exists in every network namespace; a devmap refuses a missing one.
    let lo = 1u32;
    let port_entries: [(u32, Vec<u8>); 2] = [(1, lo.to_le_bytes().to_vec()), (3, lo.to_le_bytes().to_vec())];
    let hash_val: Vec<u8> = [lo.to_le_bytes(), 0u32.to_le_bytes()].concat();
    let hash_entries: [(u32, Vec<u8>); 2] = [(7, hash_val.clone()), (0x10, hash_val)];
    let kern = KernelProgram::load(&obj, spec).expect("the kernel loads redirect.o");
    let mut ours: Vec<Ours> = ENGINES.iter().map(|&e| Ours::load(&obj, spec, slots, e)).collect();
    for (map, entries) in [(tx_ports, &port_entries), (tx_hash, &hash_entries)] {
        for (key, value) in entries {
            kern.maps()[map].update(&key.to_le_bytes(), value, 0).expect("kernel devmap update");
            for o in &ours {
                o.maps[map].update_user(&key.to_le_bytes(), value, 0).expect("our devmap update");
            }
        }
    }

    let keys: [u64; 7] = [0, 1, 2, 3, 7, 0x10, 0x1_0000_0001];
    let flags: [u64; 9] =
        [0, 1, 2, 3, 4, BROADCAST, BROADCAST | EXCLUDE_INGRESS, EXCLUDE_INGRESS | 2, 1 << 32];
    let (mut runs, mut redirected) = (0, 0);
    for op in 0u8..16 {
        for twice in [0u8, 1] {
            for key in keys {
                for fl in flags {
                    let mut frame = vec![0xaau8; 14];
                    frame.extend([op, twice]);
                    frame.extend(key.to_le_bytes());
                    frame.extend(fl.to_le_bytes());
                    frame.extend([0u8; 28]);
                    let k = kern.test_run(&frame, 1).expect("the kernel runs the frame");
                    for (engine, o) in ENGINES.iter().zip(&mut ours) {
                        let ctx = format!("op {op} twice {twice} key {key:#x} flags {fl:#x} ({engine:?})");
                        let (ret, out, target) = o.test_run_redirect(&frame, 1).expect("we run the frame");
                        assert_eq!(ret, k.retval, "{ctx}: return value");
                        assert_eq!(out, k.data_out, "{ctx}: output");
                        compare_maps(&ctx, &kern, o);
                        // The target of the call whose result the program returned.
                        let (last_op, last_key) = if twice == 1 { (op >> 2, key + 1) } else { (op, key) };
                        if ret == 4 {
                            redirected += 1;
                            let want = match last_op & 3 {
                                0 => Redirect::Ifindex(last_key as u32),
                                m if fl & BROADCAST != 0 => Redirect::Broadcast {
                                    map: if m == 1 { tx_ports as u32 } else { tx_hash as u32 },
                                    exclude_ingress: fl & EXCLUDE_INGRESS != 0,
                                },
                                m => Redirect::Dev {
                                    map: if m == 1 { tx_ports as u32 } else { tx_hash as u32 },
                                    key: last_key as u32,
                                    ifindex: lo,
                                },
                            };
                            assert_eq!(target, Some(want), "{ctx}: recorded target");
                        } else if last_op & 3 != 0 && ret != 0 {
                            assert_eq!(target, None, "{ctx}: a miss clears the target");
                        }
                        runs += 1;
                    }
                }
            }
        }
    }
    eprintln!("{runs} redirect runs equal to the kernel's, {redirected} redirected");
    assert!(redirected > 100, "the table exercises hits: {redirected}");
}

/// An XSKMAP slot holds an AF_XDP socket, which the kernel's map takes only from a bound
/// socket, so the hit path is checked against the documented semantics on our side alone:
/// `XDP_REDIRECT` and the socket id stored at the key; a miss gives the flags' action.
#[test]
fn xskmap_redirect_records_the_socket() {
    let path = Path::new(env!("BPF_OBJ_DIR")).join("redirect.o");
    let obj = Object::parse(&std::fs::read(&path).expect("built")).expect("parses");
    let spec = obj.program(Some("redirect")).expect("has the program");
    let xsks = obj.maps.iter().position(|m| m.name == "xsks").expect("declared");
    for engine in ENGINES {
        let mut o = Ours::load(&obj, spec, 1, engine);
        o.maps[xsks].update_user(&2u32.to_le_bytes(), &42u32.to_le_bytes(), 0).expect("our xskmap update");
        let frame = |key: u64, flags: u64| {
            let mut f = vec![0xaau8; 14];
            f.extend([3u8, 0]);
            f.extend(key.to_le_bytes());
            f.extend(flags.to_le_bytes());
            f.extend([0u8; 28]);
            f
        };
        let (ret, _, target) = o.test_run_redirect(&frame(2, 0), 1).unwrap();
        assert_eq!(
            (ret, target),
            (4, Some(Redirect::Xsk { map: xsks as u32, key: 2, socket: 42 })),
            "{engine:?}"
        );
        let (ret, _, target) = o.test_run_redirect(&frame(1, 2), 1).unwrap();
        assert_eq!((ret, target), (2, None), "{engine:?}: a miss");
        let (ret, _, _) = o.test_run_redirect(&frame(2, 1 << 3), 1).unwrap();
        assert_eq!(ret, 0, "{engine:?}: no broadcast on an XSKMAP");
    }
}

/// `bpf_perf_event_output` into a slot with an output buffer, against the kernel: its slot 0
/// holds a `perf_event_open`ed `PERF_COUNT_SW_BPF_OUTPUT` event on CPU 0 (read through its
/// mmapped ring), ours a buffer from `Map::perf_open`. The same return values for every call
/// (`BPF_F_CURRENT_CPU`, the packet appended, too many packet bytes, an index out of range,
/// unknown flags, an empty slot) and the same samples: the data first, then the packet bytes
/// `BPF_F_CTXLEN_MASK` asks for (the kernel pads each raw sample with zeroes to 8 bytes).
#[test]
fn perf_event_output_matches_the_kernel() {
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let path = Path::new(env!("BPF_OBJ_DIR")).join("perf_output.o");
    let obj = Object::parse(&std::fs::read(&path).expect("built")).expect("parses");
    let spec = obj.program(Some("perf_output")).expect("has the program");
    let perf = obj.maps.iter().position(|m| m.name == "perf_out").expect("declared");
    let kern = KernelProgram::load(&obj, spec).expect("the kernel loads perf_output.o");
    let event = kernel::PerfOutput::open(0, 8).expect("perf_event_open of a BPF output event on CPU 0");
    kern.maps()[perf].update(&0u32.to_le_bytes(), &event.raw_fd().to_le_bytes(), 0).expect("fd into slot 0");
    let mut frames: Vec<Vec<u8>> = vec![(0..60u8).collect(), vec![0xab; 98], vec![7; 1514]];
    frames.push(pktgen::craft::icmp_echo());
    let mut ours: Vec<Ours> =
        ENGINES.iter().map(|&e| Ours::load(&obj, spec, kernel::possible_cpus().unwrap(), e)).collect();
    for o in &ours {
        o.maps[perf].perf_open(0, 1 << 16, 1).expect("an output buffer for slot 0");
    }
    let mut samples = 0;
    for frame in &frames {
        let k = kern.test_run(frame, 1).expect("kernel run");
        let (k_samples, lost) = event.drain();
        assert_eq!(lost, 0, "the kernel lost samples");
        samples += k_samples.len();
        let want = kernel_contents(&kern);
        for (engine, o) in ENGINES.iter().zip(&mut ours) {
            let ctx = format!("{}-byte frame ({engine:?})", frame.len());
            let (ret, _) = o.test_run(frame, 1).expect("runs");
            assert_eq!(ret, k.retval, "{ctx}");
            compare_contents(&ctx, &want, o);
            let mut mine = Vec::new();
            o.maps[perf].perf_consume(0, |s| mine.push(s.to_vec()));
            assert_eq!(mine.len(), k_samples.len(), "{ctx}: samples");
            for (m, k) in mine.iter().zip(&k_samples) {
                assert_eq!(&k[..m.len()], &m[..], "{ctx}: sample data");
                assert!(k[m.len()..].iter().all(|&b| b == 0) && k.len() - m.len() < 8, "{ctx}: padding");
            }
        }
    }
    assert_eq!(samples, 2 * frames.len(), "two samples per run reached the kernel's event");
}

/// The same program on our side alone, spelled out: `BPF_F_CURRENT_CPU` writes into the
/// worker's slot, the data first, then the packet bytes `BPF_F_CTXLEN_MASK` asks for.
#[test]
fn perf_event_output_writes_samples_to_the_current_slot() {
    let path = Path::new(env!("BPF_OBJ_DIR")).join("perf_output.o");
    let obj = Object::parse(&std::fs::read(&path).expect("built")).expect("parses");
    let spec = obj.program(Some("perf_output")).expect("has the program");
    let perf = obj.maps.iter().position(|m| m.name == "perf_out").expect("declared");
    let results = obj.maps.iter().position(|m| m.name == "perf_results").expect("declared");
    let frame: Vec<u8> = (0..60u8).collect();
    for engine in ENGINES {
        let mut o = Ours::load(&obj, spec, 2, engine);
        o.maps[perf].perf_open(0, 4096, 1).expect("an output buffer for slot 0");
        o.test_run(&frame, 1).expect("runs");
        let ret = |i: u32| {
            let v = o.maps[results].lookup_user(&i.to_le_bytes()).expect("result slot");
            i64::from_le_bytes(v.try_into().expect("8 bytes"))
        };
        let errs = [0, 0, -libc::EFAULT, -libc::E2BIG, -libc::EINVAL, -libc::ENOENT];
        for (i, want) in errs.into_iter().enumerate() {
            assert_eq!(ret(i as u32), i64::from(want), "{engine:?}: call {i}");
        }
        let mut samples = Vec::new();
        o.maps[perf].perf_consume(0, |s| samples.push(s.to_vec()));
        let mut d = 60u32.to_le_bytes().to_vec();
        d.extend(0xfeed_f00du32.to_le_bytes());
        let mut with_packet = d.clone();
        with_packet.extend(&frame);
        assert_eq!(samples, vec![d, with_packet], "{engine:?}: samples in slot 0");
    }
}

/// The ring buffer filled up: eight runs on a full-size frame without a consumer. Outputs of
/// ~500 bytes then fail with `-EAGAIN` and reservations with NULL, in the kernel and here; the
/// records that made it in, the query results and positions are the same.
#[test]
fn full_ring_buffer_matches_the_kernel() {
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let path = Path::new(env!("BPF_OBJ_DIR")).join("ringbuf.o");
    let obj = Object::parse(&std::fs::read(&path).expect("built")).expect("parses");
    let spec = obj.program(Some("ringbuf")).expect("has the program");
    let results = obj.maps.iter().position(|m| m.name == "rb_results").expect("declared");
    let kern = KernelProgram::load(&obj, spec).expect("the kernel loads ringbuf.o");
    let frame = vec![0x5au8; 1514];
    let k = kern.test_run(&frame, 8).expect("kernel run");
    let k_results = kern.maps()[results].entries().expect("kernel results");
    let eagain = (-i64::from(libc::EAGAIN)).to_le_bytes().to_vec();
    assert_eq!(k_results[3].values[0], eagain, "the kernel's ring is full by the 8th output");
    let want = kernel_contents(&kern);
    for engine in ENGINES {
        let mut o = Ours::load(&obj, spec, kernel::possible_cpus().unwrap(), engine);
        let (ret, _) = o.test_run(&frame, 8).expect("runs");
        assert_eq!(ret, k.retval);
        compare_contents(&format!("full ring ({engine:?})"), &want, &o);
    }
}

/// `bpf_tail_call` through a prog array that the object initialises (`__array(values, ...)`):
/// the kernel gets the programs' fds in the slots, we get the programs' ids (their index in the
/// object) and link the programs. Every slot and a few beyond the array from `tail_entry`, and
/// `tail_count`'s self-call chain (33 tail calls, then the call falls through): the same
/// return values and counters as the kernel, both engines.
#[test]
fn tail_calls_match_the_kernel() {
    use xdp_vm::elf::SlotTarget;
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let slots = kernel::possible_cpus().expect("possible CPUs");
    let path = Path::new(env!("BPF_OBJ_DIR")).join("tail_call.o");
    let (obj, extras) = Object::parse_with_extras(&std::fs::read(&path).expect("built")).expect("parses");
    let specs: Vec<&ProgramSpec> = obj.programs.iter().filter(|p| p.kind == ProgramKind::Xdp).collect();
    let jumps = obj.maps.iter().position(|m| m.name == "jumps").expect("declared");
    let init: Vec<(u32, usize)> = extras.slots[jumps]
        .iter()
        .map(|s| match &s.target {
            SlotTarget::Program(name) => {
                (s.index, specs.iter().position(|p| &p.name == name).expect("a program of the object"))
            }
            SlotTarget::Map(_) => panic!("a prog array holds programs"),
        })
        .collect();
    assert_eq!(init.len(), 3, "the object initialises three slots");

    let kern = KernelProgram::load_all(&obj, &specs).expect("the kernel loads tail_call.o");
    for &(index, id) in &init {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = kern[id].as_fd().as_raw_fd();
        kern[0].maps()[jumps].update(&index.to_le_bytes(), &fd.to_le_bytes(), 0).expect("kernel prog array");
    }
    let entry = specs.iter().position(|p| p.name == "tail_entry").expect("has tail_entry");
    let count = specs.iter().position(|p| p.name == "tail_count").expect("has tail_count");

    for engine in ENGINES {
        let maps = create_maps(&obj, slots).expect("maps");
        let mut progs: Vec<Program<Xdp>> =
            specs.iter().map(|s| Program::<Xdp>::new(s, &maps).expect("verifies")).collect();
        xdp_vm::link_tail_calls(&mut progs).expect("one object");
        for &(index, id) in &init {
            maps[jumps]
                .update_user(&index.to_le_bytes(), &(id as u32).to_le_bytes(), 0)
                .expect("our prog array");
        }
        let jits: Vec<std::sync::Arc<JitProgram<Xdp>>> = if engine == Engine::Jit {
            let j: Vec<_> = progs
                .iter()
                .map(|p| std::sync::Arc::new(JitProgram::compile(p).expect("compiles")))
                .collect();
            xdp_vm::jit::link_tail_calls(&j).expect("one object");
            j
        } else {
            Vec::new()
        };
        let mut interp = Interpreter::new();
        let mut run = |which: usize, data: &[u8]| -> u32 {
            let mut frame = vec![0u8; XDP_FRAME_SIZE];
            let mut buff = XdpBuff::load(&mut frame, data).expect("a valid frame");
            buff.ingress_ifindex = 1;
            let r = match engine {
                Engine::Interp => interp.run(&progs[which], &mut buff, 0),
                Engine::Jit => jits[which].run(&mut buff, 0),
            };
            r.unwrap_or_else(|f| panic!("{engine:?}: fault {f}")) as u32
        };
        // Kernel and ours start from the same counters: reset both.
        for i in 0..8u32 {
            kern[0].maps()[obj.maps.iter().position(|m| m.name == "tail_hits").unwrap()]
                .update(&i.to_le_bytes(), &0u64.to_le_bytes(), 0)
                .unwrap();
        }
        let ours = Ours {
            maps: maps.clone(),
            prog: progs[entry].clone(),
            vm: Vm::Interp(Box::new(Interpreter::new())),
        };
        for selector in [0u8, 1, 2, 3, 4, 5, 6, 7, 200] {
            let mut data = vec![0x11u8; 60];
            data[14] = selector;
            for which in [entry, count] {
                let k = kern[which].test_run(&data, 1).expect("kernel run");
                let ret = run(which, &data);
                let ctx = format!("{} with slot {selector} ({engine:?})", specs[which].name);
                assert_eq!(ret, k.retval, "{ctx}: return value");
                compare_maps(&ctx, &kern[0], &ours);
            }
        }
        let hits = maps[obj.maps.iter().position(|m| m.name == "tail_hits").unwrap()]
            .lookup_user(&4u32.to_le_bytes())
            .unwrap();
        // tail_count runs 34 times per direct run (33 tail calls) and 33 times from slot 4.
        assert_eq!(
            u64::from_le_bytes(hits.try_into().unwrap()),
            9 * 34 + 33,
            "{engine:?}: the tail-call limit"
        );
    }
}
