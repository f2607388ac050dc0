//! `dataplane --config FILE`: the TOML configuration, checked in full before anything touches an
//! interface.
//!
//! Unknown keys and bad values are errors that name the key's path (`ports[0].queues`), so a
//! typo never silently falls back to a default. Every field is documented in the README's
//! "Configuration" section; `configs/xdp.toml` is the shipped example.
//!
//! ```
//! let cfg = dataplane::config::Config::parse(r#"
//!     [program]
//!     object = "target/bpf/xdp_counter.o"
//!     [[ports]]
//!     interface = "eth1"
//! "#).unwrap();
//! assert_eq!(cfg.ports[0].queues, vec![0]);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config {path}: {message}")]
    Syntax { path: String, message: String },
    /// A value of the right type that is out of range or inconsistent with another.
    #[error("config key {key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The instance name: the control socket is `/run/dataplane/NAME.sock` (default: the config
    /// file's stem; `dataplane` for a config parsed from text).
    #[serde(default)]
    pub name: String,
    /// `host:port` of the Prometheus endpoint (none by default).
    pub metrics: Option<String>,
    /// Where frames come from: `"afxdp"` (default) or `"dpdk"`.
    #[serde(default)]
    pub backend: BackendKind,
    /// `[dpdk]`: EAL arguments and memory, for `backend = "dpdk"`.
    pub dpdk: Option<DpdkConfig>,
    /// The XDP program to run.
    pub program: ProgramConfig,
    /// The interfaces and queues to run it on.
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    /// What `XDP_PASS` does.
    #[serde(default)]
    pub pass: PassAction,
    /// Run in a namespace and veth pair of our own, with generated traffic.
    pub lab: Option<LabConfig>,
    /// Tracing programs attached to the dataplane's probe sites or functions.
    #[serde(default)]
    pub trace: Vec<TraceConfig>,
}

/// `[[trace]]`: a uprobe or uretprobe program attached to a probe site (`site:rx`) or a
/// function symbol of the dataplane, with the maps to print at exit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The clang-built object (the `[program]` object shares its maps with the XDP program).
    pub object: PathBuf,
    /// The program in the object (default: its first uprobe/uretprobe program).
    pub program: Option<String>,
    /// `site:NAME` or a function name (default: the program's section, `uprobe/TARGET`).
    pub target: Option<String>,
    /// Maps printed at exit, bpftrace-style.
    #[serde(default)]
    pub print: Vec<PrintConfig>,
}

/// `[[trace.print]]`: one map and how to print it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrintConfig {
    pub map: String,
    pub kind: PrintKind,
    /// `lhist` bounds and bucket width.
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub step: Option<i64>,
    /// `events`: the BTF type (struct, union or typedef name) of the records (default: the
    /// one named after the map, else hex).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
}

/// bpftrace's aggregations, and `events`: a ring buffer's or perf-event array's records, one
/// line each as they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrintKind {
    Count,
    Hist,
    Lhist,
    Events,
}

/// `[program]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramConfig {
    /// The clang-built object; relative paths are relative to the working directory.
    pub object: PathBuf,
    /// The program in the object (default: its first).
    pub name: Option<String>,
    #[serde(default)]
    pub engine: EngineKind,
    /// `const volatile` (and other global) overrides: variable name -> integer (written in the
    /// variable's size, little-endian) or `"hex:..."` raw bytes.
    #[serde(default)]
    pub globals: BTreeMap<String, GlobalValue>,
}

/// A global variable's new value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum GlobalValue {
    Int(i64),
    Text(String),
}

/// The engine that runs the program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Interp,
    #[default]
    Jit,
}

/// The backend every port uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// AF_XDP sockets on kernel interfaces.
    #[default]
    Afxdp,
    /// DPDK ports (physical or virtual devices).
    Dpdk,
}

/// `[dpdk]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkConfig {
    /// Arguments for `rte_eal_init` (after the program name), e.g. `["--no-pci", "-l", "0-1"]`.
    /// Without huge pages reserved `--no-huge` is added (with a warning), `--in-memory` unless a
    /// `--file-prefix` is given, `-l <first worker core>` unless cores are given.
    #[serde(default)]
    pub eal_args: Vec<String>,
    /// Mbufs in each port's pool (default: enough for its rings and bursts).
    pub mbufs: Option<u32>,
}

