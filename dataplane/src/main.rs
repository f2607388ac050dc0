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
    command: Option<Command>,
    /// Run the dataplane described by this config file (as `dataplane run --config FILE`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// With --config: stop after this many seconds (default: at Ctrl-C).
    #[arg(long, global = true)]
    duration: Option<f64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load, inspect and run eBPF programs.
    #[command(subcommand)]
    Prog(ProgCommand),
    /// Run the dataplane described by --config FILE until Ctrl-C or --duration.
    Run,
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
        /// Skip the verifier (experiments only: the program then relies on run-time checks).
        #[arg(long)]
        no_verify: bool,
    },
    /// Prove a program safe: prints `accepted` (exit 0), or the verifier log (exit 1).
    Verify {
        /// The clang-built eBPF object.
        object: PathBuf,
        /// The program to verify (default: the object's first).
        #[arg(long)]
        program: Option<String>,
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
        Ok(Some(code)) => code,
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// `Some(code)` when a command's exit code is its answer (`prog verify`).
fn run(cli: Cli) -> anyhow::Result<Option<ExitCode>> {
    let Some(command) = cli.command else { return run_config(cli.config.as_deref(), cli.duration).map(|()| None) };
    match command {
        Command::Run => run_config(cli.config.as_deref(), cli.duration).map(|()| None),
        Command::Prog(ProgCommand::Verify { object, program }) => {
            match prog_run::verify(&object, program.as_deref())? {
                prog_run::Verdict::Accepted { .. } => {
                    writeln!(std::io::stdout().lock(), "accepted")?;
                    Ok(None)
                }
                prog_run::Verdict::Rejected { log } => {
                    write!(std::io::stdout().lock(), "{log}")?;
                    Ok(Some(ExitCode::from(1)))
                }
            }
        }
        Command::Prog(ProgCommand::Dump { object, program }) => {
            let text = prog_run::dump(&object, program.as_deref())?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(None)
        }
        Command::Prog(ProgCommand::Run { object, data_in, data_out, repeat, program, engine, json, no_verify }) => {
            if no_verify {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: --no-verify: the program is not verified; only run-time checks protect this process"
                );
            }
            let req = RunRequest {
                object: &object,
                data_in: &data_in,
                program: program.as_deref(),
                repeat,
                engine,
                verify: !no_verify,
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
            Ok(None)
        }
    }
}

/// `dataplane --config FILE [--duration SECS]`: until Ctrl-C (SIGINT/SIGTERM) or the duration.
fn run_config(config: Option<&std::path::Path>, duration: Option<f64>) -> anyhow::Result<()> {
    use std::sync::Arc;
    let config = config.context("no config: use `dataplane --config FILE` (or a subcommand; see --help)")?;
    use std::sync::atomic::{AtomicBool, Ordering};
    let duration = match duration {
        Some(d) if !(d > 0.0 && d < 1e9) => anyhow::bail!("--duration must be a positive number of seconds"),
        d => d.map(std::time::Duration::from_secs_f64),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).context("cannot install the Ctrl-C handler")?;
    let opts = dataplane::runtime::RunOptions { duration, no_program: false };
    dataplane::runtime::run_file(config, &opts, &stop)?;
    Ok(())
}
