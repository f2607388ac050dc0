//! The `pktgen` binary end to end: files it writes, what tcpdump makes of them, and how it
//! refuses bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pktgen::craft::icmp_echo;
use pktgen::write::read_pcap;

fn pktgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pktgen")).args(args).output().expect("run pktgen")
}

/// A fresh directory per test, so tests can run in parallel; removed when the test ends (also
/// when it fails).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(test: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("pktgen-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn assert_quiet_success(out: &Output) {
    assert!(out.status.success(), "status {:?}, stderr {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn icmp_out_writes_the_98_byte_frame() {
    let dir = temp_dir("bin");
    let path = dir.join("icmp.bin");
    assert_quiet_success(&pktgen(&["icmp", "--out", arg(&path)]));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 98);
    assert_eq!(bytes, icmp_echo());
}

#[test]
fn icmp_pcap_is_readable_and_counts_sequence_numbers() {
    let dir = temp_dir("pcap");
    let path = dir.join("icmp.pcap");
    assert_quiet_success(&pktgen(&["icmp", "--out", arg(&path), "--pcap"]));
    assert_eq!(read_pcap(&path).unwrap(), vec![icmp_echo()]);

    assert_quiet_success(&pktgen(&["icmp", "--out", arg(&path), "--pcap", "--count", "3"]));
    let frames = read_pcap(&path).unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0], icmp_echo());
    for (i, frame) in frames.iter().enumerate() {
        let packet = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = packet.transport else { panic!("frame {i} is not ICMP") };
        assert_eq!(icmp.bytes5to8(), [0x12, 0x34, 0, 1 + i as u8], "id 0x1234, seq {}", i + 1);
    }
}