/// `[[ports]]`: one interface (AF_XDP) or device (DPDK).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// AF_XDP: the kernel interface.
    #[serde(default)]
    pub interface: String,
    /// DPDK: the device, as `rte_dev_probe` takes it: a PCI address or a virtual device with
    /// its arguments (`net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`, `net_ring0`,
    /// `net_af_packet0,iface=veth0`, `net_tap0`).
    pub device: Option<String>,
    /// DPDK: a pcap file whose frames are sent out of queue 0 when the port starts, for a
    /// loopback device (`net_ring`) that returns them: they then circulate through the worker.
    pub inject_pcap: Option<PathBuf>,
    /// DPDK: how many times `inject_pcap`'s frames are sent.
    #[serde(default = "default_copies")]
    pub inject_copies: u32,
    /// Queue ids; one AF_XDP socket and one worker each.
    #[serde(default = "default_queues")]
    pub queues: Vec<u32>,
    #[serde(default)]
    pub attach: AttachMode,
    #[serde(default)]
    pub zero_copy: ZeroCopy,
    /// Descriptors in the RX and TX rings (power of two).
    #[serde(default = "default_ring")]
    pub rx_ring: u32,
    #[serde(default = "default_ring")]
    pub tx_ring: u32,
    /// Descriptors in the fill and completion rings (power of two).
    #[serde(default = "default_fill")]
    pub fill_ring: u32,
    #[serde(default = "default_ring")]
    pub completion_ring: u32,
    /// UMEM frames per socket.
    #[serde(default = "default_frames")]
    pub umem_frames: u32,
    /// Bytes per UMEM frame: 2048 or 4096.
    #[serde(default = "default_frame_size")]
    pub frame_size: u32,
    /// Frames per RX/TX burst, 1..=256.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// AF_XDP: preferred busy polling, µs per poll (`SO_BUSY_POLL` with `SO_PREFER_BUSY_POLL`);
    /// 0 (default): off.
    #[serde(default)]
    pub busy_poll: u32,
    /// AF_XDP: packets per busy poll (`SO_BUSY_POLL_BUDGET`); 0 (default): `batch`.
    #[serde(default)]
    pub busy_poll_budget: u32,
    /// Prefetch the first cache line of every received frame before the program runs on the
    /// batch (default: on).
    #[serde(default = "default_true")]
    pub prefetch: bool,
}

fn default_true() -> bool {
    true
}

fn default_copies() -> u32 {
    1
}
fn default_queues() -> Vec<u32> {
    vec![0]
}
fn default_ring() -> u32 {
    2048
}
fn default_fill() -> u32 {
    4096
}
fn default_frames() -> u32 {
    8192
}
fn default_frame_size() -> u32 {
    4096
}
fn default_batch() -> u32 {
    64
}

/// How the redirect program is attached (`XDP_FLAGS_DRV_MODE` / `XDP_FLAGS_SKB_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    #[default]
    Native,
    Skb,
}

/// Whether the socket binds in zero-copy mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopy {
    /// Zero-copy when the driver supports it, copy mode otherwise.
    #[default]
    Auto,
    On,
    Off,
}

/// `[workers]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// CPUs to pin workers to, in (port, queue) order, reused round-robin when there are more
    /// queues than cores. Empty: worker `i` on CPU `i % online CPUs`.
    #[serde(default)]
    pub cores: Vec<usize>,
}

/// `[stats]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Seconds between stats lines (0 turns them off; the summary is always printed).
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Print every map's contents (as `prog run --json` does) as one JSON line at exit.
    #[serde(default)]
    pub maps_at_exit: bool,
}

fn default_interval() -> f64 {
    1.0
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self { interval: default_interval(), maps_at_exit: false }
    }
}

/// What happens to a frame the program passes to the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassAction {
    /// Dropped and counted.
    #[default]
    Drop,
    /// Written to a TAP device per port (`dp-<interface>`), into the kernel's stack.
    Tap,
}

