//! `[[trace]]` entries of the dataplane's configuration: load, attach before the workers start,
//! print the maps bpftrace-style at exit (and on SIGUSR1), and the records of their ring
//! buffers and perf-event arrays as lines as they come ([`super::events`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use maps::Map;
use xdp_vm::elf::{Object, ProgramKind, Types};

use super::events::{self, Consumer, EventMap};
use super::hist::{self, Kind};
use super::{Attachment, Target, TraceProgram, UprobeError};
use crate::config::{PrintKind, TraceConfig};

/// Why a `[[trace]]` entry could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace[{index}]: cannot read {path}")]
    Read {
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trace[{index}]: {path}")]
    Object {
        index: usize,
        path: PathBuf,
        #[source]
        source: xdp_vm::elf::ElfError,
    },
    #[error("trace[{index}]: {path} has no uprobe or uretprobe program")]
    NoProgram { index: usize, path: PathBuf },
    #[error("trace[{index}]: cannot create the maps of {path}")]
    Maps {
        index: usize,
        path: PathBuf,
        #[source]
        source: xdp_vm::LoadError,
    },
    #[error("trace[{index}].print: {path} has no map named {map}")]
    NoMap { index: usize, path: PathBuf, map: String },
    #[error("trace[{index}].print: {reason}")]
    Events { index: usize, reason: String },
    #[error("trace[{index}]")]
    Attach {
        index: usize,
        #[source]
        source: UprobeError,
    },
}

struct Active {
    cfg: TraceConfig,
    obj: Object,
    maps: Vec<Arc<Map>>,
    /// Its ring buffers and perf-event arrays.
    events: Vec<EventMap>,
    prog: TraceProgram,
    target: Target,
    /// The object file's length and modification time when it was loaded.
    file: Option<(u64, std::time::SystemTime)>,
    attachment: Option<Attachment>,
}

/// The attached `[[trace]]` programs; detached when dropped.
pub struct Traces {
    active: Vec<Active>,
    /// Prints their records on stdout.
    consumer: Option<Consumer>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").field("count", &self.active.len()).finish()
    }
}

/// Loads and attaches every entry. An entry whose object is `xdp_object` uses `xdp_maps` (the
/// XDP program's maps), so the two see each other's updates.
///
/// # Errors
/// [`TraceError`] naming the entry; whatever was attached before is detached.
pub fn start(
    cfgs: &[TraceConfig],
    slots: usize,
    xdp_object: &std::path::Path,
    xdp_maps: &[Arc<Map>],
) -> Result<Traces, TraceError> {
    let mut active = Vec::new();
    for (index, cfg) in cfgs.iter().enumerate() {
        active.push(load_one(index, cfg, slots, xdp_object, xdp_maps)?);
    }
    let events: Vec<EventMap> = active.iter().flat_map(|a| a.events.iter().cloned()).collect();
    for e in &events {
        eprintln!("dataplane: trace: records of {} printed as lines, {}", e.name, e.describe());
    }
    let consumer = Consumer::spawn(events, |line| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    });
    Ok(Traces { active, consumer: Some(consumer) })
}

fn load_one(
    index: usize,
    cfg: &TraceConfig,
    slots: usize,
    xdp_object: &std::path::Path,
    xdp_maps: &[Arc<Map>],
) -> Result<Active, TraceError> {
    let path = cfg.object.clone();
    let bytes =
        std::fs::read(&path).map_err(|source| TraceError::Read { index, path: path.clone(), source })?;
    let mut obj =
        Object::parse(&bytes).map_err(|source| TraceError::Object { index, path: path.clone(), source })?;
    // A perf-event array of max_entries 0 gets one entry per CPU slot, as libbpf gives it one
    // per CPU.
    for m in &mut obj.maps {
        if m.def.map_type == maps::map_type::PERF_EVENT_ARRAY && m.def.max_entries == 0 {
            m.def.max_entries = u32::try_from(slots).unwrap_or(u32::MAX);
        }
    }
    let types = Types::from_object(&bytes).unwrap_or_default();
    let spec = match &cfg.program {
        Some(name) => obj.program(Some(name)).map_err(|source| TraceError::Object {
            index,
            path: path.clone(),
            source,
        })?,
        None => obj
            .programs
            .iter()
            .find(|p| matches!(p.kind, ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. }))
            .ok_or_else(|| TraceError::NoProgram { index, path: path.clone() })?,
    };
    let maps = if path == xdp_object {
        xdp_maps.to_vec()
    } else {
        xdp_vm::create_maps(&obj, slots).map_err(|source| TraceError::Maps {
            index,
            path: path.clone(),
            source,
        })?
    };
    for p in &cfg.print {
        let Some(i) = obj.map_index(&p.map) else {
            return Err(TraceError::NoMap { index, path, map: p.map.clone() });
        };
        let is_events = events::is_event_map(obj.maps[i].def.map_type);
        if is_events != (p.kind == PrintKind::Events) {
            let reason = if is_events {
                format!(
                    "map {} is a {}: print it with kind \"events\"",
                    p.map,
                    crate::control::map_type_name(obj.maps[i].def.map_type)
                )
            } else {
                format!(
                    "map {} holds no records (kind \"events\" is for ring buffers and perf-event arrays)",
                    p.map
                )
            };
            return Err(TraceError::Events { index, reason });
        }
    }
    // Every ring buffer and perf-event array prints its records (configured or not: a record
    // left unread is lost).
    let mut event_maps = Vec::new();
    for (i, m) in obj.maps.iter().enumerate() {
        if !events::is_event_map(m.def.map_type) {
            continue;
        }
        let ty = cfg.print.iter().find(|p| p.map == m.name).and_then(|p| p.record_type.as_deref());
        event_maps.push(
            EventMap::new(&m.name, maps[i].clone(), &types, ty, slots)
                .map_err(|reason| TraceError::Events { index, reason })?,
        );
    }
    let attach_err = |source| TraceError::Attach { index, source };
    let prog = TraceProgram::load(spec, &maps).map_err(attach_err)?;
    let target = match (&cfg.target, &prog.target) {
        (Some(t), _) => Target::parse(t),
        (None, Some(t)) => t.clone(),
        (None, None) => return Err(attach_err(UprobeError::NoTarget { program: prog.name.clone() })),
    };
    let attachment = super::attach(&target, &[&prog]).map_err(attach_err)?;
    Ok(Active {
        cfg: cfg.clone(),
        obj,
        maps,
        events: event_maps,
        prog,
        target,
        file: file_identity(&path),
        attachment: Some(attachment),
    })
}

