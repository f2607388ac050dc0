//! The dataplane on real AF_XDP sockets, in network namespaces and veth pairs each test creates
//! (unique names per test and process) and removes: frames sent from the peer come back as the
//! program says, map contents match the traffic, nothing is lost at moderate rates, nothing stays
//! attached after exit (also after SIGKILL and the next start), and bad input fails with one
//! line and exit code 2. Also: two queues with two workers, `pass = "tap"` into the kernel's
//! stack, `XSKMAP` redirects to the port's application TAP, `DEVMAP` broadcasts, tail calls.
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

/// A config file in the temporary directory, removed when dropped — also when the test fails
/// and unwinds.
struct TempConfig(PathBuf);

impl std::ops::Deref for TempConfig {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempConfig {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_config(tag: &str, body: &str) -> TempConfig {
    let path = std::env::temp_dir().join(format!("dp-afxdp-{}-{tag}.toml", std::process::id()));
    std::fs::write(&path, body).unwrap();
    TempConfig(path)
}

/// An ICMP echo whose byte 14 picks `tail_call.c`'s prog array slot.
fn tail_frame(slot: u8) -> Vec<u8> {
    let mut f = pktgen::craft::icmp_echo();
    f[14] = slot;
    f
}

/// `tail_call.c`'s `tail_hits[i]` from a maps dump at exit (0 when absent).
fn tail_hits(maps: &serde_json::Value, i: u32) -> u64 {
    let key = dataplane::prog_run::hex(&i.to_le_bytes());
    maps["tail_hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key.as_str())
        .map_or(0, |e| u64::from_str_radix(e["value"].as_str().unwrap(), 16).unwrap().swap_bytes())
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
    fails_cleanly("e7", &port_config(&counter, &a, "busy_poll = 2000000"), Some(&a), "ports[0].busy_poll");
}

/// Reads frames from `sock` until `quiet` passes with none, keeping those in `sent`.
fn collect(sock: &dataplane::backend::sys::PacketSocket, sent: &[Vec<u8>], quiet: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Some(n) = sock.recv(&mut buf, quiet).unwrap() {
        if sent.iter().any(|f| f[..] == buf[..n]) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

/// The `summary: LABEL: rx N tx M` counts of one queue.
fn queue_counts(out: &str, label: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("summary: {label}: rx ")))
        .unwrap_or_else(|| panic!("no summary line for {label}: {out}"));
    let (rx, tx) = line.split_once(" tx ").unwrap();
    (rx.parse().unwrap(), tx.parse().unwrap())
}

#[test]
fn two_queues_two_workers_return_every_frame_with_per_queue_stats() {
    if !is_root() || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let (ns, a, b) = names("q");
    let lab = Lab::create(&ns, &a, &b, 2).unwrap();
    let cfg = write_config(
        "q",
        &port_config(&obj("xdp_counter.o"), &a, "").replace("queues = [0]", "queues = [0, 1]"),
    );
    let run = start(&cfg, &[]);
    let sock = lab.peer_socket().unwrap();
    // An AF_PACKET socket sends through the transmit queue of the sending CPU (`cpu % queues`,
    // `packet_pick_tx_queue`), and a veth delivers into the receive queue of that number: 1200
    // frames from CPU 0 reach queue 0, 800 from CPU 1 queue 1.
    let frames: Vec<Vec<u8>> = dataplane::lab::frames(16).into_iter().cycle().take(2000).collect();
    let mut back = Vec::new();
    for (cpu, part) in [(0, &frames[..1200]), (1, &frames[1200..])] {
        dataplane::kernel::pin_current_thread(cpu).unwrap();
        back.extend(exchange(&sock, part));
    }
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(back.len(), frames.len(), "every frame came back\n{out}");
    assert_eq!(queue_counts(&out, &format!("{a}/q0")), (1200, 1200), "{out}");
    assert_eq!(queue_counts(&out, &format!("{a}/q1")), (800, 800), "{out}");
    assert!(out.contains("umem frames held at exit: 0"), "{out}");
    drop(lab);
}

#[test]
fn pass_tap_delivers_passed_frames_to_a_kernel_socket() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("p");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let body =
        format!("pass = \"tap\"\n{}[program.globals]\nmode = 4\n", port_config(&obj("fanout.o"), &a, ""));
    let cfg = write_config("p", &body);
    let run = start(&cfg, &[]);
    let tap = format!("dp-{a}");
    let tap = &tap[..tap.len().min(15)];
    // An address of a benchmarking range on the TAP (removed with it); the UDP socket on it
    // receives what the program passed.
    let x = std::process::id() % 250 + 1;
    let (ours, theirs) =
        (std::net::Ipv4Addr::new(198, 18, x as u8, 1), std::net::Ipv4Addr::new(198, 18, x as u8, 2));
    let ok = Command::new("ip").args(["addr", "add", &format!("{ours}/24"), "dev", tap]).status().unwrap();
    assert!(ok.success());
    let udp = std::net::UdpSocket::bind((ours, 9999)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mac = std::fs::read_to_string(format!("/sys/class/net/{tap}/address")).unwrap();
    let mac: Vec<u8> = mac.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let frame = pktgen::craft::FrameSpec {
        dst_mac: mac.try_into().unwrap(),
        l3: pktgen::craft::L3::V4 { src: theirs, dst: ours },
        l4: pktgen::craft::L4::Udp { src_port: 4242, dst_port: 9999, payload: b"through the tap".to_vec() },
        ..pktgen::craft::FrameSpec::default()
    }
    .build()
    .unwrap();
    let sock = lab.peer_socket().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        sock.send_batch(&[&frame]).unwrap();
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
            break;
        }
    }
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(got.len(), 1, "the kernel's UDP socket received the passed datagram\n{out}");
    assert_eq!(got[0].0, b"through the tap");
    assert_eq!(got[0].1, std::net::SocketAddr::from((theirs, 4242)));
    assert!(!out.contains("pass_dropped"), "{out}");
    assert!(!Path::new("/sys/class/net").join(tap).exists(), "the TAP is gone after exit");
    drop(lab);
}

#[test]
fn xskmap_redirects_reach_the_ports_application_tap_only_for_its_own_queue() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("x");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let frames: Vec<Vec<u8>> = dataplane::lab::frames(16).into_iter().cycle().take(64).collect();
    let name = format!("dtxsk{}", std::process::id());
    for mode in [0, 1] {
        let body = format!(
            "name = {name:?}\n{}[program.globals]\nmode = {mode}\n",
            port_config(&obj("fanout.o"), &a, "")
        );
        let cfg = write_config("x", &body);
        let run = start(&cfg, &[]);
        if mode == 1 {
            // Slot 1 gets the socket of queue 1 (which this port has not bound).
            map_update(&name, "xsks", 1, 1);
        }
        let tap = dataplane::runtime::xsk_tap_name(&a);
        let app = dataplane::backend::sys::PacketSocket::open(backend::ifindex(&tap).unwrap()).unwrap();
        let sock = lab.peer_socket().unwrap();
        for chunk in frames.chunks(16) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            assert_eq!(sock.send_batch(&refs).unwrap(), chunk.len());
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = collect(&app, &frames, Duration::from_millis(300));
        let (code, out) = run.stop();
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("redirect 64"), "{out}");
        if mode == 0 {
            // xsks[rx_queue_index]: the socket of the frame's own queue.
            assert_eq!(got.len(), 64, "every frame reached the application TAP\n{out}");
            assert!(!out.contains("redirect_unsupported"), "{out}");
        } else {
            // xsks[1]: a socket bound to another queue refuses the frame.
            assert!(got.is_empty(), "{out}");
            assert!(out.contains("redirect_unsupported 64"), "{out}");
        }
        assert!(!backend::has_xdp(&a, None));
    }
    drop(lab);
}

