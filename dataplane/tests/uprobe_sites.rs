//! The probe sites of the packet path under real traffic: a dataplane run in this process on an
//! AF_XDP socket of a veth pair in a namespace of its own, with programs attached to its `tx`
//! and `drop` sites, sees each burst sent and each frame dropped, with the port's ifindex,
//! queue and worker slot, and the drop reason. Needs root; as another user it returns early.

mod common;
use common::{exchange, is_root, obj};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::lab::Lab;
use dataplane::runtime::{self, RunOptions};
use dataplane::uprobe::{self, Target, TraceProgram};
use xdp_vm::elf::Object;

const HITS: u32 = 0;
const SUM: u32 = 1;
const IFINDEX: u32 = 2;
const QUEUE: u32 = 3;
const SLOT: u32 = 4;

#[test]
fn tx_and_drop_sites_see_every_burst_and_every_dropped_frame() {
    if !is_root() {
        return;
    }
    let pid = std::process::id() % 1_000_000;
    let (ns, a, b) = (format!("dun{pid}"), format!("du{pid}a"), format!("du{pid}b"));
    let lab = Lab::create(&ns, &a, &b, 1).unwrap();
    let ifindex: u64 =
        std::fs::read_to_string(format!("/sys/class/net/{a}/ifindex")).unwrap().trim().parse().unwrap();
    let path = obj("uprobe_sites.o");
    let object = Object::parse(&std::fs::read(&path).unwrap()).unwrap();
    let maps = xdp_vm::create_maps(&object, dataplane::kernel::possible_cpus().unwrap()).unwrap();
    let prog = |n: &str| TraceProgram::load(object.program(Some(n)).unwrap(), &maps).unwrap();
    let get = |map: &str, k: u32| {
        let m = &maps[object.map_index(map).unwrap()];
        u64::from_le_bytes(m.lookup_user(&k.to_le_bytes()).unwrap()[..8].try_into().unwrap())
    };
    let (on_tx, on_drop) = (prog("on_tx"), prog("on_drop"));
    let _tx = uprobe::attach(&Target::parse("site:tx"), &[&on_tx]).unwrap();
    let _drop = uprobe::attach(&Target::parse("site:drop"), &[&on_drop]).unwrap();

    let cfg = dataplane::config::Config::parse(&format!(
        "pass = \"drop\"\n[program]\nobject = {:?}\nname = \"tx_long_pass_short\"\n[[ports]]\ninterface = {a:?}\n\
         queues = [0]\nattach = \"native\"\n[stats]\ninterval = 0\n",
        path.display().to_string()
    ))
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: None, no_program: false, config_path: None };
    let st = stop.clone();
    let run =
        std::thread::spawn(move || runtime::run(&cfg, &opts, &st).map(|_| ()).map_err(|e| e.to_string()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dataplane::backend::has_xdp(&a, None) {
        assert!(Instant::now() < deadline, "the dataplane never attached");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    let sock = lab.peer_socket().unwrap();
    // 160 frames of 150 bytes come back (XDP_TX)...
    let mut long = pktgen::craft::icmp_echo();
    long.resize(150, 0);
    let back = exchange(&sock, &vec![long; 160]);
    // ...and 40 of 98 bytes are passed, and dropped (pass = "drop").
    let short = pktgen::craft::icmp_echo();
    let refs: Vec<&[u8]> = std::iter::repeat_n(short.as_slice(), 40).collect();
    assert_eq!(sock.send_batch(&refs).unwrap(), 40);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get("drop_seen", HITS) < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap().unwrap();
    drop(lab);

    let slots = dataplane::kernel::possible_cpus().unwrap() as u64;
    assert_eq!(back.len(), 160, "every long frame came back");
    assert_eq!(get("tx_seen", SUM), 160, "the tx site counted every frame sent");
    assert!((1..=160).contains(&get("tx_seen", HITS)), "one hit per burst: {}", get("tx_seen", HITS));
    assert_eq!(get("drop_seen", HITS), 40, "the drop site saw every dropped frame");
    assert_eq!(get("drop_reasons", dataplane::stats::DROP_PASS as u32), 40, "as passed-and-dropped");
    for map in ["tx_seen", "drop_seen"] {
        assert_eq!(get(map, IFINDEX), ifindex, "{map}: the port's ifindex");
        assert_eq!(get(map, QUEUE), 0, "{map}: queue");
        assert!(get(map, SLOT) < slots, "{map}: a worker slot");
    }
}
