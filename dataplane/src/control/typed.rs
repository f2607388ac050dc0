//! Map keys, values and ring-buffer records through their BTF types ([`xdp_vm::elf::CType`]):
//! printed the way `bpftool` (JSON, its `"formatted"` field) and `bpftrace` (text,
//! `{ .ifindex = 5, .len = 98 }`) print them, and parsed back from JSON for `map lookup|update|
//! delete`.
//!
//! JSON forms: an integer or enum is a number (an enum also by its name), a `char` array a
//! string, any other array a JSON array, a struct an object by field name (fields left out are
//! zero), a union an object with one of its fields. A 4-byte or 16-byte field (an integer or a
//! byte array) also takes an IPv4 / IPv6 address string, stored in network order (the order
//! in which it is written), as packet headers hold it. Bytes are little-endian (x86-64).
//!
//! ```
//! use dataplane::control::typed;
//! use xdp_vm::elf::CType;
//! let u32_ty = CType::Int { size: 4, signed: false, char: false, bool: false };
//! assert_eq!(typed::parse(&u32_ty, &serde_json::json!(98)).unwrap(), vec![98, 0, 0, 0]);
//! assert_eq!(typed::text(&u32_ty, &[98, 0, 0, 0]), "98");
//! ```

use std::fmt::Write as _;

use serde_json::Value;
use xdp_vm::elf::{CType, Field};

/// Reads bits `[bit_off, bit_off + bits)` of `bytes` as an unsigned little-endian integer.
fn read_bits(bytes: &[u8], bit_off: u64, bits: u32) -> u128 {
    let mut v: u128 = 0;
    for i in 0..u64::from(bits.min(128)) {
        let b = bit_off + i;
        let byte = bytes.get((b / 8) as usize).copied().unwrap_or(0);
        if byte >> (b % 8) & 1 == 1 {
            v |= 1 << i;
        }
    }
    v
}

fn write_bits(bytes: &mut [u8], bit_off: u64, bits: u32, v: u128) {
    for i in 0..u64::from(bits.min(128)) {
        let b = bit_off + i;
        if let Some(byte) = bytes.get_mut((b / 8) as usize) {
            let mask = 1u8 << (b % 8);
            if v >> i & 1 == 1 { *byte |= mask } else { *byte &= !mask }
        }
    }
}

fn int_value(bytes: &[u8], size: u32, signed: bool) -> Value {
    let n = size.min(16) as usize;
    let mut b = [0u8; 16];
    let have = bytes.len().min(n);
    b[..have].copy_from_slice(&bytes[..have]);
    let u = u128::from_le_bytes(b);
    if signed {
        let shift = 128 - 8 * n as u32;
        let s = ((u << shift) as i128) >> shift;
        i64::try_from(s).map_or_else(|_| Value::from(s.to_string()), Value::from)
    } else {
        u64::try_from(u).map_or_else(|_| Value::from(u.to_string()), Value::from)
    }
}

fn is_char_array(elem: &CType) -> bool {
    matches!(elem, CType::Int { size: 1, char: true, .. })
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn field_bytes<'a>(bytes: &'a [u8], f: &Field) -> &'a [u8] {
    let start = (f.bit_offset / 8) as usize;
    let end = start.saturating_add(f.ty.size() as usize).min(bytes.len());
    bytes.get(start..end).unwrap_or(&[])
}

