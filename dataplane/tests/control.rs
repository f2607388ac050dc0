//! The control plane against running instances on real AF_XDP sockets, each in a namespace and
//! veth pair of its own (unique names per test and process, removed at the end): `prog list`
//! counts grow, `map dump` equals the traffic sent, `map update` changes the verdicts at once,
//! `prog replace` under continuous traffic loses nothing and switches between two frames, a bad
//! replacement is refused while the old program keeps running, SIGHUP re-reads the config, the
//! socket refuses non-root peers and answers malformed requests with errors, the metrics
//! endpoint serves the counters, and client commands without an instance fail in one line.
//!
//! Needs root (namespaces, XDP, AF_XDP); as another user every test returns early.

mod common;
use common::{exchange, is_root, obj};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use dataplane::backend::sys::PacketSocket;
use dataplane::lab::Lab;
use serde_json::Value;

/// Names unique to this process and test: namespace `dcn<pid><tag>`, veth `dc<pid><tag>a|b`.
fn names(tag: &str) -> (String, String, String) {
    let pid = std::process::id() % 1_000_000;
    (format!("dcn{pid}{tag}"), format!("dc{pid}{tag}a"), format!("dc{pid}{tag}b"))
}

/// The instance name of test `tag` (its config file's stem).
fn instance(tag: &str) -> String {
    format!("dpctl-{}-{tag}", std::process::id())
}

fn write_config(tag: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", instance(tag)));
    std::fs::write(&path, body).unwrap();
    path
}

fn port_config(object: &Path, iface: &str, extra: &str) -> String {
    format!(
        "{extra}\n[program]\nobject = {:?}\n[[ports]]\ninterface = {iface:?}\nqueues = [0]\nattach = \"native\"\n\
         fill_ring = 1024\numem_frames = 2048\n[stats]\ninterval = 0.5\nmaps_at_exit = true\n",
        object.display().to_string()
    )
}

/// A running dataplane: waits for its "ready" line and keeps its stderr lines.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// stderr lines up to "ready".
    early: Vec<String>,
}

fn start(config: &Path, env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
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
    let mut early = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the dataplane never got ready: {early:?}"));
        let ready = line.contains("ready");
        early.push(line);
        if ready {
            break;
        }
    }
    Running { child, stderr: rx, early }
}

