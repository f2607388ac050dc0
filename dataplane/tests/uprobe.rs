//! Userspace uprobes on this test process, against the real thing where it runs: arguments and
//! return values seen by programs equal the real ones (for functions with different prologues,
//! one starting with a RIP-relative load), attach/detach churn under concurrent calls, bad
//! pointers, probe sites, a map shared with an XDP program, refusals naming their target, and a
//! kernel uprobe (perf_event_open + BPF_PROG_TYPE_KPROBE) on the same function seeing the same
//! arguments.
#![allow(unsafe_code, reason = "naked target functions with exact prologues")]

use std::arch::naked_asm;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dataplane::uprobe::{self, Target, TraceProgram, UprobeError};
use maps::Map;
use xdp_vm::elf::Object;

/// Classic frame: `push rbp; mov rbp, rsp; ...` — returns b + c.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_frame(_a: u64, _b: u64, _c: u64, _d: u64, _e: u64, _f: u64) -> u64 {
    naked_asm!("push rbp", "mov rbp, rsp", "lea rax, [rsi + rdx]", "pop rbp", "ret")
}

static BASE: u64 = 1000;

/// RIP-relative first instruction — returns BASE + b.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_riprel(_a: u64, _b: u64, _c: u64, _d: u64, _e: u64, _f: u64) -> u64 {
    naked_asm!("mov rax, qword ptr [rip + {base}]", "add rax, rsi", "ret", base = sym BASE)
}

/// Exactly five bytes: `lea rax, [rsi + rdx]; ret` — returns b + c.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_tiny(_a: u64, _b: u64, _c: u64, _d: u64, _e: u64, _f: u64) -> u64 {
    naked_asm!("lea rax, [rsi + rdx]", "ret")
}

/// Too short for a jump: `xor eax, eax; ret`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_too_short() -> u64 {
    naked_asm!("xor eax, eax", "ret")
}

/// A loop whose branch goes back into the first five bytes.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_loop(_n: u64) -> u64 {
    naked_asm!("xor eax, eax", "2:", "inc rax", "dec rdi", "jnz 2b", "ret")
}

/// Whatever rustc makes of it (a debug build's prologue in tests).
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_rust(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> u64 {
    black_box(a ^ d ^ e ^ f);
    b.wrapping_add(c)
}

/// Eight arguments, two of them on the stack: what a uretprobe's trampoline must leave where
/// the function looks for them.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_stack_args(
    a: u64,
    b: u64,
    c: u64,
    d: u64,
    e: u64,
    f: u64,
    g: u64,
    h: u64,
) -> u64 {
    black_box(a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h)
}

/// Floating-point arguments (xmm0-7) and result (xmm0): what the stubs must keep.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_float(a: f64, b: f64, c: f64, d: f64, e: f64, f: f64, g: f64, h: f64) -> f64 {
    black_box(a + 2.0 * b + 3.0 * c + 4.0 * d + 5.0 * e + 6.0 * f + 7.0 * g + 8.0 * h) * 0.5
}

/// Recursive: `n + (n - 1) + ... + 0`.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_recursive(n: u64) -> u64 {
    if black_box(n) == 0 { 0 } else { n + uprobe_target_recursive(n - 1) }
}

/// Sets the flags to exactly `flags` (`popfq`) and calls [`uprobe_target_flags`], whose entry
/// then sees them: a `call` changes no flag. The stack stays aligned as at any call.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_flags_call(_flags: u64) -> u64 {
    naked_asm!("sub rsp, 8", "push rdi", "popfq", "call {t}", "add rsp, 8", "ret", t = sym uprobe_target_flags)
}

/// Called with known flags by [`uprobe_flags_call`]: `push rbp; mov rbp, rsp; xor eax, eax; ...`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn uprobe_target_flags() -> u64 {
    naked_asm!("push rbp", "mov rbp, rsp", "xor eax, eax", "pop rbp", "ret")
}

type Target6 = extern "C" fn(u64, u64, u64, u64, u64, u64) -> u64;

fn call(f: Target6, args: [u64; 6]) -> u64 {
    black_box(f)(args[0], args[1], args[2], args[3], args[4], args[5])
}