/// `bytes` as JSON, the way `bpftool map dump -j` shows a BTF-typed key or value under
/// `"formatted"`.
#[must_use]
pub fn json(ty: &CType, bytes: &[u8]) -> Value {
    match ty {
        CType::Int { size, signed, bool: true, .. } => {
            Value::Bool(int_value(bytes, *size, *signed).as_u64().is_none_or(|v| v != 0))
        }
        CType::Int { size, signed, .. } => int_value(bytes, *size, *signed),
        CType::Enum { size, signed, values } => {
            let v = int_value(bytes, *size, *signed);
            let n = v.as_i64().or_else(|| v.as_u64().map(|u| u as i64));
            match values.iter().find(|(_, x)| Some(*x) == n) {
                Some((name, _)) => Value::from(name.clone()),
                None => v,
            }
        }
        CType::Float { size: 4 } if bytes.len() >= 4 => {
            Value::from(f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])))
        }
        CType::Float { size: 8 } if bytes.len() >= 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            Value::from(f64::from_le_bytes(b))
        }
        CType::Ptr => int_value(bytes, 8, false),
        CType::Array { elem, len } if is_char_array(elem) => {
            Value::from(c_string(&bytes[..bytes.len().min(*len as usize)]))
        }
        CType::Array { elem, len } => {
            let step = elem.size() as usize;
            if step == 0 {
                return Value::Array(Vec::new());
            }
            Value::Array(
                (0..*len as usize)
                    .map_while(|i| bytes.get(i * step..(i + 1) * step))
                    .map(|b| json(elem, b))
                    .collect(),
            )
        }
        CType::Struct { fields, .. } => {
            let mut m = serde_json::Map::new();
            for f in fields {
                let v = if f.bit_size > 0 {
                    let raw = read_bits(bytes, u64::from(f.bit_offset), f.bit_size);
                    u64::try_from(raw).map_or_else(|_| Value::from(raw.to_string()), Value::from)
                } else {
                    json(&f.ty, field_bytes(bytes, f))
                };
                // An anonymous struct or union member's fields appear at this level.
                match (f.name.is_empty(), v) {
                    (true, Value::Object(inner)) => m.extend(inner),
                    (_, v) => {
                        m.insert(f.name.clone(), v);
                    }
                }
            }
            Value::Object(m)
        }
        CType::Float { .. } | CType::Opaque { .. } => Value::from(crate::prog_run::hex(bytes)),
    }
}

/// `bytes` as `bpftrace` prints a value of this type: `{ .ifindex = 5, .name = "eth0",
/// .addr = [10,0,0,1] }`, fields in declaration order.
#[must_use]
pub fn text(ty: &CType, bytes: &[u8]) -> String {
    let mut s = String::new();
    write_text(&mut s, ty, bytes);
    s
}

fn write_text(s: &mut String, ty: &CType, bytes: &[u8]) {
    match ty {
        CType::Struct { fields, .. } => {
            s.push_str("{ ");
            write_fields(s, fields, bytes, &mut true);
            s.push_str(" }");
        }
        CType::Array { elem, len } if !is_char_array(elem) => {
            let step = elem.size() as usize;
            s.push('[');
            for i in 0..*len as usize {
                let Some(b) = bytes.get(i * step..(i + 1) * step) else { break };
                if i > 0 {
                    s.push(',');
                }
                write_text(s, elem, b);
            }
            s.push(']');
        }
        _ => match json(ty, bytes) {
            Value::String(t) => {
                let _ = write!(s, "{t:?}");
            }
            v => {
                let _ = write!(s, "{v}");
            }
        },
    }
}

fn write_fields(s: &mut String, fields: &[Field], bytes: &[u8], first: &mut bool) {
    for f in fields {
        if f.name.is_empty()
            && let CType::Struct { fields: inner, .. } = &f.ty
        {
            write_fields(s, inner, field_bytes(bytes, f), first);
            continue;
        }
        if !*first {
            s.push_str(", ");
        }
        *first = false;
        let _ = write!(s, ".{} = ", f.name);
        if f.bit_size > 0 {
            let _ = write!(s, "{}", read_bits(bytes, u64::from(f.bit_offset), f.bit_size));
        } else {
            write_text(s, &f.ty, field_bytes(bytes, f));
        }
    }
}

/// Parses a JSON value of this type into its bytes (see the module's forms).
///
/// # Errors
/// One line naming the field and what was wrong.
pub fn parse(ty: &CType, v: &Value) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; usize::try_from(ty.size()).map_err(|_| "type too large".to_string())?];
    fill(ty, v, &mut out, "")?;
    Ok(out)
}

fn path_of(path: &str) -> String {
    if path.is_empty() { "the value".into() } else { format!("field {path}") }
}

