//! `dataplane --config FILE`: loads the program, opens the ports, runs one pinned worker per
//! queue, prints stats, and tears everything down — in that order, with every step undone by a
//! drop when a later one fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xdp_vm::elf::Object;
use xdp_vm::{Program, Xdp, create_maps};

use crate::backend::queue::Queue as _;
use crate::backend::{self, BackendError, Sink};
use crate::config::{BackendKind, Config, ConfigError, PassAction};
use crate::control::server::{ControlError, ControlSocket};
use crate::control::swap::{Loaded, ProgSlot};
use crate::control::{self, Instance, WorkerView};
use crate::lab::{self, Lab, LabError};
use crate::prog_run;
use crate::redirect::{self, Quiesce};
use crate::stats::{self, Snapshot, WorkerCounters};
use crate::worker::{EngineError, LANE_DEPTH, PassTo, Worker};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The object or program: the same errors as `prog run`.
    #[error(transparent)]
    Program(#[from] prog_run::RunError),
    #[error("config key program.globals.{name}: {reason}")]
    Global { name: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(
        "this dataplane was built without DPDK (pkg-config found no libdpdk at build time): backend = \"dpdk\" is unavailable"
    )]
    NoDpdk,
    #[cfg(dpdk)]
    #[error(transparent)]
    Dpdk(#[from] backend::dpdk::DpdkError),
    #[error("cannot read inject_pcap file {path}")]
    Inject {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config key metrics: cannot listen on {addr}")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Trace(#[from] crate::uprobe::trace::TraceError),
    #[error("cannot create TAP device {name} for XDP_PASS")]
    Tap {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this long (default: until `stop`).
    pub duration: Option<Duration>,
    /// Run no program: every frame goes straight back out, to measure the loop alone.
    pub no_program: bool,
    /// The config file, re-read on SIGHUP and `dataplane reload`.
    pub config_path: Option<PathBuf>,
}

/// What a run did, for the summary and for tests.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub totals: Snapshot,
    pub per_queue: Vec<(String, Snapshot)>,
    pub seconds: f64,
    /// Frames not accounted for at exit (must be 0).
    pub leaked_frames: usize,
    /// Lab mode: frames sent from the peer and frames that came back to it.
    pub lab: Option<(u64, u64)>,
    /// Worker time per frame between RX and TX (program included), ns: p50 and p99.
    pub frame_ns: (u64, u64),
}

/// Loads the object of `cfg` with its overrides and binds the program to fresh maps with
/// `slots` per-CPU slots.
///
/// # Errors
/// [`RunError`] for an unreadable or malformed object, a bad override or a program `xdp-vm`
/// refuses.
pub fn load_program(cfg: &Config, slots: usize) -> Result<(Object, Vec<Program<Xdp>>, usize), RunError> {
    let path = &cfg.program.object;
    let bytes = std::fs::read(path)
        .map_err(|source| prog_run::RunError::Read { path: path.display().to_string(), source })?;
    let (mut obj, extras) = Object::parse_with_extras(&bytes)
        .map_err(|source| prog_run::RunError::Object { path: path.display().to_string(), source })?;
    for (name, value) in &cfg.program.globals {
        let size = obj
            .maps
            .iter()
            .flat_map(|m| m.vars.iter())
            .find(|v| &v.name == name)
            .map(|v| v.size)
            .ok_or_else(|| RunError::Global {
                name: name.clone(),
                reason: "no such global variable in the object".into(),
            })?;
        let bytes = value.bytes(size).map_err(|reason| RunError::Global { name: name.clone(), reason })?;
        obj.set_global(name, &bytes)
            .map_err(|e| RunError::Global { name: name.clone(), reason: e.to_string() })?;
    }
    let spec = prog_run::xdp_program(&obj, path, cfg.program.name.as_deref())?;
    let maps = create_maps(&obj, slots)
        .map_err(|source| prog_run::RunError::Load { name: spec.name.clone(), source })?;
    // With a prog array, every XDP program of the object is loaded and linked, and the array
    // filled from its initialiser, as libbpf (and `prog run`) do: tail calls run as in the kernel.
    let (progs, index) = prog_run::load_linked(path, &obj, &extras, &maps, spec, true)?;
    Ok((obj, progs, index))
}

fn tap_name(interface: &str) -> String {
    let mut n = format!("dp-{interface}");
    n.truncate(15);
    n
}

/// The TAP device that stands for the AF_XDP application of `interface`: where `XSKMAP`
/// redirects go.
#[must_use]
pub fn xsk_tap_name(interface: &str) -> String {
    let mut n = format!("dx-{interface}");
    n.truncate(15);
    n
}

/// Runs the dataplane described by `cfg` until `stop` is set or the duration passes.
///
/// # Errors
/// [`RunError`] when anything fails before the workers start; nothing stays attached or
/// created.
pub fn run(cfg: &Config, opts: &RunOptions, stop: &Arc<AtomicBool>) -> Result<Summary, RunError> {
    let mut err = std::io::stderr();
    for line in lab::cleanup_stale() {
        let _ = writeln!(err, "dataplane: {line}");
    }
    let queues = cfg.queues();
    let slots = queues.len() + 1;
    let (_obj, progs, index) = load_program(cfg, slots)?;
    let prog = progs[index].clone();
    // Each XSKMAP slot of a configured queue id holds that queue's socket (its id is the queue
    // id), as the AF_XDP application of a kernel set-up would have put it there.
    for m in prog.maps().iter().filter(|m| m.def().map_type == maps::map_type::XSKMAP) {
        for q in cfg.ports.iter().flat_map(|p| p.queues.iter()).filter(|&&q| q < m.def().max_entries) {
            let _ = m.update_user(&q.to_ne_bytes(), &q.to_ne_bytes(), maps::BPF_ANY);
        }
    }
    let engine_kind = cfg.program.engine;
    // Compile once before touching an interface, so a refusal leaves nothing behind; every
    // worker shares the code.
    let first = Arc::new(Loaded::linked(1, &progs, index, engine_kind, cfg.program.object.clone())?);
    let program = Arc::new(ProgSlot::new(first));
    // The control socket and the metrics port, also before any interface: a name in use or a
    // taken port fail cleanly.
    let name = if cfg.name.is_empty() { "dataplane" } else { cfg.name.as_str() };
    let control_socket = ControlSocket::bind(&control::run_dir(), name)?;
    let metrics = match &cfg.metrics {
        Some(addr) => Some(
            control::metrics::bind(addr)
                .map_err(|source| RunError::Metrics { addr: addr.clone(), source })?,
        ),
        None => None,
    };
    // Tracing programs attach before any interface is touched: a refusal leaves nothing behind.
    let trace_slots = slots.max(crate::kernel::possible_cpus().unwrap_or(slots));
    let mut traces = crate::uprobe::trace::start(&cfg.trace, trace_slots, &cfg.program.object, prog.maps())?;

    let lab = match &cfg.lab {
        Some(l) => {
            let nq = cfg
                .ports
                .iter()
                .find(|p| p.interface == l.interface)
                .map_or(1, |p| p.queues.iter().max().map_or(1, |m| m + 1));
            Some(Lab::create(&l.namespace, &l.interface, &l.peer, nq)?)
        }
        None => None,
    };
    // Lab: count what comes back to the peer, in XDP on the peer, and let it go no further.
    let sink = match &lab {
        Some(l) => {
            let peer = l.peer.clone();
            let s = l
                .in_namespace(move || -> Result<Sink, String> {
                    let mut s = Sink::load(false).map_err(|e| e.to_string())?;
                    let idx = backend::sys::ifindex_here(&peer).map_err(|e| e.to_string())?;
                    s.attach(idx).map_err(|e| e.to_string())?;
                    Ok(s)
                })
                .ok()
                .and_then(Result::ok);
            if s.is_none() {
                let _ = writeln!(
                    err,
                    "warning: lab: no counting program on the peer; returned frames are not counted"
                );
            }
            s
        }
        None => None,
    };

    let mut ports = Vec::new();
    let mut workers = Vec::new();
    let mut views = Vec::new();
    let stop_workers = Arc::new(AtomicBool::new(false));
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut taps = Vec::new();
    let mut pass_for = |name: &str| -> Result<PassTo, RunError> {
        Ok(match cfg.pass {
            PassAction::Drop => PassTo::Drop,
            PassAction::Tap => {
                let name = tap_name(name);
                let f = backend::sys::open_tap(&name)
                    .map_err(|source| RunError::Tap { name: name.clone(), source })?;
                let _ = std::process::Command::new("ip").args(["link", "set", &name, "up"]).status();
                let f = Arc::new(f);
                taps.push(f.clone());
                PassTo::Tap(f)
            }
        })
    };
    // A program with an XSKMAP delivers what it redirects there to the application TAP device
    // of the port (`dx-<interface>`), the userspace side of its AF_XDP sockets.
    let has_xskmap = prog.maps().iter().any(|m| m.def().map_type == maps::map_type::XSKMAP);
    let mut xsk_taps = Vec::new();
    let mut xsk_for = |name: &str| -> Result<Option<Arc<std::fs::File>>, RunError> {
        if !has_xskmap {
            return Ok(None);
        }
        let name = xsk_tap_name(name);
        let f =
            backend::sys::open_tap(&name).map_err(|source| RunError::Tap { name: name.clone(), source })?;
        let _ = std::process::Command::new("ip").args(["link", "set", &name, "up"]).status();
        let f = Arc::new(f);
        xsk_taps.push(f.clone());
        Ok(Some(f))
    };
    let core_for = |slot: usize| {
        if cfg.workers.cores.is_empty() {
            Some(slot % online)
        } else {
            Some(cfg.workers.cores[slot % cfg.workers.cores.len()])
        }
    };
    // Frames each finite replay (pcap) port delivers, and its workers: the run ends by itself
    // once every such port is drained.
    #[cfg_attr(not(dpdk), expect(unused_mut, reason = "only DPDK ports replay pcap files"))]
    let mut finite: Vec<(u64, Vec<Arc<WorkerCounters>>)> = Vec::new();
    #[cfg(dpdk)]
    let mut dpdk_ports = Vec::new();
    #[cfg(dpdk)]
    let mut dpdk_workers = Vec::new();
    if cfg.backend == BackendKind::Dpdk {
        #[cfg(not(dpdk))]
        return Err(RunError::NoDpdk);
        #[cfg(dpdk)]
        {
            use backend::dpdk;
            let (args, warning) = dpdk::plan(cfg);
            // What can be checked before DPDK starts is (pcap files): a bad device string then
            // costs no EAL start.
            for pc in &cfg.ports {
                dpdk::precheck(pc.device.as_deref().unwrap_or_default())?;
            }
            dpdk::init(&args)?;
            let mbufs = cfg.dpdk.as_ref().and_then(|d| d.mbufs).unwrap_or(0);
            for pc in &cfg.ports {
                let (port, queues) = dpdk::open_port(pc, mbufs)?;
                if let Some(path) = &pc.inject_pcap {
                    let frames = dpdk::pcap_read(path)
                        .map_err(|source| RunError::Inject { path: path.display().to_string(), source })?;
                    let n = dpdk::inject(&port, &frames, pc.inject_copies as usize)?;
                    let _ = writeln!(err, "dataplane: {}: {n} frame(s) injected", port.name);
                }
                let pass = pass_for(&port.name)?;
                let mut cs = Vec::new();
                for (queue_id, queue) in (0u32..).zip(queues) {
                    let slot = workers.len() + dpdk_workers.len();
                    let core = core_for(slot);
                    let _ = writeln!(
                        err,
                        "dataplane: {} (dpdk port {}) queue {queue_id}: worker {slot} on cpu {}",
                        port.name,
                        port.port_id,
                        core.unwrap_or(0)
                    );
                    let counters = Arc::new(WorkerCounters::default());
                    cs.push(counters.clone());
                    let label = format!("{}/q{queue_id}", port.name);
                    views.push(WorkerView {
                        label: label.clone(),
                        interface: port.name.clone(),
                        queue: queue_id,
                        counters: counters.clone(),
                    });
                    dpdk_workers.push(Worker {
                        label,
                        queue,
                        ifindex: port.ifindex,
                        queue_id,
                        slot,
                        core,
                        batch: pc.batch as usize,
                        prefetch: pc.prefetch,
                        program: program.clone(),
                        pass: pass.clone(),
                        counters,
                        stop: stop_workers.clone(),
                        no_program: opts.no_program,
                        outbox: redirect::Outbox::default(),
                        inbox: redirect::Inbox::default(),
                        quiesce: Arc::new(Quiesce::new(1)),
                        xsk: xsk_for(&port.name)?,
                    });
                }
                if let Some(n) = port.finite_rx {
                    finite.push((n, cs));
                }
                dpdk_ports.push(port);
            }
            if let Some(w) = warning {
                let _ = writeln!(err, "{w}");
            }
        }
    }
    for pc in cfg.ports.iter().filter(|_| cfg.backend == BackendKind::Afxdp) {
        let (port, sockets) = backend::open_port(pc)?;
        let pass = pass_for(&pc.interface)?;
        let xsk = xsk_for(&pc.interface)?;
        for (queue, socket) in sockets {
            let slot = workers.len();
            let core = core_for(slot);
            if slot == 0 && !socket.huge_pages() {
                let _ = writeln!(err, "warning: no huge pages reserved; UMEM on 4 KiB pages");
            }
            let _ = writeln!(
                err,
                "dataplane: {} queue {queue}: {} mode, {}, worker {slot} on cpu {}",
                pc.interface,
                match pc.attach {
                    crate::config::AttachMode::Native => "native",
                    crate::config::AttachMode::Skb => "skb",
                },
                if socket.zero_copy() { "zero-copy" } else { "copy" },
                core.unwrap_or(0)
            );
            workers.push(Worker {
                label: format!("{}/q{queue}", pc.interface),
                queue: socket,
                ifindex: port.ifindex,
                queue_id: queue,
                slot,
                core,
                batch: pc.batch as usize,
                prefetch: pc.prefetch,
                program: program.clone(),
                pass: pass.clone(),
                counters: Arc::new(WorkerCounters::default()),
                stop: stop_workers.clone(),
                no_program: opts.no_program,
                outbox: redirect::Outbox::default(),
                inbox: redirect::Inbox::default(),
                quiesce: Arc::new(Quiesce::new(1)),
                xsk: xsk.clone(),
            });
            let w = &workers[workers.len() - 1];
            views.push(WorkerView {
                label: w.label.clone(),
                interface: pc.interface.clone(),
                queue,
                counters: w.counters.clone(),
            });
        }
        ports.push(port);
    }
    // The lanes between workers of different ports, for redirects (one backend per run).
    let quiesce = Arc::new(Quiesce::new(workers.len()));
    let ifindexes: Vec<u32> = workers.iter().map(|w| w.ifindex).collect();
    for (w, (inbox, outbox)) in workers.iter_mut().zip(redirect::wire(&ifindexes, LANE_DEPTH)) {
        (w.inbox, w.outbox, w.quiesce) = (inbox, outbox, quiesce.clone());
    }
    #[cfg(dpdk)]
    {
        let quiesce = Arc::new(Quiesce::new(dpdk_workers.len()));
        let ifindexes: Vec<u32> = dpdk_workers.iter().map(|w| w.ifindex).collect();
        for (w, (inbox, outbox)) in dpdk_workers.iter_mut().zip(redirect::wire(&ifindexes, LANE_DEPTH)) {
            (w.inbox, w.outbox, w.quiesce) = (inbox, outbox, quiesce.clone());
        }
    }
    #[cfg_attr(not(dpdk), expect(unused_mut, reason = "DPDK workers join the AF_XDP ones"))]
    let mut counters: Vec<(String, Arc<WorkerCounters>)> =
        workers.iter().map(|w| (w.label.clone(), w.counters.clone())).collect();
    // Each worker hands back its queue's count of frames still held (0 unless leaked).
    #[cfg_attr(not(dpdk), expect(unused_mut, reason = "DPDK workers join the AF_XDP ones"))]
    let mut handles: Vec<std::thread::JoinHandle<usize>> =
        workers.into_iter().map(|w| std::thread::spawn(move || w.run().held())).collect();
    #[cfg(dpdk)]
    {
        counters.extend(dpdk_workers.iter().map(|w| (w.label.clone(), w.counters.clone())));
        handles.extend(dpdk_workers.into_iter().map(|w| std::thread::spawn(move || w.run().held())));
    }
    let instance = Arc::new(Instance::new(cfg, opts.config_path.clone(), program.clone(), slots, views));
    let stop_control = Arc::new(AtomicBool::new(false));
    let _ = writeln!(err, "dataplane: control socket {}", control_socket.path().display());
    let mut control_threads = vec![control_socket.spawn(instance.clone(), stop_control.clone())];
    if let Some(l) = metrics {
        let _ = writeln!(
            err,
            "dataplane: metrics on http://{}/metrics",
            l.local_addr().map_or_else(|_| "?".into(), |a| a.to_string())
        );
        control_threads.push(control::metrics::spawn(l, instance.clone(), stop_control.clone()));
    }
    let _ = writeln!(
        err,
        "dataplane: ready, running {} ({}) on {} queue(s)",
        prog.name(),
        match engine_kind {
            crate::config::EngineKind::Interp => "interp",
            crate::config::EngineKind::Jit => "jit",
        },
        handles.len()
    );

    let generator = match (&lab, &cfg.lab) {
        (Some(l), Some(lc)) => Some(lab::spawn_generator(l, lc.flows, lc.rate)?),
        _ => None,
    };

    // The control loop.
    let start = Instant::now();
    let mut last = Instant::now();
    let mut prev: Vec<Snapshot> = vec![Snapshot::default(); counters.len()];
    let mut totals_hist = stats::new_histogram();
    let mut out = std::io::stdout();
    let drained = || {
        !finite.is_empty()
            && finite.iter().all(|(n, cs)| cs.iter().map(|c| c.snapshot().rx).sum::<u64>() >= *n)
    };
    while !stop.load(Ordering::Relaxed) && opts.duration.is_none_or(|d| start.elapsed() < d) && !drained() {
        std::thread::sleep(Duration::from_millis(20));
        if control::sys::take_sighup() {
            match instance.reload() {
                Ok(v) => {
                    let _ = writeln!(err, "dataplane: SIGHUP: config re-read: {v}");
                }
                Err(e) => {
                    let _ = writeln!(err, "warning: SIGHUP: config not applied: {e}");
                }
            }
        }
        // SIGUSR1: the [[trace]] maps now, as bpftrace prints its maps on SIGUSR1.
        if control::sys::take_sigusr1() {
            let _ = write!(out, "{}", traces.render());
            let _ = out.flush();
        }
        // Lines are made every interval (every second when printing is off, for
        // `dataplane stats`), printed when the interval is not 0.
        let interval = instance.interval();
        let print = !interval.is_zero();
        if last.elapsed() >= if print { interval } else { Duration::from_secs(1) } {
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            let mut lines = Vec::with_capacity(counters.len());
            for (i, (label, c)) in counters.iter().enumerate() {
                let now = c.snapshot();
                let h = c.take_histogram();
                let _ = totals_hist.add(&h);
                lines.push(stats::line(label, &now.since(&prev[i]), secs, &h));
                prev[i] = now;
            }
            if print {
                for l in &lines {
                    let _ = writeln!(out, "{l}");
                }
            }
            instance.set_stats_lines(lines);
            if !print {
                continue;
            }
            if let (Some((_, sent, _)), Some(s)) = (&generator, &sink) {
                let _ = writeln!(out, "lab: sent {} back {}", sent.load(Ordering::Relaxed), s.count());
            }
        }
    }

    // Shut down: traffic first, then workers, then the ports (detach), then the lab.
    let mut lab_counts = None;
    if let Some((gstop, sent, h)) = generator {
        gstop.store(true, Ordering::Relaxed);
        let _ = h.join();
        std::thread::sleep(Duration::from_millis(50));
        lab_counts = Some((sent.load(Ordering::Relaxed), sink.as_ref().map_or(0, Sink::count)));
    }
    stop_control.store(true, Ordering::Relaxed);
    for h in control_threads {
        let _ = h.join();
    }
    stop_workers.store(true, Ordering::Relaxed);
    let mut leaked = 0;
    for h in handles {
        if let Ok(held) = h.join() {
            // Frames still in the TX ring at exit were handed to the kernel; any held by us
            // would be a leak.
            leaked += held;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut summary = Summary { seconds, leaked_frames: leaked, lab: lab_counts, ..Summary::default() };
    for (label, c) in &counters {
        let s = c.snapshot();
        let _ = totals_hist.add(c.take_histogram());
        summary.totals = add(&summary.totals, &s);
        summary.per_queue.push((label.clone(), s));
    }
    if !totals_hist.is_empty() {
        summary.frame_ns = (totals_hist.value_at_quantile(0.5), totals_hist.value_at_quantile(0.99));
    }
    let _ = writeln!(
        out,
        "summary: {:.1} s, {}",
        seconds,
        stats::line("total", &summary.totals, seconds, &totals_hist)
    );
    for (label, s) in &summary.per_queue {
        let _ = writeln!(out, "summary: {label}: rx {} tx {}", s.rx, s.tx);
    }
    let _ = writeln!(out, "summary: umem frames held at exit: {leaked}");
    if let Some((sent, back)) = summary.lab {
        let _ = writeln!(out, "summary: lab: sent {sent} frames from the peer, {back} came back");
    }
    traces.detach();
    let _ = write!(out, "{}", traces.render());
    if instance.maps_at_exit() {
        let mut maps = serde_json::Map::new();
        // The maps of the program running at exit (a replacement may have brought new ones).
        for map in program.current().prog.maps() {
            let per_cpu = map.is_per_cpu();
            maps.insert(map.name().to_string(), crate::prog_run::entries_json(&map.entries(), per_cpu));
        }
        let _ = writeln!(out, "maps: {}", serde_json::Value::Object(maps));
    }
    drop(ports);
    #[cfg(dpdk)]
    drop(dpdk_ports);
    drop(taps);
    drop(xsk_taps);
    drop(sink);
    drop(lab);
    Ok(summary)
}

fn add(a: &Snapshot, b: &Snapshot) -> Snapshot {
    Snapshot {
        rx: a.rx + b.rx,
        tx: a.tx + b.tx,
        verdicts: std::array::from_fn(|i| a.verdicts[i] + b.verdicts[i]),
        drops: std::array::from_fn(|i| a.drops[i] + b.drops[i]),
        kernel: std::array::from_fn(|i| a.kernel[i] + b.kernel[i]),
    }
}

/// Ends what lives for the whole process: DPDK's EAL (it starts with the first DPDK run and can
/// start only once). Call after the last [`run`]; [`run_file`] does.
pub fn shutdown() {
    #[cfg(dpdk)]
    backend::dpdk::cleanup();
}

/// Reads and runs a config file (the `dataplane --config` command).
///
/// # Errors
/// [`RunError`].
pub fn run_file(path: &Path, opts: &RunOptions, stop: &Arc<AtomicBool>) -> Result<Summary, RunError> {
    let cfg = Config::load(path)?;
    let opts = RunOptions { config_path: Some(path.to_path_buf()), ..opts.clone() };
    let result = run(&cfg, &opts, stop);
    // DPDK can be initialised once per process: the command's run is the last.
    shutdown();
    result
}
