//! The `dataplane` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dataplane::prog_run::{self, Engine, RunRequest};

#[derive(Debug, Parser)]
#[command(name = "dataplane", version, about = "Run unmodified XDP programs in userspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load, inspect and run eBPF programs.
    #[command(subcommand)]
    Prog(ProgCommand),
}

#[derive(Debug, Subcommand)]
enum ProgCommand {
    /// Print a program's instructions, one per line, with map names resolved.
    Dump {
        /// The clang-built eBPF object.
        object: PathBuf,
        /// The program to print (default: the object's first).
        #[arg(long)]
        program: Option<String>,
    },
    /// Run one XDP program over one packet, as `bpftool prog run` does in the kernel.
    Run {
        /// The clang-built eBPF object.
        object: PathBuf,
        /// The input frame (raw bytes, e.g. pktgen's icmp.bin).
        #[arg(long)]
        data_in: PathBuf,
        /// Where to write the output frame.
        #[arg(long)]
        data_out: Option<PathBuf>,
        /// How many times to run the program on the frame.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// The program to run (default: the object's first).
        #[arg(long)]
        program: Option<String>,
        /// The engine.
        #[arg(long, value_enum, default_value_t = Engine::Jit)]
        engine: Engine,
        /// Print one JSON object instead of bpftool's line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's first line names the problem; the usage lines after it would break the
            // one-line contract scripts rely on.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            let _ = writeln!(std::io::stderr(), "error: {first}");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Prog(ProgCommand::Dump { object, program }) => {
            let text = prog_run::dump(&object, program.as_deref())?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Prog(ProgCommand::Run { object, data_in, data_out, repeat, program, engine, json }) => {
            let req = RunRequest {
                object: &object,
                data_in: &data_in,
                program: program.as_deref(),
                repeat,
                engine,
            };
            let report = prog_run::run(&req)?;
            if let Some(path) = data_out {
                std::fs::write(&path, &report.data_out)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer(&mut out, &report)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", prog_run::bpftool_line(&report))?;
            }
            Ok(())
        }
    }
}