/// `dataplane map update` against the instance called `name`.
fn map_update(name: &str, map: &str, key: u32, value: u32) {
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["map", "update", map, &dataplane::prog_run::hex(&key.to_le_bytes())])
        .arg(dataplane::prog_run::hex(&value.to_le_bytes()))
        .args(["--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn devmap_broadcast_copies_to_every_port_in_the_map() {
    if !is_root() {
        return;
    }
    let pid = std::process::id() % 1_000_000;
    let labs: Vec<Lab> = ["1", "2", "3"]
        .iter()
        .map(|t| {
            Lab::create(&format!("dtn{pid}m{t}"), &format!("dt{pid}m{t}a"), &format!("dt{pid}m{t}b"), 1)
                .unwrap()
        })
        .collect();
    let idx: Vec<u32> = labs.iter().map(|l| backend::ifindex(&l.interface).unwrap()).collect();
    let frames: Vec<Vec<u8>> = dataplane::lab::frames(16).into_iter().cycle().take(32).collect();
    // DEVMAP with and without the ingress port, DEVMAP_HASH (keys far apart) without it.
    for (mode, exclude, map, keys) in
        [(2, true, "ports", [0, 1, 2]), (3, false, "ports", [0, 1, 2]), (5, true, "ports_hash", [7, 1000, 5])]
    {
        let name = format!("dtbc{pid}");
        let mut body = format!(
            "name = {name:?}\n[program]\nobject = {:?}\n[program.globals]\ningress = {}\nmode = {mode}\n\
             [stats]\ninterval = 0\n",
            obj("fanout.o").display().to_string(),
            idx[0]
        );
        for l in &labs {
            body +=
                &format!("[[ports]]\ninterface = {:?}\nfill_ring = 1024\numem_frames = 2048\n", l.interface);
        }
        let cfg = write_config("m", &body);
        let run = start(&cfg, &[]);
        // Every port is in the map, the ingress port too.
        map_update(&name, map, keys[0], idx[1]);
        map_update(&name, map, keys[1], idx[2]);
        map_update(&name, map, keys[2], idx[0]);
        let socks: Vec<_> = labs.iter().map(|l| l.peer_socket().unwrap()).collect();
        let mut got = vec![Vec::new(); 3];
        for chunk in frames.chunks(16) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            assert_eq!(socks[0].send_batch(&refs).unwrap(), chunk.len());
            std::thread::sleep(Duration::from_millis(20));
            for (g, s) in got.iter_mut().zip(&socks) {
                g.extend(collect(s, chunk, Duration::from_millis(100)));
            }
        }
        for (g, s) in got.iter_mut().zip(&socks) {
            g.extend(collect(s, &frames, Duration::from_millis(300)));
        }
        let (code, out) = run.stop();
        assert_eq!(code, 0, "{out}");
        assert_eq!(got[1].len(), 32, "a copy left through the second port\n{out}");
        assert_eq!(got[2].len(), 32, "a copy left through the third port\n{out}");
        let back = if exclude { 0 } else { 32 };
        assert_eq!(
            got[0].len(),
            back,
            "exclude_ingress {exclude}: copies back out of the ingress port\n{out}"
        );
        assert!(out.contains("umem frames held at exit: 0"), "{out}");
    }
    drop(labs);
}

