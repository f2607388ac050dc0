//! `xdp-vm` as an embedded runtime: load a clang-built object, verify and compile its program
//! once, then call it from several threads at once, each with its own frame, stack and per-CPU
//! slot, all sharing the program and its maps.
//!
//! ```sh
//! cargo run --release -p xdp-vm --example embed -- target/bpf/xdp_counter.o [--threads 4] [--runs 1000000]
//! ```
//!
//! With `xdp_counter.o` (the seed program: count frames by length in a hash map, swap the MACs,
//! `XDP_TX`) it checks at the end that the map counted every call of every thread.

use std::sync::Arc;
use std::time::Instant;

use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
use xdp_vm::elf::Object;
use xdp_vm::jit::{JitProgram, JitWorker};
use xdp_vm::{Program, Xdp, create_maps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut path, mut threads, mut runs) = (None, 4usize, 1_000_000u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().ok_or("--threads needs a number")?.parse()?,
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            _ => path = Some(a),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: embed OBJ [--threads N] [--runs N]");
        std::process::exit(2);
    };

    // 1. Load: parse the object and create its maps, one per-CPU slot per thread.
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let obj = Object::parse(&bytes)?;
    let spec = obj.program(None)?;
    let maps = create_maps(&obj, threads)?;
    // 2. Verify: `Program::new` runs the verifier and refuses an unsafe program.
    let prog = Program::<Xdp>::new(spec, &maps)?;
    // 3. Compile once; the compiled program is `Send + Sync`.
    let jit = Arc::new(JitProgram::compile(&prog)?);
    println!("{}: {} instructions, compiled in {:?}", jit.name(), prog.insns().len(), jit.compile_time());

    // 4. Call it from every thread: each keeps a `JitWorker` (the program, its run environment
    //    and stack, for the thread's own slot of per-CPU maps) and a frame.
    let mut packet = vec![0u8; 98];
    packet[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    packet[12..14].copy_from_slice(&[0x08, 0x00]);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|slot| {
            let (jit, packet) = (jit.clone(), packet.clone());
            std::thread::spawn(move || -> Result<(u64, f64), xdp_vm::Fault> {
                let mut worker = JitWorker::new(jit, slot);
                let mut frame = vec![0u8; XDP_FRAME_SIZE];
                let mut buff = XdpBuff::load(&mut frame, &packet).expect("a 98-byte frame fits");
                let t = Instant::now();
                let mut last = 0;
                for _ in 0..runs {
                    last = worker.run(&mut buff)?;
                }
                Ok((last, t.elapsed().as_nanos() as f64 / runs as f64))
            })
        })
        .collect();
    for (slot, w) in workers.into_iter().enumerate() {
        let (ret, ns) = w.join().map_err(|_| "a worker panicked")??;
        println!("thread {slot}: return value {ret}, {ns:.1} ns per call");
    }
    println!("{threads} threads x {runs} calls in {:?}", started.elapsed());

    // The maps are shared: for the seed program, the count for 98-byte frames is every call.
    if let Some(counts) = maps.iter().find(|m| m.name() == "pkt_len_count") {
        let value = counts.lookup_user(&98u32.to_ne_bytes())?;
        let count = u32::from_ne_bytes(value[..4].try_into()?);
        println!("pkt_len_count[98] = {count}");
        assert_eq!(u64::from(count), threads as u64 * runs % (1 << 32), "every call counted once");
    }
    Ok(())
}