// Slots of `seen` (tests/bpf/uprobe_args.c).
const ARG1: u32 = 0;
const ENTRIES: u32 = 6;
const EXITS: u32 = 7;
const RC: u32 = 8;
const FUNC_IP: u32 = 9;
const RET_FUNC_IP: u32 = 10;
const READ_RET: u32 = 11;
const READ_VAL: u32 = 12;
const PID_TGID: u32 = 13;
const FLAGS: u32 = 14;
const CPU: u32 = 15;

struct Loaded {
    obj: Object,
    maps: Vec<Arc<Map>>,
}

fn loaded() -> Loaded {
    let path = format!("{}/uprobe_args.o", dataplane::BPF_OBJ_DIR);
    let obj = Object::parse(&std::fs::read(&path).expect("built by build.rs")).unwrap();
    let slots = dataplane::kernel::possible_cpus().unwrap();
    let maps = xdp_vm::create_maps(&obj, slots).unwrap();
    Loaded { obj, maps }
}

impl Loaded {
    fn prog(&self, name: &str) -> TraceProgram {
        TraceProgram::load(self.obj.program(Some(name)).unwrap(), &self.maps).unwrap()
    }

    fn map(&self, name: &str) -> &Map {
        &self.maps[self.obj.map_index(name).unwrap()]
    }

    fn get(&self, map: &str, k: u32) -> u64 {
        let v = self.map(map).lookup_user(&k.to_le_bytes()).unwrap();
        u64::from_le_bytes(v[..8].try_into().unwrap())
    }

    fn seen(&self, k: u32) -> u64 {
        self.get("seen", k)
    }
}

fn func(name: &str) -> Target {
    Target::Function(name.to_string())
}

#[test]
fn programs_see_the_real_arguments_and_return_values() {
    let l = loaded();
    let (entry, exit) = (l.prog("on_entry"), l.prog("on_exit"));
    let cases: [(&str, Target6, u64); 4] = [
        ("uprobe_target_frame", uprobe_target_frame, 0),
        ("uprobe_target_riprel", uprobe_target_riprel, BASE),
        ("uprobe_target_tiny", uprobe_target_tiny, 0),
        ("uprobe_target_rust", uprobe_target_rust, 0),
    ];
    for (i, (name, f, base)) in cases.into_iter().enumerate() {
        let att = uprobe::attach(&func(name), &[&entry, &exit]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let before = (l.seen(ENTRIES), l.seen(EXITS));
        // The first hit on this thread runs the programs through the handlers, the next ones
        // through the stubs' fast paths: both see the same.
        for hit in 0..3u64 {
            let args = [11 + hit, 20 + i as u64, 3 + hit, 0xdead_beef, u64::MAX - hit, 1 << 40];
            let expected = if base != 0 { base + args[1] } else { args[1] + args[2] };
            assert_eq!(call(f, args), expected, "{name} probed returns what it returns unprobed");
            for (k, a) in args.iter().enumerate() {
                assert_eq!(l.seen(ARG1 + k as u32), *a, "{name} hit {hit} argument {}", k + 1);
            }
            assert_eq!(l.seen(RC), expected, "{name} hit {hit} return value");
            assert_eq!(l.seen(FUNC_IP), f as usize as u64, "{name} bpf_get_func_ip at entry");
            assert_eq!(l.seen(RET_FUNC_IP), f as usize as u64, "{name} bpf_get_func_ip at return");
            assert_eq!(l.seen(PID_TGID) >> 32, u64::from(std::process::id()));
            let hits = (before.0 + hit + 1, before.1 + hit + 1);
            assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), hits, "{name} hits");
        }
        att.detach().unwrap();
        let args = [11, 20 + i as u64, 3, 0xdead_beef, u64::MAX, 1 << 40];
        let expected = if base != 0 { base + args[1] } else { args[1] + args[2] };
        assert_eq!(call(f, args), expected, "{name} after detach");
        assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), (before.0 + 3, before.1 + 3), "{name}: detached");
    }
}

