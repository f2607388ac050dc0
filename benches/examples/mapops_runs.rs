//! The mapops program's runs through our JIT, for counting instructions per map operation
//! (callgrind) without the suite: `mapops_runs MAP OP RUNS` with MAP one of `hash`, `array`,
//! `percpu_hash`, `percpu_array` and OP `update`, `lookup` or `delete` (each delete run follows
//! an update run that puts the keys back). Instructions per operation: callgrind at two RUNS,
//! the difference over the difference of runs times 1000 (for `delete`, minus the update's).

use xdp_vm::context::XDP_FRAME_SIZE;
use xdp_vm::elf::Object;
use xdp_vm::jit::{JitProgram, JitRunner};
use xdp_vm::{Program, Xdp, XdpBuff, create_maps};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, map, op, runs] = &args[..] else {
        anyhow::bail!("usage: mapops_runs MAP OP RUNS");
    };
    let runs: u32 = runs.parse()?;
    let obj = Object::parse(&std::fs::read(benches::object("bench/mapops"))?)?;
    let spec = obj.program(Some(&format!("mapops_{map}")))?;
    let maps = create_maps(&obj, dataplane::prog_run::cpu_slots())?;
    let jit = JitProgram::compile(&Program::<Xdp>::new(spec, &maps)?)?;
    let mut runner = JitRunner::new();
    let mut buf = vec![0u8; XDP_FRAME_SIZE];
    let code = match op.as_str() {
        "update" => 0,
        "lookup" => 1,
        "delete" => 2,
        other => anyhow::bail!("unknown operation {other}"),
    };
    let fill = benches::mapops::frame(0, 0);
    let packet = benches::mapops::frame(0, code);
    let mut run = |frame: &[u8]| -> anyhow::Result<()> {
        let mut buff = XdpBuff::load(&mut buf, frame)?;
        jit.run_on(&mut runner, &mut buff, 0)?;
        Ok(())
    };
    run(&fill)?;
    let t0 = std::time::Instant::now();
    for _ in 0..runs {
        if code == 2 {
            run(&fill)?;
        }
        run(&packet)?;
    }
    println!("{:.1} ns per run", t0.elapsed().as_nanos() as f64 / f64::from(runs.max(1)));
    Ok(())
}
