//! The control socket's wire format, version 1: one JSON object per line each way.
//!
//! Request: `{"version": 1, "request": R}` where `R` is `"prog_list"`, `"map_list"`, `"stats"`,
//! `"reload"` or an object with one key naming the request and its arguments:
//! `{"map_dump": {"map": "pkt_len_count", "format": "design"}}`,
//! `{"map_lookup": {"map": M, "key": HEX}}`, `{"map_update": {"map": M, "key": HEX, "value": HEX,
//! "flags": 0}}`, `{"map_delete": {"map": M, "key": HEX}}` (a key or value may also be the JSON
//! text of its BTF type, as a string: see [`super::typed::argument`]),
//! `{"prog_replace": {"object": PATH, "program": NAME-or-null}}`,
//! `{"trace_attach": {"object": PATH, "program": NAME-or-null, "target": "rx"}}` (optional
//! `"print": [{"map": M, "kind": "lhist", "min": 0, "max": 128, "step": 1}]`),
//! `{"trace_print": {"id": N}}`, `{"trace_events": {"id": N}}`, `{"trace_detach": {"id": N}}`.
//!
//! Response: `{"version": 1, "ok": true, "result": ...}` or `{"version": 1, "ok": false,
//! "error": "one line"}`. Unknown keys, a wrong version, bad hex and lines over
//! [`MAX_LINE`] bytes are errors, answered like any other; the connection stays usable.
//!
//! ```
//! use dataplane::control::proto::{Request, parse_request};
//! let r = parse_request(br#"{"version":1,"request":{"map_dump":{"map":"m","format":"bpftool"}}}"#).unwrap();
//! assert!(matches!(r, Request::MapDump { .. }));
//! assert!(parse_request(br#"{"version":2,"request":"prog_list"}"#).is_err());
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The longest request line the server reads (bytes, newline included).
pub const MAX_LINE: usize = 64 * 1024;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The running program: id, name, engine, sizes and live run counters.
    ProgList,
    /// Load, verify and compile `object`, bind it to the running maps and switch every worker.
    ProgReplace {
        object: PathBuf,
        program: Option<String>,
    },
    /// Every map of the running program.
    MapList,
    /// One map's entries.
    MapDump {
        map: String,
        format: DumpFormat,
    },
    MapLookup {
        map: String,
        key: String,
    },
    MapUpdate {
        map: String,
        key: String,
        value: String,
        flags: u64,
    },
    MapDelete {
        map: String,
        key: String,
    },
    /// The last interval's stats lines and the totals per queue.
    Stats,
    /// Re-read the config file (as SIGHUP does).
    Reload,
    /// Load a uprobe program with maps of its own and attach it to `target` (`rx` or
    /// `site:rx`, or a function name); answers `{"id": N}`. The trace belongs to the
    /// connection: it is detached when the connection closes.
    TraceAttach {
        object: PathBuf,
        program: Option<String>,
        target: String,
        /// How to print its maps (default: every map, an 8-byte key as a `hist`, else `count`).
        #[serde(default)]
        print: Vec<crate::config::PrintConfig>,
    },
    /// The trace's maps printed bpftrace-style: `{"id": N, "text": "..."}`.
    TracePrint {
        id: u64,
    },
    /// The trace's ring-buffer / perf-event record lines since the last such request:
    /// `{"id": N, "lines": ["@rx_events: { .ifindex = 5, ... }", ...], "lost": 0}`.
    TraceEvents {
        id: u64,
    },
    /// Detach the trace and print its maps a last time (as `trace_print`).
    TraceDetach {
        id: u64,
    },
}

/// How `map dump` renders entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// DESIGN.md's: `{"key": "62000000", "value": "..."}` (`values` for per-CPU maps).
    #[default]
    Design,
    /// `bpftool map dump -j`'s: byte arrays of `"0x62"` strings, per-CPU `{"cpu", "value"}`.
    Bpftool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    version: u32,
    request: Request,
}

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("request longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("protocol version {got} is not supported (this instance speaks {VERSION})")]
    Version { got: u64 },
    #[error("malformed request: {reason}")]
    Malformed { reason: String },
}

/// Parses one request line (without or with its newline).
///
/// # Errors
/// [`ProtoError`]; never panics, whatever the bytes.
pub fn parse_request(line: &[u8]) -> Result<Request, ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| ProtoError::NotUtf8)?;
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| ProtoError::Malformed { reason: e.to_string() })?;
    // The version first, so a newer client gets the version error, not an unknown request.
    match value.get("version").map(serde_json::Value::as_u64) {
        Some(Some(v)) if v == u64::from(VERSION) => {}
        Some(Some(v)) => return Err(ProtoError::Version { got: v }),
        _ => return Err(ProtoError::Malformed { reason: "missing or non-integer \"version\"".into() }),
    }
    let env: Envelope =
        serde_json::from_value(value).map_err(|e| ProtoError::Malformed { reason: e.to_string() })?;
    Ok(env.request)
}

/// The request line a client sends (newline included).
#[must_use]
pub fn request_line(request: &Request) -> String {
    let env = Envelope { version: VERSION, request: request.clone() };
    let mut s = serde_json::to_string(&env).unwrap_or_default();
    s.push('\n');
    s
}

