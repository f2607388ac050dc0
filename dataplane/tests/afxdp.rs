//! The dataplane on real AF_XDP sockets, in network namespaces and veth pairs each test creates
//! (unique names per test and process) and removes: frames sent from the peer come back as the
//! program says, map contents match the traffic, nothing is lost at moderate rates, nothing stays
//! attached after exit (also after SIGKILL and the next start), and bad input fails with one
//! line and exit code 2.
//!
//! Needs root (namespaces, XDP, AF_XDP); as another user every test returns early.

mod common;
use common::{exchange, is_root, obj};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane::backend;
use dataplane::lab::Lab;

/// Names unique to this process and test: `dt<pid><tag>[a|b]`, namespace `dtn<pid><tag>`.
fn names(tag: &str) -> (String, String, String) {
    let pid = std::process::id() % 1_000_000;
    (format!("dtn{pid}{tag}"), format!("dt{pid}{tag}a"), format!("dt{pid}{tag}b"))
}

fn write_config(tag: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dp-afxdp-{}-{tag}.toml", std::process::id()));
    std::fs::write(&path, body).unwrap();
    path
}

fn port_config(object: &Path, iface: &str, extra: &str) -> String {
    format!(
        "[program]\nobject = {:?}\n[[ports]]\ninterface = {iface:?}\nqueues = [0]\nattach = \"native\"\n\
         fill_ring = 1024\numem_frames = 2048\n{extra}\n[stats]\ninterval = 0.5\nmaps_at_exit = true\n",
        object.display().to_string()
    )
}

/// A running dataplane: waits for its "ready" line.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

fn start(config: &Path, args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the dataplane never got ready");
        if line.contains("ready") {
            break;
        }
    }
    Running { child, stderr: rx }
}

impl Running {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
    }

    /// SIGINT, then the exit status and stdout.
    fn stop(mut self) -> (i32, String) {
        self.signal("-INT");
        let mut out = String::new();
        use std::io::Read;
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        while self.stderr.try_recv().is_ok() {}
        (status.code().unwrap_or(-1), out)
    }
}

fn maps_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().find_map(|l| l.strip_prefix("maps: ")).expect("a maps line at exit");
    serde_json::from_str(line).unwrap()
}

#[test]
fn xdp_counter_swaps_macs_counts_every_frame_and_detaches() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("c");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let cfg = write_config("c", &port_config(&obj("xdp_counter.o"), &a, ""));
    let run = start(&cfg, &[]);
    assert!(backend::has_xdp(&a, None), "the redirect program is attached while running");
    let sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    let frames = vec![icmp.clone(); 2000];
    let back = exchange(&sock, &frames);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(back.len(), frames.len(), "every frame came back");
    for f in &back {
        assert_eq!(&f[..6], &icmp[6..12]);
        assert_eq!(&f[6..12], &icmp[..6]);
        assert_eq!(&f[12..], &icmp[12..]);
    }
    let maps = maps_json(&out);
    let count = u32::from_le_bytes(2000u32.to_le_bytes());
    assert_eq!(
        maps["pkt_len_count"],
        serde_json::json!([{"key": "62000000", "value": dataplane::prog_run::hex(&count.to_le_bytes())}])
    );
    assert!(out.contains("umem frames held at exit: 0"), "{out}");
    assert!(!backend::has_xdp(&a, None), "nothing attached after exit");
    drop(lab);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn balancer_encapsulates_towards_a_backend() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("l");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let cfg = write_config("l", &port_config(&obj("xdp_balancer.o"), &a, ""));
    let run = start(&cfg, &[]);
    let sock = lab.peer_socket().unwrap();
    let frames = dataplane::lab::frames(32);
    let udp: Vec<Vec<u8>> = frames[1..].to_vec();
    let back = exchange(&sock, &udp);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(back.len(), udp.len());
    let mut backends = std::collections::BTreeSet::new();
    for f in &back {
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let outer = &f[14..34];
        assert_eq!(outer[0], 0x45);
        assert_eq!(outer[9], 4, "IP-in-IP");
        assert_eq!(&outer[12..16], &[10, 2, 0, 1]);
        assert_eq!(&outer[16..19], &[10, 1, 0]);
        backends.insert(outer[19]);
        // The inner packet is the original, behind the new header.
        assert!(udp.iter().any(|u| u[14..] == f[34..]), "inner packet preserved");
        // A valid header checksum sums to 0xffff.
        let sum: u32 = outer.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);
    }
    assert!(backends.len() > 1 && backends.iter().all(|b| (1..=4).contains(b)), "{backends:?}");
    let maps = maps_json(&out);
    let packets: u64 = maps["backend_stats"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["values"].as_array().unwrap().iter())
        .map(|v| {
            let hex = v.as_str().unwrap();
            u64::from_str_radix(&hex[..16], 16).map(u64::swap_bytes).unwrap()
        })
        .sum();
    assert_eq!(packets, udp.len() as u64);
    drop(lab);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn lab_mode_cleans_up_after_sigkill_on_the_next_start() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("k");
    let body = format!(
        "{}[lab]\nnamespace = {ns:?}\ninterface = {a:?}\npeer = {b:?}\nrate = 1000\n",
        port_config(&obj("xdp_counter.o"), &a, "")
    );
    let cfg = write_config("k", &body);
    let mut run = start(&cfg, &[]);
    assert!(Path::new("/run/netns").join(&ns).exists());
    run.signal("-KILL");
    let _ = run.child.wait();
    // The bpf link died with the process; the namespace and veth are still there.
    assert!(Path::new("/sys/class/net").join(&a).exists());
    assert!(!backend::has_xdp(&a, None), "no XDP program survives the process");
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--duration", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("left by killed run"), "{err}");
    assert!(!Path::new("/run/netns").join(&ns).exists());
    assert!(!Path::new("/sys/class/net").join(&a).exists());
    let _ = std::fs::remove_file(cfg);
}

fn fails_cleanly(tag: &str, body: &str, iface: Option<&str>, expect: &str) {
    let cfg = write_config(tag, body);
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane")).arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "{err}");
    if let Some(i) = iface {
        assert!(!backend::has_xdp(i, None), "nothing left attached to {i}");
    }
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn bad_input_fails_with_one_line_and_leaves_nothing_attached() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("e");
    let _lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let counter = obj("xdp_counter.o");
    fails_cleanly(
        "e1",
        &port_config(&counter, "dtnosuchif0", ""),
        None,
        "interface dtnosuchif0 does not exist",
    );
    fails_cleanly(
        "e2",
        &port_config(&counter, &a, "").replace("queues = [0]", "queues = [3]"),
        Some(&a),
        "queue 3 is out of range",
    );
    fails_cleanly(
        "e3",
        &port_config(&obj("unsafe/unknown_helper.o"), &a, ""),
        Some(&a),
        "cannot load program",
    );
    fails_cleanly("e4", &port_config(Path::new("/etc/hostname"), &a, ""), Some(&a), "/etc/hostname");
    fails_cleanly("e5", &port_config(&counter, &a, "rx_rnig = 64"), Some(&a), "ports[0]");
    fails_cleanly(
        "e6",
        &port_config(&counter, &a, "attach = \"driver\"").replacen("attach = \"native\"\n", "", 1),
        Some(&a),
        "ports[0].attach",
    );
    fails_cleanly("e7", &port_config(&obj("tail_call.o"), &a, ""), Some(&a), "does not run tail calls");
}
