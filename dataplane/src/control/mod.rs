//! The control plane of a running dataplane: a root-only Unix socket per instance
//! (`/run/dataplane/NAME.sock`), the requests it serves (programs, maps, stats, program
//! replacement, config reload), the client side of the `dataplane prog|map|stats` commands, and
//! an optional Prometheus endpoint.
//!
//! Requests reach the workers only through the map store (which is built for concurrent
//! access), the workers' published counters, and the [`swap::ProgSlot`] a worker checks once
//! per batch.

pub mod client;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod swap;
pub mod sys;
pub mod typed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use xdp_vm::create_maps;
use xdp_vm::elf::MapKind;

use crate::config::{Config, EngineKind, GlobalValue};
use crate::prog_run::{self, hex};
use crate::stats::{self, DROP_REASONS, KERNEL_DROPS, VERDICTS, WorkerCounters};
use proto::{DumpFormat, Request};
use swap::{Loaded, ProgSlot};

/// Where control sockets live: `$DATAPLANE_RUN_DIR`, else `/run/dataplane`.
#[must_use]
pub fn run_dir() -> PathBuf {
    std::env::var_os("DATAPLANE_RUN_DIR").map_or_else(|| PathBuf::from("/run/dataplane"), PathBuf::from)
}

/// One worker as the control plane sees it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub label: String,
    pub interface: String,
    pub queue: u32,
    pub counters: Arc<WorkerCounters>,
}

/// What the control thread, the metrics thread and the runtime's loop share about one running
/// instance.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    /// The config file, re-read on SIGHUP / `reload`.
    pub config_path: Option<PathBuf>,
    pub slot: Arc<ProgSlot>,
    /// Per-CPU slots of the maps (workers + 1).
    pub cpu_slots: usize,
    pub workers: Vec<WorkerView>,
    /// The config now in force (program and stats as last applied).
    config: Mutex<Config>,
    /// Seconds between stats lines, in ms, as last configured.
    interval_ms: AtomicU64,
    /// The last interval's stats lines, for `dataplane stats`.
    stats_lines: Mutex<Vec<String>>,
    /// Programs replaced while a worker had not yet moved on (freed once they have).
    retired: Mutex<Vec<Arc<Loaded>>>,
    /// One replacement at a time (socket and SIGHUP).
    replace_lock: Mutex<()>,
    /// Modification time of the running program's object, for reload.
    object_mtime: Mutex<Option<SystemTime>>,
    pub started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The kernel's name of a map type, as bpftool prints it.
#[must_use]
pub fn map_type_name(t: u32) -> &'static str {
    use maps::map_type as m;
    match t {
        m::HASH => "hash",
        m::ARRAY => "array",
        m::PROG_ARRAY => "prog_array",
        m::PERF_EVENT_ARRAY => "perf_event_array",
        m::PERCPU_HASH => "percpu_hash",
        m::PERCPU_ARRAY => "percpu_array",
        m::LRU_HASH => "lru_hash",
        m::LRU_PERCPU_HASH => "lru_percpu_hash",
        m::LPM_TRIE => "lpm_trie",
        m::ARRAY_OF_MAPS => "array_of_maps",
        m::HASH_OF_MAPS => "hash_of_maps",
        m::DEVMAP => "devmap",
        m::XSKMAP => "xskmap",
        m::QUEUE => "queue",
        m::STACK => "stack",
        m::DEVMAP_HASH => "devmap_hash",
        m::RINGBUF => "ringbuf",
        _ => "unknown",
    }
}

fn describe(def: &maps::MapDef) -> String {
    format!(
        "{} key {}B value {}B max_entries {} flags {:#x}",
        map_type_name(def.map_type),
        def.key_size,
        def.value_size,
        def.max_entries,
        def.map_flags
    )
}

impl Instance {
    #[must_use]
    pub fn new(
        cfg: &Config,
        config_path: Option<PathBuf>,
        slot: Arc<ProgSlot>,
        cpu_slots: usize,
        workers: Vec<WorkerView>,
    ) -> Self {
        let object_mtime = mtime(&cfg.program.object);
        Self {
            name: cfg.name.clone(),
            config_path,
            slot,
            cpu_slots,
            workers,
            interval_ms: AtomicU64::new((cfg.stats.interval * 1000.0) as u64),
            config: Mutex::new(cfg.clone()),
            stats_lines: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            replace_lock: Mutex::new(()),
            object_mtime: Mutex::new(object_mtime),
            started: Instant::now(),
        }
    }

