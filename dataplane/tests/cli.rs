//! The `dataplane prog run` command as users and their scripts call it: output contracts, the
//! kernel's numbers beside ours, and one clear line with exit code 2 for every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dataplane::kernel::{self, KernelProgram};
use xdp_vm::elf::Object;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dataplane"))
}

fn obj(name: &str) -> PathBuf {
    Path::new(env!("BPF_OBJ_DIR")).join(format!("{name}.o"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dataplane-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn icmp_bin() -> PathBuf {
    let p = scratch("icmp.bin");
    std::fs::write(&p, pktgen::craft::icmp_echo()).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run dataplane")
}

fn stderr_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "exactly one line on stderr, got {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn text_output_is_bpftools_line() {
    let data = icmp_bin();
    let out = run(&[
        "prog",
        "run",
        obj("xdp_counter").to_str().unwrap(),
        "--data-in",
        data.to_str().unwrap(),
        "--repeat",
        "10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let rest =
        line.strip_prefix("Return value: 3, duration (average): ").unwrap_or_else(|| panic!("{line:?}"));
    assert!(rest.trim_end().strip_suffix("ns").is_some_and(|n| n.parse::<u64>().is_ok()), "{line:?}");

    let once =
        run(&["prog", "run", obj("xdp_counter").to_str().unwrap(), "--data-in", data.to_str().unwrap()]);
    assert!(String::from_utf8(once.stdout).unwrap().starts_with("Return value: 3, duration: "));
}

#[test]
fn json_and_data_out_match_the_kernel() {
    let data = icmp_bin();
    let data_out = scratch("out.bin");
    let out = run(&[
        "prog",
        "run",
        obj("xdp_counter").to_str().unwrap(),
        "--data-in",
        data.to_str().unwrap(),
        "--data-out",
        data_out.to_str().unwrap(),
        "--repeat",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["retval"], 3);
    assert_eq!(v["repeat"], 3);
    assert_eq!(v["engine"], "jit", "the JIT is the default engine");
    assert!(v["duration_ns"].as_f64().is_some_and(|d| d > 0.0));
    // 98 = 0x62 bytes, counted three times.
    assert_eq!(v["maps"]["pkt_len_count"], serde_json::json!([{"key": "62000000", "value": "03000000"}]));

    // The kernel, same object, same frame, same repeat count.
    kernel::pin_current_thread(0).unwrap();
    let bytes = std::fs::read(obj("xdp_counter")).unwrap();
    let object = Object::parse(&bytes).unwrap();
    let k = KernelProgram::load(&object, object.program(None).unwrap()).unwrap();
    let run = k.test_run(&pktgen::craft::icmp_echo(), 3).unwrap();
    assert_eq!(v["retval"], run.retval);
    let ours_out = std::fs::read(&data_out).unwrap();
    assert_eq!(ours_out, run.data_out, "--data-out holds what the kernel outputs");
    assert_eq!(v["data_out"].as_str().unwrap(), dataplane::prog_run::hex(&run.data_out));
    // An odd number of MAC swaps: source and destination exchanged.
    assert_eq!(&ours_out[..6], &pktgen::craft::icmp_echo()[6..12]);
}

/// `xdp_counter.o` with one byte changed: `at` picks the file offset from the parsed object.
fn patched(name: &str, at: impl Fn(&object::File<'_>) -> usize, byte: u8) -> PathBuf {
    let mut bytes = std::fs::read(obj("xdp_counter")).unwrap();
    let offset = at(&object::File::parse(&*bytes).unwrap());
    bytes[offset] = byte;
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn section_offset(file: &object::File<'_>, name: &str) -> usize {
    use object::{Object as _, ObjectSection as _};
    let s = file.section_by_name(name).unwrap_or_else(|| panic!("no section {name}"));
    s.file_range().unwrap().0 as usize
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let data = icmp_bin();
    let not_elf = scratch("not-elf.o");
    std::fs::write(&not_elf, b"this is not an object").unwrap();
    let truncated = scratch("truncated.o");
    let full = std::fs::read(obj("xdp_counter")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 3]).unwrap();
    let runt = scratch("runt.bin");
    std::fs::write(&runt, [0u8; 10]).unwrap();
    let unknown = Path::new(env!("BPF_OBJ_DIR")).join("unsafe/unknown_helper.o");
    // The first instruction's opcode becomes 0xff; the first relocation's type (low byte of
    // r_info at offset 8 of an Elf64_Rel) becomes R_BPF_64_ABS32 (3), meaningless in code.
    let bad_insn = patched("bad-insn.o", |f| section_offset(f, "xdp"), 0xff);
    let bad_reloc = patched("bad-reloc.o", |f| section_offset(f, ".relxdp") + 8, 3);
    let counter = obj("xdp_counter");
    let c = counter.to_str().unwrap();
    let d = data.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["prog", "run", not_elf.to_str().unwrap(), "--data-in", d], "not-elf.o"),
        (vec!["prog", "run", truncated.to_str().unwrap(), "--data-in", d], "truncated.o"),
        (vec!["prog", "run", "/nonexistent/x.o", "--data-in", d], "/nonexistent/x.o"),
        (vec!["prog", "run", c, "--data-in", "/nonexistent/in.bin"], "/nonexistent/in.bin"),
        (vec!["prog", "run", c, "--data-in", d, "--program", "nope"], "nope"),
        (vec!["prog", "run", c, "--data-in", runt.to_str().unwrap()], "Ethernet"),
        (vec!["prog", "run", c, "--data-in", d, "--engine", "wasm"], "wasm"),
        (vec!["prog", "run", c, "--data-in", d, "--repeat", "many"], "repeat"),
        (vec!["prog", "run", unknown.to_str().unwrap(), "--data-in", d], "unknown helper id 9999"),
        (
            vec!["prog", "run", bad_insn.to_str().unwrap(), "--data-in", d],
            "unsupported instruction (opcode 0xff)",
        ),
        (vec!["prog", "run", bad_reloc.to_str().unwrap(), "--data-in", d], "relocation"),
    ];
    for (args, mention) in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let line = stderr_line(&out);
        assert!(line.contains(mention), "{args:?}: {line:?} should name {mention:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn dump_prints_one_instruction_per_line_with_map_names() {
    let out = run(&["prog", "dump", obj("xdp_counter").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], " 0: (61) r7 = *(u32 *)(r1 +4)");
    assert!(lines.contains(&" 9: (18) r1 = map[pkt_len_count]"), "{text}");
    assert!(lines.contains(&"11: (85) call bpf_map_lookup_elem#1"), "{text}");
    assert_eq!(lines.last(), Some(&"70: (95) exit"));
    let bad = run(&["prog", "dump", obj("xdp_counter").to_str().unwrap(), "--program", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    stderr_line(&bad);
}

/// `prog run` on an object with a prog array: every XDP program of the object is loaded, the
/// array filled from its `.values` initialiser, and `bpf_tail_call` reaches the program the
/// slot names — `tail_entry` with slot 2 ends in `tail_tx` (XDP_TX), with an empty slot it
/// falls through; both engines.
#[test]
fn prog_run_follows_tail_calls_into_the_objects_prog_array() {
    for (slot, want) in [(2u8, 3), (1, 2), (3, 2), (0, 1)] {
        let mut frame = vec![0x11u8; 60];
        frame[14] = slot;
        let data = scratch(&format!("tail{slot}.bin"));
        std::fs::write(&data, &frame).unwrap();
        for engine in ["interp", "jit"] {
            let out = run(&[
                "prog",
                "run",
                obj("tail_call").to_str().unwrap(),
                "--program",
                "tail_entry",
                "--engine",
                engine,
                "--data-in",
                data.to_str().unwrap(),
                "--json",
            ]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["retval"], want, "slot {slot} ({engine}): {v}");
        }
    }
}