/// tests/bpf/uprobe_core.c: a local pt_regs of only `si, di` (offsets 0 and 8), read through
/// PT_REGS_PARM*_CORE, a plain `ctx->si` and bpf_core_field_exists/size; the loader's CO-RE
/// relocations must land them on the kernel layout's di (112) and si (104).
#[test]
fn core_reads_over_a_reordered_local_pt_regs_see_the_real_arguments() {
    let path = format!("{}/uprobe_core.o", dataplane::BPF_OBJ_DIR);
    let obj = Object::parse(&std::fs::read(&path).expect("built by build.rs")).unwrap();
    let maps = xdp_vm::create_maps(&obj, dataplane::kernel::possible_cpus().unwrap()).unwrap();
    let prog = TraceProgram::load(obj.program(Some("core_args")).unwrap(), &maps).unwrap();
    let seen = &maps[obj.map_index("seen").unwrap()];
    let get =
        |k: u32| u64::from_le_bytes(seen.lookup_user(&k.to_le_bytes()).unwrap()[..8].try_into().unwrap());
    let att = uprobe::attach(&func("uprobe_target_frame"), &[&prog]).unwrap();
    let args = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 3, 4, 5, 6];
    assert_eq!(call(uprobe_target_frame, args), args[1] + args[2]);
    att.detach().unwrap();
    assert_eq!(get(0), args[0], "PT_REGS_PARM1_CORE");
    assert_eq!(get(1), args[1], "PT_REGS_PARM2_CORE");
    assert_eq!(get(2), args[1], "ctx->si");
    assert_eq!(get(3), 1, "bpf_core_field_exists(ctx->si)");
    assert_eq!(get(4), 8, "bpf_core_field_size(ctx->si)");
}

/// EFLAGS in user mode: bit 1 (always set) and IF.
const FLAGS_BASE: u64 = 0x202;
/// CF, PF, AF, ZF, SF, OF: what code can set and a probe reports.
const FLAGS_ARITH: u64 = 0x8d5;

#[test]
fn pt_regs_flags_are_the_probed_codes_flags_as_the_kernel_sees_them() {
    let l = loaded();
    let spec = l.obj.program(Some("on_entry")).unwrap();
    let kernel = dataplane::kernel::KernelProgram::load(&l.obj, spec).unwrap();
    let image = uprobe::symbols::image().unwrap();
    let f = &image.functions("uprobe_target_flags")[0];
    let exe = std::env::current_exe().unwrap();
    let kmap = kernel.map("seen").unwrap();
    let kernel_flags = |flags: u64| {
        let link = kernel.attach_uprobe(&exe, f.file_offset.unwrap(), false).unwrap();
        assert_eq!(uprobe_flags_call(flags), 0);
        drop(link);
        let v = kmap.lookup(&FLAGS.to_le_bytes()).unwrap().unwrap();
        u64::from_le_bytes(v[0][..8].try_into().unwrap())
    };
    // None, all, and CF | ZF | OF.
    let cases = [FLAGS_BASE, FLAGS_BASE | FLAGS_ARITH, FLAGS_BASE | 0x841];
    let kernel_saw: Vec<u64> = cases.iter().map(|&c| kernel_flags(c)).collect();
    assert_eq!(kernel_saw, cases, "the kernel's uprobe sees the flags set");
    // Ours: the first hit on this thread runs through the handler, the next ones through the
    // stub's fast path; both see the same.
    let entry = l.prog("on_entry");
    let att = uprobe::attach(&func("uprobe_target_flags"), &[&entry]).unwrap();
    for round in 0..3 {
        for &c in &cases {
            let before = l.seen(ENTRIES);
            assert_eq!(uprobe_flags_call(c), 0);
            assert_eq!(l.seen(ENTRIES), before + 1, "round {round}: one hit");
            assert_eq!(l.seen(FLAGS), c, "round {round}: flags {c:#x}");
            assert_eq!(l.seen(FUNC_IP), uprobe_target_flags as *const () as usize as u64, "bpf_get_func_ip");
            assert_eq!(
                l.seen(PID_TGID) & 0xffff_ffff,
                u64::from(xdp_vm::sys::gettid()),
                "the calling thread"
            );
        }
    }
    att.detach().unwrap();
}