    /// The stats interval now in force.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// Whether the config asks for every map at exit.
    #[must_use]
    pub fn maps_at_exit(&self) -> bool {
        lock(&self.config).stats.maps_at_exit
    }

    /// Records the stats lines of the interval that just ended.
    pub fn set_stats_lines(&self, lines: Vec<String>) {
        *lock(&self.stats_lines) = lines;
    }

    /// Serves one request.
    ///
    /// # Errors
    /// One line saying what was wrong; the instance is unchanged.
    pub fn handle(&self, req: &Request) -> Result<Value, String> {
        self.free_retired();
        match req {
            Request::ProgList => Ok(self.prog_list()),
            Request::MapList => Ok(self.map_list()),
            Request::MapDump { map, format } => self.map_dump(map, *format),
            Request::MapLookup { map, key } => self.map_lookup(map, key),
            Request::MapUpdate { map, key, value, flags } => self.map_update(map, key, value, *flags),
            Request::MapDelete { map, key } => self.map_delete(map, key),
            Request::Stats => Ok(self.stats()),
            Request::ProgReplace { object, program } => {
                let (engine, globals) = {
                    let c = lock(&self.config);
                    (self.slot.current().engine(), c.program.globals.clone())
                };
                self.replace(object, program.as_deref(), engine, &globals)
            }
            Request::Reload => self.reload(),
            Request::TraceAttach { .. }
            | Request::TracePrint { .. }
            | Request::TraceEvents { .. }
            | Request::TraceDetach { .. } => {
                Err("trace requests are served per connection (the control socket), not here".into())
            }
        }
    }

    /// Run count and time of program `id`, summed over the workers that run it.
    fn run_counts(&self, id: u64) -> (u64, u64) {
        let mut cnt = 0;
        let mut ns = 0;
        for w in &self.workers {
            if w.counters.prog_id.load(Ordering::Acquire) == id {
                cnt += w.counters.run_cnt.load(Ordering::Relaxed);
                ns += w.counters.run_ns.load(Ordering::Relaxed);
            }
        }
        (cnt, ns)
    }

    fn prog_list(&self) -> Value {
        let cur = self.slot.current();
        let (run_cnt, run_ns) = self.run_counts(cur.id);
        let loaded_at = cur.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        json!([{
            "id": cur.id,
            "name": cur.prog.name(),
            "type": "xdp",
            "engine": match cur.engine() { EngineKind::Jit => "jit", EngineKind::Interp => "interp" },
            "object": cur.object.display().to_string(),
            "loaded_at": loaded_at,
            "xlated_insns": cur.prog.insns().len(),
            "verified_insns": cur.prog.verified().map(|v| v.processed_insns),
            "jited_bytes": cur.jit.as_ref().map(|j| j.code_size()),
            "run_cnt": run_cnt,
            "run_time_ns": run_ns,
            "avg_ns": if run_cnt == 0 { 0.0 } else { run_ns as f64 / run_cnt as f64 },
            "map_names": cur.prog.maps().iter().map(|m| m.name().to_string()).collect::<Vec<_>>(),
            "workers": self.workers.iter().filter(|w| w.counters.prog_id.load(Ordering::Acquire) == cur.id).count(),
        }])
    }