fn address(text: &str, size: usize) -> Option<Vec<u8>> {
    match size {
        4 => text.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets().to_vec()),
        16 => text.parse::<std::net::Ipv6Addr>().ok().map(|a| a.octets().to_vec()),
        _ => None,
    }
}

fn int_from(v: &Value, size: u32, signed: bool, path: &str) -> Result<u128, String> {
    let bits = 8 * size.min(16);
    let (n, neg): (u128, bool) = match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                (u128::from(u), false)
            } else if let Some(i) = n.as_i64() {
                (u128::from(i.unsigned_abs()), true)
            } else {
                return Err(format!("{}: {n} is not an integer", path_of(path)));
            }
        }
        Value::Bool(b) => (u128::from(*b), false),
        Value::String(t) => {
            let t = t.trim();
            let (neg, digits) = t.strip_prefix('-').map_or((false, t), |d| (true, d));
            let parsed = match digits.strip_prefix("0x") {
                Some(h) => u128::from_str_radix(h, 16),
                None => digits.parse::<u128>(),
            };
            (parsed.map_err(|_| format!("{}: {t:?} is not an integer", path_of(path)))?, neg)
        }
        other => return Err(format!("{}: expected an integer, got {other}", path_of(path))),
    };
    let out_of_range =
        || format!("{}: {v} does not fit {size} bytes{}", path_of(path), if signed { " signed" } else { "" });
    if neg {
        if !signed {
            return Err(out_of_range());
        }
        let limit = 1u128 << (bits - 1);
        if n > limit {
            return Err(out_of_range());
        }
        Ok(n.wrapping_neg() & mask(bits))
    } else {
        let limit = if signed { (1u128 << (bits - 1)) - 1 } else { mask(bits) };
        if n > limit {
            return Err(out_of_range());
        }
        Ok(n)
    }
}

fn mask(bits: u32) -> u128 {
    if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 }
}

