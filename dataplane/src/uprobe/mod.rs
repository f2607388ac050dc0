//! Userspace uprobes on the dataplane's own process: eBPF tracing programs (`SEC("uprobe/...")`,
//! `SEC("uretprobe/...")`) run by the same JIT, on the same map store, as the XDP programs —
//! without a trap into the kernel per hit.
//!
//! Two kinds of attach points:
//! - **probe sites** ([`site`]): 5-byte NOPs compiled into the packet path (`rx`, `batch`,
//!   `verdict`, `tx`, `drop`, `map_update`), each also a USDT note. Enabling one is one aligned
//!   8-byte store of a `call` to its trampoline, then `membarrier(SYNC_CORE)`.
//! - **any function symbol** of the executable, by mangled or demangled name (without the
//!   hash: `dataplane::worker::Worker::run`): its first instructions (at least 5 bytes) are
//!   decoded with iced-x86 and relocated into a trampoline within ±1 GiB, and replaced by a
//!   `jmp` there, with every other thread stopped outside those bytes. What cannot be moved
//!   safely is refused: a function shorter than the jump or leaving within it, a branch (or a
//!   RIP-relative reference) anywhere in the function into the replaced bytes. For a
//!   uretprobe the trampoline calls the function itself (its return address kept on a
//!   per-thread shadow stack, 64 deep as the kernel's) and runs the return programs when it
//!   comes back.
//!
//! Trampolines and probes are never freed; re-attaching reuses them. Detaching waits until no
//! thread still runs the detached programs (see `patch`). A program sees `struct pt_regs` as the
//! kernel gives it to uprobes ([`xdp_vm::context::Uprobe`]).
//!
//! What is not handled: a function whose code jumps into its first 5 bytes through a jump table
//! (indirect branches cannot be checked statically), and unwinding (a panic) or `longjmp` out of
//! a function with a uretprobe attached while it runs — the trampoline is not in the unwind
//! tables, so a panic through it aborts the process.

pub mod events;
pub mod hist;
mod patch;
pub mod site;
pub mod symbols;
pub mod trace;
pub mod trampoline;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use maps::Map;
use xdp_vm::context::Uprobe;
use xdp_vm::elf::{ProgramKind, ProgramSpec};
use xdp_vm::jit::JitProgram;
use xdp_vm::program::Program;

/// Where a program attaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A probe site of the dataplane (`site:rx`, or `usdt:dataplane:rx`).
    Site(String),
    /// A function symbol of the executable.
    Function(String),
}

impl Target {
    /// `site:NAME` or `usdt:dataplane:NAME` is a probe site, anything else a function name.
    #[must_use]
    pub fn parse(s: &str) -> Target {
        if let Some(n) = s.strip_prefix("site:").or_else(|| s.strip_prefix("usdt:dataplane:")) {
            Target::Site(n.to_string())
        } else {
            Target::Function(s.to_string())
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Site(n) => write!(f, "site:{n}"),
            Target::Function(n) => f.write_str(n),
        }
    }
}

/// Why a probe cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum UprobeError {
    #[error("unknown symbol {name}: no function of this executable has that name")]
    UnknownSymbol { name: String },
    #[error("symbol {name} is ambiguous: {count} functions have that name ({first}, ...)")]
    Ambiguous { name: String, count: usize, first: String },
    #[error("unknown probe site {name}; the sites are {}", site::SITES.iter().map(|s| s.0).collect::<Vec<_>>().join(", "))]
    UnknownSite { name: String },
    #[error("probe site {name} is not in this executable's .note.stapsdt")]
    SiteNotCompiled { name: String },
    #[error("cannot patch {target}: {reason}")]
    Unpatchable { target: String, reason: String },
    #[error("uretprobes attach to functions, not to probe site {name}")]
    RetprobeOnSite { name: String },
    #[error("program {program} is {kind}, not a uprobe or uretprobe program")]
    WrongProgramType { program: String, kind: String },
    #[error("program {program} names no target (SEC(\"uprobe\") without /TARGET) and none was given")]
    NoTarget { program: String },
    #[error("cannot load program {program}")]
    Load {
        program: String,
        #[source]
        source: xdp_vm::LoadError,
    },
    #[error("cannot compile program {program}")]
    Compile {
        program: String,
        #[source]
        source: xdp_vm::jit::CompileError,
    },
    #[error("cannot read this executable: {reason}")]
    Image { reason: String },
    #[error("{target}: {what} failed")]
    Sys {
        target: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Probe kinds, which differ in how the trampoline is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Site,
    Function,
}

