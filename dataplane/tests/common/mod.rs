//! What the traffic tests (`afxdp`, `control`, `dpdk`) share: the root check, the built objects,
//! and the peer's send-and-collect loop.
#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::backend::sys::PacketSocket;

/// Whether the tests run as root (namespaces, XDP, AF_XDP); as another user they return early.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

/// The object the build compiled from `NAME.c`.
pub fn obj(name: &str) -> PathBuf {
    Path::new(dataplane::BPF_OBJ_DIR).join(name)
}

/// Sends `frames` from the peer 16 at a time, collecting what comes back: after each burst it
/// waits (up to 1 s) for as many frames as it sent, so the peer's receive buffer never holds
/// more than one burst; at the end it keeps reading until 300 ms pass quietly, so a frame too
/// many is seen too.
pub fn exchange(sock: &PacketSocket, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut back = Vec::new();
    let mut buf = vec![0u8; 4096];
    for chunk in frames.chunks(16) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        assert_eq!(sock.send_batch(&refs).unwrap(), chunk.len());
        let want = back.len() + chunk.len();
        let deadline = Instant::now() + Duration::from_secs(1);
        while back.len() < want {
            match sock.recv(&mut buf, deadline.saturating_duration_since(Instant::now())).unwrap() {
                Some(n) => back.push(buf[..n].to_vec()),
                None => break,
            }
        }
    }
    while let Some(n) = sock.recv(&mut buf, Duration::from_millis(300)).unwrap() {
        back.push(buf[..n].to_vec());
    }
    back
}
