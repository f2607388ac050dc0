//! The control socket's server side: one thread, one connection at a time, one request line
//! and one reply line at a time ([`super::proto`]), root peers only.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        while !stop.load(Ordering::Relaxed) {
            // Asleep in poll(2) until a client connects (or 100 ms pass, to see `stop`).
            if !sys::wait_readable(&self.listener, Duration::from_millis(100)) {
                continue;
            }
            if let Ok((stream, _)) = self.listener.accept() {
                serve_connection(stream, instance, stop);
            }
        }
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

/// How long a connection may sit between two request lines.
const IDLE: Duration = Duration::from_secs(5);

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
    let mut reader = BufReader::new(&stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        // At most MAX_LINE + 1 bytes per line: a longer one is refused, not buffered.
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.len() > MAX_LINE;
        let reply = match proto::parse_request(&line) {
            Ok(req) => instance.handle(&req),
            Err(e) => Err(e.to_string()),
        };
        if out.write_all(proto::reply_line(&reply).as_bytes()).is_err() || too_long {
            // The rest of an over-long line cannot be told from a next request: close.
            return;
        }
    }
}
