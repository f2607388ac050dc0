//! The `dataplane` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dataplane::control::{self, client, proto::DumpFormat, proto::Request};
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
    /// Inspect and change the maps of a running instance.
    #[command(subcommand)]
    Map(MapCommand),
    /// A running instance's per-second stats lines and totals per queue.
    Stats {
        #[command(flatten)]
        target: Target,
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a running instance re-read its config file (as SIGHUP does).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Attach a uprobe program to a running instance's probe site (or function) until Ctrl-C
    /// or --duration, then print its maps bpftrace-style and detach.
    Trace {
        /// The clang-built object.
        object: PathBuf,
        /// Probe site (`rx`, `batch`, `verdict`, ...; or `site:NAME`) or function name.
        #[arg(long = "target")]
        site: String,
        /// The program in the object (default: its first uprobe/uretprobe program).
        #[arg(long)]
        program: Option<String>,
        /// How to print a map: `MAP:count`, `MAP:hist` or `MAP:lhist:MIN:MAX:STEP` (repeatable;
        /// default: every map, an 8-byte key as a hist, else a count); `MAP:events:TYPE` names
        /// the BTF type of a ring buffer's or perf-event array's records (default: the type
        /// named after the map, else hex). Records print as lines as they come.
        #[arg(long, value_parser = parse_print)]
        print: Vec<dataplane::config::PrintConfig>,
        /// Also print the maps every SECS seconds (bpftrace's `interval:s:N { print(@); }`);
        /// SIGUSR1 prints them at once.
        #[arg(long, value_name = "SECS")]
        interval: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_print(s: &str) -> Result<dataplane::config::PrintConfig, String> {
    use dataplane::config::{PrintConfig, PrintKind};
    let parts: Vec<&str> = s.split(':').collect();
    let num = |t: &str| t.parse::<i64>().map_err(|_| format!("{s:?}: {t:?} is not an integer"));
    let (kind, bounds) = match parts.as_slice() {
        [_, "count"] => (PrintKind::Count, None),
        [_, "hist"] => (PrintKind::Hist, None),
        [_, "lhist", min, max, step] => (PrintKind::Lhist, Some((num(min)?, num(max)?, num(step)?))),
        [_, "events"] | [_, "events", _] => (PrintKind::Events, None),
        _ => {
            return Err(format!(
                "{s:?}: expected MAP:count, MAP:hist, MAP:lhist:MIN:MAX:STEP or MAP:events[:TYPE]"
            ));
        }
    };
    if let Some((min, max, step)) = bounds
        && (step <= 0 || max <= min)
    {
        return Err(format!("{s:?}: lhist needs MIN < MAX and STEP > 0"));
    }
    Ok(PrintConfig {
        map: parts[0].to_string(),
        kind,
        min: bounds.map(|b| b.0),
        max: bounds.map(|b| b.1),
        step: bounds.map(|b| b.2),
        record_type: match parts.as_slice() {
            [_, "events", t] => Some((*t).to_string()),
            _ => None,
        },
    })
}

/// Prints record lines of a `trace_events` / `trace_detach` reply, and a warning for lost ones.
fn print_event_lines(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in v["lines"].as_array().into_iter().flatten() {
        writeln!(out, "{}", l.as_str().unwrap_or(""))?;
    }
    out.flush()?;
    if let Some(lost) = v["lost"].as_u64().filter(|&n| n > 0) {
        writeln!(std::io::stderr(), "warning: {lost} record lines lost (not read in time)")?;
    }
    Ok(())
}

/// `dataplane trace`: attach, stream record lines, print the maps every `interval` and on
/// SIGUSR1, and at Ctrl-C or the end of `duration` print them a last time and detach (the
/// instance also detaches when this process dies and its connection closes).
fn trace_command(
    target: &Target,
    object: &std::path::Path,
    program: Option<String>,
    site: String,
    print: Vec<dataplane::config::PrintConfig>,
    duration: Option<f64>,
    interval: Option<f64>,
) -> anyhow::Result<Option<ExitCode>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    if let Some(d) = duration
        && !(d.is_finite() && d >= 0.0)
    {
        anyhow::bail!("--duration {d}: expected a non-negative number of seconds");
    }
    if let Some(i) = interval
        && !(i.is_finite() && i >= 0.01)
    {
        anyhow::bail!("--interval {i}: expected a number of seconds, at least 0.01");
    }
    // The instance resolves the path in its own working directory: send it absolute.
    let object = std::path::absolute(object).with_context(|| format!("{}", object.display()))?;
    let mut session = client::Session::open(&control::run_dir(), target.name.as_deref())?;
    let v = session.call(&Request::TraceAttach { object, program, target: site.clone(), print })?;
    let id = v["id"].as_u64().context("malformed trace_attach reply: no id")?;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let mut err = std::io::stderr();
    for e in &events {
        writeln!(
            err,
            "records of {} print as lines, {}",
            e["map"].as_str().unwrap_or("?"),
            e["print"].as_str().unwrap_or("?")
        )?;
    }
    // The handlers before the "tracing" line: a script may signal as soon as it reads it.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    control::sys::catch_sigusr1().context("installing the SIGUSR1 handler")?;
    writeln!(
        err,
        "tracing {site} (trace {id}); {}",
        if duration.is_some() { "printing at the end of --duration" } else { "Ctrl-C to print and detach" }
    )?;
    let started = Instant::now();
    let limit = duration.map(Duration::from_secs_f64);
    let every = interval.map(Duration::from_secs_f64);
    let mut next_print = every.map(|e| started + e);
    let print_maps = |session: &mut client::Session| -> anyhow::Result<()> {
        let v = session.call(&Request::TracePrint { id })?;
        let mut out = std::io::stdout().lock();
        // bpftrace's `time("%H:%M:%S\n")` line before an interval print.
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        writeln!(out, "{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)?;
        out.write_all(v["text"].as_str().unwrap_or("").as_bytes())?;
        out.flush()?;
        Ok(())
    };
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| started.elapsed() < l) {
        std::thread::sleep(Duration::from_millis(20));
        if !events.is_empty() {
            let v = session.call(&Request::TraceEvents { id })?;
            print_event_lines(&v)?;
        }
        let due = next_print.is_some_and(|t| Instant::now() >= t);
        if due || control::sys::take_sigusr1() {
            print_maps(&mut session)?;
            if let (Some(t), Some(e)) = (next_print.as_mut(), every)
                && due
            {
                *t += e;
            }
        }
    }
    let v = session.call(&Request::TraceDetach { id })?;
    print_event_lines(&v)?;
    std::io::stdout().lock().write_all(v["text"].as_str().unwrap_or("").as_bytes())?;
    Ok(None)
}

/// Which running instance a client command talks to.
#[derive(Debug, clap::Args)]
struct Target {
    /// The instance (its config's `name`, default the config file's stem); optional when only
    /// one runs.
    #[arg(long)]
    name: Option<String>,
}

/// `map update` flags, as `bpftool map update` names them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum UpdateFlag {
    Any,
    Noexist,
    Exist,
}

