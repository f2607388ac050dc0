//! `[[trace]]` entries of the dataplane's configuration: load, attach before the workers start,
//! print the maps bpftrace-style at exit.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use maps::Map;
use xdp_vm::elf::{Object, ProgramKind};

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
    attachment: Option<Attachment>,
}

/// The attached `[[trace]]` programs; detached when dropped.
pub struct Traces {
    active: Vec<Active>,
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
    Ok(Traces { active })
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
    let obj =
        Object::parse(&bytes).map_err(|source| TraceError::Object { index, path: path.clone(), source })?;
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
        if obj.map_index(&p.map).is_none() {
            return Err(TraceError::NoMap { index, path, map: p.map.clone() });
        }
    }
    let attach_err = |source| TraceError::Attach { index, source };
    let prog = TraceProgram::load(spec, &maps).map_err(attach_err)?;
    let target = match (&cfg.target, &prog.target) {
        (Some(t), _) => Target::parse(t),
        (None, Some(t)) => t.clone(),
        (None, None) => return Err(attach_err(UprobeError::NoTarget { program: prog.name.clone() })),
    };
    let attachment = super::attach(&target, &[&prog]).map_err(attach_err)?;
    Ok(Active { cfg: cfg.clone(), obj, maps, attachment: Some(attachment) })
}

impl Active {
    /// The configured maps (with `all_by_default`, every map of the object when none is
    /// configured: an 8-byte key as a `hist`, any other as a `count`), printed as bpftrace
    /// prints them.
    fn render(&self, all_by_default: bool) -> String {
        let mut s = String::new();
        if all_by_default && self.cfg.print.is_empty() {
            for (i, m) in self.obj.maps.iter().enumerate() {
                if !matches!(m.kind, xdp_vm::elf::MapKind::Regular) {
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

/// One program attached at run time (`dataplane trace`, through the control socket) with maps
/// of its own; detached when dropped.
pub struct Live {
    active: Active,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("object", &self.active.cfg.object).finish()
    }
}

impl Live {
    /// Loads `cfg`'s program with fresh maps of `slots` per-CPU slots and attaches it.
    ///
    /// # Errors
    /// [`TraceError`] (reported as entry 0).
    pub fn attach(cfg: &TraceConfig, slots: usize) -> Result<Self, TraceError> {
        Ok(Self { active: load_one(0, cfg, slots, std::path::Path::new(""), &[])? })
    }

    /// Its maps, printed as bpftrace prints them.
    #[must_use]
    pub fn render(&self) -> String {
        self.active.render(true)
    }

    /// Detaches the program (the maps stay readable).
    ///
    /// # Errors
    /// When the code could not be restored.
    pub fn detach(&mut self) -> Result<(), UprobeError> {
        self.active.detach()
    }
}

impl Traces {
    /// The configured maps, printed as bpftrace prints them.
    #[must_use]
    pub fn render(&self) -> String {
        self.active.iter().map(|a| a.render(false)).collect()
    }

    /// Detaches every program (the maps stay readable).
    pub fn detach(&mut self) {
        for a in &mut self.active {
            if let Some(att) = a.attachment.take()
                && let Err(e) = att.detach()
            {
                eprintln!("dataplane: {e}");
            }
        }
    }
}