/// `[lab]`: a network namespace and veth pair of our own, and traffic into it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// The namespace to create (must not exist).
    #[serde(default = "default_netns")]
    pub namespace: String,
    /// The veth end the dataplane runs on, in the current namespace (the port's interface).
    #[serde(default = "default_veth")]
    pub interface: String,
    /// The other end, moved into the namespace; traffic is sent from it.
    #[serde(default = "default_peer")]
    pub peer: String,
    /// Frames per second to send (0: as fast as one thread can).
    #[serde(default = "default_rate")]
    pub rate: u64,
    /// UDP flows (source ports) sent besides the ICMP echo frames.
    #[serde(default = "default_flows")]
    pub flows: usize,
}

fn default_netns() -> String {
    "dp-lab".into()
}
fn default_veth() -> String {
    "dp-lab0".into()
}
fn default_peer() -> String {
    "dp-lab1".into()
}
fn default_rate() -> u64 {
    10_000
}
fn default_flows() -> usize {
    16
}

impl Config {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => {
                ConfigError::Syntax { path: path.display().to_string(), message }
            }
            other => other,
        })?;
        if cfg.name.is_empty() {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("dataplane");
            if !crate::control::server::valid_name(stem) {
                return Err(invalid(
                    "name",
                    format!("the file name {stem:?} is no instance name; set name = \"...\""),
                ));
            }
            cfg.name = stem.to_string();
        }
        Ok(cfg)
    }

    /// Parses and checks config text.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for TOML errors, unknown keys and wrong types (with the key's
    /// path), [`ConfigError::Invalid`] for values out of range.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().trim().to_string();
            let message = if path.is_empty() || path == "." { msg } else { format!("key {path}: {msg}") };
            ConfigError::Syntax { path: "<text>".into(), message }
        })?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !self.name.is_empty() && !crate::control::server::valid_name(&self.name) {
            return Err(invalid(
                "name",
                format!("{:?}: 1 to 64 characters of [A-Za-z0-9_.-], not starting with '.'", self.name),
            ));
        }
        if let Some(m) = &self.metrics
            && m.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid("metrics", format!("{m:?} is not an address:port like \"127.0.0.1:9464\"")));
        }
        if self.ports.is_empty() {
            return Err(invalid("ports", "at least one [[ports]] entry is needed"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let key = |k: &str| format!("ports[{i}].{k}");
            if self.backend == BackendKind::Dpdk {
                self.check_dpdk_port(i, p)?;
            } else if p.device.is_some() {
                return Err(invalid(key("device"), "a device is a DPDK port: set backend = \"dpdk\""));
            } else if p.interface.is_empty() || p.interface.len() > 15 {
                return Err(invalid(key("interface"), "an interface name has 1 to 15 characters"));
            }
            if !seen.insert(p.name().to_string()) {
                return Err(invalid(key("interface"), format!("{} is configured twice", p.name())));
            }
            if p.queues.is_empty() {
                return Err(invalid(key("queues"), "at least one queue"));
            }
            let mut qs = p.queues.clone();
            qs.sort_unstable();
            qs.dedup();
            if qs.len() != p.queues.len() {
                return Err(invalid(key("queues"), "a queue is listed twice"));
            }
            for (name, v) in [
                ("rx_ring", p.rx_ring),
                ("tx_ring", p.tx_ring),
                ("fill_ring", p.fill_ring),
                ("completion_ring", p.completion_ring),
            ] {
                if !v.is_power_of_two() || !(64..=65536).contains(&v) {
                    return Err(invalid(key(name), format!("{v} is not a power of two in 64..=65536")));
                }
            }
            if p.frame_size != 2048 && p.frame_size != 4096 {
                return Err(invalid(key("frame_size"), format!("{} is neither 2048 nor 4096", p.frame_size)));
            }
            // Each worker of this port lends LANE_DEPTH chunks to every worker of the other
            // ports (the buffers redirects into this port are copied into): they are out of the
            // fill ring's reach as long as the run lasts.
            let lent = if self.backend == BackendKind::Dpdk {
                0
            } else {
                let others: usize =
                    self.ports.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, o)| o.queues.len()).sum();
                u64::try_from(others * crate::worker::LANE_DEPTH).unwrap_or(u64::MAX)
            };
            let need = u64::from(p.fill_ring) + u64::from(p.batch) + lent;
            if u64::from(p.umem_frames) < need || p.umem_frames > 1 << 20 {
                let why = if lent == 0 {
                    format!(
                        "{} frames cannot keep a {}-entry fill ring full and still transmit (need fill_ring + batch = {need} .. 1048576)",
                        p.umem_frames, p.fill_ring
                    )
                } else {
                    format!(
                        "{} frames cannot keep a {}-entry fill ring full, lend {lent} to the other ports' workers for redirects \
                         and still transmit (need fill_ring + batch + {} per queue of the other ports = {need} .. 1048576)",
                        p.umem_frames,
                        p.fill_ring,
                        crate::worker::LANE_DEPTH
                    )
                };
                return Err(invalid(key("umem_frames"), why));
            }
            if !(1..=256).contains(&p.batch) {
                return Err(invalid(key("batch"), format!("{} is not in 1..=256", p.batch)));
            }
            if p.busy_poll > 1_000_000 {
                return Err(invalid(key("busy_poll"), format!("{} µs is not in 0..=1000000", p.busy_poll)));
            }
            if p.busy_poll_budget > 65_535 {
                return Err(invalid(
                    key("busy_poll_budget"),
                    format!("{} is not in 0..=65535", p.busy_poll_budget),
                ));
            }
        }
        if !(self.stats.interval >= 0.0 && self.stats.interval <= 3600.0) {
            return Err(invalid("stats.interval", "seconds in 0..=3600"));
        }
        for (name, v) in &self.program.globals {
            if let GlobalValue::Text(t) = v
                && parse_hex(t.strip_prefix("hex:").unwrap_or("x")).is_none()
            {
                return Err(invalid(format!("program.globals.{name}"), "an integer or \"hex:<bytes>\""));
            }
        }
        for (i, t) in self.trace.iter().enumerate() {
            for (j, p) in t.print.iter().enumerate() {
                let key = |k: &str| format!("trace[{i}].print[{j}].{k}");
                match (p.kind, p.min, p.max, p.step) {
                    (PrintKind::Lhist, Some(min), Some(max), Some(step)) => {
                        if step <= 0 || min >= max || (max - min) / step > 100_000 {
                            return Err(invalid(
                                key("step"),
                                "lhist needs min < max and 0 < step, at most 100000 buckets",
                            ));
                        }
                    }
                    (PrintKind::Lhist, ..) => {
                        return Err(invalid(key("kind"), "lhist needs min, max and step"));
                    }
                    (_, None, None, None) => {}
                    _ => return Err(invalid(key("min"), "min, max and step are for lhist only")),
                }
                if p.record_type.is_some() && p.kind != PrintKind::Events {
                    return Err(invalid(key("type"), "a record type is for kind = \"events\" only"));
                }
            }
        }
        if self.backend != BackendKind::Dpdk && self.dpdk.is_some() {
            return Err(invalid("dpdk", "a [dpdk] section needs backend = \"dpdk\""));
        }
        if let Some(lab) = &self.lab {
            if self.backend == BackendKind::Dpdk {
                return Err(invalid("lab", "lab mode runs on AF_XDP; use backend = \"afxdp\""));
            }
            for (k, v) in [
                ("lab.namespace", &lab.namespace),
                ("lab.interface", &lab.interface),
                ("lab.peer", &lab.peer),
            ] {
                if v.is_empty()
                    || v.len() > 15
                    || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(invalid(k, format!("{v:?}: 1 to 15 characters of [A-Za-z0-9_-]")));
                }
            }
            if !self.ports.iter().any(|p| p.interface == lab.interface) {
                return Err(invalid(
                    "lab.interface",
                    format!("{} is not one of the [[ports]]", lab.interface),
                ));
            }
            if !(1..=4096).contains(&lab.flows) {
                return Err(invalid("lab.flows", "1..=4096"));
            }
        }
        Ok(())
    }

    fn check_dpdk_port(&self, i: usize, p: &PortConfig) -> Result<(), ConfigError> {
        let key = |k: &str| format!("ports[{i}].{k}");
        let Some(dev) = &p.device else {
            return Err(invalid(key("device"), "a DPDK port needs a device (e.g. \"net_ring0\")"));
        };
        if !p.interface.is_empty() {
            return Err(invalid(key("interface"), "a DPDK port names a device, not an interface"));
        }
        let name = p.name();
        if name.is_empty() || name.len() >= 64 || dev.contains('\0') {
            return Err(invalid(
                key("device"),
                format!("{dev:?}: a device name of 1 to 63 characters, then ,key=value arguments"),
            ));
        }
        if p.queues.iter().enumerate().any(|(i, &q)| q as usize != i) {
            return Err(invalid(key("queues"), "a DPDK port's queues are 0, 1, .. n-1, in order"));
        }
        if let Some(d) = &self.dpdk
            && d.mbufs.is_some_and(|m| !(1024..=1 << 22).contains(&m))
        {
            return Err(invalid("dpdk.mbufs", "1024..=4194304"));
        }
        Ok(())
    }

    /// Every (port index, queue) pair, in worker order.
    #[must_use]
    pub fn queues(&self) -> Vec<(usize, u32)> {
        self.ports.iter().enumerate().flat_map(|(i, p)| p.queues.iter().map(move |&q| (i, q))).collect()
    }
}

