//! Ring-buffer and perf-event output of tracing programs, as lines as they come.
//!
//! Every `BPF_MAP_TYPE_RINGBUF` and `BPF_MAP_TYPE_PERF_EVENT_ARRAY` map of a tracing program is
//! drained by a consumer thread of its own (never a worker), one line per record:
//!
//! ```text
//! @rx_events: { .ifindex = 5, .queue = 0, .len = 98, .worker = 0 }
//! @rx_events: 05 00 00 00 00 00 00 00 62 00 00 00 00 00 00 00
//! ```
//!
//! typed — `bpftrace`'s struct print — when the record's BTF type is known, hex bytes (as
//! `bpftool` prints raw map bytes) otherwise. The type is the one configured for the map
//! (`kind = "events"`, `type = "NAME"`), else a struct, union or typedef named after the map
//! (`rx_events`) or after the map less a final `s` (`rx_event`). A record whose size differs
//! from its type's is printed as hex. clang puts a struct into the object's BTF only when a
//! global, a map definition or a function signature uses it: the example program
//! (`configs/bpf/rx_events.c`) declares an unused global pointer to its record struct.
//!
//! Perf-event arrays get one output buffer per slot (each worker writes to its own with
//! `BPF_F_CURRENT_CPU`); a full ring or buffer makes the program's output call fail (the record
//! is the program's to count), as the kernel's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use maps::{Map, map_type};
use xdp_vm::elf::{CType, Types};

/// Bytes of each perf-event output buffer (per slot).
pub const PERF_BUFFER: u64 = 256 * 1024;

/// One map whose records are printed as lines.
#[derive(Debug, Clone)]
pub struct EventMap {
    pub name: String,
    map: Arc<Map>,
    /// The record type, with its name, when known.
    ty: Option<(String, CType)>,
    /// Perf slots with a buffer (0 for a ring buffer).
    perf_slots: u32,
}

/// Whether a map's records are printed as lines.
#[must_use]
pub fn is_event_map(map_type: u32) -> bool {
    matches!(map_type, map_type::RINGBUF | map_type::PERF_EVENT_ARRAY)
}

impl EventMap {
    /// Prepares `map` for printing: `type_name` from the config, or the map's own name's type.
    /// A perf-event array gets a buffer on each of its first `slots` slots.
    ///
    /// # Errors
    /// A configured type that the object's BTF does not have; a perf buffer that cannot be
    /// made.
    pub fn new(
        name: &str,
        map: Arc<Map>,
        types: &Types,
        type_name: Option<&str>,
        slots: usize,
    ) -> Result<Self, String> {
        let ty = match type_name {
            Some(t) => Some((
                t.to_string(),
                types.named(t).cloned().ok_or_else(|| {
                    format!("map {name}: the object's BTF has no type {t} (a struct, union or typedef)")
                })?,
            )),
            None => [name, name.strip_suffix('s').unwrap_or(name)]
                .into_iter()
                .find_map(|n| types.named(n).map(|t| (n.to_string(), t.clone()))),
        };
        let mut perf_slots = 0;
        if map.def().map_type == map_type::PERF_EVENT_ARRAY {
            perf_slots = map.def().max_entries.min(u32::try_from(slots).unwrap_or(u32::MAX));
            for i in 0..perf_slots {
                map.perf_open(i, PERF_BUFFER, i + 1)
                    .map_err(|e| format!("map {name}: cannot give slot {i} an output buffer: {e}"))?;
            }
        }
        Ok(Self { name: name.to_string(), map, ty, perf_slots })
    }