#[test]
fn programs_see_the_cpu_they_run_on_or_the_threads_slot() {
    let l = loaded();
    let entry = l.prog("on_entry");
    let _att = uprobe::attach(&func("uprobe_target_frame"), &[&entry]).unwrap();
    let ncpus = dataplane::kernel::possible_cpus().unwrap();
    // One thread at a time (they share the map): each pinned to a CPU (those this process may
    // run on, up to 4), then one with a slot set. Each thread's first hit runs through the
    // handler, the next through the fast path.
    let mut pinned = 0;
    for cpu in (0..ncpus.min(4)).map(Some).chain([None]) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let expected = match cpu {
                    Some(cpu) => {
                        if dataplane::kernel::pin_current_thread(cpu).is_err() {
                            return; // Not in this process's CPU set.
                        }
                        pinned += 1;
                        cpu as u64
                    }
                    None => {
                        uprobe::set_slot(7);
                        7
                    }
                };
                for i in 0..3 {
                    assert_eq!(call(uprobe_target_frame, [0, i, 1, 0, 0, 0]), i + 1);
                    assert_eq!(l.seen(ARG1 + 1), i, "this call's hit");
                    assert_eq!(l.seen(CPU), expected, "hit {i}, {cpu:?}");
                }
            });
        });
    }
    assert!(pinned > 0, "no CPU to pin a thread to");
}

#[test]
fn a_bad_pointer_read_is_an_error_and_the_process_lives() {
    let l = loaded();
    let read = l.prog("read_arg");
    let _att = uprobe::attach(&func("uprobe_target_frame"), &[&read]).unwrap();
    for bad in [16u64, 0xdead_0000_0000, u64::MAX - 7] {
        assert_eq!(call(uprobe_target_frame, [bad, 1, 2, 0, 0, 0]), 3);
        assert_eq!(l.seen(READ_RET) as i64, -14, "-EFAULT for {bad:#x}");
        assert_eq!(l.seen(READ_VAL), 0, "the destination is zeroed");
    }
    let value = 0x0123_4567_89ab_cdefu64;
    call(uprobe_target_frame, [std::ptr::from_ref(&value) as u64, 1, 2, 0, 0, 0]);
    assert_eq!((l.seen(READ_RET), l.seen(READ_VAL)), (0, value));
}