impl PortConfig {
    /// The port's name: its interface (AF_XDP) or its device's name without arguments (DPDK).
    #[must_use]
    pub fn name(&self) -> &str {
        match &self.device {
            Some(d) => d.split(',').next().unwrap_or_default(),
            None => &self.interface,
        }
    }
}

impl GlobalValue {
    /// The bytes to write into a variable of `size` bytes.
    ///
    /// # Errors
    /// A reason when the value does not fit.
    pub fn bytes(&self, size: usize) -> Result<Vec<u8>, String> {
        match self {
            GlobalValue::Int(v) => {
                let bytes = v.to_le_bytes();
                if size > 8 {
                    return Err(format!("an integer cannot fill a {size}-byte variable; use \"hex:...\""));
                }
                let fits = bytes[size..].iter().all(|&b| b == 0) || bytes[size..].iter().all(|&b| b == 0xff);
                if !fits {
                    return Err(format!("{v} does not fit in {size} bytes"));
                }
                Ok(bytes[..size].to_vec())
            }
            GlobalValue::Text(t) => {
                parse_hex(t.strip_prefix("hex:").unwrap_or("x")).ok_or_else(|| "not hex".to_string())
            }
        }
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[program]\nobject = \"x.o\"\n[[ports]]\ninterface = \"eth1\"\n";

    #[test]
    fn defaults() {
        let c = Config::parse(MIN).unwrap();
        let p = &c.ports[0];
        assert_eq!(
            (p.queues.clone(), p.attach, p.zero_copy, p.batch),
            (vec![0], AttachMode::Native, ZeroCopy::Auto, 64)
        );
        assert_eq!(c.pass, PassAction::Drop);
        assert_eq!(c.program.engine, EngineKind::Jit);
        assert!(c.lab.is_none());
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = Config::parse(&format!("{MIN}rx_rnig = 5\n")).unwrap_err().to_string();
        assert!(e.contains("ports[0]") && e.contains("rx_rnig"), "{e}");
        let e = Config::parse("[program]\nobject = \"x.o\"\nengin = \"jit\"\n[[ports]]\ninterface = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("program") && e.contains("engin"), "{e}");
    }

    #[test]
    fn bad_values_name_their_path() {
        let e = Config::parse(&format!("{MIN}attach = \"driver\"\n")).unwrap_err().to_string();
        assert!(e.contains("ports[0].attach"), "{e}");
        let e = Config::parse(&format!("{MIN}rx_ring = 1000\n")).unwrap_err().to_string();
        assert!(e.contains("ports[0].rx_ring"), "{e}");
        let e = Config::parse(&format!("{MIN}queues = []\n")).unwrap_err().to_string();
        assert!(e.contains("ports[0].queues"), "{e}");
        let e = Config::parse("[program]\nobject = \"x.o\"\nports = []\n").unwrap_err().to_string();
        assert!(e.contains("ports"), "{e}");
        let e = Config::parse(&format!("{MIN}[lab]\ninterface = \"other\"\n")).unwrap_err().to_string();
        assert!(e.contains("lab.interface"), "{e}");
    }

    #[test]
    fn umem_frames_cover_the_fill_ring_a_batch_and_the_chunks_lent_to_other_ports() {
        let port = |name: &str, queues: &str| {
            format!(
                "[[ports]]\ninterface = \"{name}\"\nqueues = {queues}\nfill_ring = 1024\numem_frames = 1100\n"
            )
        };
        // One port: 1024 + 64 fit in 1100.
        Config::parse(&format!("[program]\nobject = \"x.o\"\n{}", port("a", "[0]"))).unwrap();
        // Two ports: each also lends 256 chunks to the other port's one worker.
        let two = format!("[program]\nobject = \"x.o\"\n{}{}", port("a", "[0]"), port("b", "[0]"));
        let e = Config::parse(&two).unwrap_err().to_string();
        assert!(e.contains("ports[0].umem_frames") && e.contains("lend 256") && e.contains("= 1344"), "{e}");
        // Two queues on the other port: 512 lent.
        let e = Config::parse(
            &two.replacen("umem_frames = 1100", "umem_frames = 1500", 1).replace("[0]\nfill", "[0, 1]\nfill"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ports[0].umem_frames") && e.contains("lend 512") && e.contains("= 1600"), "{e}");
        Config::parse(&two.replace("umem_frames = 1100", "umem_frames = 1344")).unwrap();
    }

    #[test]
    fn global_values() {
        assert_eq!(GlobalValue::Int(0x1234).bytes(2).unwrap(), vec![0x34, 0x12]);
        assert_eq!(GlobalValue::Int(-1).bytes(4).unwrap(), vec![0xff; 4]);
        assert!(GlobalValue::Int(0x1_0000).bytes(2).is_err());
        assert_eq!(GlobalValue::Text("hex:0a0b".into()).bytes(2).unwrap(), vec![10, 11]);
    }

    #[test]
    fn dpdk_ports_name_a_device() {
        let dpdk = "backend = \"dpdk\"\n[dpdk]\neal_args = [\"--no-pci\"]\n[program]\nobject = \"x.o\"\n";
        let c = Config::parse(&format!(
            "{dpdk}[[ports]]\ndevice = \"net_pcap0,rx_pcap=a.pcap\"\nqueues = [0, 1]\n"
        ))
        .unwrap();
        assert_eq!((c.backend, c.ports[0].name()), (BackendKind::Dpdk, "net_pcap0"));
        assert_eq!(c.dpdk.unwrap().eal_args, vec!["--no-pci"]);
        let e = Config::parse(&format!("{dpdk}[[ports]]\ninterface = \"eth0\"\n")).unwrap_err().to_string();
        assert!(e.contains("ports[0].device"), "{e}");
        let e = Config::parse(&format!("{dpdk}[[ports]]\ndevice = \"net_ring0\"\nqueues = [1]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ports[0].queues"), "{e}");
        let e = Config::parse(&format!("{MIN}device = \"net_ring0\"\n")).unwrap_err().to_string();
        assert!(e.contains("ports[0].device"), "{e}");
        let e = Config::parse(&format!(
            "{dpdk}[[ports]]\ndevice = \"net_ring0\"\n[lab]\ninterface = \"net_ring0\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("lab"), "{e}");
    }

    #[test]
    fn shipped_dpdk_config_parses() {
        let c = Config::parse(include_str!("../../configs/dpdk-pcap.toml")).unwrap();
        assert_eq!((c.backend, c.ports[0].name()), (BackendKind::Dpdk, "net_pcap0"));
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../../configs/xdp.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.lab.is_some());
    }
}
