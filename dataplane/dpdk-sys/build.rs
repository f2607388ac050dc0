//! Finds the system DPDK with `pkg-config libdpdk`; when it is there, generates bindings for the
//! part of its API the dataplane uses (bindgen over `src/shim.h`, allowlisted: all of `rte_*.h`
//! would be slow and huge), compiles the C shim for the static-inline fast path and links
//! against the DPDK libraries. Without DPDK it builds an empty crate and says so:
//! `cargo:rustc-cfg=dpdk` is set only with DPDK, and dependents read `DEP_RTE_EAL_FOUND`.

use std::path::PathBuf;
use std::process::Command;

fn pkg_config(arg: &str) -> Option<String> {
    let out = Command::new("pkg-config").args([arg, "libdpdk"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dpdk)");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let (Some(cflags), Some(libs)) = (pkg_config("--cflags"), pkg_config("--libs")) else {
        println!("cargo:warning=DPDK not found (pkg-config libdpdk): building without the DPDK backend");
        println!("cargo:found=0");
        return;
    };
    let version = pkg_config("--modversion").unwrap_or_default();
    println!("cargo:version={version}");
    let cflags: Vec<String> = split(&cflags);

    let mut cc = cc::Build::new();
    cc.file("src/shim.c").define("ALLOW_EXPERIMENTAL_API", None).warnings(false).opt_level(2);
    let mut it = cflags.iter();
    while let Some(f) = it.next() {
        if f == "-include" {
            if let Some(h) = it.next() {
                cc.flag("-include").flag(h);
            }
        } else {
            cc.flag(f);
        }
    }
    cc.compile("dpdk_shim");

    // Only the libraries the bindings use (pkg-config lists every DPDK library).
    let mut dirs = Vec::new();
    for l in split(&libs) {
        if let Some(d) = l.strip_prefix("-L") {
            dirs.push(d.to_string());
        }
    }
    for d in &dirs {
        println!("cargo:rustc-link-search=native={d}");
    }
    for lib in ["rte_ethdev", "rte_mbuf", "rte_mempool", "rte_ring", "rte_eal"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(cflags.iter().map(String::as_str))
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .rust_edition(bindgen::RustEdition::Edition2024)
        // libclang knows its own builtin headers; the `clang` on PATH may be another version,
        // whose intrinsics headers a newer libclang cannot parse.
        .detect_include_paths(false)
        .allowlist_function("dp_.*")
        .allowlist_function(
            "rte_(eal_init|eal_cleanup|strerror|socket_id|thread_register|thread_unregister\
             |dev_probe|dev_remove|dev_name\
             |eth_dev_get_port_by_name|eth_dev_info_get|eth_dev_configure|eth_dev_adjust_nb_rx_tx_desc\
             |eth_rx_queue_setup|eth_tx_queue_setup|eth_dev_start|eth_dev_stop|eth_dev_close\
             |eth_dev_socket_id|eth_stats_get|eth_promiscuous_enable|eth_dev_is_valid_port\
             |pktmbuf_pool_create|mempool_free|mempool_avail_count|mempool_in_use_count|pktmbuf_free_bulk)",
        )
        .allowlist_type("rte_(mbuf|eth_conf|eth_dev_info|eth_stats|eth_rxconf|eth_txconf|eth_rx_mq_mode)")
        .allowlist_var("RTE_(MBUF_F_INDIRECT|MBUF_F_EXTERNAL|MAX_ETHPORTS|ETH_NAME_MAX_LEN|MBUF_PRIV_ALIGN)")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .expect("bindgen over the DPDK headers");
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings.rs");
    println!("cargo:rustc-cfg=dpdk");
    println!("cargo:found=1");
}

/// Splits pkg-config output on whitespace (its paths here have none).
fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}
