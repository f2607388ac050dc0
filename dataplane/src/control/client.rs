//! The client side of `dataplane prog list|replace`, `map ...`, `stats`, `reload`: finds the
//! instance's socket, sends one request, and renders the reply.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::proto::{self, Request};

/// Why a client command could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no running dataplane instance (no control socket in {dir})")]
    NoInstance { dir: String },
    #[error("no running dataplane instance named {name} (no control socket {path})")]
    NoSuchInstance { name: String, path: String },
    #[error("{count} dataplane instances are running ({names}); choose one with --name")]
    Several { count: usize, names: String },
    #[error("permission denied: the control socket {path} is root-only")]
    Permission { path: String },
    #[error("instance {name} is not running (stale control socket {path})")]
    Stale { name: String, path: String },
    #[error("cannot talk to the instance on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The instance answered with an error.
    #[error("{0}")]
    Refused(String),
}

fn connect_path(path: &Path, name: &str) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Permission { path: path.display().to_string() },
        std::io::ErrorKind::ConnectionRefused => {
            ClientError::Stale { name: name.into(), path: path.display().to_string() }
        }
        std::io::ErrorKind::NotFound => {
            ClientError::NoSuchInstance { name: name.into(), path: path.display().to_string() }
        }
        _ => ClientError::Io { path: path.display().to_string(), source },
    })
}

/// Connects to instance `name`, or to the only running one.
///
/// # Errors
/// [`ClientError`]: none running, several and no name, no permission.
pub fn connect(dir: &Path, name: Option<&str>) -> Result<(String, UnixStream), ClientError> {
    if let Some(name) = name {
        let path = dir.join(format!("{name}.sock"));
        return connect_path(&path, name).map(|s| (name.to_string(), s));
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ClientError::Permission { path: dir.display().to_string() });
        }
        Err(_) => return Err(ClientError::NoInstance { dir: dir.display().to_string() }),
    };
    let mut live = Vec::new();
    let mut denied = None;
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".sock"))
        else {
            continue;
        };
        match connect_path(&path, name) {
            Ok(s) => live.push((name.to_string(), s)),
            Err(e @ ClientError::Permission { .. }) => denied = Some(e),
            Err(_) => {}
        }
    }
    match live.len() {
        0 => Err(denied.unwrap_or(ClientError::NoInstance { dir: dir.display().to_string() })),
        1 => Ok(live.remove(0)),
        n => Err(ClientError::Several {
            count: n,
            names: live.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Sends `req` to instance `name` (or the only one) and returns its result.
///
/// # Errors
/// [`ClientError`]; the instance's refusal as [`ClientError::Refused`].
pub fn call(dir: &Path, name: Option<&str>, req: &Request) -> Result<Value, ClientError> {
    let (_, stream) = connect(dir, name)?;
    let path = dir.display().to_string();
    let io = |source| ClientError::Io { path: path.clone(), source };
    // A replacement compiles and waits for every worker; the rest answer in milliseconds.
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io)?;
    // A server that refuses the peer answers at once and closes, so the write may fail
    // (EPIPE) with its reply already waiting: read that before reporting the write's error.
    let sent = (&stream).write_all(proto::request_line(req).as_bytes());
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    if line.is_empty() {
        sent.map_err(io)?;
        read.map_err(io)?;
    }
    if line.is_empty() {
        return Err(ClientError::Refused("the instance closed the connection without a reply".into()));
    }
    proto::parse_reply(&line).map_err(ClientError::Refused)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `prog list` as text, one program per entry in bpftool's style.
#[must_use]
pub fn render_prog_list(v: &Value) -> String {
    let mut out = String::new();
    for p in v.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}: xdp  name {}  engine {}  object {}",
            s(&p["id"]),
            s(&p["name"]),
            s(&p["engine"]),
            s(&p["object"])
        );
        let _ = writeln!(
            out,
            "\txlated {} insns  verified_insns {}  jited {}B  maps {}",
            s(&p["xlated_insns"]),
            s(&p["verified_insns"]),
            s(&p["jited_bytes"]),
            p["map_names"].as_array().map_or(String::new(), |a| a
                .iter()
                .map(s)
                .collect::<Vec<_>>()
                .join(","))
        );
        let _ = writeln!(
            out,
            "\trun_cnt {}  run_time_ns {}  avg {:.1} ns/run  workers {}",
            s(&p["run_cnt"]),
            s(&p["run_time_ns"]),
            p["avg_ns"].as_f64().unwrap_or(0.0),
            s(&p["workers"])
        );
    }
    out
}

/// `map list` as text.
#[must_use]
pub fn render_map_list(v: &Value) -> String {
    let mut out = String::new();
    for m in v.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}: {}  name {}  key {}B  value {}B  max_entries {}  flags {:#x}  entries {}",
            s(&m["id"]),
            s(&m["type"]),
            s(&m["name"]),
            s(&m["key_size"]),
            s(&m["value_size"]),
            s(&m["max_entries"]),
            m["flags"].as_u64().unwrap_or(0),
            s(&m["entries"])
        );
    }
    out
}

/// `stats` as text: the instance's last interval lines, then totals per queue.
#[must_use]
pub fn render_stats(v: &Value) -> String {
    let mut out = String::new();
    for l in v["lines"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", s(l));
    }
    for q in v["queues"].as_array().into_iter().flatten() {
        let _ = write!(out, "total {}: rx {} tx {} |", s(&q["queue"]), s(&q["rx"]), s(&q["tx"]));
        for k in crate::stats::VERDICTS {
            let _ = write!(out, " {k} {}", s(&q["verdicts"][k]));
        }
        out.push_str(" | drops");
        let mut any = false;
        for k in crate::stats::DROP_REASONS.iter().chain(crate::stats::KERNEL_DROPS.iter()) {
            let n = &q["drops"][k];
            if n.as_u64().unwrap_or(0) > 0 {
                let _ = write!(out, " {k} {}", s(n));
                any = true;
            }
        }
        if !any {
            out.push_str(" 0");
        }
        out.push('\n');
    }
    out
}

/// A connection that keeps its state on the instance (`dataplane trace`): the traces it
/// attaches live until it detaches them or the connection closes.
#[derive(Debug)]
pub struct Session {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    path: String,
}

impl Session {
    /// Connects to instance `name`, or to the only running one.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn open(dir: &Path, name: Option<&str>) -> Result<Self, ClientError> {
        let (_, stream) = connect(dir, name)?;
        let path = dir.display().to_string();
        let io = |source| ClientError::Io { path: path.clone(), source };
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Self { stream, reader, path })
    }

    /// Sends `req` and returns its result.
    ///
    /// # Errors
    /// [`ClientError`]; the instance's refusal as [`ClientError::Refused`].
    pub fn call(&mut self, req: &Request) -> Result<Value, ClientError> {
        let path = self.path.clone();
        let io = |source| ClientError::Io { path: path.clone(), source };
        let sent = (&self.stream).write_all(proto::request_line(req).as_bytes());
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        if line.is_empty() {
            sent.map_err(io)?;
            read.map_err(io)?;
            return Err(ClientError::Refused("the instance closed the connection without a reply".into()));
        }
        proto::parse_reply(&line).map_err(ClientError::Refused)
    }
}