#[test]
fn attach_and_detach_10000_times_while_two_threads_call() {
    let l = loaded();
    let (entry, exit) = (l.prog("count_entry"), l.prog("count_exit"));
    let stop = Arc::new(AtomicBool::new(false));
    let ncallers: u64 = std::env::var("UPROBE_CALLERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let callers: Vec<_> = (0..ncallers)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(call(uprobe_target_frame, [t, n, 1, 0, 0, 0]), n + 1);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let rounds: usize = std::env::var("UPROBE_CHURN").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let att = uprobe::attach(&func("uprobe_target_frame"), &[&entry, &exit]).unwrap();
        att.detach().unwrap();
    }
    eprintln!("{rounds} attach/detach in {:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = callers.into_iter().map(|c| c.join().unwrap()).sum();
    let (entries, exits) = (l.seen(ENTRIES), l.seen(EXITS));
    eprintln!("{calls} calls, {entries} entry hits, {exits} exit hits");
    assert!(entries > 0, "the probes were hit");
    assert_eq!(entries, exits, "every entry hit has its exit hit");
    // Every replaced set of programs was freed once no thread could run it any more: with the
    // callers gone, the next change of programs frees what was left.
    uprobe::attach(&func("uprobe_target_frame"), &[&entry]).unwrap().detach().unwrap();
    assert_eq!(Arc::strong_count(&entry.jit), 1, "no attachment keeps the entry program");
    assert_eq!(Arc::strong_count(&exit.jit), 1, "no attachment keeps the exit program");
}

#[test]
fn uretprobes_keep_stack_arguments_and_recursion_up_to_64_deep() {
    let l = loaded();
    let (entry, exit) = (l.prog("count_entry"), l.prog("count_exit"));
    let args = black_box([1u64, 2, 3, 4, 5, 6, 7, 8]);
    let f =
        black_box(uprobe_target_stack_args as extern "C" fn(u64, u64, u64, u64, u64, u64, u64, u64) -> u64);
    let expected = f(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7]);
    assert_eq!(expected, 204);
    let att = uprobe::attach(&func("uprobe_target_stack_args"), &[&entry, &exit]).unwrap();
    for _ in 0..3 {
        assert_eq!(f(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7]), expected);
    }
    att.detach().unwrap();
    assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), (3, 3));

    let fl = black_box(uprobe_target_float as extern "C" fn(f64, f64, f64, f64, f64, f64, f64, f64) -> f64);
    let x = black_box([1.5f64, 2.25, 3.0, 4.0, 5.0, 6.0, 7.0, 8.125]);
    let expected = fl(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]);
    let att = uprobe::attach(&func("uprobe_target_float"), &[&entry, &exit]).unwrap();
    assert_eq!(fl(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]).to_bits(), expected.to_bits());
    att.detach().unwrap();
    assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), (4, 4));
    // The entry stub keeps xmm0-7 (the arguments), the return stub xmm0-3 (the return value)
    // only around a program whose code may change them: one of each kind, alone, each hit
    // twice (the handler, then the stubs' fast path).
    let (helpers, helpers_exit) = (l.prog("on_entry"), l.prog("on_exit"));
    assert!(entry.general_purpose_only(), "count_entry: a map lookup and an add");
    assert!(exit.general_purpose_only(), "count_exit: a map lookup and an add");
    assert!(!helpers.general_purpose_only(), "on_entry calls helpers (Rust code)");
    assert!(!helpers_exit.general_purpose_only(), "on_exit calls helpers (Rust code)");
    for p in [&entry, &helpers, &exit, &helpers_exit] {
        let att = uprobe::attach(&func("uprobe_target_float"), &[p]).unwrap();
        for _ in 0..2 {
            assert_eq!(fl(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]).to_bits(), expected.to_bits());
        }
        att.detach().unwrap();
    }
    assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), (8, 8));
    // 101 nested calls: every entry runs, the 64 outermost returns run (the kernel's
    // MAX_URETPROBE_DEPTH), and every call returns its own value.
    let att = uprobe::attach(&func("uprobe_target_recursive"), &[&entry, &exit]).unwrap();
    let rec = black_box(uprobe_target_recursive as extern "C" fn(u64) -> u64);
    assert_eq!(rec(100), 5050);
    assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), (8 + 101, 8 + 64));
    assert_eq!(rec(10), 55);
    assert_eq!((l.seen(ENTRIES), l.seen(EXITS)), (8 + 101 + 11, 8 + 64 + 11));
    att.detach().unwrap();
}

#[test]
fn probe_sites_pass_their_arguments() {
    let l = loaded();
    let entry = l.prog("on_entry");
    let att = uprobe::attach(&Target::parse("site:rx"), &[&entry]).unwrap();
    dataplane::uprobe::site::rx(7, 1, 98, 3);
    assert_eq!([l.seen(ARG1), l.seen(ARG1 + 1), l.seen(ARG1 + 2), l.seen(ARG1 + 3)], [7, 1, 98, 3]);
    assert_eq!(l.seen(ENTRIES), 1);
    att.detach().unwrap();
    dataplane::uprobe::site::rx(7, 1, 98, 3);
    assert_eq!(l.seen(ENTRIES), 1, "a detached site is a NOP again");
}