    fn map_list(&self) -> Value {
        let cur = self.slot.current();
        let rows: Vec<Value> = cur
            .prog
            .maps()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let d = m.def();
                json!({
                    "id": i + 1,
                    "name": m.name(),
                    "type": map_type_name(d.map_type),
                    "key_size": d.key_size,
                    "value_size": d.value_size,
                    "max_entries": d.max_entries,
                    "flags": d.map_flags,
                    "per_cpu": m.is_per_cpu(),
                    "entries": m.entries().len(),
                })
            })
            .collect();
        Value::Array(rows)
    }

    fn find_map(&self, name: &str) -> Result<(Arc<Loaded>, usize), String> {
        let cur = self.slot.current();
        match cur.prog.maps().iter().position(|m| m.name() == name) {
            Some(i) => Ok((cur, i)),
            None => {
                let names: Vec<&str> = cur.prog.maps().iter().map(|m| m.name()).collect();
                Err(format!("no map {name} in program {} (maps: {})", cur.prog.name(), names.join(", ")))
            }
        }
    }

    fn map_dump(&self, name: &str, format: DumpFormat) -> Result<Value, String> {
        let (cur, i) = self.find_map(name)?;
        let m = &cur.prog.maps()[i];
        let entries = m.entries();
        let mut rows = match format {
            DumpFormat::Design => prog_run::entries_json(&entries, m.is_per_cpu()),
            DumpFormat::Bpftool => bpftool_entries(&entries, m.is_per_cpu()),
        };
        add_formatted(&mut rows, &entries, cur.types.map(name), m.is_per_cpu(), format);
        Ok(rows)
    }

    fn key_bytes(cur: &Loaded, m: &maps::Map, key: &str) -> Result<Vec<u8>, String> {
        let ty = cur.types.map(m.name()).and_then(|t| t.key.as_ref());
        let k = typed::argument(key, m.def().key_size as usize, ty, "key")?;
        if k.len() != m.def().key_size as usize {
            return Err(format!(
                "key: {} bytes given, map {} has {}-byte keys",
                k.len(),
                m.name(),
                m.def().key_size
            ));
        }
        Ok(k)
    }

    fn map_lookup(&self, name: &str, key: &str) -> Result<Value, String> {
        let (cur, i) = self.find_map(name)?;
        let m = &cur.prog.maps()[i];
        let k = Self::key_bytes(&cur, m, key)?;
        let v = m.lookup_user(&k).map_err(|e| format!("map {name}: key {}: {e}", hex(&k)))?;
        let entry = maps::Entry {
            key: k,
            values: if m.is_per_cpu() {
                v.chunks(m.def().value_size.max(1) as usize).map(<[u8]>::to_vec).collect()
            } else {
                vec![v]
            },
        };
        let entries = std::slice::from_ref(&entry);
        let mut rows = prog_run::entries_json(entries, m.is_per_cpu());
        add_formatted(&mut rows, entries, cur.types.map(name), m.is_per_cpu(), DumpFormat::Design);
        Ok(rows.get(0).cloned().unwrap_or(Value::Null))
    }

    fn map_update(&self, name: &str, key: &str, value: &str, flags: u64) -> Result<Value, String> {
        let (cur, i) = self.find_map(name)?;
        let m = &cur.prog.maps()[i];
        let k = Self::key_bytes(&cur, m, key)?;
        let size = m.def().value_size as usize;
        let ty = cur.types.map(name).and_then(|t| t.value.as_ref());
        let mut v = typed::argument(value, size, ty, "value")?;
        if m.is_per_cpu() && v.len() == size {
            // One value for every slot.
            v = v.repeat(m.slots());
        }
        let want = if m.is_per_cpu() { size * m.slots() } else { size };
        if v.len() != want {
            return Err(if m.is_per_cpu() {
                format!(
                    "value: {} bytes given, map {name} takes {size} (all {} slots) or {want} (one per slot)",
                    v.len(),
                    m.slots()
                )
            } else {
                format!("value: {} bytes given, map {name} has {size}-byte values", v.len())
            });
        }
        m.update_user(&k, &v, flags).map_err(|e| format!("map {name}: key {}: {e}", hex(&k)))?;
        crate::uprobe::site::map_update(i as u64, k.as_ptr() as u64, k.len() as u64, v.as_ptr() as u64);
        Ok(Value::Null)
    }

    fn map_delete(&self, name: &str, key: &str) -> Result<Value, String> {
        let (cur, i) = self.find_map(name)?;
        let m = &cur.prog.maps()[i];
        let k = Self::key_bytes(&cur, m, key)?;
        m.delete(&k).map_err(|e| format!("map {name}: key {}: {e}", hex(&k)))?;
        Ok(Value::Null)
    }

    fn stats(&self) -> Value {
        let queues: Vec<Value> = self
            .workers
            .iter()
            .map(|w| {
                let s = w.counters.snapshot();
                let verdicts: serde_json::Map<String, Value> =
                    VERDICTS.iter().zip(s.verdicts).map(|(n, v)| ((*n).to_string(), v.into())).collect();
                let drops: serde_json::Map<String, Value> = DROP_REASONS
                    .iter()
                    .zip(s.drops)
                    .chain(KERNEL_DROPS.iter().zip(s.kernel))
                    .map(|(n, v)| ((*n).to_string(), v.into()))
                    .collect();
                json!({"queue": w.label, "rx": s.rx, "tx": s.tx, "verdicts": verdicts, "drops": drops})
            })
            .collect();
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "lines": *lock(&self.stats_lines),
            "queues": queues,
        })
    }

    fn free_retired(&self) {
        let mut r = lock(&self.retired);
        r.retain(|old| !self.workers.iter().all(|w| w.counters.prog_id.load(Ordering::Acquire) != old.id));
    }

    /// Loads `object`, binds it to the running maps of the same name and definition (new maps
    /// for the rest; global data always from the new object), verifies and compiles it, then
    /// switches every worker to it.
    ///
    /// # Errors
    /// Why the object cannot replace the running program; the running program is untouched.
    pub fn replace(
        &self,
        object: &Path,
        program: Option<&str>,
        engine: EngineKind,
        globals: &BTreeMap<String, GlobalValue>,
    ) -> Result<Value, String> {
        let _one = lock(&self.replace_lock);
        let started = Instant::now();
        let cur = self.slot.current();
        let bytes = std::fs::read(object).map_err(|source| {
            chain(&prog_run::RunError::Read { path: object.display().to_string(), source })
        })?;
        let (mut obj, extras) = xdp_vm::elf::Object::parse_with_extras(&bytes).map_err(|source| {
            chain(&prog_run::RunError::Object { path: object.display().to_string(), source })
        })?;
        let mut skipped = Vec::new();
        for (name, value) in globals {
            let size = obj.maps.iter().flat_map(|m| m.vars.iter()).find(|v| &v.name == name).map(|v| v.size);
            let Some(size) = size else {
                skipped.push(name.clone());
                continue;
            };
            let bytes = value.bytes(size).map_err(|r| format!("config key program.globals.{name}: {r}"))?;
            obj.set_global(name, &bytes).map_err(|e| format!("config key program.globals.{name}: {e}"))?;
        }
        let spec = prog_run::xdp_program(&obj, object, program).map_err(|e| chain(&e))?;
        let fresh = create_maps(&obj, self.cpu_slots)
            .map_err(|e| format!("cannot load program {}: {e}", spec.name))?;
        let mut maps = Vec::with_capacity(fresh.len());
        let mut kept = Vec::new();
        let mut created = Vec::new();
        for (ms, new) in obj.maps.iter().zip(fresh) {
            let running = cur.prog.maps().iter().find(|m| m.name() == ms.name);
            match (ms.kind, running) {
                // A prog array holds the programs of the object it was loaded with: the new
                // object's is always its own, filled from its initialiser below.
                (MapKind::Regular, Some(_)) if ms.def.map_type == maps::map_type::PROG_ARRAY => {
                    created.push(ms.name.clone());
                    maps.push(new);
                }
                (MapKind::Regular, Some(m)) if *m.def() == ms.def => {
                    kept.push(ms.name.clone());
                    maps.push(m.clone());
                }
                (MapKind::Regular, Some(m)) => {
                    return Err(format!(
                        "refusing to replace: map {} is {} in the running program but {} in {}",
                        ms.name,
                        describe(m.def()),
                        describe(&ms.def),
                        object.display()
                    ));
                }
                _ => {
                    created.push(ms.name.clone());
                    maps.push(new);
                }
            }
        }
        // With a prog array, every XDP program of the object is loaded and linked and the array
        // filled from its initialiser, as at start (`runtime::load_program`).
        let (progs, index) = prog_run::load_linked(object, &obj, &extras, &maps, spec, true)
            .map_err(|e| format!("refusing to replace: {}", chain(&e)))?;
        let loaded = Loaded::linked(cur.id + 1, &progs, index, engine, object.to_path_buf())
            .map_err(|e| format!("refusing to replace: {}", chain(&e)))?;
        let ready_us = started.elapsed().as_micros() as u64;
        let id = loaded.id;
        let old = self.slot.publish(Arc::new(loaded));
        drop(cur);
        // Wait for every worker's epoch to reach the new program.
        let switch = Instant::now();
        let deadline = switch + Duration::from_secs(2);
        let moved = |w: &WorkerView| w.counters.prog_id.load(Ordering::Acquire) == id;
        while !self.workers.iter().all(moved) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let switched = self.workers.iter().filter(|w| moved(w)).count();
        let switch_us = switch.elapsed().as_micros() as u64;
        if switched == self.workers.len() {
            drop(old);
        } else {
            lock(&self.retired).push(old);
        }
        *lock(&self.object_mtime) = mtime(object);
        Ok(json!({
            "id": id,
            "name": spec.name,
            "object": object.display().to_string(),
            "kept_maps": kept,
            "new_maps": created,
            "globals_not_in_object": skipped,
            "workers": self.workers.len(),
            "switched": switched,
            "prepare_us": ready_us,
            "switch_us": switch_us,
        }))
    }

    /// Re-reads the config file: applies what can change live (the program, when its section or
    /// its object file changed; the stats interval), reports the rest as left alone.
    ///
    /// # Errors
    /// When the file cannot be read or is invalid, or the new program is refused; nothing
    /// changes then.
    pub fn reload(&self) -> Result<Value, String> {
        let path = self.config_path.as_ref().ok_or("this instance has no config file to re-read")?;
        let mut new = Config::load(path).map_err(|e| chain(&e))?;
        new.name.clone_from(&self.name);
        let old = lock(&self.config).clone();
        let mut applied = Vec::new();
        let mut ignored = Vec::new();
        let object_changed = mtime(&new.program.object) != *lock(&self.object_mtime);
        let mut replaced = Value::Null;
        if new.program != old.program || object_changed {
            replaced = self.replace(
                &new.program.object,
                new.program.name.as_deref(),
                new.program.engine,
                &new.program.globals,
            )?;
            applied.push("program");
        }
        if new.stats != old.stats {
            self.interval_ms.store((new.stats.interval * 1000.0) as u64, Ordering::Relaxed);
            applied.push("stats");
        }
        // Every key is named here (a new one fails to compile until it is sorted into
        // applied or not).
        let Config {
            name: _,
            metrics,
            backend,
            dpdk,
            program: _,
            ports,
            workers,
            stats: _,
            pass,
            lab,
            trace,
        } = &new;
        for (what, same) in [
            ("ports", *ports == old.ports),
            ("workers", *workers == old.workers),
            ("pass", *pass == old.pass),
            ("lab", *lab == old.lab),
            ("metrics", *metrics == old.metrics),
            ("backend", *backend == old.backend),
            ("dpdk", *dpdk == old.dpdk),
            ("trace", *trace == old.trace),
        ] {
            if !same {
                ignored.push(what);
            }
        }
        {
            let mut c = lock(&self.config);
            c.program = new.program;
            c.stats = new.stats;
        }
        Ok(json!({"applied": applied, "not_applied_restart_needed": ignored, "replace": replaced}))
    }
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s.replace('\n', " ")
}

