//! The control socket's server side: a thread per connection (at most [`MAX_CONNECTIONS`] at
//! once), one request line and one reply line at a time ([`super::proto`]), root peers only.
//! Traces attached on a connection (`trace_attach`) belong to it: they are detached when it
//! closes, however it closes.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::proto::{self, MAX_LINE};
use super::{Instance, sys};

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("config key name: {name:?}: 1 to 64 characters of [A-Za-z0-9_.-], not starting with '.'")]
    BadName { name: String },
    #[error("cannot create the control socket directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "an instance named {name} is already running (control socket {path} answers); choose another name"
    )]
    Running { name: String, path: String },
    #[error("cannot bind the control socket {path}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `name` is a usable instance name (it becomes a file name).
#[must_use]
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A bound control socket; the file goes when this is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `dir/NAME.sock` (mode 0600; `dir` created 0700). A socket file left by a dead
    /// instance is replaced; one a live instance answers on is an error.
    ///
    /// # Errors
    /// [`ControlError`].
    pub fn bind(dir: &Path, name: &str) -> Result<Self, ControlError> {
        if !valid_name(name) {
            return Err(ControlError::BadName { name: name.into() });
        }
        let dir_err = |source| ControlError::Dir { path: dir.display().to_string(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(dir_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        let path = dir.join(format!("{name}.sock"));
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(ControlError::Running { name: name.into(), path: path.display().to_string() });
            }
            // Stale: its instance is gone.
            let _ = std::fs::remove_file(&path);
        }
        let bind_err = |source| ControlError::Bind { path: path.display().to_string(), source };
        let listener = UnixListener::bind(&path).map_err(bind_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Self { listener, path })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until `stop`.
    pub fn serve(&self, instance: &Instance, stop: &AtomicBool) {
        let open = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            while !stop.load(Ordering::Relaxed) {
                // Asleep in poll(2) until a client connects (or 100 ms pass, to see `stop`).
                if !sys::wait_readable(&self.listener, Duration::from_millis(100)) {
                    continue;
                }
                let Ok((stream, _)) = self.listener.accept() else { continue };
                if open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                    let _ = stream.set_nonblocking(false);
                    let _ = (&stream).write_all(
                        proto::reply_line(&Err(format!(
                            "too many control connections ({MAX_CONNECTIONS} open); try again"
                        )))
                        .as_bytes(),
                    );
                    continue;
                }
                open.fetch_add(1, Ordering::AcqRel);
                let open = &open;
                let spawned = std::thread::Builder::new().name("dp-control-conn".into()).spawn_scoped(
                    scope,
                    move || {
                        serve_connection(stream, instance, stop);
                        open.fetch_sub(1, Ordering::AcqRel);
                    },
                );
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
    }

    /// Serves requests on a thread of its own until `stop`; the socket file goes when the thread
    /// ends.
    #[must_use]
    pub fn spawn(self, instance: Arc<Instance>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("dp-control".into())
            .spawn(move || {
                // Control work never competes with the workers on equal terms.
                sys::lower_priority();
                self.serve(&instance, &stop);
            })
            .expect("spawning a thread")
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a connection without a trace may sit between two request lines.
const IDLE: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// The traces one connection attached, by id.
#[derive(Default)]
struct ConnTraces {
    live: std::collections::BTreeMap<u64, crate::uprobe::trace::Live>,
}

/// The most record lines one `trace_events` reply carries (the rest wait for the next).
const EVENTS_PER_REPLY: usize = 8192;

/// Trace ids, unique over the instance's life.
static NEXT_TRACE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s.replace('\n', " ")
}

impl ConnTraces {
    fn handle(
        &mut self,
        req: &proto::Request,
        instance: &Instance,
    ) -> Option<Result<serde_json::Value, String>> {
        use proto::Request;
        Some(match req {
            Request::TraceAttach { object, program, target, print } => {
                let target = if target.contains(':') { target.clone() } else { format!("site:{target}") };
                let cfg = crate::config::TraceConfig {
                    object: object.clone(),
                    program: program.clone(),
                    target: Some(target),
                    print: print.clone(),
                };
                let slots =
                    instance.cpu_slots.max(crate::kernel::possible_cpus().unwrap_or(instance.cpu_slots));
                match crate::uprobe::trace::Live::attach(&cfg, slots) {
                    Ok(live) => {
                        let id = NEXT_TRACE.fetch_add(1, Ordering::Relaxed);
                        let events: Vec<serde_json::Value> = live
                            .event_maps()
                            .into_iter()
                            .map(|(map, print)| serde_json::json!({"map": map, "print": print}))
                            .collect();
                        self.live.insert(id, live);
                        Ok(serde_json::json!({"id": id, "events": events}))
                    }
                    Err(e) => Err(chain(&e).replacen("trace[0]: ", "", 1)),
                }
            }
            Request::TracePrint { id } => match self.live.get(id) {
                Some(live) => Ok(serde_json::json!({"id": id, "text": live.render()})),
                None => Err(format!("no trace {id} on this connection")),
            },
            Request::TraceEvents { id } => match self.live.get(id) {
                Some(live) => {
                    let (lines, lost) = live.take_lines(EVENTS_PER_REPLY);
                    Ok(serde_json::json!({"id": id, "lines": lines, "lost": lost}))
                }
                None => Err(format!("no trace {id} on this connection")),
            },
            Request::TraceDetach { id } => match self.live.get_mut(id) {
                Some(live) => match live.detach() {
                    Ok(()) => {
                        let text = live.render();
                        // Every record line left (the detach drained the rings).
                        let (lines, lost) = live.take_lines(usize::MAX);
                        self.live.remove(id);
                        Ok(serde_json::json!({"id": id, "text": text, "lines": lines, "lost": lost}))
                    }
                    Err(e) => Err(chain(&e)),
                },
                None => Err(format!("no trace {id} on this connection")),
            },
            _ => return None,
        })
    }
}

impl Drop for ConnTraces {
    fn drop(&mut self) {
        for (id, live) in &mut self.live {
            if let Err(e) = live.detach() {
                eprintln!("dataplane: detaching trace {id} of a closed connection: {}", chain(&e));
            }
        }
    }
}

fn serve_connection(stream: UnixStream, instance: &Instance, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    let mut out = &stream;
    match sys::peer_cred(&stream) {
        Ok((_, 0)) => {}
        Ok((pid, uid)) => {
            let _ = out.write_all(
                proto::reply_line(&Err(format!("permission denied: uid {uid} (pid {pid}) is not root")))
                    .as_bytes(),
            );
            return;
        }
        Err(e) => {
            let _ = out
                .write_all(proto::reply_line(&Err(format!("cannot read peer credentials: {e}"))).as_bytes());
            return;
        }
    }
    // Dropped (every trace detached) whenever this function returns.
    let mut traces = ConnTraces::default();
    let mut reader = BufReader::new(&stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // At most MAX_LINE + 1 bytes per line: a longer one is refused, not buffered.
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) => return,
            // A connection holding a trace may sit idle as long as its client lives; a
            // partial line read so far stays in `line`.
            Err(e)
                if !traces.live.is_empty()
                    && matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                continue;
            }
            Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.len() > MAX_LINE;
        let reply = match proto::parse_request(&line) {
            Ok(req) => traces.handle(&req, instance).unwrap_or_else(|| instance.handle(&req)),
            Err(e) => Err(e.to_string()),
        };
        line.clear();
        if out.write_all(proto::reply_line(&reply).as_bytes()).is_err() || too_long {
            // The rest of an over-long line cannot be told from a next request: close.
            return;
        }
    }
}
