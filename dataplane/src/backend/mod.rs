//! Where packets come from and go to. Today: AF_XDP ([`afxdp`]) on any interface, with a
//! small kernel-side program that redirects each configured queue into its socket; and DPDK
//! (`dpdk`, built when the build machine has DPDK) on physical and virtual devices. What a
//! worker needs of any backend is [`queue::Queue`].
//!
//! A [`Port`] is one interface: the redirect program attached through a bpf link (so the kernel
//! detaches it when the process ends, however it ends) and one [`afxdp::Socket`] per configured
//! queue, handed to the workers. The redirect program is assembled here rather than built from
//! `configs/bpf/` so the benchmarks' replay table, which runs every object there as a user
//! program, never sees it.

/// AF_XDP sockets, UMEM and rings: the shared `xsk` crate (pktgen sends through it too).
pub use xsk::afxdp;
mod afxdp_queue;
#[cfg(dpdk)]
#[expect(unsafe_code, reason = "DPDK's C API: EAL, ports, mbufs")]
pub mod dpdk;
pub mod queue;
#[expect(unsafe_code, reason = "TUNSETIFF through a raw ioctl")]
pub mod sys;

use maps::{MapDef, map_type};
use xdp_vm::elf::{MapKind, MapSpec, Object, ProgramKind, ProgramSpec};
use xdp_vm::insn::{BPF_PSEUDO_MAP_IDX, Insn};

use crate::config::{AttachMode, PortConfig, ZeroCopy};
use crate::kernel::{KernelError, KernelProgram, XdpLink, XdpMode};

/// What can go wrong opening a port.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("interface {name} does not exist")]
    NoInterface { name: String },
    #[error("queue {queue} is out of range: {name} has {count} rx queue(s)")]
    QueueRange { name: String, queue: u32, count: u32 },
    #[error("cannot load the AF_XDP redirect program for {name}")]
    Redirect {
        name: String,
        #[source]
        source: KernelError,
    },
    #[error("cannot attach XDP ({mode:?} mode) to {name}")]
    Attach {
        name: String,
        mode: AttachMode,
        #[source]
        source: KernelError,
    },
    #[error("cannot open an AF_XDP socket on {name} queue {queue}")]
    Socket {
        name: String,
        queue: u32,
        #[source]
        source: std::io::Error,
    },
}

/// The interface index of `name` in the calling thread's network namespace.
#[must_use]
pub fn ifindex(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    sys::ifindex_here(name).ok()
}

/// Number of RX queues of `name` in the calling thread's network namespace (rtnetlink; not
/// sysfs, which shows the namespace it was mounted in); 1 when the kernel does not say.
#[must_use]
pub fn rx_queues(name: &str) -> u32 {
    sys::queues_here(name).map_or(1, |q| q.rx.max(1))
}

/// The kernel-side half of AF_XDP: `return bpf_redirect_map(&xsks, ctx->rx_queue_index,
/// XDP_PASS);` — queues without a socket go to the stack as before.
#[must_use]
pub fn redirect_object(queues: u32) -> Object {
    let insns = vec![
        Insn::new(0x61, 2, 1, 16, 0), // r2 = *(u32 *)(r1 + 16): rx_queue_index
        Insn::new(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0), // r1 = map[xsks]
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(0xb7, 3, 0, 0, 2),  // r3 = XDP_PASS
        Insn::new(0x85, 0, 0, 0, 51), // call bpf_redirect_map
        Insn::new(0x95, 0, 0, 0, 0),  // exit
    ];
    let def = MapDef {
        map_type: map_type::XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: queues.max(1),
        map_flags: 0,
    };
    one_program_object(
        "dp_xsk_redirect",
        insns,
        MapSpec { name: "xsks".into(), def, kind: MapKind::Regular, data: vec![], vars: vec![] },
    )
}

/// A sink for the far end of a lab or benchmark veth: counts frames in a per-CPU array (key 0)
/// and drops them (`XDP_DROP`), or passes them on (`pass`), so the stack sees them.
#[must_use]
pub fn sink_object(pass: bool) -> Object {
    let verdict = if pass { 2 } else { 1 };
    let insns = vec![
        Insn::new(0x62, 10, 0, -4, 0),                // *(u32 *)(r10 - 4) = 0
        Insn::new(0xbf, 2, 10, 0, 0),                 // r2 = r10
        Insn::new(0x07, 2, 0, 0, -4),                 // r2 += -4
        Insn::new(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0), // r1 = map[count]
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(0x85, 0, 0, 0, 1),       // call bpf_map_lookup_elem
        Insn::new(0x15, 0, 0, 3, 0),       // if r0 == 0 goto +3
        Insn::new(0x79, 1, 0, 0, 0),       // r1 = *(u64 *)(r0 + 0)
        Insn::new(0x07, 1, 0, 0, 1),       // r1 += 1
        Insn::new(0x7b, 0, 1, 0, 0),       // *(u64 *)(r0 + 0) = r1
        Insn::new(0xb7, 0, 0, 0, verdict), // r0 = verdict
        Insn::new(0x95, 0, 0, 0, 0),       // exit
    ];
    let def =
        MapDef { map_type: map_type::PERCPU_ARRAY, key_size: 4, value_size: 8, max_entries: 1, map_flags: 0 };
    one_program_object(
        "dp_sink",
        insns,
        MapSpec { name: "count".into(), def, kind: MapKind::Regular, data: vec![], vars: vec![] },
    )
}

