//! Prints the machine code the JIT makes for a program of a clang-built object:
//! `cargo run -p xdp-vm --example jit_disasm -- OBJ [PROGRAM]`.

use xdp_vm::elf::Object;
use xdp_vm::jit::JitProgram;
use xdp_vm::{Program, Xdp, create_maps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: jit_disasm OBJ [PROGRAM]");
        std::process::exit(2);
    };
    let name = args.next();
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let obj = Object::parse(&bytes)?;
    let spec = obj.program(name.as_deref())?;
    let maps = create_maps(&obj, 1)?;
    let prog = Program::<Xdp>::new(spec, &maps)?;
    print!("{}", JitProgram::disassemble(&prog)?);
    Ok(())
}
