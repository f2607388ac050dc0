//! The DPDK backend, each scenario a `dataplane` subprocess (the EAL starts once per process):
//! pcap in -> program -> pcap out, frame for frame and map for map equal to the kernel's
//! `BPF_PROG_TEST_RUN` on the same frames in the same order; a veth pair through
//! `net_af_packet`, returning what the AF_XDP backend returns on the same pair; bad input (EAL
//! arguments, devices, pcap files) as one line and exit code 2.
//!
//! Needs root (the kernel oracle, namespaces) and a build with DPDK; otherwise every test returns
//! early.

mod common;
use common::{exchange, is_root, obj};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane::kernel::{self, KernelProgram};
use dataplane::lab::Lab;
use xdp_vm::elf::Object;

/// Whether this build has the DPDK backend (it says so when asked for it).
fn have_dpdk() -> bool {
    let dir = tmp("probe");
    let cfg = dir.join("probe.toml");
    std::fs::write(
        &cfg,
        "backend = \"dpdk\"\n[program]\nobject = \"/nonexistent.o\"\n[[ports]]\ndevice = \"net_ring0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane")).arg("--config").arg(&cfg).output().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    !String::from_utf8_lossy(&out.stderr).contains("built without DPDK")
}

fn ready() -> bool {
    if !is_root() {
        return false;
    }
    if !have_dpdk() {
        eprintln!("skipped: this dataplane was built without DPDK");
        return false;
    }
    true
}

/// A fresh directory for one test's files.
fn tmp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dp-dpdk-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(object: &Path, device: &str, extra: &str) -> String {
    format!(
        "backend = \"dpdk\"\n[dpdk]\neal_args = [\"--no-pci\"]\n[program]\nobject = {:?}\n\
         [[ports]]\ndevice = {device:?}\nbatch = 32\n{extra}\n[stats]\ninterval = 0\nmaps_at_exit = true\n",
        object.display().to_string()
    )
}