/// Adds bpftool's `"formatted"` member to each row where the map's BTF gives its key or value
/// type: `{"key": K, "value": V}`, per-CPU `{"key": K, "values": [V, ...]}` (bpftool's own form,
/// `[{"cpu": N, "value": V}]`, with `--format bpftool`). The hex members stay as they are.
fn add_formatted(
    rows: &mut Value,
    entries: &[maps::Entry],
    types: Option<&xdp_vm::elf::MapTypes>,
    per_cpu: bool,
    format: DumpFormat,
) {
    let Some(t) = types.filter(|t| t.key.is_some() || t.value.is_some()) else { return };
    let Some(rows) = rows.as_array_mut() else { return };
    for (row, e) in rows.iter_mut().zip(entries) {
        let mut f = serde_json::Map::new();
        if let Some(k) = &t.key {
            f.insert("key".into(), typed::json(k, &e.key));
        }
        if let Some(v) = &t.value {
            if per_cpu {
                let vals = e.values.iter().enumerate().map(|(cpu, b)| match format {
                    DumpFormat::Design => typed::json(v, b),
                    DumpFormat::Bpftool => json!({"cpu": cpu, "value": typed::json(v, b)}),
                });
                f.insert("values".into(), vals.collect());
            } else if let Some(b) = e.values.first() {
                f.insert("value".into(), typed::json(v, b));
            }
        }
        if let Some(obj) = row.as_object_mut() {
            obj.insert("formatted".into(), Value::Object(f));
        }
    }
}