/// The programs attached to one probe, as the hit handler reads them.
#[derive(Debug, Default)]
pub(crate) struct Attached {
    pub(crate) entry: Hooks,
    pub(crate) ret: Hooks,
    /// When there is at most one entry and at most one return program: their `Hook::id`s (0:
    /// none), which the stubs run without the Rust handlers (see `patch`); else both 0.
    pub(crate) fast_entry: u64,
    pub(crate) fast_ret: u64,
    /// 1 when that entry program is `Hook::plain`: the entry stub then keeps no xmm register.
    pub(crate) fast_entry_plain: u64,
    /// 1 when that return program is `Hook::plain`: the return stub then keeps no xmm register.
    pub(crate) fast_ret_plain: u64,
}

/// Programs to run at one point of a probe. One program (the usual case) is held inline: a hit
/// reaches it with one load less.
#[derive(Debug, Default)]
pub(crate) enum Hooks {
    #[default]
    None,
    One(Hook),
    Many(Vec<Hook>),
}

impl Hooks {
    fn push(&mut self, h: Hook) {
        *self = match std::mem::take(self) {
            Hooks::None => Hooks::One(h),
            Hooks::One(first) => Hooks::Many(vec![first, h]),
            Hooks::Many(mut v) => {
                v.push(h);
                Hooks::Many(v)
            }
        };
    }
}

/// One program attached to one probe.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    /// Unique for the life of the process: keys the per-thread run environments of the hit
    /// handler (never reused, so one of a detached program is never taken for another's).
    pub(crate) id: u64,
    pub(crate) jit: Arc<JitProgram<Uprobe>>,
    /// The compiled code leaves the vector registers alone (`TraceProgram::plain`).
    pub(crate) plain: bool,
}

/// One patched location. Leaked: lives as long as the process.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) target: String,
    pub(crate) kind: ProbeKind,
    /// The patched address.
    pub(crate) addr: u64,
    /// What `bpf_get_func_ip` returns.
    pub(crate) func_ip: u64,
    /// The bytes at `addr` unpatched: a site's whole aligned word, a function's first 5 bytes.
    pub(crate) original: Vec<u8>,
    /// The bytes at `addr` when enabled (set once the trampoline exists).
    pub(crate) enabled: OnceLock<Vec<u8>>,
    /// A function's trampoline, whose first 8 bytes switch it between running the programs and
    /// passing straight through to the displaced instructions.
    pub(crate) trampoline: OnceLock<u64>,
    /// A function's first bytes jump to its trampoline (done once, then left).
    pub(crate) text_patched: AtomicBool,
    pub(crate) attached: AtomicPtr<Attached>,
}

/// A program ready to attach: compiled, with what its section says.
#[derive(Debug, Clone)]
pub struct TraceProgram {
    pub name: String,
    pub jit: Arc<JitProgram<Uprobe>>,
    /// A uretprobe (runs at the function's return).
    pub ret: bool,
    /// The target from the section name (`uprobe/TARGET`), if any.
    pub target: Option<Target>,
    /// Its compiled code, and all it calls, uses general-purpose registers only
    /// ([`trampoline::leaves_vector_registers_alone`]): the entry stub need not keep xmm0-7
    /// around it.
    plain: bool,
}

impl TraceProgram {
    /// Whether its compiled code (and all it calls) uses general-purpose registers only, so the
    /// entry stub keeps no xmm register around it.
    #[must_use]
    pub fn general_purpose_only(&self) -> bool {
        self.plain
    }