/// Runs the dataplane on `config` to its end: exit code, stdout, stderr; and checks that it
/// left no DPDK runtime directory behind.
fn run(dir: &Path, config: &str, args: &[&str]) -> (i32, String, String) {
    // The file's stem names the instance (its control socket): unique per process and test.
    let path = dir.join(format!("{}.toml", dir.file_name().unwrap().to_string_lossy()));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let leftover = Path::new("/var/run/dpdk").join(format!("dataplane{pid}"));
    assert!(!leftover.exists(), "{} left behind", leftover.display());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn maps_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().find_map(|l| l.strip_prefix("maps: ")).expect("a maps line at exit");
    serde_json::from_str(line).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A value summed over CPUs, word by word (u64 words, or u32 when the size calls for it; raw
/// bytes otherwise), so per-CPU maps compare whatever slot a run used.
fn summed(values: &[Vec<u8>]) -> Vec<u64> {
    let len = values.first().map_or(0, Vec::len);
    let word = if len.is_multiple_of(8) {
        8
    } else if len.is_multiple_of(4) {
        4
    } else {
        1
    };
    let mut out = vec![0u64; len / word];
    for v in values {
        for (o, w) in out.iter_mut().zip(v.chunks(word)) {
            let mut b = [0u8; 8];
            b[..word].copy_from_slice(w);
            *o = o.wrapping_add(u64::from_le_bytes(b));
        }
    }
    out
}

type MapView = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u64>>>;

fn ours_view(maps: &serde_json::Value) -> MapView {
    let mut view = MapView::new();
    for (name, rows) in maps.as_object().unwrap() {
        let m = view.entry(name.clone()).or_default();
        for row in rows.as_array().unwrap() {
            let key = unhex(row["key"].as_str().unwrap());
            let values: Vec<Vec<u8>> = match row.get("values") {
                Some(vs) => vs.as_array().unwrap().iter().map(|v| unhex(v.as_str().unwrap())).collect(),
                None => vec![unhex(row["value"].as_str().unwrap())],
            };
            m.insert(key, summed(&values));
        }
    }
    view
}

fn kernel_view(k: &KernelProgram) -> MapView {
    k.maps()
        .iter()
        .map(|m| {
            let rows = m.entries().unwrap().into_iter().map(|e| (e.key, summed(&e.values))).collect();
            (m.name().to_string(), rows)
        })
        .collect()
}

/// The frames a test replays: the lab's ICMP and UDP flows and pktgen's table of odd frames,
/// each as many times as given (so counters count past 1).
fn replay_frames() -> Vec<Vec<u8>> {
    let mut frames = dataplane::lab::frames(24);
    frames.extend(pktgen::craft::test_frames().into_iter().map(|(_, f)| f));
    frames.retain(|f| f.len() >= 14);
    let twice = frames.clone();
    frames.extend(twice);
    frames
}

#[test]
fn pcap_replay_equals_the_kernel_frame_for_frame_and_map_for_map() {
    if !ready() {
        return;
    }
    kernel::pin_current_thread(0).expect("pin to CPU 0");
    let dir = tmp("replay");
    let frames = replay_frames();
    let input = dir.join("in.pcap");
    pktgen::write::write_pcap(&input, &frames).unwrap();
    for program in ["xdp_counter", "xdp_balancer", "xdp_firewall"] {
        let path = obj(&format!("{program}.o"));
        let object = Object::parse(&std::fs::read(&path).unwrap()).unwrap();
        let kern = KernelProgram::load(&object, &object.programs[0]).unwrap();
        // The kernel's verdicts on the same frames, in the same order: what XDP_TX sends out.
        let mut want = Vec::new();
        let mut verdicts = [0u64; 5];
        let mut fed = 0;
        for f in &frames {
            let Ok(r) = kern.test_run(f, 1) else { continue };
            fed += 1;
            verdicts[r.retval.min(4) as usize] += 1;
            if r.retval == 3 {
                want.push(r.data_out);
            }
        }
        let output = dir.join(format!("{program}-out.pcap"));
        let device = format!("net_pcap0,rx_pcap={},tx_pcap={}", input.display(), output.display());
        let t = Instant::now();
        let (code, out, err) = run(&dir, &config(&path, &device, ""), &["--duration", "60"]);
        assert_eq!(code, 0, "{program}: {err}\n{out}");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{program}: the replay did not end by itself once drained"
        );
        assert!(
            out.contains(&format!("net_pcap0/q0: rx {} tx {}", frames.len(), want.len())),
            "{program}: {out}"
        );
        assert_eq!(fed, frames.len(), "{program}: the kernel ran every frame");
        let got = pktgen::write::read_pcap(&output).unwrap();
        assert_eq!(got.len(), want.len(), "{program}: frames sent ({verdicts:?} by the kernel)");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "{program}: frame {i} differs from the kernel's output");
        }
        assert_eq!(
            ours_view(&maps_json(&out)),
            kernel_view(&kern),
            "{program}: maps differ from the kernel's"
        );
        eprintln!(
            "{program}: {} frames replayed, {} sent, kernel verdicts {verdicts:?}: equal",
            frames.len(),
            got.len()
        );
        assert!(out.contains("held at exit: 0"), "{program}: {out}");
        match program {
            "xdp_counter" => {
                // Read back: every frame sent is an input frame with its MACs swapped.
                assert!(!got.is_empty());
                for g in &got {
                    let eth = etherparse::Ethernet2HeaderSlice::from_slice(g).unwrap();
                    assert!(frames.iter().any(|f| {
                        let i = etherparse::Ethernet2HeaderSlice::from_slice(f).unwrap();
                        i.source() == eth.destination()
                            && i.destination() == eth.source()
                            && f[12..] == g[12..]
                    }));
                }
            }
            "xdp_balancer" => {
                // Read back: IP-in-IP towards a backend, the original packet inside.
                assert!(!got.is_empty());
                for g in &got {
                    let p = etherparse::SlicedPacket::from_ethernet(g).unwrap();
                    let Some(etherparse::NetSlice::Ipv4(outer)) = p.net else { panic!("not IPv4") };
                    assert_eq!(outer.header().protocol(), etherparse::IpNumber::IPV4);
                    assert!(frames.iter().any(|f| f[14..] == g[34..]), "inner packet preserved");
                }
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A running dataplane: waits for its "ready" line.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

fn start(dir: &Path, tag: &str, config: &str) -> Running {
    let path = dir.join(format!("{}-{tag}.toml", dir.file_name().unwrap().to_string_lossy()));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .arg("--config")
        .arg(&path)
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("never got ready");
        if line.contains("ready") {
            break;
        }
    }
    Running { child, stderr: rx }
}

impl Running {
    fn stop(mut self) -> (i32, String) {
        let ok =
            Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        while self.stderr.try_recv().is_ok() {}
        (status.code().unwrap_or(-1), out)
    }
}

#[test]
fn af_packet_on_a_veth_returns_what_af_xdp_returns() {
    if !ready() {
        return;
    }
    let pid = std::process::id() % 10_000_000;
    let (ns, a, b) = (format!("ddn{pid}"), format!("dd{pid}a"), format!("dd{pid}b"));
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let dir = tmp("veth");
    let balancer = obj("xdp_balancer.o");
    let frames: Vec<Vec<u8>> = dataplane::lab::frames(32);
    let mut results = Vec::new();
    for backend in ["dpdk", "afxdp"] {
        let cfg = if backend == "dpdk" {
            config(&balancer, &format!("net_af_packet0,iface={a}"), "")
        } else {
            format!(
                "[program]\nobject = {:?}\n[[ports]]\ninterface = {a:?}\nattach = \"native\"\nfill_ring = 1024\n\
                 umem_frames = 2048\n[stats]\ninterval = 0\nmaps_at_exit = true\n",
                balancer.display().to_string()
            )
        };
        let running = start(&dir, backend, &cfg);
        let sock = lab.peer_socket().unwrap();
        let mut back = exchange(&sock, &frames);
        let (code, out) = running.stop();
        assert_eq!(code, 0, "{backend}: {out}");
        // Frames the kernel's stack sends on its own (none expected with IPv6 off) would not be
        // IP-in-IP: keep what the balancer sent.
        back.retain(|f| f.len() > 34 && f[12..14] == [8, 0] && f[23] == 4);
        back.sort();
        let maps = ours_view(&maps_json(&out));
        results.push((back, maps));
    }
    let (dpdk, afxdp) = (&results[0], &results[1]);
    eprintln!("veth: {} frames back through net_af_packet, {} through AF_XDP", dpdk.0.len(), afxdp.0.len());
    assert_eq!(
        dpdk.0.len(),
        frames.len() - 1,
        "every UDP frame came back encapsulated (the ICMP one is passed)"
    );
    assert!(dpdk.0 == afxdp.0, "DPDK and AF_XDP sent different frames");
    assert_eq!(dpdk.1, afxdp.1, "DPDK and AF_XDP left different maps");
    assert!(!dataplane::backend::has_xdp(&a, None));
    drop(lab);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    if !ready() {
        return;
    }
    let dir = tmp("bad");
    let counter = obj("xdp_counter.o");
    let pcap = dir.join("in.pcap");
    pktgen::write::write_pcap(&pcap, &[pktgen::craft::icmp_echo()]).unwrap();
    std::fs::write(dir.join("not.pcap"), "not a capture").unwrap();
    let good = format!("net_pcap0,rx_pcap={},tx_pcap={}", pcap.display(), dir.join("out.pcap").display());
    let cases = [
        (
            "bad EAL args",
            config(&counter, &good, "").replace("\"--no-pci\"", "\"--no-pci\", \"--bogus\""),
            "--bogus",
        ),
        ("no such vdev", config(&counter, "net_nosuch0", ""), "net_nosuch0"),
        ("bad vdev args", config(&counter, "net_ring0,nodeaction=x", ""), "net_ring0"),
        ("pcap missing", config(&counter, &good.replace("in.pcap", "missing.pcap"), ""), "missing.pcap"),
        ("not a pcap", config(&counter, &good.replace("in.pcap", "not.pcap"), ""), "not a pcap file"),
        ("output dir missing", config(&counter, &good.replace("out.pcap", "nodir/out.pcap"), ""), "nodir"),
        ("queues", config(&counter, &good, "queues = [0, 1]"), "at most 1 queue"),
    ];
    for (what, cfg, needle) in cases {
        let (code, out, err) = run(&dir, &cfg, &["--duration", "5"]);
        assert_eq!(code, 2, "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line on stderr: {err:?}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{what}: {err}");
        assert!(out.is_empty(), "{what}: nothing on stdout: {out:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `bpf_redirect` to another configured port, on both backends: frames sent into one veth pair
/// leave through the other, unchanged, copied from the first port's worker into buffers the
/// second's lent it, every one of which is back at exit.
#[test]
fn redirect_to_another_port_on_both_backends() {
    if !ready() {
        return;
    }
    let pid = std::process::id() % 10_000_000;
    let one = Lab::create(&format!("drn{pid}"), &format!("dr{pid}a"), &format!("dr{pid}b"), 1).unwrap();
    let two = Lab::create(&format!("dsn{pid}"), &format!("ds{pid}a"), &format!("ds{pid}b"), 1).unwrap();
    let target = dataplane::backend::ifindex(&two.interface).unwrap();
    let dir = tmp("redirect");
    let object = obj("redirect_port.o");
    let frames: Vec<Vec<u8>> = dataplane::lab::frames(16).into_iter().cycle().take(64).collect();
    for backend in ["dpdk", "afxdp"] {
        let ports = if backend == "dpdk" {
            format!(
                "backend = \"dpdk\"\n[dpdk]\neal_args = [\"--no-pci\"]\n[[ports]]\ndevice = \"net_af_packet0,iface={}\"\n\
                 [[ports]]\ndevice = \"net_af_packet1,iface={}\"\n",
                one.interface, two.interface
            )
        } else {
            format!(
                "[[ports]]\ninterface = {:?}\nfill_ring = 1024\numem_frames = 2048\n\
                 [[ports]]\ninterface = {:?}\nfill_ring = 1024\numem_frames = 2048\n",
                one.interface, two.interface
            )
        };
        let cfg = format!(
            "{ports}[program]\nobject = {:?}\n[program.globals]\ntarget_ifindex = {target}\n[stats]\ninterval = 0\n",
            object.display().to_string()
        );
        let running = start(&dir, backend, &cfg);
        let (tx, rx) = (one.peer_socket().unwrap(), two.peer_socket().unwrap());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        for chunk in frames.chunks(16) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            assert_eq!(tx.send_batch(&refs).unwrap(), chunk.len());
            while let Some(n) = rx.recv(&mut buf, Duration::from_millis(200)).unwrap() {
                got.push(buf[..n].to_vec());
                if got.len() % 16 == 0 {
                    break;
                }
            }
        }
        while let Some(n) = rx.recv(&mut buf, Duration::from_millis(300)).unwrap() {
            got.push(buf[..n].to_vec());
        }
        let (code, out) = running.stop();
        assert_eq!(code, 0, "{backend}: {out}");
        got.retain(|f| frames.contains(f));
        assert_eq!(got.len(), frames.len(), "{backend}: every frame came out of the other port\n{out}");
        assert!(out.contains("redirect 64"), "{backend}: {out}");
        // The buffers the second port's worker lent the first all came back.
        assert!(out.contains("umem frames held at exit: 0"), "{backend}: {out}");
    }
    drop((one, two));
    let _ = std::fs::remove_dir_all(dir);
}

/// Two queues, two workers: a pcap device with one file per RX queue; each worker replays its
/// own file into its own output, and the run ends once both are drained.
#[test]
fn two_queues_two_workers() {
    if !ready() {
        return;
    }
    let dir = tmp("queues");
    let icmp = pktgen::craft::icmp_echo();
    let (a, b) = (vec![icmp.clone(); 300], vec![icmp; 500]);
    pktgen::write::write_pcap(dir.join("a.pcap"), &a).unwrap();
    pktgen::write::write_pcap(dir.join("b.pcap"), &b).unwrap();
    let d = dir.display();
    let device =
        format!("net_pcap0,rx_pcap={d}/a.pcap,rx_pcap={d}/b.pcap,tx_pcap={d}/oa.pcap,tx_pcap={d}/ob.pcap");
    let (code, out, err) =
        run(&dir, &config(&obj("xdp_counter.o"), &device, "queues = [0, 1]"), &["--duration", "60"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("net_pcap0/q0: rx 300 tx 300") && out.contains("net_pcap0/q1: rx 500 tx 500"),
        "{out}"
    );
    assert_eq!(pktgen::write::read_pcap(dir.join("oa.pcap")).unwrap().len(), 300);
    assert_eq!(pktgen::write::read_pcap(dir.join("ob.pcap")).unwrap().len(), 500);
    // Both workers counted into the one map: 800 frames of 98 bytes, less at most one. The
    // program inserts a length's first count with BPF_NOEXIST after a lookup miss: when both
    // workers miss at once, one insert fails and that frame goes uncounted — as it would in the
    // kernel on two CPUs.
    let maps = maps_json(&out);
    let value = maps["pkt_len_count"][0]["value"].as_str().unwrap();
    let count = u32::from_le_bytes(u32::from_str_radix(value, 16).unwrap().to_be_bytes());
    assert!((799..=800).contains(&count), "{maps}");
    let _ = std::fs::remove_dir_all(dir);
}
