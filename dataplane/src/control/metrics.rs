//! The optional Prometheus endpoint (`metrics = "127.0.0.1:9464"`): a minimal HTTP/1.1
//! responder on std that answers `GET /metrics` with the text exposition format, one request per
//! connection, from the workers' published counters and the map store.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Instance;
use crate::stats::{DROP_REASONS, KERNEL_DROPS, VERDICTS};

/// Binds the endpoint (before any interface is touched, so a taken port fails cleanly).
///
/// # Errors
/// The bind error.
pub fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves scrapes on a thread of its own until `stop`.
#[must_use]
pub fn spawn(
    listener: TcpListener,
    instance: Arc<Instance>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("dp-metrics".into())
        .spawn(move || {
            super::sys::lower_priority();
            while !stop.load(Ordering::Relaxed) {
                if !super::sys::wait_readable(&listener, Duration::from_millis(100)) {
                    continue;
                }
                if let Ok((s, _)) = listener.accept() {
                    answer(s, &instance);
                }
            }
        })
        .expect("spawning a thread")
}

fn answer(mut s: TcpStream, instance: &Instance) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let first = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", render(instance)),
        (Some("GET"), Some(_)) => ("404 Not Found", "try /metrics\n".to_string()),
        _ => ("400 Bad Request", "GET /metrics\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body.as_bytes());
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition text: every metric's `# HELP` and `# TYPE`, then its samples.
#[must_use]
pub fn render(instance: &Instance) -> String {
    let mut out = String::new();
    let cur = instance.slot.current();
    let prog = esc(cur.prog.name());
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let snaps: Vec<_> = instance.workers.iter().map(|w| (w, w.counters.snapshot())).collect();
    let lbl = |w: &super::WorkerView| format!("port=\"{}\",queue=\"{}\"", esc(&w.interface), w.queue);

    family(&mut out, "dataplane_rx_packets_total", "counter", "Frames taken from the RX ring.");
    for (w, s) in &snaps {
        let _ = writeln!(out, "dataplane_rx_packets_total{{{}}} {}", lbl(w), s.rx);
    }
    family(&mut out, "dataplane_tx_packets_total", "counter", "Frames put on the TX ring.");
    for (w, s) in &snaps {
        let _ = writeln!(out, "dataplane_tx_packets_total{{{}}} {}", lbl(w), s.tx);
    }
    family(&mut out, "dataplane_verdicts_total", "counter", "Program verdicts.");
    for (w, s) in &snaps {
        for (v, n) in VERDICTS.iter().zip(s.verdicts) {
            let _ = writeln!(out, "dataplane_verdicts_total{{{},verdict=\"{v}\"}} {n}", lbl(w));
        }
    }
    family(&mut out, "dataplane_drops_total", "counter", "Frames dropped other than by XDP_DROP, by reason.");
    for (w, s) in &snaps {
        for (r, n) in DROP_REASONS.iter().zip(s.drops).chain(KERNEL_DROPS.iter().zip(s.kernel)) {
            let _ = writeln!(out, "dataplane_drops_total{{{},reason=\"{r}\"}} {n}", lbl(w));
        }
    }
    family(
        &mut out,
        "dataplane_prog_run_count_total",
        "counter",
        "Runs of the current program (restarts at 0 when it is replaced).",
    );
    let runs: Vec<_> = instance
        .workers
        .iter()
        .filter(|w| w.counters.prog_id.load(Ordering::Acquire) == cur.id)
        .map(|w| (w, w.counters.run_cnt.load(Ordering::Relaxed), w.counters.run_ns.load(Ordering::Relaxed)))
        .collect();
    for (w, c, _) in &runs {
        let _ = writeln!(out, "dataplane_prog_run_count_total{{{},program=\"{prog}\"}} {c}", lbl(w));
    }
    family(
        &mut out,
        "dataplane_prog_run_time_ns_total",
        "counter",
        "Nanoseconds in the current program, timed per batch.",
    );
    for (w, _, ns) in &runs {
        let _ = writeln!(out, "dataplane_prog_run_time_ns_total{{{},program=\"{prog}\"}} {ns}", lbl(w));
    }
    family(&mut out, "dataplane_prog_info", "gauge", "The running program (value 1).");
    let _ = writeln!(
        out,
        "dataplane_prog_info{{program=\"{prog}\",id=\"{}\",engine=\"{}\"}} 1",
        cur.id,
        match cur.engine() {
            crate::config::EngineKind::Jit => "jit",
            crate::config::EngineKind::Interp => "interp",
        }
    );
    family(&mut out, "dataplane_map_entries", "gauge", "Entries in each map of the running program.");
    for m in cur.prog.maps() {
        let _ = writeln!(
            out,
            "dataplane_map_entries{{program=\"{prog}\",map=\"{}\"}} {}",
            esc(m.name()),
            m.entries().len()
        );
    }
    family(&mut out, "dataplane_map_max_entries", "gauge", "Capacity of each map of the running program.");
    for m in cur.prog.maps() {
        let _ = writeln!(
            out,
            "dataplane_map_max_entries{{program=\"{prog}\",map=\"{}\"}} {}",
            esc(m.name()),
            m.def().max_entries
        );
    }
    out
}
