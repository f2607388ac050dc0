//! The shared map store across processes: this test re-runs its own binary as a reader process
//! that opens the region by name and dumps the maps while the writer (this process) keeps
//! updating them.

use std::process::Command;

use maps::store::MapStore;
use maps::{BPF_ANY, MapDef, map_type};

const CHILD_ENV: &str = "MAPS_SHM_READER";

/// The reader side: prints what it sees, one line per map, until the counter reaches 1000.
fn reader(name: &str) {
    let view = MapStore::open_shared(name).expect("open the writer's region");
    let maps: Vec<String> = view.maps().into_iter().map(|m| format!("{}:{}", m.name, m.readable)).collect();
    println!("maps {}", maps.join(","));
    // The counter only grows: the reader sees it move while the writer runs.
    let mut last = 0u64;
    let mut distinct = 0;
    loop {
        let e = view.entries("counter").expect("counter");
        let v = u64::from_ne_bytes(e[0].values[0].clone().try_into().unwrap());
        assert!(v >= last, "counter went back from {last} to {v}");
        if v != last {
            distinct += 1;
        }
        last = v;
        if v >= 1000 {
            break;
        }
        std::thread::yield_now();
    }
    let flows = view.entries("flows").expect("flows");
    println!("counter {last} distinct {distinct} flows {}", flows.len());
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process and maps shared memory")]
fn another_process_reads_the_maps_while_they_change() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        reader(&name);
        return;
    }
    let name = format!("maps-xproc-{}", std::process::id());
    let (store, _huge) = MapStore::create_shared(&name, 4 << 20).unwrap();
    let counter = store
        .create_map(
            "counter",
            MapDef { map_type: map_type::ARRAY, key_size: 4, value_size: 8, max_entries: 1, map_flags: 0 },
            1,
        )
        .unwrap();
    let flows = store
        .create_map(
            "flows",
            MapDef { map_type: map_type::HASH, key_size: 8, value_size: 8, max_entries: 64, map_flags: 0 },
            2,
        )
        .unwrap();
    for i in 0..40u64 {
        flows.update(&i.to_ne_bytes(), &i.to_ne_bytes(), BPF_ANY, 0).unwrap();
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "another_process_reads_the_maps_while_they_change",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the reader attach, then count up with a little pause so it sees intermediate values.
    std::thread::sleep(std::time::Duration::from_millis(100));
    for v in 1..=1000u64 {
        counter.update(&0u32.to_ne_bytes(), &v.to_ne_bytes(), BPF_ANY, 0).unwrap();
        // Churn the hash map too: replacing updates move keys between elements.
        flows.update(&(v % 40).to_ne_bytes(), &v.to_ne_bytes(), BPF_ANY, 0).unwrap();
        if v % 50 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "reader failed: {text}");
    assert!(text.contains("maps counter:true,flows:true"), "{text}");
    let line = text.lines().find(|l| l.starts_with("counter ")).expect(&text);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], "1000");
    assert!(fields[3].parse::<u32>().unwrap() > 1, "the reader saw the counter move: {line}");
    // 40 keys; a dump racing a replacing update may miss one, never invent one.
    let n: usize = fields[5].parse().unwrap();
    assert!((38..=40).contains(&n), "{line}");
}