/// A reply line (newline included).
#[must_use]
pub fn reply_line(reply: &Result<serde_json::Value, String>) -> String {
    let v = match reply {
        Ok(result) => serde_json::json!({"version": VERSION, "ok": true, "result": result}),
        Err(error) => serde_json::json!({"version": VERSION, "ok": false, "error": error}),
    };
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Reads a reply line back.
///
/// # Errors
/// The server's error text, or why the line is not a reply.
pub fn parse_reply(line: &str) -> Result<serde_json::Value, String> {
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("malformed reply from the instance: {e}"))?;
    match v.get("ok").and_then(serde_json::Value::as_bool) {
        Some(true) => Ok(v.get("result").cloned().unwrap_or(serde_json::Value::Null)),
        Some(false) => {
            Err(v.get("error").and_then(serde_json::Value::as_str).unwrap_or("unknown error").to_string())
        }
        None => Err("malformed reply from the instance: no \"ok\"".into()),
    }
}

/// Parses lowercase or uppercase hex, with an optional `0x` and spaces between bytes.
///
/// # Errors
/// A reason naming what is wrong.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let digits: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.is_empty() {
        return Err("empty hex".into());
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!("{text:?}: odd number of hex digits"));
    }
    let bytes = digits.as_bytes();
    bytes
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("{text:?}: not hex"))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{text:?}: not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_request_round_trips() {
        let all = [
            Request::ProgList,
            Request::ProgReplace { object: "/x.o".into(), program: Some("p".into()) },
            Request::MapList,
            Request::MapDump { map: "m".into(), format: DumpFormat::Bpftool },
            Request::MapLookup { map: "m".into(), key: "01".into() },
            Request::MapUpdate { map: "m".into(), key: "01".into(), value: "02".into(), flags: 1 },
            Request::MapDelete { map: "m".into(), key: "01".into() },
            Request::Stats,
            Request::Reload,
            Request::TraceAttach {
                object: "/t.o".into(),
                program: None,
                target: "rx".into(),
                print: vec![crate::config::PrintConfig {
                    map: "m".into(),
                    kind: crate::config::PrintKind::Lhist,
                    min: Some(0),
                    max: Some(128),
                    step: Some(1),
                    record_type: None,
                }],
            },
            Request::TracePrint { id: 1 },
            Request::TraceEvents { id: 1 },
            Request::TraceDetach { id: 1 },
        ];
        for r in all {
            assert_eq!(parse_request(request_line(&r).as_bytes()), Ok(r));
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = |s: &str| parse_request(s.as_bytes()).unwrap_err().to_string();
        assert!(e(r#"{"version":2,"request":"prog_list"}"#).contains("version 2"));
        assert!(e(r#"{"request":"prog_list"}"#).contains("version"));
        assert!(e(r#"{"version":1,"request":"prog_lst"}"#).contains("prog_lst"));
        assert!(e(r#"{"version":1,"request":"stats","x":1}"#).contains("x"));
        assert!(e(r#"{"version":1,"request":{"map_dump":{"map":"m"}}}"#).contains("format"));
        assert_eq!(parse_request(&[0xff, 0xfe]), Err(ProtoError::NotUtf8));
        assert_eq!(parse_request(&vec![b' '; MAX_LINE + 1]), Err(ProtoError::TooLong));
    }

    #[test]
    fn hex_forms() {
        assert_eq!(parse_hex("0a0B").unwrap(), vec![10, 11]);
        assert_eq!(parse_hex("0x18 00 00 00").unwrap(), vec![0x18, 0, 0, 0]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").is_err());
        assert!(parse_hex("é1").is_err());
    }

    #[test]
    fn replies_round_trip() {
        assert_eq!(parse_reply(&reply_line(&Ok(serde_json::json!([1])))), Ok(serde_json::json!([1])));
        assert_eq!(parse_reply(&reply_line(&Err("no such map".into()))), Err("no such map".into()));
    }

    // The request parser on arbitrary bytes, on mutated valid requests and on random JSON:
    // it answers every line with a request or an error and never panics.
    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&bytes);
        }

        #[test]
        fn parser_survives_mutated_requests(idx in 0usize..9, at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let lines = [
                r#"{"version":1,"request":"prog_list"}"#,
                r#"{"version":1,"request":{"map_dump":{"map":"pkt_len_count","format":"bpftool"}}}"#,
                r#"{"version":1,"request":{"map_update":{"map":"m","key":"62000000","value":"01000000","flags":0}}}"#,
                r#"{"version":1,"request":{"map_lookup":{"map":"m","key":"62000000"}}}"#,
                r#"{"version":1,"request":{"map_delete":{"map":"m","key":"62000000"}}}"#,
                r#"{"version":1,"request":{"prog_replace":{"object":"/tmp/x.o","program":null}}}"#,
                r#"{"version":1,"request":"map_list"}"#,
                r#"{"version":1,"request":"stats"}"#,
                r#"{"version":1,"request":"reload"}"#,
            ];
            let mut b = lines[idx].as_bytes().to_vec();
            let i = at.index(b.len());
            b[i] = byte;
            let keep = cut.index(b.len() + 1);
            b.truncate(keep.max(i));
            let _ = parse_request(&b);
        }

        #[test]
        fn parser_survives_random_json(v in json_value()) {
            let line = serde_json::json!({"version": 1, "request": v}).to_string();
            let _ = parse_request(line.as_bytes());
        }

        #[test]
        fn hex_parser_survives_anything(s in ".{0,64}") {
            if let Ok(b) = parse_hex(&s) {
                prop_assert!(!b.is_empty());
            }
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            prop_oneof![
                Just("prog_list".to_string()),
                Just("map_dump".to_string()),
                Just("map".to_string()),
                Just("key".to_string()),
                "[a-z_]{0,12}"
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("map_update".to_string()),
                        Just("map".to_string()),
                        Just("key".to_string()),
                        Just("value".to_string()),
                        Just("flags".to_string()),
                        Just("format".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