#[test]
fn tail_calls_run_through_the_prog_array() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("t");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let body =
        port_config(&obj("tail_call.o"), &a, "").replace("[[ports]]", "name = \"tail_entry\"\n[[ports]]");
    let cfg = write_config("t", &body);
    let run = start(&cfg, &[]);
    // Byte 14 picks the prog array slot: 2 is tail_tx (XDP_TX), 1 is tail_pass (XDP_PASS).
    let sock = lab.peer_socket().unwrap();
    let pass = vec![tail_frame(1); 50];
    for chunk in pass.chunks(10) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        assert_eq!(sock.send_batch(&refs).unwrap(), chunk.len());
    }
    let back = exchange(&sock, &vec![tail_frame(2); 100]);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(back.len(), 100, "the XDP_TX tail came back, the XDP_PASS one did not\n{out}");
    assert!(back.iter().all(|f| *f == tail_frame(2)));
    let maps = maps_json(&out);
    let hits = |i: u32| tail_hits(&maps, i);
    assert_eq!((hits(0), hits(1), hits(2), hits(3)), (150, 0, 50, 100), "{maps}");
    assert!(out.contains("pass_dropped 50"), "{out}");
    drop(lab);
}

/// `prog replace` with an object that has a prog array links the new object's programs and fills
/// its array, as a start with that object does: the tail calls of the replacement run.
#[test]
fn prog_replace_links_the_new_objects_tail_calls() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("r");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let name = format!("dpr{}", std::process::id());
    let body = format!("name = {name:?}\n{}", port_config(&obj("xdp_counter.o"), &a, ""));
    let cfg = write_config("r", &body);
    let run = start(&cfg, &[]);
    let replace = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["prog", "replace"])
        .arg(obj("tail_call.o"))
        .args(["--program", "tail_entry", "--name", &name])
        .output()
        .unwrap();
    assert!(replace.status.success(), "{}", String::from_utf8_lossy(&replace.stderr));
    let sock = lab.peer_socket().unwrap();
    let pass = vec![tail_frame(1); 20];
    let refs: Vec<&[u8]> = pass.iter().map(Vec::as_slice).collect();
    assert_eq!(sock.send_batch(&refs).unwrap(), pass.len());
    let back = exchange(&sock, &vec![tail_frame(2); 100]);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(back.len(), 100, "tail_entry's tail call into tail_tx sent them back\n{out}");
    assert!(back.iter().all(|f| *f == tail_frame(2)));
    let maps = maps_json(&out);
    let hits = |i: u32| tail_hits(&maps, i);
    // Entries, failed tail calls, tail_pass, tail_tx.
    assert_eq!((hits(0), hits(1), hits(2), hits(3)), (120, 0, 20, 100), "{maps}");
    drop(lab);
}

#[test]
fn busy_polling_without_prefetch_returns_every_frame() {
    if !is_root() {
        return;
    }
    let (ns, a, b) = names("y");
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let cfg = write_config("y", &port_config(&obj("xdp_counter.o"), &a, "busy_poll = 50\nprefetch = false"));
    let run = start(&cfg, &[]);
    let frames = vec![pktgen::craft::icmp_echo(); 1000];
    let back = exchange(&lab.peer_socket().unwrap(), &frames);
    let (code, out) = run.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(back.len(), frames.len(), "every frame came back\n{out}");
    assert!(out.contains("umem frames held at exit: 0"), "{out}");
    drop(lab);
}