impl Running {
    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Waits for a stderr line containing `what`.
    fn wait_stderr(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no stderr line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    /// SIGINT, then the exit status and stdout.
    fn stop(mut self) -> (i32, String) {
        self.signal("-INT");
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave the instance running: SIGINT first, so it removes
        // its socket and detaches, then SIGKILL if it does not go.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `dataplane ARGS` (a client command) with `env`.
fn dp(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dataplane")).args(args).envs(env.iter().copied()).output().unwrap()
}

/// A client command that must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let out = dp(args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dataplane {args:?}: {err}");
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// A client command that must fail with one line and exit code 2; that line.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = dp(args, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "dataplane {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// Sends `frames` without waiting for anything back.
fn send(sock: &PacketSocket, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(16) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        assert_eq!(sock.send_batch(&refs).unwrap(), chunk.len());
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Waits until the instance has taken `rx` frames in all.
fn wait_rx(name: &str, rx: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = json(&["stats", "--name", name, "--json"]);
        let got: u64 = s["queues"].as_array().unwrap().iter().map(|q| q["rx"].as_u64().unwrap()).sum();
        if got >= rx {
            assert_eq!(got, rx, "more frames than sent reached the instance");
            return;
        }
        assert!(Instant::now() < deadline, "only {got} of {rx} frames reached the instance");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it holds or 5 s pass; whether it held. A worker publishes its counters after
/// it has sent the batch, so a frame can be back before its batch is counted.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The running program's `run_cnt`, once it has reached `n` (or after 5 s).
fn run_cnt(name: &str, n: u64) -> u64 {
    let get = || json(&["prog", "list", "--name", name, "--json"])[0]["run_cnt"].as_u64().unwrap();
    eventually(|| get() >= n);
    get()
}

fn hex_u64(hex: &str) -> u64 {
    let mut b = [0u8; 8];
    for (i, pair) in hex.as_bytes().chunks(2).take(8).enumerate() {
        b[i] = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
    }
    u64::from_le_bytes(b)
}

/// The sum over slots of a per-CPU `u64` entry.
fn percpu_sum(entry: &Value) -> u64 {
    entry["values"].as_array().unwrap().iter().map(|v| hex_u64(v.as_str().unwrap())).sum()
}

fn pkt_len_count(name: &str) -> u64 {
    let dump = json(&["map", "dump", "pkt_len_count", "--name", name]);
    dump.as_array().unwrap().iter().map(|e| hex_u64(e["value"].as_str().unwrap())).sum()
}

#[test]
fn prog_list_grows_and_map_dump_equals_the_traffic() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("l");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let cfg = write_config("l", &port_config(&obj("xdp_counter.o"), &a, ""));
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    let name = instance("l");
    let sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();

    let list = json(&["prog", "list", "--name", &name, "--json"]);
    let p = &list[0];
    assert_eq!(
        (p["id"].as_u64(), p["name"].as_str(), p["engine"].as_str()),
        (Some(1), Some("xdp_counter"), Some("jit"))
    );
    assert!(p["verified_insns"].as_u64().unwrap() > 0 && p["jited_bytes"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["run_cnt"].as_u64(), Some(0));

    // Dumps while traffic flows: each succeeds and the count never goes back.
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let back = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let back = exchange(&sock, &vec![icmp.clone(); 1000]);
            stop.store(true, Ordering::Relaxed);
            back
        });
        while !stop.load(Ordering::Relaxed) {
            seen.push(pkt_len_count(&name));
        }
        t.join().unwrap()
    });
    assert_eq!(back.len(), 1000, "every frame came back: {}", ok(&["stats", "--json", "--name", &name]));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(!seen.is_empty());
    let dump = json(&["map", "dump", "pkt_len_count", "--name", &name]);
    assert_eq!(
        dump,
        serde_json::json!([{"key": "62000000", "value": "e8030000", "formatted": {"key": 98, "value": 1000}}]),
        "1000 frames of 98 bytes; typed from the map's BTF (__u32 key and value) beside the hex"
    );
    let bpftool = json(&["map", "dump", "pkt_len_count", "--format", "bpftool", "--name", &name]);
    assert_eq!(
        bpftool,
        serde_json::json!([{"key": ["0x62", "0x00", "0x00", "0x00"], "value": ["0xe8", "0x03", "0x00", "0x00"],
                            "formatted": {"key": 98, "value": 1000}}])
    );
    assert_eq!(run_cnt(&name, 1000), 1000);

    assert_eq!(exchange(&sock, &vec![icmp.clone(); 500]).len(), 500);
    assert_eq!(run_cnt(&name, 1500), 1500, "counts grow");
    let list = json(&["prog", "list", "--name", &name, "--json"]);
    assert!(list[0]["run_time_ns"].as_u64().unwrap() > 0);
    let text = ok(&["prog", "list", "--name", &name]);
    assert!(
        text.starts_with("1: xdp  name xdp_counter  engine jit") && text.contains("run_cnt 1500"),
        "{text}"
    );

    // Lookup, update, delete by hex key.
    assert_eq!(
        json(&["map", "lookup", "pkt_len_count", "62000000", "--name", &name]),
        serde_json::json!({"key": "62000000", "value": "dc050000", "formatted": {"key": 98, "value": 1500}})
    );
    // The same key typed: a decimal number is not 4 bytes of hex, so it is the __u32 98.
    assert_eq!(json(&["map", "lookup", "pkt_len_count", "98", "--name", &name])["value"], "dc050000");
    ok(&["map", "update", "pkt_len_count", "0x40 00 00 00", "07000000", "--name", &name]);
    assert_eq!(json(&["map", "lookup", "pkt_len_count", "40000000", "--name", &name])["value"], "07000000");
    ok(&["map", "update", "pkt_len_count", "64", "70000", "--name", &name]);
    assert_eq!(
        json(&["map", "lookup", "pkt_len_count", "40000000", "--name", &name])["formatted"]["value"],
        70000
    );
    let e = fails(&["map", "update", "pkt_len_count", "64", "-1", "--name", &name], &[]);
    assert!(e.contains("value") && e.contains("does not fit 4 bytes"), "{e}");
    let e = fails(
        &["map", "update", "pkt_len_count", "40000000", "08000000", "--flags", "noexist", "--name", &name],
        &[],
    );
    assert!(e.contains("entry exists"), "{e}");
    ok(&["map", "delete", "pkt_len_count", "40000000", "--name", &name]);
    let e = fails(&["map", "lookup", "pkt_len_count", "40000000", "--name", &name], &[]);
    assert!(e.contains("no such entry"), "{e}");
    let e = fails(&["map", "lookup", "pkt_len_count", "0x4000", "--name", &name], &[]);
    assert!(e.contains("2 bytes given") && e.contains("4-byte keys"), "{e}");
    let e = fails(&["map", "dump", "nosuchmap", "--name", &name], &[]);
    assert!(e.contains("no map nosuchmap") && e.contains("pkt_len_count"), "{e}");

    let list = ok(&["map", "list", "--name", &name]);
    assert!(
        list.contains("hash  name pkt_len_count  key 4B  value 4B  max_entries 1024")
            && list.contains("entries 1"),
        "{list}"
    );
    let mut stats = String::new();
    eventually(|| {
        stats = ok(&["stats", "--name", &name]);
        stats.contains(&format!("{a}/q0: rx")) && stats.contains("rx 1500 tx 1500")
    });
    assert!(
        stats.contains(&format!("{a}/q0: rx")) && stats.contains(&format!("total {a}/q0: rx 1500 tx 1500")),
        "{stats}"
    );

    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    let sock_path = dataplane::control::run_dir().join(format!("{name}.sock"));
    assert!(!sock_path.exists(), "the socket goes at exit");
    let e = fails(&["prog", "list", "--name", &name], &[]);
    assert!(e.contains(&format!("no running dataplane instance named {name}")), "{e}");
    drop(lab);
}

#[test]
fn map_update_changes_the_firewall_verdicts_at_once() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("f");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let cfg = write_config("f", &port_config(&obj("xdp_firewall.o"), &a, ""));
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    let name = instance("f");
    let sock = lab.peer_socket().unwrap();
    // Source 10.0.0.1.
    let icmp = pktgen::craft::icmp_echo();
    let verdict = |stat: &str| percpu_sum(&json(&["map", "lookup", "verdicts", stat, "--name", &name]));
    const PASS: &str = "00000000";
    const DROP: &str = "01000000";