    /// How its lines look: `typed as struct NAME` or `as hex (...)`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.ty {
            Some((n, CType::Struct { union: true, .. })) => format!("typed as union {n}"),
            Some((n, CType::Struct { .. })) => format!("typed as struct {n}"),
            Some((n, _)) => format!("typed as {n}"),
            None => {
                format!("as hex (no BTF type {0} or {0}s in the object)", self.name.trim_end_matches('s'))
            }
        }
    }

    /// The type name records print as, if any.
    #[must_use]
    pub fn type_name(&self) -> Option<&str> {
        self.ty.as_ref().map(|(n, _)| n.as_str())
    }

    /// One record as a line (no newline).
    #[must_use]
    pub fn line(&self, record: &[u8]) -> String {
        match &self.ty {
            Some((_, ty)) if ty.size() == record.len() as u64 => {
                format!("@{}: {}", self.name, crate::control::typed::text(ty, record))
            }
            _ => {
                let mut s = format!("@{}:", self.name);
                for b in record {
                    s.push_str(&format!(" {b:02x}"));
                }
                s
            }
        }
    }

    /// Calls `sink` with a line per record now waiting; returns how many.
    pub fn drain(&self, sink: &mut dyn FnMut(String)) -> usize {
        let mut n = 0;
        if self.perf_slots == 0 {
            n += self.map.ringbuf_consume(|r| sink(self.line(r)));
        } else {
            for i in 0..self.perf_slots {
                n += self.map.perf_consume(i, |r| sink(self.line(r)));
            }
        }
        n
    }
}

/// A thread printing the records of some maps as they come; stopped (after a last drain) when
/// dropped.
pub struct Consumer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

/// How long the consumer sleeps when it found nothing.
const IDLE_POLL: Duration = Duration::from_millis(2);

impl Consumer {
    /// Starts draining `maps` into `sink` (nothing is started for no maps).
    #[must_use]
    pub fn spawn(maps: Vec<EventMap>, mut sink: impl FnMut(String) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if maps.is_empty() {
            return Self { stop, handle: None };
        }
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("dp-events".into())
            .spawn(move || {
                crate::control::sys::lower_priority();
                loop {
                    // Read the flag before draining: records made before the stop are printed.
                    let last = flag.load(Ordering::Acquire);
                    let n: usize = maps.iter().map(|m| m.drain(&mut sink)).sum();
                    if last {
                        return;
                    }
                    if n == 0 {
                        std::thread::sleep(IDLE_POLL);
                    }
                }
            })
            .ok();
        Self { stop, handle }
    }

    /// Drains what is left and stops the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdp_vm::elf::Field;

    fn ring(name: &str) -> Arc<Map> {
        let def = maps::MapDef {
            map_type: map_type::RINGBUF,
            key_size: 0,
            value_size: 0,
            max_entries: 4096,
            map_flags: 0,
        };
        Arc::new(Map::new(name, def, 1).unwrap())
    }

    #[test]
    fn records_print_typed_or_as_hex_in_order() {
        let u32t = CType::Int { size: 4, signed: false, char: false, bool: false };
        let ev = CType::Struct {
            name: Some("ev".into()),
            size: 8,
            union: false,
            fields: vec![
                Field { name: "ifindex".into(), bit_offset: 0, bit_size: 0, ty: u32t.clone() },
                Field { name: "len".into(), bit_offset: 32, bit_size: 0, ty: u32t },
            ],
        };
        let m = ring("evs");
        let typed =
            EventMap { name: "evs".into(), map: m.clone(), ty: Some(("ev".into(), ev)), perf_slots: 0 };
        m.ringbuf_output(&[5, 0, 0, 0, 98, 0, 0, 0], 0).unwrap();
        m.ringbuf_output(&[1, 2, 3], 0).unwrap();
        let mut lines = Vec::new();
        assert_eq!(typed.drain(&mut |l| lines.push(l)), 2);
        assert_eq!(lines, ["@evs: { .ifindex = 5, .len = 98 }", "@evs: 01 02 03"]);
        assert_eq!(typed.describe(), "typed as struct ev");
        assert!(
            EventMap::new("evs", m, &Types::default(), Some("nosuch"), 1)
                .unwrap_err()
                .contains("no type nosuch")
        );
    }

    #[test]
    fn the_consumer_prints_everything_before_it_stops() {
        let m = ring("r");
        let em = EventMap::new("r", m.clone(), &Types::default(), None, 1).unwrap();
        assert!(em.describe().starts_with("as hex"));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut c = Consumer::spawn(vec![em], move |l| {
            let _ = tx.send(l);
        });
        for i in 0..100u8 {
            while m.ringbuf_output(&[i], 0).is_err() {
                std::thread::yield_now();
            }
        }
        c.stop();
        let got: Vec<String> = rx.try_iter().collect();
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], "@r: 63");
    }
}
