//! Compiles every eBPF C program of the project (`configs/bpf/*.c`, `configs/bpf/bench/*.c` and `dataplane/tests/bpf/*.c`)
//! with `clang -O2 -g -target bpf` into `<target>/bpf/NAME.o` (`tests/bpf/unsafe/*.c`, programs the
//! kernel refuses, into `<target>/bpf/unsafe/`), the place the README, the tests and
//! the benchmarks load them from. Objects are build products, never committed.
//!
//! A source may ask for extra flags on a first-line comment: `// bpf-cflags: -mcpu=v4`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // The DPDK backend: with the `dpdk` feature and DPDK found by dpdk-sys's build.
    println!("cargo::rustc-check-cfg=cfg(dpdk)");
    if std::env::var_os("CARGO_FEATURE_DPDK").is_some()
        && std::env::var("DEP_RTE_EAL_FOUND").as_deref() == Ok("1")
    {
        println!("cargo:rustc-cfg=dpdk");
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("dataplane lives in the workspace").to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { root.join(target) };
    let out = target.join("bpf");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    println!("cargo:rustc-env=BPF_OBJ_DIR={}", out.display());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");

    let clang = find_clang();
    let unsafe_out = out.join("unsafe");
    std::fs::create_dir_all(&unsafe_out)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", unsafe_out.display()));
    let bench_out = out.join("bench");
    std::fs::create_dir_all(&bench_out)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", bench_out.display()));
    let dirs = [
        (root.join("configs/bpf"), &out),
        // The benchmark suite's own programs (map-op loops and the like), into `<target>/bpf/bench/`.
        (root.join("configs/bpf/bench"), &bench_out),
        (manifest.join("tests/bpf"), &out),
        // Programs the kernel refuses: tests expect both verifiers to reject them.
        (manifest.join("tests/bpf/unsafe"), &unsafe_out),
    ];
    for (dir, out) in dirs {
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut sources: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "c" || x == "h"))
            .collect();
        sources.sort();
        for src in sources {
            println!("cargo:rerun-if-changed={}", src.display());
            if src.extension().is_some_and(|x| x == "c") {
                compile(&clang, &src, out);
            }
        }
    }
}

/// clang 17 or newer is needed for `-mcpu=v4`; Debian 12 ships it as `clang-19`.
fn find_clang() -> String {
    if let Ok(c) = std::env::var("BPF_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang-18", "clang-17", "clang"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.to_string();
        }
    }
    panic!(
        "no clang found to build the eBPF programs: run the README's set-up command (it installs clang-19)"
    );
}

fn compile(clang: &str, src: &Path, out_dir: &Path) {
    let stem = src.file_stem().expect("a .c file has a stem").to_string_lossy().into_owned();
    let obj = out_dir.join(format!("{stem}.o"));
    let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let extra: Vec<&str> = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("// bpf-cflags:"))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let include = src.parent().expect("a source has a directory");
    let status = Command::new(clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-Wno-unused-function"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg(format!("-I{}", include.display()))
        .args(&extra)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang}: {e}"));
    assert!(status.success(), "{clang} failed on {}", src.display());
}