    send(&sock, &vec![icmp.clone(); 100]);
    wait_rx(&name, 100);
    assert_eq!((verdict(PASS), verdict(DROP)), (100, 0));

    // Block 10.0.0.0/24 as rule 7, the key typed from the map's BTF (struct lpm_v4_key): every
    // frame sent after the reply is dropped.
    let key = r#"{"prefixlen": 24, "addr": "10.0.0.0"}"#;
    ok(&["map", "update", "blocked_v4", key, "7", "--name", &name]);
    send(&sock, &vec![icmp.clone(); 100]);
    wait_rx(&name, 200);
    assert_eq!((verdict(PASS), verdict(DROP)), (100, 100));
    assert_eq!(percpu_sum(&json(&["map", "lookup", "rule_hits", "7", "--name", &name])), 100);
    // The entry is the hex one of before, and dumps typed as bpftool shows it (addr is a __u32
    // in network order, so 10.0.0.0 reads as 10 on x86-64).
    assert_eq!(
        json(&["map", "dump", "blocked_v4", "--name", &name]),
        serde_json::json!([{"key": "180000000a000000", "value": "07000000",
                            "formatted": {"key": {"prefixlen": 24, "addr": 10}, "value": 7}}])
    );
    let e = fails(&["map", "lookup", "blocked_v4", r#"{"prefix": 24}"#, "--name", &name], &[]);
    assert!(e.contains("no field \"prefix\"") && e.contains("prefixlen, addr"), "{e}");

    ok(&["map", "delete", "blocked_v4", "180000000a000000", "--name", &name]);
    send(&sock, &vec![icmp.clone(); 100]);
    wait_rx(&name, 300);
    assert_eq!((verdict(PASS), verdict(DROP)), (200, 100));

    // A per-CPU value for every slot at once, hex and typed.
    ok(&["map", "update", "verdicts", PASS, "0000000000000000", "--name", &name]);
    assert_eq!(verdict(PASS), 0);
    ok(&["map", "update", "verdicts", "0", "5", "--name", &name]);
    let pass = json(&["map", "lookup", "verdicts", "0", "--name", &name]);
    let slots = pass["values"].as_array().unwrap().len();
    assert_eq!(pass["formatted"]["values"], serde_json::json!(vec![5; slots]), "{pass}");
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    drop(lab);
}

/// Sends icmp frames from the peer at about `pps` until `stop`; counts them in `sent`.
fn pace(sock: &PacketSocket, frame: &[u8], pps: u64, stop: &AtomicBool, sent: &AtomicU64) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
        let n = due.saturating_sub(sent.load(Ordering::Relaxed)).min(8) as usize;
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let batch = vec![frame; n];
        let k = sock.send_batch(&batch).unwrap();
        sent.fetch_add(k as u64, Ordering::Relaxed);
    }
}

/// Receives frames until `quiet` passes with none after `stop`; returns their TTL bytes.
fn collect(sock: &PacketSocket, stop: &AtomicBool, ttls: &Mutex<Vec<u8>>) {
    let mut buf = vec![0u8; 4096];
    let mut quiet_since: Option<Instant> = None;
    loop {
        match sock.recv(&mut buf, Duration::from_millis(50)).unwrap() {
            Some(n) if n > 22 => {
                ttls.lock().unwrap().push(buf[22]);
                quiet_since = None;
            }
            _ => {
                if stop.load(Ordering::Relaxed) {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_millis(500) {
                        return;
                    }
                }
            }
        }
    }
}

#[test]
fn prog_replace_under_traffic_loses_nothing_and_switches_between_two_frames() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("r");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    // Rings deep enough to ride out a second of this shared machine's scheduling stalls: a
    // frame lost here would be lost to the switch, not to a full ring.
    let body = port_config(&obj("xdp_counter.o"), &a, "")
        .replace("fill_ring = 1024\numem_frames = 2048", "fill_ring = 4096\numem_frames = 8192");
    let cfg = write_config("r", &body);
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    let name = instance("r");
    let tx_sock = lab.peer_socket().unwrap();
    let rx_sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let ttls = Mutex::new(Vec::new());
    let mut replies = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| collect(&rx_sock, &stop, &ttls));
        s.spawn(|| pace(&tx_sock, &icmp, 3000, &stop, &sent));
        std::thread::sleep(Duration::from_millis(400));
        replies.push(ok(&["prog", "replace", obj("ctl_counter_v2.o").to_str().unwrap(), "--name", &name]));
        std::thread::sleep(Duration::from_millis(400));
        // And back to the original, under traffic too.
        replies.push(ok(&["prog", "replace", obj("xdp_counter.o").to_str().unwrap(), "--name", &name]));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let sent = sent.load(Ordering::Relaxed);
    let ttls = ttls.into_inner().unwrap();
    assert!(
        replies[0].contains(
            "program ctl_counter_v2 is id 2 on 1/1 workers (kept maps: pkt_len_count; new maps: v2_runs)"
        ),
        "{}",
        replies[0]
    );
    assert!(
        replies[1].contains(
            "program xdp_counter is id 3 on 1/1 workers (kept maps: pkt_len_count; new maps: none)"
        ),
        "{}",
        replies[1]
    );
    assert!(sent > 2000, "{sent}");
    assert_eq!(ttls.len() as u64, sent, "every frame sent came back");
    // One queue, frames in order: old program (TTL 64), then the new one (0xee), then the old
    // one again — each switch between two frames, never back and forth.
    let runs: Vec<(u8, usize)> = ttls.chunk_by(|x, y| x == y).map(|c| (c[0], c.len())).collect();
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![64, 0xee, 64], "{runs:?}");
    // The kept map counted every frame across all three programs.
    assert_eq!(pkt_len_count(&name), sent);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("umem frames held at exit: 0"), "{out}");
    drop(lab);
}