    /// Verifies and compiles a uprobe or uretprobe program of an object over `maps` (the
    /// object's maps, possibly shared with an XDP program of the same object).
    ///
    /// # Errors
    /// [`UprobeError::WrongProgramType`] for any other kind of program; the verifier's or the
    /// compiler's refusal.
    pub fn load(spec: &ProgramSpec, maps: &[Arc<Map>]) -> Result<Self, UprobeError> {
        let (ret, target) = match &spec.kind {
            ProgramKind::Uprobe { target } => (false, target),
            ProgramKind::Uretprobe { target } => (true, target),
            ProgramKind::Xdp => {
                return Err(UprobeError::WrongProgramType {
                    program: spec.name.clone(),
                    kind: "an XDP program".into(),
                });
            }
            ProgramKind::Other => {
                return Err(UprobeError::WrongProgramType {
                    program: spec.name.clone(),
                    kind: format!("in section {}", spec.section),
                });
            }
        };
        let prog = Program::<Uprobe>::new(spec, maps)
            .map_err(|source| UprobeError::Load { program: spec.name.clone(), source })?;
        let jit = JitProgram::compile(&prog)
            .map_err(|source| UprobeError::Compile { program: spec.name.clone(), source })?;
        let target = (!target.is_empty()).then(|| Target::parse(target));
        let plain = trampoline::leaves_vector_registers_alone(jit.entry_address(), &mut own_page);
        Ok(Self { name: spec.name.clone(), jit: Arc::new(jit), ret, target, plain })
    }
}

/// The 4 KiB page of this process at `addr`, read through `/proc/self/mem` (an unmapped one is
/// an error there, not a crash); `None` when it cannot be read.
fn own_page(addr: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open("/proc/self/mem").ok()?;
    let mut page = vec![0u8; 4096];
    mem.read_exact_at(&mut page, addr).ok()?;
    Some(page)
}

/// One attached program: (attachment id, uretprobe?, program).
type Entry = (u64, bool, Hook);

#[derive(Default)]
struct Registry {
    probes: HashMap<u64, &'static Probe>,
    /// Targets resolved before, to their probe addresses.
    resolved: HashMap<Target, Vec<u64>>,
    /// Per probe address: (attachment id, uretprobe?, program).
    programs: HashMap<u64, Vec<Entry>>,
    next_id: u64,
    next_hook: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// A program attached to a target; detached when dropped (or by [`Attachment::detach`]).
#[derive(Debug)]
pub struct Attachment {
    id: u64,
    target: Target,
    addrs: Vec<u64>,
    done: bool,
}

/// Sets the per-CPU map slot that tracing programs use on this thread (a worker's slot);
/// threads that never call it use the CPU they run on.
pub fn set_slot(slot: usize) {
    patch::set_slot(slot);
}

/// Attaches `programs` to `target` (to every location of a site), all at once: a hit runs all
/// of them or none (an entry program and its uretprobe count the same calls).
///
/// # Errors
/// [`UprobeError`] naming the target: unknown symbol or site, a function that cannot be
/// patched safely, a uretprobe on a site.
pub fn attach(target: &Target, programs: &[&TraceProgram]) -> Result<Attachment, UprobeError> {
    let mut guard = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let reg = guard.get_or_insert_with(Registry::default);
    let mut probes = Vec::new();
    if let Some(addrs) = reg.resolved.get(target) {
        // Attached before: the probes (and their trampolines) exist.
        probes = addrs.iter().filter_map(|a| reg.probes.get(a).copied()).collect();
    }
    if programs.iter().any(|p| p.ret)
        && let Target::Site(name) = target
    {
        return Err(UprobeError::RetprobeOnSite { name: name.clone() });
    }
    if probes.is_empty() {
        let image = symbols::image().map_err(|reason| UprobeError::Image { reason })?;
        probes = resolve(reg, target, image)?;
        reg.resolved.insert(target.clone(), probes.iter().map(|p| p.addr).collect());
    }
    reg.next_id += 1;
    let id = reg.next_id;
    let mut addrs = Vec::new();
    for probe in probes {
        let list = reg.programs.entry(probe.addr).or_default();
        for p in programs {
            reg.next_hook += 1;
            let hook = Hook { id: reg.next_hook, jit: p.jit.clone(), plain: p.plain };
            list.push((id, p.ret, hook));
        }
        let first = list.len() == programs.len();
        let snapshot = snapshot(list);
        let sys = |what, source| UprobeError::Sys { target: target.to_string(), what, source };
        patch::publish(probe, Some(snapshot)).map_err(|e| sys("membarrier", e))?;
        if first && let Err(e) = enable(probe, true) {
            reg.programs.remove(&probe.addr);
            let _ = patch::publish(probe, None);
            for &a in &addrs {
                let _ = detach_one(reg, a, id);
            }
            return Err(e);
        }
        addrs.push(probe.addr);
    }
    Ok(Attachment { id, target: target.clone(), addrs, done: false })
}

/// Finds `target` in the executable and creates its probes.
fn resolve(
    reg: &mut Registry,
    target: &Target,
    image: &symbols::Image,
) -> Result<Vec<&'static Probe>, UprobeError> {
    let mut probes = Vec::new();
    match target {
        Target::Site(name) => {
            if !site::SITES.iter().any(|s| s.0 == name) {
                return Err(UprobeError::UnknownSite { name: name.clone() });
            }
            let notes = image.site(name);
            if notes.is_empty() {
                return Err(UprobeError::SiteNotCompiled { name: name.clone() });
            }
            for n in notes {
                probes.push(site_probe(reg, target, n.addr)?);
            }
        }
        Target::Function(name) => {
            let funcs = image.functions(name);
            let f = match funcs.as_slice() {
                [] => return Err(UprobeError::UnknownSymbol { name: name.clone() }),
                [f] => f,
                [first, ..] => {
                    return Err(UprobeError::Ambiguous {
                        name: name.clone(),
                        count: funcs.len(),
                        first: first.raw.clone(),
                    });
                }
            };
            probes.push(function_probe(reg, target, f)?);
        }
    }
    Ok(probes)
}