fn one_program_object(name: &str, insns: Vec<Insn>, map: MapSpec) -> Object {
    Object {
        license: "GPL".into(),
        maps: vec![map],
        programs: vec![ProgramSpec {
            name: name.into(),
            section: "xdp".into(),
            kind: ProgramKind::Xdp,
            insns,
        }],
    }
}

/// A loaded [`sink_object`]: its frame count is the sum over CPUs.
#[derive(Debug)]
pub struct Sink {
    prog: KernelProgram,
    link: Option<XdpLink>,
}

impl Sink {
    /// Loads a sink (not yet attached).
    ///
    /// # Errors
    /// When the kernel refuses it.
    pub fn load(pass: bool) -> Result<Self, KernelError> {
        let obj = sink_object(pass);
        Ok(Self { prog: KernelProgram::load(&obj, &obj.programs[0])?, link: None })
    }

    /// Attaches it natively to `ifindex` (of the calling thread's namespace at attach time).
    ///
    /// # Errors
    /// When the attach fails.
    pub fn attach(&mut self, ifindex: u32) -> Result<(), KernelError> {
        self.link = Some(self.prog.attach_xdp(ifindex, XdpMode::Native)?);
        Ok(())
    }

    /// Frames seen so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        let map = &self.prog.maps()[0];
        map.lookup(&0u32.to_ne_bytes())
            .ok()
            .flatten()
            .map(|vs| vs.iter().map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8]))).sum())
            .unwrap_or(0)
    }
}

/// One interface: the redirect program attached, and its sockets (until taken by workers).
#[derive(Debug)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    /// Dropped last: detaches the redirect program.
    _link: XdpLink,
    _redirect: KernelProgram,
}

/// Opens `cfg`'s interface: checks it and its queues, binds one socket per queue, fills the
/// XSKMAP and attaches the redirect program. On error nothing stays attached.
///
/// # Errors
/// [`BackendError`] naming the interface and what failed.
pub fn open_port(cfg: &PortConfig) -> Result<(Port, Vec<(u32, afxdp::Socket)>), BackendError> {
    let name = cfg.interface.clone();
    let ifindex = ifindex(&name).ok_or_else(|| BackendError::NoInterface { name: name.clone() })?;
    let count = rx_queues(&name);
    if let Some(&queue) = cfg.queues.iter().find(|&&q| q >= count) {
        return Err(BackendError::QueueRange { name, queue, count });
    }
    let obj = redirect_object(count);
    let redirect = KernelProgram::load(&obj, &obj.programs[0])
        .map_err(|source| BackendError::Redirect { name: name.clone(), source })?;
    let mut sockets = Vec::new();
    for &queue in &cfg.queues {
        let sc = afxdp::SocketConfig {
            ifindex,
            queue,
            frames: cfg.umem_frames,
            frame_size: cfg.frame_size,
            rx_ring: cfg.rx_ring,
            tx_ring: cfg.tx_ring,
            fill_ring: cfg.fill_ring,
            completion_ring: cfg.completion_ring,
            zero_copy: match cfg.zero_copy {
                ZeroCopy::Auto => None,
                ZeroCopy::On => Some(true),
                ZeroCopy::Off => Some(false),
            },
            busy_poll: (cfg.busy_poll > 0).then_some((
                cfg.busy_poll,
                if cfg.busy_poll_budget == 0 { cfg.batch } else { cfg.busy_poll_budget },
            )),
        };
        let sock = afxdp::Socket::new(&sc).map_err(|source| BackendError::Socket {
            name: name.clone(),
            queue,
            source,
        })?;
        use std::os::fd::{AsFd, AsRawFd};
        let fd = sock.as_fd().as_raw_fd() as u32;
        redirect.maps()[0]
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), 0)
            .map_err(|source| BackendError::Redirect { name: name.clone(), source })?;
        sockets.push((queue, sock));
    }
    let mode = match cfg.attach {
        AttachMode::Native => XdpMode::Native,
        AttachMode::Skb => XdpMode::Skb,
    };
    let link = redirect.attach_xdp(ifindex, mode).map_err(|source| BackendError::Attach {
        name: name.clone(),
        mode: cfg.attach,
        source,
    })?;
    Ok((Port { name, ifindex, mode: cfg.attach, _link: link, _redirect: redirect }, sockets))
}

/// Whether `name` has an XDP program attached (any mode), as `ip link` reports it.
#[must_use]
pub fn has_xdp(name: &str, netns: Option<&str>) -> bool {
    let mut cmd = std::process::Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-d", "link", "show", "dev", name]);
    cmd.output().is_ok_and(|o| {
        let text = String::from_utf8_lossy(&o.stdout);
        text.contains("prog/xdp") || text.contains(" xdp") || text.contains("xdpgeneric")
    })
}