#[test]
fn a_bad_replacement_is_refused_and_the_old_program_keeps_running() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("b");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let cfg = write_config("b", &port_config(&obj("xdp_counter.o"), &a, ""));
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    let name = instance("b");
    let sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    assert_eq!(exchange(&sock, &vec![icmp.clone(); 100]).len(), 100);

    let e = fails(&["prog", "replace", obj("ctl_counter_bad_map.o").to_str().unwrap(), "--name", &name], &[]);
    assert!(
        e.contains("refusing to replace: map pkt_len_count is hash key 4B value 4B max_entries 1024")
            && e.contains("max_entries 512"),
        "{e}"
    );
    let e =
        fails(&["prog", "replace", obj("unsafe/pkt_off_by_one.o").to_str().unwrap(), "--name", &name], &[]);
    assert!(e.contains("refusing to replace") && e.contains("invalid access to packet"), "{e}");
    let e = fails(&["prog", "replace", "/etc/hostname", "--name", &name], &[]);
    assert!(e.contains("/etc/hostname"), "{e}");
    let e = fails(
        &["prog", "replace", obj("xdp_counter.o").to_str().unwrap(), "--program", "nope", "--name", &name],
        &[],
    );
    assert!(e.contains("nope"), "{e}");

    let back = exchange(&sock, &vec![icmp.clone(); 100]);
    assert_eq!(back.len(), 100, "the old program still runs");
    assert!(back.iter().all(|f| f[..6] == icmp[6..12] && f[22] == 64));
    assert_eq!(run_cnt(&name, 200), 200);
    assert_eq!(json(&["prog", "list", "--name", &name, "--json"])[0]["id"].as_u64(), Some(1));
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    drop(lab);
}

#[test]
fn sighup_rereads_the_config_and_metrics_serve_the_counters() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("h");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let body = port_config(&obj("xdp_counter.o"), &a, "metrics = \"127.0.0.1:0\"");
    let cfg = write_config("h", &body);
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    let name = instance("h");
    let sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    let addr = run
        .early
        .iter()
        .find_map(|l| l.strip_prefix("dataplane: metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .expect("the metrics address")
        .to_string();
    assert_eq!(exchange(&sock, &vec![icmp.clone(); 300]).len(), 300);

    let scrape = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let port = format!("port=\"{a}\",queue=\"0\"");
    let mut m = String::new();
    eventually(|| {
        m = scrape("/metrics");
        m.contains(&format!("dataplane_tx_packets_total{{{port}}} 300"))
    });
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    for want in [
        format!("dataplane_rx_packets_total{{{port}}} 300"),
        format!("dataplane_tx_packets_total{{{port}}} 300"),
        format!("dataplane_verdicts_total{{{port},verdict=\"tx\"}} 300"),
        format!("dataplane_drops_total{{{port},reason=\"fault\"}} 0"),
        format!("dataplane_prog_run_count_total{{{port},program=\"xdp_counter\"}} 300"),
        "dataplane_map_entries{program=\"xdp_counter\",map=\"pkt_len_count\"} 1".to_string(),
        "dataplane_map_max_entries{program=\"xdp_counter\",map=\"pkt_len_count\"} 1024".to_string(),
        "# TYPE dataplane_prog_run_time_ns_total counter".to_string(),
    ] {
        assert!(m.contains(&want), "{want} in {m}");
    }
    assert!(scrape("/other").starts_with("HTTP/1.1 404"));

    // A new program, stats interval and pass action: the first two apply, the last is reported.
    let changed = body
        .replace("xdp_counter.o", "ctl_counter_v2.o")
        .replace("interval = 0.5", "interval = 0.25")
        .replace("[program]", "pass = \"tap\"\n[program]");
    std::fs::write(&cfg, changed).unwrap();
    run.signal("-HUP");
    let line = run.wait_stderr("SIGHUP");
    assert!(
        line.contains("config re-read") && line.contains("\"program\"") && line.contains("\"stats\""),
        "{line}"
    );
    assert!(line.contains("\"not_applied_restart_needed\":[\"pass\"]"), "{line}");
    let list = json(&["prog", "list", "--name", &name, "--json"]);
    assert_eq!((list[0]["id"].as_u64(), list[0]["name"].as_str()), (Some(2), Some("ctl_counter_v2")));
    let back = exchange(&sock, &vec![icmp.clone(); 50]);
    assert!(back.len() == 50 && back.iter().all(|f| f[22] == 0xee));

    // A broken config changes nothing.
    std::fs::write(&cfg, "this is not toml [").unwrap();
    run.signal("-HUP");
    let line = run.wait_stderr("SIGHUP");
    assert!(line.starts_with("warning: SIGHUP: config not applied"), "{line}");
    assert_eq!(json(&["prog", "list", "--name", &name, "--json"])[0]["id"].as_u64(), Some(2));
    assert!(eventually(|| scrape("/metrics").contains("program=\"ctl_counter_v2\"} 50")));

    let (code, out) = run.stop();
    assert_eq!(code, 0, "the SIGHUPs did not stop it: {out}");
    drop(lab);
}

/// The binary where user `nobody` can execute it (the build tree may not be reachable): a hard
/// link in `dir`, or a copy when `dir` is on another file system.
fn binary_for_nobody(dir: &Path) -> PathBuf {
    let bin = dir.join("dataplane");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_dataplane"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_dataplane"), &bin).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Files and directories a test made, removed when it ends, also when it fails.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[test]