fn snapshot(list: &[Entry]) -> Arc<Attached> {
    let mut a = Attached::default();
    for (_, ret, p) in list {
        if *ret { a.ret.push(p.clone()) } else { a.entry.push(p.clone()) }
    }
    let id = |h: &Hooks| match h {
        Hooks::None => Some(0),
        Hooks::One(h) => Some(h.id),
        Hooks::Many(_) => None,
    };
    if let (Some(e), Some(r)) = (id(&a.entry), id(&a.ret)) {
        (a.fast_entry, a.fast_ret) = (e, r);
        a.fast_entry_plain = u64::from(matches!(&a.entry, Hooks::One(h) if h.plain));
        a.fast_ret_plain = u64::from(matches!(&a.ret, Hooks::One(h) if h.plain));
    }
    Arc::new(a)
}

fn enable(probe: &Probe, on: bool) -> Result<(), UprobeError> {
    let bytes = if on { probe.enabled.get().cloned().unwrap_or_default() } else { probe.original.clone() };
    let sys = |what, source| UprobeError::Sys { target: probe.target.clone(), what, source };
    let word = |bytes: Vec<u8>| -> Result<[u8; 8], UprobeError> {
        bytes.try_into().map_err(|_| UprobeError::Unpatchable {
            target: probe.target.clone(),
            reason: "no trampoline".into(),
        })
    };
    match probe.kind {
        ProbeKind::Site => patch::toggle(probe.addr, word(bytes)?).map_err(|e| sys("patching the site", e)),
        ProbeKind::Function => {
            // The trampoline's own switch first; the function's first bytes are patched once,
            // with the world stopped, and keep jumping to the trampoline from then on.
            let t = probe.trampoline.get().copied().unwrap_or(0);
            let switch = if on { trampoline::SWITCH_ON } else { trampoline::SWITCH_OFF };
            patch::toggle(t, switch).map_err(|e| sys("switching the trampoline", e))?;
            if !on || probe.text_patched.load(Ordering::Relaxed) {
                return Ok(());
            }
            patch_text(probe, &bytes)?;
            probe.text_patched.store(true, Ordering::Relaxed);
            Ok(())
        }
    }
}

fn patch_text(probe: &Probe, bytes: &[u8]) -> Result<(), UprobeError> {
    let sys = |what, source| UprobeError::Sys { target: probe.target.clone(), what, source };
    patch::patch_function(probe.addr, bytes).map_err(|e| match e {
        patch::StopError::Busy => UprobeError::Unpatchable {
            target: probe.target.clone(),
            reason: "a thread kept running inside the bytes to replace".into(),
        },
        patch::StopError::NoStop { stopped, expected } => UprobeError::Unpatchable {
            target: probe.target.clone(),
            reason: format!("only {stopped} of {expected} other threads stopped to let it be patched"),
        },
        patch::StopError::Io(e) => sys("patching the function", e),
    })
}