/// `bpftool map dump -j`'s shape: keys and values as arrays of `"0x.."` byte strings; per-CPU
/// values as `[{"cpu": N, "value": [...]}]`.
#[must_use]
pub fn bpftool_entries(entries: &[maps::Entry], per_cpu: bool) -> Value {
    let bytes = |b: &[u8]| Value::Array(b.iter().map(|x| Value::from(format!("0x{x:02x}"))).collect());
    Value::Array(
        entries
            .iter()
            .map(|e| {
                if per_cpu {
                    let values: Vec<Value> = e
                        .values
                        .iter()
                        .enumerate()
                        .map(|(cpu, v)| json!({"cpu": cpu, "value": bytes(v)}))
                        .collect();
                    json!({"key": bytes(&e.key), "values": values})
                } else {
                    json!({"key": bytes(&e.key), "value": bytes(e.values.first().map_or(&[][..], Vec::as_slice))})
                }
            })
            .collect(),
    )
}

/// The stats lines of one interval for every worker (what the instance prints).
#[must_use]
pub fn stats_lines(
    workers: &[WorkerView],
    prev: &mut [stats::Snapshot],
    secs: f64,
    hists: &[hdrhistogram::Histogram<u64>],
) -> Vec<String> {
    workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let now = w.counters.snapshot();
            let line = stats::line(&w.label, &now.since(&prev[i]), secs, &hists[i]);
            prev[i] = now;
            line
        })
        .collect()
}