fn the_socket_refuses_non_root_peers_and_survives_malformed_requests() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("p");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let run_dir = std::env::temp_dir().join(format!("dpctl-run-{}", std::process::id()));
    let tools = std::env::temp_dir().join(format!("dpctl-bin-{}", std::process::id()));
    let _dirs = Cleanup(vec![run_dir.clone(), tools.clone()]);
    let run_dir_s = run_dir.to_str().unwrap().to_string();
    let env = [("DATAPLANE_RUN_DIR", run_dir_s.as_str())];
    let cfg = write_config("p", &port_config(&obj("xdp_counter.o"), &a, ""));
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &env);
    let name = instance("p");
    let sock_path = run_dir.join(format!("{name}.sock"));
    assert_eq!(std::fs::metadata(&sock_path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777, 0o700);

    // Without --name the only instance in the directory is found.
    let out = dp(&["prog", "list", "--json"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Non-root: the file modes stop it first...
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::set_permissions(&tools, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = binary_for_nobody(&tools);
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        Command::new(&bin).args(args).envs(env).uid(65534).gid(65534).output().unwrap()
    };
    let out = as_nobody(&["map", "list", "--name", &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("permission denied") && err.lines().count() == 1, "{err}");
    // ...and with the modes opened up, the peer check refuses the uid.
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&["map", "list", "--name", &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Malformed requests, as root, on one connection: each gets an error reply.
    let sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    let stop = AtomicBool::new(false);
    let back = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut back = 0;
            while !stop.load(Ordering::Relaxed) {
                back += exchange(&sock, &vec![icmp.clone(); 64]).len();
            }
            back
        });
        let mut conn = UnixStream::connect(&sock_path).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = r#"{"version":1,"request":{"map_update":{"map":"pkt_len_count","key":"62000000","value":"01000000","flags":2}}}"#;
        let mut errors = 0;
        for round in 0..400 {
            let line: Vec<u8> = match round % 4 {
                0 => (0..next() % 200).map(|_| (next() % 255 + 1) as u8).filter(|&c| c != b'\n').collect(),
                1 => {
                    // A valid request with one byte changed and maybe cut short.
                    let mut b = valid.as_bytes().to_vec();
                    let i = next() as usize % b.len();
                    b[i] = (next() % 94 + 33) as u8;
                    b.truncate(i + 1 + next() as usize % (b.len() - i));
                    b
                }
                2 => format!(r#"{{"version":{},"request":"prog_list"}}"#, next() % 5 + 2).into_bytes(),
                _ => br#"{"version":1,"request":{"map_lookup":{"map":"pkt_len_count","key":"zz"}}}"#.to_vec(),
            };
            conn.write_all(&line).unwrap();
            conn.write_all(b"\n").unwrap();
            let mut reply = String::new();
            reader.read_line(&mut reply).unwrap();
            let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
            if v["ok"] == false {
                assert!(v["error"].as_str().is_some_and(|e| !e.is_empty() && !e.contains('\n')), "{v}");
                errors += 1;
            }
        }
        assert!(errors >= 300, "{errors}");
        // An over-long line: an error, then the connection closes.
        conn.write_all(&vec![b'x'; 70 * 1024]).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert!(reply.contains("longer than"), "{reply}");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap()
    });
    assert!(back > 0);
    // Every frame the program saw came back; no fault, no abort.
    let stats = || -> Value {
        serde_json::from_slice(&dp(&["stats", "--json", "--name", &name], &env).stdout).unwrap()
    };
    eventually(|| stats()["queues"][0]["rx"].as_u64() >= Some(back as u64));
    let s = stats();
    let q = &s["queues"][0];
    assert_eq!(q["rx"].as_u64(), Some(back as u64));
    assert_eq!((q["drops"]["fault"].as_u64(), q["drops"]["aborted"].as_u64()), (Some(0), Some(0)));

    // A second instance of the same name is refused while the first runs.
    let out =
        Command::new(env!("CARGO_BIN_EXE_dataplane")).arg("--config").arg(&cfg).envs(env).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already running"), "{err}");

    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    // No instance left: a clear line and exit 2, with or without a name.
    let e = fails(&["map", "list"], &env);
    assert!(e.contains("no running dataplane instance"), "{e}");
    drop(lab);
}

#[test]
fn a_stale_socket_is_replaced_at_start() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("s");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let run_dir = std::env::temp_dir().join(format!("dpctl-stale-{}", std::process::id()));
    let _dir = Cleanup(vec![run_dir.clone()]);
    std::fs::create_dir_all(&run_dir).unwrap();
    let name = instance("s");
    // A socket file nobody listens on, as a SIGKILLed instance leaves.
    drop(std::os::unix::net::UnixListener::bind(run_dir.join(format!("{name}.sock"))).unwrap());
    let env = [("DATAPLANE_RUN_DIR", run_dir.to_str().unwrap())];
    let e = fails(&["stats", "--name", &name], &env);
    assert!(e.contains("stale control socket"), "{e}");
    let cfg = write_config("s", &port_config(&obj("xdp_counter.o"), &a, ""));
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &env);
    let out = dp(&["stats", "--name", &name], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, _) = run.stop();
    assert_eq!(code, 0);
    drop(lab);
}