#[derive(Debug, Subcommand)]
enum MapCommand {
    /// Every map of the running program: id, type, sizes, entries.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// One map's entries as JSON (DESIGN.md's hex form, or bpftool's with --format bpftool),
    /// with bpftool's "formatted" key and value where the map's BTF types them.
    Dump {
        map: String,
        #[arg(long, value_enum, default_value_t = DumpFormat::Design)]
        format: DumpFormat,
        #[command(flatten)]
        target: Target,
    },
    /// One entry. KEY: hex bytes in memory order (62000000 for the u32 98), or typed from the
    /// map's BTF as JSON (98; '{"prefixlen":24,"addr":"10.0.0.0"}').
    Lookup {
        map: String,
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Write one entry; KEY and VALUE as hex bytes or typed JSON, as for lookup (per-CPU maps:
    /// one value for every slot, or in hex all slots).
    Update {
        map: String,
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[arg(long, value_enum, default_value_t = UpdateFlag::Any)]
        flags: UpdateFlag,
        #[command(flatten)]
        target: Target,
    },
    /// Delete one entry (KEY as for lookup).
    Delete {
        map: String,
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum ProgCommand {
    /// The program a running instance runs: id, name, engine, sizes, live run counters.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Replace a running instance's program without stopping it: the new object is verified and
    /// compiled first, keeps the maps of the same name and definition, and every worker switches
    /// between two packets.
    Replace {
        /// The new clang-built eBPF object.
        object: PathBuf,
        /// The program in it (default: its first).
        #[arg(long)]
        program: Option<String>,
        #[command(flatten)]
        target: Target,
    },
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
            // ("required arguments were not provided:" lists them on the lines that follow.)
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage"))
                .map(str::trim)
                .collect();
            let first = if first.is_empty() { "invalid arguments".to_string() } else { first.join(" ") };
            let _ = writeln!(std::io::stderr(), "error: {}", first.trim_start_matches("error: "));
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
    let Some(command) = cli.command else {
        return run_config(cli.config.as_deref(), cli.duration).map(|()| None);
    };
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
        Command::Prog(ProgCommand::List { target, json }) => {
            let v = ask(&target, &Request::ProgList)?;
            print_value(&v, json, client::render_prog_list)
        }
        Command::Prog(ProgCommand::Replace { object, program, target }) => {
            // The instance resolves the path in its own working directory: send it absolute.
            let object = std::path::absolute(&object).with_context(|| format!("{}", object.display()))?;
            let v = ask(&target, &Request::ProgReplace { object, program })?;
            writeln!(
                std::io::stdout().lock(),
                "replaced: program {} is id {} on {}/{} workers (kept maps: {}; new maps: {})",
                v["name"].as_str().unwrap_or("?"),
                v["id"],
                v["switched"],
                v["workers"],
                join(&v["kept_maps"]),
                join(&v["new_maps"])
            )?;
            if v["globals_not_in_object"].as_array().is_some_and(|a| !a.is_empty()) {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: config [program.globals] not in the new object, not applied: {}",
                    join(&v["globals_not_in_object"])
                );
            }
            Ok(None)
        }
        Command::Map(cmd) => map_command(cmd),
        Command::Trace { object, site, program, print, interval, target } => {
            trace_command(&target, &object, program, site, print, cli.duration, interval)
        }
        Command::Stats { target, json } => {
            let v = ask(&target, &Request::Stats)?;
            print_value(&v, json, client::render_stats)
        }
        Command::Reload { target } => {
            let v = ask(&target, &Request::Reload)?;
            writeln!(std::io::stdout().lock(), "{v}")?;
            Ok(None)
        }
        Command::Prog(ProgCommand::Dump { object, program }) => {
            let text = prog_run::dump(&object, program.as_deref())?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(None)
        }
        Command::Prog(ProgCommand::Run {
            object,
            data_in,
            data_out,
            repeat,
            program,
            engine,
            json,
            no_verify,
        }) => {
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

fn ask(target: &Target, req: &Request) -> anyhow::Result<serde_json::Value> {
    Ok(client::call(&control::run_dir(), target.name.as_deref(), req)?)
}

fn join(v: &serde_json::Value) -> String {
    let names: Vec<&str> = v.as_array().into_iter().flatten().filter_map(serde_json::Value::as_str).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

fn print_value(
    v: &serde_json::Value,
    json: bool,
    text: fn(&serde_json::Value) -> String,
) -> anyhow::Result<Option<ExitCode>> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{v}")?;
    } else {
        out.write_all(text(v).as_bytes())?;
    }
    Ok(None)
}

fn map_command(cmd: MapCommand) -> anyhow::Result<Option<ExitCode>> {
    let mut out = std::io::stdout().lock();
    match cmd {
        MapCommand::List { target, json } => {
            let v = ask(&target, &Request::MapList)?;
            drop(out);
            return print_value(&v, json, client::render_map_list);
        }
        MapCommand::Dump { map, format, target } => {
            let v = ask(&target, &Request::MapDump { map, format })?;
            writeln!(out, "{v}")?;
        }
        MapCommand::Lookup { map, key, target } => {
            let v = ask(&target, &Request::MapLookup { map, key })?;
            writeln!(out, "{v}")?;
        }
        MapCommand::Update { map, key, value, flags, target } => {
            let flags = match flags {
                UpdateFlag::Any => 0,
                UpdateFlag::Noexist => 1,
                UpdateFlag::Exist => 2,
            };
            ask(&target, &Request::MapUpdate { map, key, value, flags })?;
        }
        MapCommand::Delete { map, key, target } => {
            ask(&target, &Request::MapDelete { map, key })?;
        }
    }
    Ok(None)
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
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    // After the Ctrl-C handler, which (with its `termination` feature) claims SIGHUP too:
    // SIGHUP re-reads the config instead of stopping.
    control::sys::catch_sighup().context("cannot install the SIGHUP handler")?;
    // SIGUSR1 prints the [[trace]] maps now (bpftrace's SIGUSR1).
    control::sys::catch_sigusr1().context("cannot install the SIGUSR1 handler")?;
    let opts = dataplane::runtime::RunOptions { duration, no_program: false, config_path: None };
    dataplane::runtime::run_file(config, &opts, &stop)?;
    Ok(())
}