#[test]
fn bad_input_is_refused_with_the_target_named() {
    let l = loaded();
    let (entry, exit) = (l.prog("on_entry"), l.prog("on_exit"));
    let err = |t: &str, progs: &[&TraceProgram]| uprobe::attach(&Target::parse(t), progs).unwrap_err();
    let e = err("no_such_function_anywhere", &[&entry]);
    assert!(matches!(e, UprobeError::UnknownSymbol { .. }), "{e}");
    assert!(e.to_string().contains("no_such_function_anywhere"), "{e}");
    for name in ["uprobe_target_too_short", "uprobe_target_loop"] {
        let e = err(name, &[&entry]);
        assert!(matches!(e, UprobeError::Unpatchable { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
    assert_eq!(call(uprobe_target_frame, [0, 1, 2, 0, 0, 0]), 3, "nothing was patched");
    assert!(uprobe_target_loop(3) == 3 && uprobe_target_too_short() == 0);
    let e = err("site:nope", &[&entry]);
    assert!(e.to_string().contains("nope"), "{e}");
    let e = err("site:rx", &[&exit]);
    assert!(matches!(e, UprobeError::RetprobeOnSite { .. }), "{e}");
    let xdp = l.obj.program(Some("xdp_side")).unwrap();
    let e = TraceProgram::load(xdp, &l.maps).unwrap_err();
    assert!(matches!(e, UprobeError::WrongProgramType { .. }), "{e}");
    assert!(e.to_string().contains("xdp_side"), "{e}");
}

#[test]
fn a_tracing_map_is_shared_with_an_xdp_program() {
    use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
    let l = loaded();
    let xdp = xdp_vm::Program::<xdp_vm::Xdp>::new(l.obj.program(Some("xdp_side")).unwrap(), &l.maps).unwrap();
    let xdp = xdp_vm::jit::JitProgram::compile(&xdp).unwrap();
    let run_xdp = || {
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let mut buff = XdpBuff::load(&mut frame, &[0u8; 60]).unwrap();
        xdp.run(&mut buff, 0).unwrap()
    };
    let probe = l.prog("probe_side");
    let _att = uprobe::attach(&func("uprobe_target_frame"), &[&probe]).unwrap();
    for _ in 0..3 {
        run_xdp();
    }
    for _ in 0..2 {
        call(uprobe_target_frame, [0; 6]);
    }
    run_xdp();
    // XDP_RUNS, PROBE_RUNS, XDP_SAW_PROBE, PROBE_SAW_XDP
    let got: Vec<u64> = (0..4).map(|k| l.get("shared", k)).collect();
    assert_eq!(got, [4, 2, 2, 3]);
}

#[test]
fn the_kernels_uprobe_sees_the_same_arguments() {
    let l = loaded();
    let spec = l.obj.program(Some("on_entry")).unwrap();
    let kernel = dataplane::kernel::KernelProgram::load(&l.obj, spec).unwrap();
    let image = uprobe::symbols::image().unwrap();
    let f = &image.functions("uprobe_target_rust")[0];
    let exe = std::env::current_exe().unwrap();
    let args = [5, 6, 7, 8, 9, 10];
    let link = kernel.attach_uprobe(&exe, f.file_offset.unwrap(), false).unwrap();
    assert_eq!(call(uprobe_target_rust, args), 13);
    drop(link);
    let kmap = kernel.map("seen").unwrap();
    let kernel_saw: Vec<u64> = (0..6u32)
        .map(|k| {
            let v = kmap.lookup(&k.to_le_bytes()).unwrap().unwrap();
            u64::from_le_bytes(v[0][..8].try_into().unwrap())
        })
        .collect();
    assert_eq!(kernel_saw, args, "the kernel's uprobe");
    let entry = l.prog("on_entry");
    let att = uprobe::attach(&func("uprobe_target_rust"), &[&entry]).unwrap();
    assert_eq!(call(uprobe_target_rust, args), 13);
    att.detach().unwrap();
    let ours: Vec<u64> = (0..6u32).map(|k| l.seen(k)).collect();
    assert_eq!(ours, kernel_saw, "ours and the kernel's");
}

#[test]
fn the_kernels_usdt_probe_on_a_site_sees_the_sites_arguments() {
    // The site's `.note.stapsdt` address, as a file offset, is what bpftrace's `usdt:` probe
    // attaches the kernel's uprobe to: the kernel sees the same arguments as our probe does.
    let l = loaded();
    let kernel =
        dataplane::kernel::KernelProgram::load(&l.obj, l.obj.program(Some("on_entry")).unwrap()).unwrap();
    let image = uprobe::symbols::image().unwrap();
    let exe = std::env::current_exe().unwrap();
    let notes = image.site("rx");
    assert!(!notes.is_empty());
    let links: Vec<_> = notes
        .iter()
        .map(|n| {
            let offset = image.file_offset(n.addr).expect("a site is in the file's code");
            kernel.attach_uprobe(&exe, offset, false).unwrap()
        })
        .collect();
    dataplane::uprobe::site::rx(21, 2, 1500, 5);
    drop(links);
    let kmap = kernel.map("seen").unwrap();
    let word = |k: u32| {
        u64::from_le_bytes(kmap.lookup(&k.to_le_bytes()).unwrap().unwrap()[0][..8].try_into().unwrap())
    };
    assert_eq!([word(ARG1), word(ARG1 + 1), word(ARG1 + 2), word(ARG1 + 3)], [21, 2, 1500, 5]);
    assert_eq!(word(ENTRIES), 1, "one hit");
}

#[test]
fn a_bad_trace_entry_is_one_line_and_exit_2_before_any_interface() {
    let obj = format!("{}/uprobe_args.o", dataplane::BPF_OBJ_DIR);
    let counter = format!("{}/xdp_counter.o", dataplane::BPF_OBJ_DIR);
    let cases = [
        ("no_such_function_anywhere", "on_entry", "no_such_function_anywhere"),
        ("site:nope", "on_entry", "nope"),
        ("uprobe_target_frame", "xdp_side", "xdp_side"),
    ];
    for (i, (target, program, named)) in cases.into_iter().enumerate() {
        let dir = std::env::temp_dir().join(format!("uprobe-cfg-{}-{i}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("trace.toml");
        std::fs::write(
            &cfg,
            format!(
                "[program]\nobject = \"{counter}\"\n[[ports]]\ninterface = \"dp-nosuch{i}\"\n\
                 [[trace]]\nobject = \"{obj}\"\nprogram = \"{program}\"\ntarget = \"{target}\"\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .args(["--config", cfg.to_str().unwrap(), "--duration", "1"])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{target}: one line: {stderr}");
        assert!(stderr.contains(named), "{target}: names {named}: {stderr}");
    }
}

#[test]
fn the_map_update_site_sees_each_update_from_the_control_path() {
    use dataplane::control::proto::Request;
    use dataplane::control::swap::{Loaded, ProgSlot};
    let l = loaded();
    let entry = l.prog("on_entry");
    let counter = format!("{}/xdp_counter.o", dataplane::BPF_OBJ_DIR);
    let cfg = dataplane::config::Config::parse(&format!(
        "[program]\nobject = {counter:?}\n[[ports]]\ninterface = \"lo\"\n"
    ))
    .unwrap();
    let obj = Object::parse(&std::fs::read(&counter).unwrap()).unwrap();
    let slots = dataplane::kernel::possible_cpus().unwrap();
    let maps = xdp_vm::create_maps(&obj, slots).unwrap();
    let prog = xdp_vm::Program::<xdp_vm::Xdp>::new(obj.program(None).unwrap(), &maps).unwrap();
    let index = obj.map_index("pkt_len_count").unwrap() as u64;
    let loaded = Loaded::new(1, prog, dataplane::config::EngineKind::Jit, counter.into()).unwrap();
    let inst = dataplane::control::Instance::new(
        &cfg,
        None,
        Arc::new(ProgSlot::new(Arc::new(loaded))),
        slots,
        vec![],
    );
    let att = uprobe::attach(&Target::parse("site:map_update"), &[&entry]).unwrap();
    let update = Request::MapUpdate {
        map: "pkt_len_count".into(),
        key: "62000000".into(),
        value: "07000000".into(),
        flags: 0,
    };
    inst.handle(&update).unwrap();
    // (map index, key address, key length, value address): the key and value the update wrote.
    assert_eq!(l.seen(ENTRIES), 1);
    assert_eq!((l.seen(ARG1), l.seen(ARG1 + 2)), (index, 4));
    assert_ne!(l.seen(ARG1 + 1), 0, "the key's address");
    assert_ne!(l.seen(ARG1 + 3), 0, "the value's address");
    let bad = Request::MapUpdate {
        map: "no_such_map".into(),
        key: "62000000".into(),
        value: "07000000".into(),
        flags: 0,
    };
    assert!(inst.handle(&bad).is_err());
    assert_eq!(l.seen(ENTRIES), 1, "a refused update is no update");
    att.detach().unwrap();
}