#[test]
fn client_commands_without_an_instance_fail_in_one_line() {
    let dir = std::env::temp_dir().join(format!("dpctl-empty-{}", std::process::id()));
    let _dir = Cleanup(vec![dir.clone()]);
    std::fs::create_dir_all(&dir).unwrap();
    let env = [("DATAPLANE_RUN_DIR", dir.to_str().unwrap())];
    for args in [
        &["prog", "list"][..],
        &["map", "list"],
        &["map", "dump", "m"],
        &["stats"],
        &["reload"],
        &["map", "lookup", "m", "00", "--name", "nosuch"],
    ] {
        let e = fails(args, &env);
        assert!(e.contains("no running dataplane instance"), "{args:?}: {e}");
    }
    let e = fails(&["map", "update", "m", "00"], &env);
    assert!(e.contains("VALUE") || e.contains("value"), "{e}");
}

/// The frames the instance has taken in all (its published counters).
fn rx_total(name: &str) -> u64 {
    let s = json(&["stats", "--name", name, "--json"]);
    s["queues"].as_array().unwrap().iter().map(|q| q["rx"].as_u64().unwrap()).sum()
}

/// The counts of every bucket line of a bpftrace-style hist/lhist print.
fn bucket_sum(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with('[') || l.starts_with('('))
        .map(|l| {
            let upto = l.find('|').unwrap_or(l.len());
            l[..upto].split_whitespace().last().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

/// One connection to an instance's control socket, asking one wire request at a time.
struct Wire {
    conn: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Wire {
    fn open(name: &str) -> Self {
        let conn = UnixStream::connect(dataplane::control::run_dir().join(format!("{name}.sock"))).unwrap();
        let reader = BufReader::new(conn.try_clone().unwrap());
        Self { conn, reader }
    }

    /// The whole reply to `{"version":1,"request":REQ}`.
    fn ask(&mut self, req: &str) -> Value {
        self.conn.write_all(format!("{{\"version\":1,\"request\":{req}}}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    }

    /// The result of a request that must succeed.
    fn ok(&mut self, req: &str) -> Value {
        let v = self.ask(req);
        assert_eq!(v["ok"], true, "{req}: {v}");
        v["result"].clone()
    }

    fn attach(&mut self, object: &str) -> u64 {
        let req =
            format!("{{\"trace_attach\":{{\"object\":{object:?},\"program\":null,\"target\":\"rx\"}}}}");
        self.ok(&req)["id"].as_u64().unwrap()
    }

    /// Detaches trace `id`: its maps printed, and its last record lines.
    fn detach(&mut self, id: u64) -> Value {
        self.ok(&format!("{{\"trace_detach\":{{\"id\":{id}}}}}"))
    }
}

#[test]
fn trace_attaches_to_a_running_instance_counts_its_frames_and_detaches_under_traffic() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("t");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let body = port_config(&obj("xdp_counter.o"), &a, "")
        .replace("fill_ring = 1024\numem_frames = 2048", "fill_ring = 4096\numem_frames = 8192");
    let cfg = write_config("t", &body);
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    let name = instance("t");
    let hist_obj = obj("rx_cpu_hist.o");
    let hist = hist_obj.to_str().unwrap();
    let events_obj = obj("rx_events.o");
    let events = events_obj.to_str().unwrap();
    let tx_sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    let mut wire = Wire::open(&name);

    // Exact, with the traffic stopped around the window: both programs attached, 300 frames
    // exchanged, both detached — the lhist counts 300 and the ring buffer gave 300 lines.
    let exact = |wire: &mut Wire, sock: &PacketSocket, frames: usize| {
        let h = wire.attach(hist);
        let e = wire.attach(events);
        assert_eq!(exchange(sock, &vec![icmp.clone(); frames]).len(), frames);
        let printed = wire.detach(h);
        let streamed = wire.detach(e);
        assert_eq!(bucket_sum(printed["text"].as_str().unwrap()), frames as u64, "{printed}");
        // The ring's lines come with trace_events while attached and the rest with the detach.
        assert_eq!(streamed["lost"], 0, "{streamed}");
        let lines = streamed["lines"].as_array().unwrap();
        lines.len()
    };
    assert_eq!(exact(&mut wire, &tx_sock, 300), 300);

    // Under continuous traffic (2 kpps from the peer): `dataplane trace` for 1 s, printing its
    // map every 0.3 s too, then 100 attach/detach cycles in a row on the wire, then 10 more
    // through the client (a process each).
    let rx_sock = lab.peer_socket().unwrap();
    rx_sock.set_rcvbuf(16 << 20).unwrap();
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let ttls = Mutex::new(Vec::new());
    let (mut printed, mut window, mut cycled, mut cycle_window) = (String::new(), 0, 0, 0);
    let mut cycles_took = Duration::ZERO;
    std::thread::scope(|s| {
        s.spawn(|| collect(&rx_sock, &stop, &ttls));
        s.spawn(|| pace(&tx_sock, &icmp, 2000, &stop, &sent));
        std::thread::sleep(Duration::from_millis(200));
        let before = rx_total(&name);
        printed = ok(&[
            "trace",
            hist,
            "--target",
            "rx",
            "--name",
            &name,
            "--duration",
            "1",
            "--interval",
            "0.3",
            "--print",
            "rx_cpu:lhist:0:128:1",
        ]);
        // The worker publishes its counters once per batch: let the last one land.
        std::thread::sleep(Duration::from_millis(100));
        window = rx_total(&name) - before;
        let before = rx_total(&name);
        let t = Instant::now();
        let (mut ta, mut td) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            let t0 = Instant::now();
            let id = wire.attach(hist);
            ta += t0.elapsed();
            std::thread::sleep(Duration::from_millis(5));
            let t0 = Instant::now();
            cycled += bucket_sum(wire.detach(id)["text"].as_str().unwrap());
            td += t0.elapsed();
        }
        eprintln!("100 cycles: attach {ta:?} detach {td:?} in all");
        cycles_took = t.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        cycle_window = rx_total(&name) - before;
        for _ in 0..10 {
            ok(&["trace", hist, "--target", "site:rx", "--name", &name, "--duration", "0"]);
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    // The last of the 1 s prints is the final one; the interval ones come before it, each after
    // a time line.
    let blocks = printed.split(&format!("@[{a}]:")).count() - 1;
    let times = printed
        .lines()
        .filter(|l| l.len() == 8 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':')
        .count();
    assert!(
        (2..=4).contains(&times) && blocks == times + 1,
        "{times} interval prints, {blocks} in all:\n{printed}"
    );
    let last = printed.rsplit(&format!("@[{a}]:")).next().unwrap();
    let counted = bucket_sum(last);
    assert!(counted > 0 && counted <= window, "traced {counted} frames of the {window} received:\n{printed}");
    assert!(
        cycled > 0 && cycled <= cycle_window,
        "100 cycles counted {cycled} of the {cycle_window} frames received"
    );
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 1000, "{sent}");
    assert_eq!(
        ttls.into_inner().unwrap().len() as u64,
        sent,
        "every frame sent came back (peer socket drops: {}): {}",
        rx_sock.take_drops().unwrap(),
        ok(&["stats", "--name", &name])
    );
    eprintln!("100 attach/detach cycles under 2 kpps took {cycles_took:?}");
    // After all that, exact again (on a new connection: an idle one without a trace is closed
    // after 5 s; and a new socket: the pacing one holds the frames that came back to it).
    let mut wire = Wire::open(&name);
    assert_eq!(exact(&mut wire, &lab.peer_socket().unwrap(), 200), 200);

    // Bad site, a program that is no uprobe, a missing object: one line, exit 2.
    assert!(
        fails(&["trace", hist, "--target", "nosuch", "--name", &name], &[])
            .contains("unknown probe site nosuch")
    );
    let xdp = obj("xdp_counter.o");
    let e = fails(&["trace", xdp.to_str().unwrap(), "--target", "rx", "--name", &name], &[]);
    assert!(e.contains("no uprobe or uretprobe program"), "{e}");
    let e = fails(&["trace", "/nonexistent.o", "--target", "rx", "--name", &name], &[]);
    assert!(e.contains("/nonexistent.o"), "{e}");
    let e = fails(&["trace", hist, "--target", "rx", "--print", "rx_cpu:events", "--name", &name], &[]);
    assert!(e.contains("map rx_cpu holds no records"), "{e}");
    let e = fails(
        &["trace", events, "--target", "rx", "--print", "rx_events:events:nosuch", "--name", &name],
        &[],
    );
    assert!(e.contains("no type nosuch"), "{e}");
    let e = fails(&["trace", hist, "--target", "rx", "--interval", "0", "--name", &name], &[]);
    assert!(e.contains("--interval"), "{e}");

    // A client killed while attached: the instance detaches when its connection closes, and
    // serves the next attach at once.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["trace", hist, "--target", "rx", "--name", &name])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("tracing rx"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    ok(&["trace", hist, "--target", "rx", "--name", &name, "--duration", "0"]);

    // The wire requests themselves: trace_print and trace_events while attached, another
    // connection's id is unknown, and a trace left attached goes with its connection.
    let id = wire.attach(hist);
    let printed = wire.ask(&format!("{{\"trace_print\":{{\"id\":{id}}}}}"));
    assert_eq!(printed["ok"], true, "{printed}");
    assert!(printed["result"]["text"].is_string(), "{printed}");
    let none = wire.ok(&format!("{{\"trace_events\":{{\"id\":{id}}}}}"));
    assert_eq!(none, serde_json::json!({"id": id, "lines": [], "lost": 0}));
    let other = wire.ask(&format!("{{\"trace_detach\":{{\"id\":{}}}}}", id + 1000));
    assert!(other["error"].as_str().unwrap().contains("no trace"), "{other}");
    drop(wire);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("umem frames held at exit: 0"), "{out}");
    drop(lab);
}

/// The record lines of `out` from map `map` (`@map: ...`).
fn record_lines<'a>(out: &'a str, map: &str) -> Vec<&'a str> {
    let prefix = format!("@{map}: ");
    out.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// This machine's index of interface `name`.
fn ifindex(name: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).unwrap().trim().parse().unwrap()
}

#[test]
fn ring_buffer_records_print_as_lines_from_config_and_over_the_socket_and_sigusr1_prints_the_maps() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("e");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let events_obj = obj("rx_events.o");
    let events = events_obj.to_str().unwrap();
    let extra = format!(
        "[[trace]]\nobject = {events:?}\ntarget = \"site:rx\"\n\
         [[trace]]\nobject = {:?}\ntarget = \"site:rx\"\n[[trace.print]]\nmap = \"rx_cpu\"\nkind = \"lhist\"\nmin = 0\nmax = 128\nstep = 1\n",
        obj("rx_cpu_hist.o").display().to_string()
    );
    let cfg = write_config("e", &port_config(&obj("xdp_counter.o"), &a, &extra));
    let _cleanup = Cleanup(vec![cfg.clone()]);
    let run = start(&cfg, &[]);
    assert!(
        run.early
            .iter()
            .any(|l| l.contains("records of rx_events printed as lines, typed as struct rx_event")),
        "{:?}",
        run.early
    );
    let name = instance("e");
    let sock = lab.peer_socket().unwrap();
    let icmp = pktgen::craft::icmp_echo();
    assert_eq!(exchange(&sock, &vec![icmp.clone(); 200]).len(), 200);
    assert_eq!(run_cnt(&name, 200), 200);

    // SIGUSR1: the [[trace]] maps printed now, as bpftrace does (stdout is read at the end).
    run.signal("-USR1");
    std::thread::sleep(Duration::from_millis(300));

    // `dataplane trace` streams the records of its own program while attached: one line per
    // frame received in that time, exactly. Returns (stderr up to "tracing", stdout).
    let traced = |args: &[&str], frames: usize, total: u64| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .arg("trace")
            .args(args)
            .args(["--target", "rx", "--name", &name])
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("tracing rx") {
            assert!(err.read_line(&mut said).unwrap() > 0, "{said}");
        }
        assert_eq!(exchange(&sock, &vec![icmp.clone(); frames]).len(), frames);
        assert_eq!(run_cnt(&name, total), total);
        // SIGUSR1 prints the maps at once (after a time line), as bpftrace does.
        assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap().success());
        std::thread::sleep(Duration::from_millis(200));
        assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
        let mut streamed = String::new();
        child.stdout.take().unwrap().read_to_string(&mut streamed).unwrap();
        assert!(child.wait().unwrap().success());
        (said, streamed)
    };
    let (said, streamed) = traced(&[events], 150, 350);
    assert!(said.contains("records of rx_events print as lines, typed as struct rx_event"), "{said}");
    let time_lines = streamed.lines().filter(|l| l.len() == 8 && l.as_bytes()[2] == b':').count();
    assert_eq!(time_lines, 1, "one print on SIGUSR1:\n{streamed}");
    let idx = ifindex(&a);
    let want = format!("@rx_events: {{ .ifindex = {idx}, .queue = 0, .len = 98, .worker = 0 }}");
    let lines = record_lines(&streamed, "rx_events");
    assert_eq!(lines.len(), 150, "{streamed}");
    assert!(lines.iter().all(|l| *l == want), "{want}\n{streamed}");

    // bpf_perf_event_output into the worker's slot, the record type named on the command line.
    let perf_obj = obj("ctl_trace_perf.o");
    let (said, streamed) =
        traced(&[perf_obj.to_str().unwrap(), "--print", "frames:events:frame_rec"], 50, 400);
    assert!(said.contains("records of frames print as lines, typed as struct frame_rec"), "{said}");
    let lines = record_lines(&streamed, "frames");
    assert_eq!(lines.len(), 50, "{streamed}");
    let want_perf = format!("@frames: {{ .ifindex = {idx}, .len = 98, .queue = 0, .kind = 7 }}");
    assert!(lines.iter().all(|l| *l == want_perf), "{want_perf}\n{streamed}");
    // Without the type: hex, and stderr says so.
    let (said, streamed) = traced(&[perf_obj.to_str().unwrap()], 10, 410);
    assert!(said.contains("records of frames print as lines, as hex"), "{said}");
    let hex: String = idx.to_le_bytes().iter().chain(&[98, 0, 0, 7]).map(|b| format!(" {b:02x}")).collect();
    assert_eq!(record_lines(&streamed, "frames"), vec![format!("@frames:{hex}"); 10], "{streamed}");

    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    // The [[trace]] entry saw every frame of every exchange, each typed.
    let lines = record_lines(&out, "rx_events");
    assert_eq!(lines.len(), 410, "{out}");
    assert!(lines.iter().all(|l| *l == want), "{out}");
    // Two lhist prints: at SIGUSR1 (200 frames) and at exit (410).
    let blocks: Vec<&str> = out.split(&format!("@[{a}]:")).skip(1).collect();
    assert_eq!(blocks.len(), 2, "{out}");
    assert_eq!(bucket_sum(blocks[0].split("\n\n").next().unwrap()), 200, "{out}");
    assert_eq!(bucket_sum(blocks[1].split("\n\n").next().unwrap()), 410, "{out}");
    drop(lab);
}