#[test]
fn tcpdump_reads_the_pcap_as_an_echo_request() {
    let which = Command::new("which").arg("tcpdump").output();
    if !which.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipping the tcpdump check: `which tcpdump` found no tcpdump on PATH");
        return;
    }
    let dir = temp_dir("tcpdump");
    let path = dir.join("icmp.pcap");
    assert_quiet_success(&pktgen(&["icmp", "--out", arg(&path), "--pcap"]));
    let out = Command::new("tcpdump").args(["-r", arg(&path), "-nn"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tcpdump failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 4660, seq 1, length 64"),
        "tcpdump printed: {stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "one packet: {stdout}");
}

#[test]
fn udp_and_tcp_flows() {
    let dir = temp_dir("flows");
    let udp = dir.join("udp.pcap");
    let out = pktgen(&["udp", "--out", arg(&udp), "--pcap", "--flows", "4", "--size", "64", "--vlan", "10"]);
    assert_quiet_success(&out);
    let frames = read_pcap(&udp).unwrap();
    assert_eq!(frames.len(), 4);
    let mut ports = vec![];
    for frame in &frames {
        assert_eq!(frame.len(), 64);
        let packet = SlicedPacket::from_ethernet(frame).unwrap();
        assert!(packet.vlan.is_some());
        let Some(TransportSlice::Udp(udp)) = packet.transport else { panic!("not UDP") };
        ports.push(udp.source_port());
    }
    assert_eq!(ports, [1024, 1025, 1026, 1027]);

    let tcp = dir.join("syn.bin");
    assert_quiet_success(&pktgen(&["tcp", "--out", arg(&tcp), "--ipv6", "--dst-port", "443"]));
    let frame = std::fs::read(&tcp).unwrap();
    assert_eq!(frame.len(), 14 + 40 + 20);
    let packet = SlicedPacket::from_ethernet(&frame).unwrap();
    let Some(NetSlice::Ipv6(ip)) = packet.net else { panic!("not IPv6") };
    assert_eq!(ip.header().destination_addr(), "fd00::2".parse::<std::net::Ipv6Addr>().unwrap());
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else { panic!("not TCP") };
    assert!(tcp.syn() && tcp.destination_port() == 443);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = temp_dir("bad");
    let out_path = dir.join("never.bin");
    let out = arg(&out_path);
    let unwritable = dir.join("no-such-dir").join("x.bin");
    let cases: &[(&[&str], &str)] = &[
        (&["icmp", "--out", out, "--src-mac", "02:00:00:00:00"], "invalid MAC address"),
        (&["icmp", "--out", out, "--dst-mac", "xx:00:00:00:00:01"], "invalid MAC address"),
        (&["icmp", "--out", out, "--src-ip", "10.0.0.256"], "--src-ip"),
        (&["udp", "--out", out, "--dst-ip", "fd00::zz"], "--dst-ip"),
        (&["udp", "--out", out, "--size", "59"], "frame size 59 is outside 60..=1514"),
        (&["tcp", "--out", out, "--size", "1515"], "frame size 1515 is outside 60..=1514"),
        (&["tcp", "--out", out, "--ipv6", "--size", "60"], "too small"),
        (&["udp", "--out", out, "--vlan", "4096"], "--vlan"),
        (
            &["udp", "--out", out, "--src-ip", "10.0.0.1", "--dst-ip", "fd00::2"],
            "is IPv4, but the frame is IPv6",
        ),
        (&["icmp", "--out", out, "--count", "2"], "add --pcap"),
        (&["icmp", "--out", out, "--payload-size", "1473"], "--payload-size"),
        (&["icmp", "--out", arg(&unwritable)], "cannot write"),
        (&["icmp"], "--out"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let result = pktgen(args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(result.stdout.is_empty(), "{args:?}: stdout {}", String::from_utf8_lossy(&result.stdout));
        assert_eq!(stderr.lines().count(), 1, "{args:?}: not one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!out_path.exists(), "{args:?} wrote a file");
    }
}

/// tcpdump, an independent parser, reads every kind pktgen crafts — ICMP, UDP and TCP over IPv4
/// and IPv6, with and without a VLAN tag — and finds every checksum correct.
#[test]
fn tcpdump_reads_every_kind_with_correct_checksums() {
    let which = Command::new("which").arg("tcpdump").output();
    if !which.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipping the tcpdump check: `which tcpdump` found no tcpdump on PATH");
        return;
    }
    let dir = temp_dir("tcpdump-kinds");
    for kind in ["icmp", "udp", "tcp"] {
        for ipv6 in [false, true] {
            for vlan in [None, Some("42")] {
                let path = dir.join(format!("{kind}-{ipv6}-{vlan:?}.pcap"));
                let mut args = vec![kind, "--out", arg(&path), "--pcap"];
                if kind == "icmp" {
                    args.extend(["--count", "2"]);
                } else {
                    args.extend(["--flows", "2", "--size", "300"]);
                }
                if ipv6 {
                    args.push("--ipv6");
                }
                if let Some(id) = vlan {
                    args.extend(["--vlan", id]);
                }
                assert_quiet_success(&pktgen(&args));
                let out =
                    Command::new("tcpdump").args(["-r", arg(&path), "-e", "-nn", "-vv"]).output().unwrap();
                assert!(out.status.success(), "tcpdump failed: {}", String::from_utf8_lossy(&out.stderr));
                let text = String::from_utf8_lossy(&out.stdout);
                let what = format!("{args:?}: tcpdump printed: {text}");
                for flag in ["bad cksum", "bad udp cksum", "bad icmp6 cksum", "incorrect", "wrong icmp cksum"]
                {
                    assert!(!text.contains(flag), "{flag}: {what}");
                }
                let ok = match kind {
                    "udp" => "[udp sum ok]",
                    "tcp" => "(correct)",
                    _ if ipv6 => "[icmp6 sum ok]",
                    // tcpdump flags a wrong ICMPv4 checksum ("wrong icmp cksum") but prints
                    // nothing for a right one.
                    _ => "ICMP echo request",
                };
                assert_eq!(text.matches(ok).count(), 2, "{what}");
                let l3 = if ipv6 { "ethertype IPv6" } else { "ethertype IPv4" };
                assert_eq!(text.matches(l3).count(), 2, "{what}");
                assert_eq!(text.matches("vlan 42").count(), if vlan.is_some() { 2 } else { 0 }, "{what}");
            }
        }
    }
}