/// The probe of a site location, created (with its trampoline) on first use.
fn site_probe(reg: &mut Registry, target: &Target, addr: u64) -> Result<&'static Probe, UprobeError> {
    if let Some(p) = reg.probes.get(&addr) {
        return Ok(p);
    }
    let bad = |reason: String| UprobeError::Unpatchable { target: target.to_string(), reason };
    let word = patch::code_bytes(addr, 8);
    if !addr.is_multiple_of(8) || word[..5] != [0x0f, 0x1f, 0x44, 0x00, 0x00] {
        return Err(bad(format!("the site at {addr:#x} is not an aligned 5-byte NOP")));
    }
    let probe = patch::leak(Probe {
        target: target.to_string(),
        kind: ProbeKind::Site,
        addr,
        func_ip: addr,
        original: word.clone(),
        enabled: OnceLock::new(),
        trampoline: OnceLock::new(),
        text_patched: AtomicBool::new(false),
        attached: patch::no_programs(),
    });
    let p = std::ptr::from_ref(probe) as u64;
    let stub = patch::site_stub();
    let at = patch::alloc_trampoline(addr, |at| trampoline::site(at, p, stub)).map_err(bad)?;
    let call = trampoline::branch(trampoline::CALL, addr, at).map_err(bad)?;
    let mut enabled = word;
    enabled[..5].copy_from_slice(&call);
    let _ = probe.enabled.set(enabled);
    reg.probes.insert(addr, probe);
    Ok(probe)
}

/// The probe of a function, created (with its trampoline) on first use.
fn function_probe(
    reg: &mut Registry,
    target: &Target,
    f: &symbols::Function,
) -> Result<&'static Probe, UprobeError> {
    if let Some(p) = reg.probes.get(&f.addr) {
        return Ok(p);
    }
    let bad = |reason: String| UprobeError::Unpatchable { target: target.to_string(), reason };
    let displaced = trampoline::displace(f.addr, &f.code).map_err(bad)?;
    let now = patch::code_bytes(f.addr, displaced.len);
    if now != f.code[..displaced.len] {
        return Err(bad("its code in memory differs from the executable (patched by someone else?)".into()));
    }
    let probe = patch::leak(Probe {
        target: target.to_string(),
        kind: ProbeKind::Function,
        addr: f.addr,
        func_ip: f.addr,
        original: f.code[..trampoline::PATCH_LEN].to_vec(),
        enabled: OnceLock::new(),
        trampoline: OnceLock::new(),
        text_patched: AtomicBool::new(false),
        attached: patch::no_programs(),
    });
    let p = std::ptr::from_ref(probe) as u64;
    let stubs = trampoline::Stubs { entry: patch::entry_stub(), ret: patch::return_stub() };
    let at = patch::alloc_trampoline(f.addr, |at| trampoline::function(at, f.addr, &displaced, p, stubs))
        .map_err(bad)?;
    let jmp = trampoline::branch(trampoline::JMP, f.addr, at).map_err(bad)?;
    let _ = probe.enabled.set(jmp.to_vec());
    let _ = probe.trampoline.set(at);
    reg.probes.insert(f.addr, probe);
    Ok(probe)
}

fn detach_one(reg: &mut Registry, addr: u64, id: u64) -> Result<(), UprobeError> {
    let Some(probe) = reg.probes.get(&addr).copied() else { return Ok(()) };
    let Some(list) = reg.programs.get_mut(&addr) else { return Ok(()) };
    list.retain(|(i, _, _)| *i != id);
    let sys = |what, source| UprobeError::Sys { target: probe.target.clone(), what, source };
    if list.is_empty() {
        reg.programs.remove(&addr);
        enable(probe, false)?;
        patch::publish(probe, None).map_err(|e| sys("membarrier", e))
    } else {
        let s = snapshot(list);
        patch::publish(probe, Some(s)).map_err(|e| sys("membarrier", e))
    }
}

impl Attachment {
    /// The target it is attached to.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Detaches the program; when it was the last on its probe, the original code is back.
    ///
    /// # Errors
    /// When the code could not be restored (threads did not stop); the program stays attached.
    pub fn detach(mut self) -> Result<(), UprobeError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), UprobeError> {
        if self.done {
            return Ok(());
        }
        let mut guard = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let reg = guard.get_or_insert_with(Registry::default);
        for &a in &self.addrs {
            detach_one(reg, a, self.id)?;
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            eprintln!("dataplane: detaching from {}: {e}", self.target);
        }
    }
}