fn fill(ty: &CType, v: &Value, out: &mut [u8], path: &str) -> Result<(), String> {
    let size = out.len();
    match ty {
        CType::Int { size: n, signed, .. } => {
            if let Value::String(t) = v
                && let Some(addr) = address(t, size)
            {
                out.copy_from_slice(&addr);
                return Ok(());
            }
            let x = int_from(v, *n, *signed, path)?;
            let bytes = x.to_le_bytes();
            out.copy_from_slice(&bytes[..size.min(16)]);
            Ok(())
        }
        CType::Enum { size: n, signed, values } => {
            if let Value::String(t) = v
                && let Some((_, x)) = values.iter().find(|(name, _)| name == t)
            {
                let bytes = (*x as i128 as u128).to_le_bytes();
                out.copy_from_slice(&bytes[..size.min(16)]);
                return Ok(());
            }
            let x = int_from(v, *n, *signed, path)?;
            out.copy_from_slice(&x.to_le_bytes()[..size.min(16)]);
            Ok(())
        }
        CType::Ptr => {
            let x = int_from(v, 8, false, path)?;
            out.copy_from_slice(&x.to_le_bytes()[..8]);
            Ok(())
        }
        CType::Array { elem, len } => {
            if let Value::String(t) = v {
                if is_char_array(elem) {
                    if t.len() > *len as usize {
                        return Err(format!("{}: {t:?} is longer than {len} bytes", path_of(path)));
                    }
                    out[..t.len()].copy_from_slice(t.as_bytes());
                    return Ok(());
                }
                if let Some(addr) = address(t, size) {
                    out.copy_from_slice(&addr);
                    return Ok(());
                }
            }
            let Value::Array(items) = v else {
                return Err(format!("{}: expected an array of {len}, got {v}", path_of(path)));
            };
            if items.len() > *len as usize {
                return Err(format!("{}: {} elements for an array of {len}", path_of(path), items.len()));
            }
            let step = elem.size() as usize;
            for (i, item) in items.iter().enumerate() {
                let at = out
                    .get_mut(i * step..(i + 1) * step)
                    .ok_or_else(|| "array outside its type".to_string())?;
                fill(elem, item, at, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        CType::Struct { fields, union, .. } => {
            let Value::Object(given) = v else {
                return Err(format!(
                    "{}: expected an object with fields {}, got {v}",
                    path_of(path),
                    names(fields)
                ));
            };
            let flat = flatten(fields);
            for k in given.keys() {
                if !flat.iter().any(|(f, _)| f.name == *k) {
                    return Err(format!("{}: no field {k:?} (fields: {})", path_of(path), names(fields)));
                }
            }
            if *union && given.len() > 1 {
                return Err(format!("{}: a union takes one field", path_of(path)));
            }
            for (f, base) in flat {
                let Some(fv) = given.get(&f.name) else { continue };
                let sub = if path.is_empty() { f.name.clone() } else { format!("{path}.{}", f.name) };
                let bit = u64::from(base) + u64::from(f.bit_offset);
                if f.bit_size > 0 {
                    let x = int_from(fv, 16, false, &sub)?;
                    if x > mask(f.bit_size) {
                        return Err(format!("field {sub}: {fv} does not fit {} bits", f.bit_size));
                    }
                    write_bits(out, bit, f.bit_size, x);
                } else {
                    let start = (bit / 8) as usize;
                    let end = start + f.ty.size() as usize;
                    let at = out
                        .get_mut(start..end)
                        .ok_or_else(|| format!("field {sub} lies outside its struct"))?;
                    fill(&f.ty, fv, at, &sub)?;
                }
            }
            Ok(())
        }
        CType::Float { .. } | CType::Opaque { .. } => {
            let Value::String(t) = v else {
                return Err(format!("{}: no type known here; give it as a hex string", path_of(path)));
            };
            let b = super::proto::parse_hex(t).map_err(|e| format!("{}: {e}", path_of(path)))?;
            if b.len() != size {
                return Err(format!("{}: {} bytes given, it has {size}", path_of(path), b.len()));
            }
            out.copy_from_slice(&b);
            Ok(())
        }
    }
}

/// The fields of a struct with those of anonymous members brought up, each with the bit
/// offset of its containing member.
fn flatten(fields: &[Field]) -> Vec<(&Field, u32)> {
    let mut out = Vec::new();
    for f in fields {
        match (&f.ty, f.name.is_empty()) {
            (CType::Struct { fields: inner, .. }, true) => {
                out.extend(flatten(inner).into_iter().map(|(g, b)| (g, b + f.bit_offset)));
            }
            _ => out.push((f, 0)),
        }
    }
    out
}

fn names(fields: &[Field]) -> String {
    flatten(fields).iter().map(|(f, _)| f.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Reads a key or value argument of `map lookup|update|delete`: hex (DESIGN.md's form, kept
/// as is) when it is `0x...`, has spaces, or is hex digits for a whole number of `size`-byte
/// items (one key; one value, or one per CPU slot); otherwise JSON of the map's BTF type `ty`
/// (a bare decimal number or address is JSON too).
///
/// # Errors
/// One line: why neither form fits.
pub fn argument(text: &str, size: usize, ty: Option<&CType>, what: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0x").unwrap_or(t);
    let hex_chars = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit() || c.is_whitespace());
    let hexish = hex_chars
        && (t.starts_with("0x")
            || t.contains(char::is_whitespace)
            || (size > 0 && t.len().is_multiple_of(2 * size)));
    if hexish || ty.is_none() {
        return super::proto::parse_hex(t).map_err(|e| match ty {
            None if !hexish => format!("{what}: {e} (the map has no BTF type, so only hex is taken)"),
            _ => format!("{what}: {e}"),
        });
    }
    let Some(ty) = ty else { unreachable!("checked above") };
    let v: Value = serde_json::from_str(t)
        .or_else(|_| serde_json::from_str(&format!("\"{}\"", t.replace('"', "\\\""))))
        .map_err(|e| format!("{what}: {t:?} is neither hex nor JSON: {e}"))?;
    parse(ty, &v).map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn u(size: u32) -> CType {
        CType::Int { size, signed: false, char: false, bool: false }
    }

    fn lpm_key() -> CType {
        CType::Struct {
            name: Some("lpm_v4_key".into()),
            size: 8,
            union: false,
            fields: vec![
                Field { name: "prefixlen".into(), bit_offset: 0, bit_size: 0, ty: u(4) },
                Field { name: "addr".into(), bit_offset: 32, bit_size: 0, ty: u(4) },
            ],
        }
    }

    #[test]
    fn structs_round_trip_through_json_and_print_like_bpftrace() {
        let k = lpm_key();
        let bytes = parse(&k, &json!({"prefixlen": 24, "addr": "10.0.0.0"})).unwrap();
        assert_eq!(bytes, [24, 0, 0, 0, 10, 0, 0, 0]);
        assert_eq!(json(&k, &bytes), json!({"prefixlen": 24, "addr": 10}));
        assert_eq!(text(&k, &bytes), "{ .prefixlen = 24, .addr = 10 }");
        assert_eq!(parse(&k, &json(&k, &bytes)).unwrap(), bytes);
        assert_eq!(argument(r#"{"prefixlen":24,"addr":"10.0.0.0"}"#, 8, Some(&k), "key").unwrap(), bytes);
        assert_eq!(argument("1800000a0000000a", 8, Some(&k), "key").unwrap()[0], 0x18, "hex stays hex");
        assert_eq!(argument("0x18 00 00 00 0a 00 00 00", 8, Some(&k), "key").unwrap(), bytes);
        assert_eq!(
            argument(r#"{ "prefixlen": 24, "addr": "10.0.0.0" }"#, 8, Some(&k), "key").unwrap(),
            bytes
        );
        let e = argument(r#"{"prefix":24}"#, 8, Some(&k), "key").unwrap_err();
        assert!(e.contains("no field \"prefix\"") && e.contains("prefixlen, addr"), "{e}");
    }

    #[test]
    fn scalars_arrays_strings_signs_and_bitfields() {
        assert_eq!(argument("98", 4, Some(&u(4)), "key").unwrap(), [98, 0, 0, 0]);
        assert_eq!(argument("62000000", 4, Some(&u(4)), "key").unwrap(), [0x62, 0, 0, 0], "hex of the size");
        assert_eq!(argument("98", 4, None, "key").unwrap(), [0x98], "no BTF type: hex");
        assert!(argument("{}", 4, None, "key").unwrap_err().contains("no BTF type"));
        assert!(parse(&u(1), &json!(256)).unwrap_err().contains("does not fit 1 bytes"));
        let i8t = CType::Int { size: 1, signed: true, char: false, bool: false };
        assert_eq!(parse(&i8t, &json!(-128)).unwrap(), [0x80]);
        assert!(parse(&i8t, &json!(-129)).is_err());
        assert_eq!(json(&i8t, &[0xff]), json!(-1));
        let chars = CType::Array {
            elem: Box::new(CType::Int { size: 1, signed: true, char: true, bool: false }),
            len: 8,
        };
        assert_eq!(parse(&chars, &json!("eth0")).unwrap(), b"eth0\0\0\0\0");
        assert_eq!(json(&chars, b"eth0\0\0\0\0"), json!("eth0"));
        let bytes4 = CType::Array { elem: Box::new(u(1)), len: 4 };
        assert_eq!(parse(&bytes4, &json!("192.168.1.2")).unwrap(), [192, 168, 1, 2]);
        assert_eq!(parse(&bytes4, &json!([1, 2])).unwrap(), [1, 2, 0, 0]);
        assert_eq!(text(&bytes4, &[1, 2, 3, 4]), "[1,2,3,4]");
        let bf = CType::Struct {
            name: None,
            size: 4,
            union: false,
            fields: vec![
                Field { name: "a".into(), bit_offset: 0, bit_size: 3, ty: u(4) },
                Field { name: "b".into(), bit_offset: 3, bit_size: 5, ty: u(4) },
            ],
        };
        let b = parse(&bf, &json!({"a": 5, "b": 17})).unwrap();
        assert_eq!(b, [5 | 17 << 3, 0, 0, 0]);
        assert_eq!(json(&bf, &b), json!({"a": 5, "b": 17}));
        assert!(parse(&bf, &json!({"a": 8})).unwrap_err().contains("3 bits"));
    }
}
