//! Lab mode: a network namespace and veth pair of our own, and traffic into it.
//!
//! [`Lab::create`] makes namespace `NS`, a veth pair whose `interface` end stays here (the
//! dataplane's port) and whose `peer` end moves into `NS`, with IPv6 off on both ends so the
//! kernel sends nothing of its own. Before it runs a command it writes a marker,
//! `/run/dataplane/lab-<pid>`, naming what it creates; dropping the [`Lab`] removes both and the
//! marker. A run killed with `SIGKILL` leaves the marker behind, and the next start
//! ([`cleanup_stale`]) removes what it names once its process is gone. Only names this module
//! created are ever removed.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pktgen::craft::{FrameSpec, L4, Vary};
use pktgen::send::{Mode, SendConfig};

use crate::backend::sys::{self, PacketSocket};

/// Where markers of lab resources live.
pub const MARKER_DIR: &str = "/run/dataplane";

/// What can go wrong setting up a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("network namespace {name} already exists (not created by a dataplane run)")]
    Exists { name: String },
    #[error("interface {name} already exists (not created by a dataplane run)")]
    InterfaceExists { name: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot write marker {path}")]
    Marker {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the traffic generator on {peer} in namespace {ns}: {reason}")]
    Generator { ns: String, peer: String, reason: String },
    #[error("cannot open a packet socket on {peer} in namespace {ns}")]
    Socket {
        ns: String,
        peer: String,
        #[source]
        source: io::Error,
    },
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), LabError> {
    run("ip", args)
}

fn run(prog: &str, args: &[&str]) -> Result<(), LabError> {
    let out = Command::new(prog).args(args).output().map_err(|e| LabError::Command {
        command: format!("{prog} {}", args.join(" ")),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: format!("{prog} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().replace('\n', " "),
        })
    }
}

/// A namespace and veth pair, removed on drop.
#[derive(Debug)]
pub struct Lab {
    pub namespace: String,
    pub interface: String,
    pub peer: String,
    marker: PathBuf,
}

impl Lab {
    /// Creates namespace `namespace` and veth `interface` <-> `peer` (in the namespace), both up,
    /// with `queues` RX/TX queues on each end.
    ///
    /// # Errors
    /// [`LabError`] when a name is taken or a command fails; what was created is removed.
    pub fn create(namespace: &str, interface: &str, peer: &str, queues: u32) -> Result<Self, LabError> {
        if Path::new("/run/netns").join(namespace).exists() {
            return Err(LabError::Exists { name: namespace.into() });
        }
        if Path::new("/sys/class/net").join(interface).exists() {
            return Err(LabError::InterfaceExists { name: interface.into() });
        }
        std::fs::create_dir_all(MARKER_DIR)
            .map_err(|source| LabError::Marker { path: MARKER_DIR.into(), source })?;
        let marker = Path::new(MARKER_DIR).join(format!("lab-{}-{namespace}", std::process::id()));
        std::fs::write(&marker, format!("{}\n{namespace}\n{interface}\n", std::process::id()))
            .map_err(|source| LabError::Marker { path: marker.display().to_string(), source })?;
        let lab =
            Self { namespace: namespace.into(), interface: interface.into(), peer: peer.into(), marker };
        let q = queues.max(1).to_string();
        ip(&["netns", "add", namespace])?;
        ip(&[
            "link",
            "add",
            interface,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            namespace,
        ])?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"), "1");
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                namespace,
                "sh",
                "-c",
                &format!("echo 1 > /proc/sys/net/ipv6/conf/{peer}/disable_ipv6"),
            ],
        );
        ip(&["link", "set", interface, "up"])?;
        ip(&["-n", namespace, "link", "set", peer, "up"])?;
        Ok(lab)
    }

    /// An AF_PACKET socket on the peer end (inside the namespace).
    ///
    /// # Errors
    /// [`LabError::Socket`].
    pub fn peer_socket(&self) -> Result<PacketSocket, LabError> {
        let peer = self.peer.clone();
        let err = |source| LabError::Socket { ns: self.namespace.clone(), peer: self.peer.clone(), source };
        sys::in_netns(&self.namespace, move || PacketSocket::open(sys::ifindex_here(&peer)?))
            .map_err(err)?
            .map_err(err)
    }

    /// Runs `f` in a thread inside the namespace.
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn in_namespace<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        sys::in_netns(&self.namespace, f)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove(&self.namespace, &self.interface);
        let _ = std::fs::remove_file(&self.marker);
    }
}

fn remove(namespace: &str, interface: &str) {
    // Deleting the namespace destroys the peer, and with it the pair; the explicit delete covers
    // a pair whose peer never moved.
    let _ = ip(&["netns", "del", namespace]);
    if Path::new("/sys/class/net").join(interface).exists() {
        let _ = ip(&["link", "del", interface]);
    }
}

/// Removes what runs that died without cleaning up (`SIGKILL`) left: every marker in
/// [`MARKER_DIR`] whose process is gone. Returns one line per run cleaned.
#[must_use]
pub fn cleanup_stale() -> Vec<String> {
    let mut done = Vec::new();
    let Ok(dir) = std::fs::read_dir(MARKER_DIR) else { return done };
    for entry in dir.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let mut lines = text.lines();
        let (Some(pid), Some(ns), Some(veth)) = (lines.next(), lines.next(), lines.next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove(ns, veth);
        let _ = std::fs::remove_file(&path);
        done.push(format!("removed namespace {ns} and veth {veth} left by killed run {pid}"));
    }
    done
}

/// The lab's traffic: the seed's ICMP echo frame and `flows` UDP flows (source ports varied),
/// interleaved.
#[must_use]
pub fn frames(flows: usize) -> Vec<Vec<u8>> {
    let mut out = vec![pktgen::craft::icmp_echo()];
    let udp = FrameSpec {
        l4: L4::Udp { src_port: 10_000, dst_port: 80, payload: vec![0x5a; 18] },
        frame_size: Some(64),
        ..FrameSpec::default()
    };
    if let Ok(specs) = udp.flows(flows, Vary::SrcPort) {
        out.extend(specs.filter_map(|s| s.build().ok()));
    }
    out
}

/// A running generator: its stop flag, its sent counter, its thread.
pub type Generator = (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>);

/// A generator for `lab`: pktgen's sender on the peer end (AF_XDP, or AF_PACKET where AF_XDP
/// cannot bind), sending [`frames`] round-robin at `rate` frames per second (0: as fast as the
/// veth takes them) until the returned flag is set; a thread copies its count into the
/// returned counter every 10 ms.
///
/// # Errors
/// [`LabError::Generator`] when the namespace cannot be entered or the sender cannot start.
pub fn spawn_generator(lab: &Lab, flows: usize, rate: u64) -> Result<Generator, LabError> {
    let cfg = SendConfig {
        iface: lab.peer.clone(),
        frames: frames(flows),
        rate: (rate > 0).then_some(rate),
        duration: None,
        count: None,
        queues: 1,
        threads: 1,
        mode: Mode::Auto,
        stamp: None,
    };
    let err =
        |reason: String| LabError::Generator { ns: lab.namespace.clone(), peer: lab.peer.clone(), reason };
    let running = lab
        .in_namespace(move || pktgen::send::start(&cfg))
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (s, c) = (stop.clone(), sent.clone());
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            c.store(running.sent().0, Ordering::Relaxed);
        }
        running.stop();
        if let Ok(t) = running.join() {
            c.store(t.frames, Ordering::Relaxed);
        }
    });
    Ok((stop, sent, handle))
}