/// What tells one version of an object file from another: its length and modification time.
fn file_identity(path: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Detached live traces kept for a next attach of the same entry (same object file, program,
/// target, print and slots): verified and compiled already, so attaching again costs the patch
/// and a reset of the maps instead of a load (tens of milliseconds of verifying and compiling
/// in a debug build). At most [`MAX_IDLE`], the oldest dropped first.
static IDLE: Mutex<Vec<(usize, Active)>> = Mutex::new(Vec::new());
const MAX_IDLE: usize = 4;

/// A detached trace from [`IDLE`] for `cfg`, its maps back to their initial contents.
fn take_idle(cfg: &TraceConfig, slots: usize) -> Option<Active> {
    let mut idle = IDLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = file_identity(&cfg.object)?;
    let i = idle.iter().position(|(s, a)| *s == slots && a.cfg == *cfg && a.file == Some(now))?;
    let (_, a) = idle.remove(i);
    a.reset().then_some(a)
}

impl Active {
    /// Puts every map back to the object's initial contents: empty, zeroed, or its global
    /// data. `false` for a map this cannot do (prog arrays, maps of maps, ...).
    fn reset(&self) -> bool {
        use maps::map_type as t;
        for (spec, m) in self.obj.maps.iter().zip(&self.maps) {
            match spec.kind {
                xdp_vm::elf::MapKind::Global { readonly: true } => {}
                xdp_vm::elf::MapKind::Global { readonly: false } => {
                    if m.update_user(&0u32.to_le_bytes(), &spec.data, maps::BPF_ANY).is_err() {
                        return false;
                    }
                }
                xdp_vm::elf::MapKind::Regular => match spec.def.map_type {
                    t::HASH | t::PERCPU_HASH | t::LRU_HASH | t::LRU_PERCPU_HASH | t::LPM_TRIE => {
                        for e in m.entries() {
                            let _ = m.delete(&e.key);
                        }
                    }
                    t::ARRAY | t::PERCPU_ARRAY => {
                        let per = if m.is_per_cpu() { m.slots() } else { 1 };
                        let zero = vec![0u8; spec.def.value_size as usize * per];
                        for e in m.entries() {
                            if m.update_user(&e.key, &zero, maps::BPF_ANY).is_err() {
                                return false;
                            }
                        }
                    }
                    t::RINGBUF => {
                        m.ringbuf_consume(|_| {});
                    }
                    t::PERF_EVENT_ARRAY => {
                        for i in 0..spec.def.max_entries {
                            m.perf_consume(i, |_| {});
                        }
                    }
                    t::QUEUE | t::STACK => {
                        let mut buf = vec![0u8; spec.def.value_size as usize];
                        while m.pop(&mut buf).is_ok() {}
                    }
                    _ => return false,
                },
            }
        }
        true
    }

    /// Attaches it again (after [`take_idle`]).
    fn reattach(&mut self) -> Result<(), UprobeError> {
        self.attachment = Some(super::attach(&self.target, &[&self.prog])?);
        Ok(())
    }
}

impl Active {
    /// The configured maps (with `all_by_default`, every map of the object when none is
    /// configured: an 8-byte key as a `hist`, any other as a `count`), printed as bpftrace
    /// prints them.
    fn render(&self, all_by_default: bool) -> String {
        let mut s = String::new();
        if all_by_default && self.cfg.print.is_empty() {
            for (i, m) in self.obj.maps.iter().enumerate() {
                if !matches!(m.kind, xdp_vm::elf::MapKind::Regular) || events::is_event_map(m.def.map_type) {
                    continue;
                }
                let kind = if m.def.key_size == 8 { Kind::Hist } else { Kind::Count };
                let _ = write!(s, "{}", hist::render(&m.name, &self.maps[i], kind));
            }
            return s;
        }
        for p in &self.cfg.print {
            let Some(i) = self.obj.map_index(&p.map) else { continue };
            let kind = match p.kind {
                PrintKind::Count => Kind::Count,
                PrintKind::Hist => Kind::Hist,
                PrintKind::Lhist => Kind::Lhist {
                    min: p.min.unwrap_or(0),
                    max: p.max.unwrap_or(1),
                    step: p.step.unwrap_or(1),
                },
                PrintKind::Events => continue,
            };
            let _ = write!(s, "{}", hist::render("", &self.maps[i], kind));
        }
        s
    }

    fn detach(&mut self) -> Result<(), UprobeError> {
        match self.attachment.take() {
            Some(att) => att.detach(),
            None => Ok(()),
        }
    }
}

/// The most record lines a live trace keeps for its client between two reads; beyond, lines
/// are counted as lost.
pub const MAX_PENDING: usize = 1 << 16;

/// Record lines waiting for a live trace's client.
#[derive(Debug, Default)]
struct Pending {
    lines: std::collections::VecDeque<String>,
    lost: u64,
}

/// One program attached at run time (`dataplane trace`, through the control socket) with maps
/// of its own; detached when dropped.
pub struct Live {
    /// `None` only while being dropped.
    active: Option<Active>,
    slots: usize,
    consumer: Option<Consumer>,
    pending: Arc<Mutex<Pending>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(mut c) = self.consumer.take() {
            c.stop();
        }
        let Some(mut a) = self.active.take() else { return };
        // Detached cleanly: kept for the next attach of the same entry.
        if a.detach().is_ok() {
            let mut idle = IDLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
            idle.push((self.slots, a));
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("object", &self.active().cfg.object).finish()
    }
}

impl Live {
    /// Loads `cfg`'s program with fresh maps of `slots` per-CPU slots and attaches it.
    ///
    /// # Errors
    /// [`TraceError`] (reported as entry 0).
    pub fn attach(cfg: &TraceConfig, slots: usize) -> Result<Self, TraceError> {
        let active = match take_idle(cfg, slots) {
            Some(mut a) => {
                a.reattach().map_err(|source| TraceError::Attach { index: 0, source })?;
                a
            }
            None => load_one(0, cfg, slots, std::path::Path::new(""), &[])?,
        };
        let pending = Arc::new(Mutex::new(Pending::default()));
        let sink = pending.clone();
        let consumer = Consumer::spawn(active.events.clone(), move |line| {
            let mut p = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if p.lines.len() < MAX_PENDING {
                p.lines.push_back(line);
            } else {
                p.lost += 1;
            }
        });
        Ok(Self { active: Some(active), slots, consumer: Some(consumer), pending })
    }

    fn active(&self) -> &Active {
        self.active.as_ref().expect("a live trace has its program until dropped")
    }

    /// Its ring buffers and perf-event arrays: (map, how its lines look).
    #[must_use]
    pub fn event_maps(&self) -> Vec<(String, String)> {
        self.active().events.iter().map(|e| (e.name.clone(), e.describe())).collect()
    }

    /// The record lines printed since the last call (at most `max`), and how many were lost
    /// since then because the client did not read them in time.
    pub fn take_lines(&self, max: usize) -> (Vec<String>, u64) {
        let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = p.lines.len().min(max);
        let lines = p.lines.drain(..n).collect();
        (lines, std::mem::take(&mut p.lost))
    }

    /// Its maps, printed as bpftrace prints them.
    #[must_use]
    pub fn render(&self) -> String {
        self.active().render(true)
    }

    /// Detaches the program (the maps stay readable).
    ///
    /// # Errors
    /// When the code could not be restored.
    pub fn detach(&mut self) -> Result<(), UprobeError> {
        if let Some(a) = self.active.as_mut() {
            a.detach()?;
        }
        // No record comes after the detach: the consumer's last drain gets them all.
        if let Some(mut c) = self.consumer.take() {
            c.stop();
        }
        Ok(())
    }
}

impl Traces {
    /// The configured maps, printed as bpftrace prints them.
    #[must_use]
    pub fn render(&self) -> String {
        self.active.iter().map(|a| a.render(false)).collect()
    }

    /// Detaches every program (the maps stay readable), then prints their last records.
    pub fn detach(&mut self) {
        for a in &mut self.active {
            if let Some(att) = a.attachment.take()
                && let Err(e) = att.detach()
            {
                eprintln!("dataplane: {e}");
            }
        }
        if let Some(mut c) = self.consumer.take() {
            c.stop();
        }
    }
}
