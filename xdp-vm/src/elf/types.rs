//! C types from an object's BTF, as owned trees: what a tool needs to print and parse map keys,
//! values and ring-buffer records typed (`{ .ifindex = 5, .len = 98 }`) instead of as hex.
//!
//! Only the shape is kept: integers (size, signedness, char, bool), enums with their names,
//! floats, pointers, arrays, and structs / unions with named fields at byte (or bit) offsets.
//! Typedefs and modifiers are looked through; a typedef's name is kept on what it names only
//! when that has none. Nesting is bounded by [`MAX_NESTING`]; anything deeper, or a kind with no
//! value shape (functions, forward declarations), is [`CType::Opaque`] of its size.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = std::fs::read("xdp_firewall.o")?;
//! let types = xdp_vm::elf::Types::from_object(&bytes)?;
//! if let Some(key) = types.map("blocked_v4").and_then(|m| m.key.as_ref()) {
//!     println!("blocked_v4 keys are {} bytes", key.size());
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use object::{Object as _, ObjectSection as _};

use super::ElfError;
use super::btf::{self, Btf};

/// How deep structs, arrays and typedef chains may nest before a type is left opaque.
pub const MAX_NESTING: usize = 16;

/// One C type, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CType {
    /// An integer of `size` bytes (1, 2, 4, 8 or 16).
    Int {
        size: u32,
        signed: bool,
        char: bool,
        bool: bool,
    },
    /// An enum of `size` bytes and its named values.
    Enum {
        size: u32,
        signed: bool,
        values: Vec<(String, i64)>,
    },
    Float {
        size: u32,
    },
    /// A pointer (8 bytes); its target is not followed.
    Ptr,
    Array {
        elem: Box<CType>,
        len: u32,
    },
    /// A struct or union (`union: true`, every field at offset 0) of `size` bytes.
    Struct {
        name: Option<String>,
        size: u32,
        union: bool,
        fields: Vec<Field>,
    },
    /// Bytes with no shape known here.
    Opaque {
        size: u64,
    },
}

/// One field of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Empty for an anonymous struct or union member.
    pub name: String,
    /// Offset in bits from the start of the struct.
    pub bit_offset: u32,
    /// A bitfield's width in bits; 0 for a whole field.
    pub bit_size: u32,
    pub ty: CType,
}

impl CType {
    /// Its size in bytes, as `sizeof` gives it.
    #[must_use]
    pub fn size(&self) -> u64 {
        match self {
            CType::Int { size, .. } | CType::Enum { size, .. } | CType::Float { size } => u64::from(*size),
            CType::Ptr => 8,
            CType::Array { elem, len } => elem.size().saturating_mul(u64::from(*len)),
            CType::Struct { size, .. } => u64::from(*size),
            CType::Opaque { size } => *size,
        }
    }
}

/// The key and value types of one BTF-defined map (`__type(key, ...)`, `__type(value, ...)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapTypes {
    pub key: Option<CType>,
    pub value: Option<CType>,
}

/// The types of one object: per map, and by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Types {
    maps: BTreeMap<String, MapTypes>,
    named: BTreeMap<String, CType>,
}

impl Types {
    /// Reads the `.BTF` section of a clang-built object; no section gives no types.
    ///
    /// # Errors
    /// [`ElfError::Malformed`] when the bytes are no ELF object, [`ElfError::Btf`] when the
    /// section is corrupt.
    pub fn from_object(bytes: &[u8]) -> Result<Types, ElfError> {
        let file = object::File::parse(bytes).map_err(|source| ElfError::Malformed { source })?;
        let Some(section) = file.section_by_name(".BTF") else { return Ok(Types::default()) };
        let data = section.data().map_err(|source| ElfError::Malformed { source })?;
        let btf = Btf::parse(data).map_err(|source| ElfError::Btf { source })?;
        Ok(Types::from_btf(&btf))
    }

    fn from_btf(btf: &Btf<'_>) -> Types {
        let mut out = Types::default();
        for ty in btf.types() {
            let Ok(name) = btf.name(ty) else { continue };
            if name.is_empty() {
                continue;
            }
            match ty.kind() {
                btf::KIND_STRUCT
                | btf::KIND_UNION
                | btf::KIND_ENUM
                | btf::KIND_ENUM64
                | btf::KIND_TYPEDEF => {
                    // A struct's own name wins over a typedef of the same name.
                    if ty.kind() == btf::KIND_TYPEDEF && out.named.contains_key(name) {
                        continue;
                    }
                    out.named.insert(name.to_string(), describe(btf, ty.id, 0));
                }
                _ => {}
            }
        }
        if let Some(sec) = btf.datasec(".maps") {
            for (var_id, _, _) in sec.datasec_vars() {
                let Ok(var) = btf.get(var_id) else { continue };
                let (Ok(name), Ok(def)) = (btf.name(var), btf.skip_mods(var.target())) else { continue };
                if def.kind() != btf::KIND_STRUCT {
                    continue;
                }
                let mut m = MapTypes::default();
                for mem in def.members() {
                    let slot = match btf.str_at(mem.name_off) {
                        Ok("key") => &mut m.key,
                        Ok("value") => &mut m.value,
                        _ => continue,
                    };
                    // `__type(key, T)` is a `T *` member.
                    if let Ok(p) = btf.skip_mods(mem.ty)
                        && p.kind() == btf::KIND_PTR
                    {
                        *slot = Some(describe(btf, p.target(), 0));
                    }
                }
                out.maps.insert(name.to_string(), m);
            }
        }
        out
    }

    /// The key and value types of map `name`, when it is BTF-defined.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&MapTypes> {
        self.maps.get(name)
    }

    /// The struct, union, enum or typedef called `name` (`"rx_event"` for `struct rx_event`).
    #[must_use]
    pub fn named(&self, name: &str) -> Option<&CType> {
        self.named.get(name)
    }
}

fn describe(btf: &Btf<'_>, id: u32, depth: usize) -> CType {
    let opaque = || CType::Opaque { size: btf.size_of(id).unwrap_or(0) };
    if depth > MAX_NESTING {
        return opaque();
    }
    let Ok(ty) = btf.skip_mods(id) else { return opaque() };
    match ty.kind() {
        btf::KIND_INT => {
            let (enc, _) = ty.int_info();
            CType::Int { size: ty.size(), signed: enc & 1 != 0, char: enc & 2 != 0, bool: enc & 4 != 0 }
        }
        btf::KIND_ENUM | btf::KIND_ENUM64 => {
            let (vals, signed) = ty.enum_values();
            let values =
                vals.into_iter().map(|(n, v)| (btf.str_at(n).unwrap_or("").to_string(), v)).collect();
            CType::Enum { size: ty.size(), signed, values }
        }
        btf::KIND_FLOAT => CType::Float { size: ty.size() },
        btf::KIND_PTR => CType::Ptr,
        btf::KIND_ARRAY => {
            let (elem, len) = ty.array();
            CType::Array { elem: Box::new(describe(btf, elem, depth + 1)), len }
        }
        btf::KIND_STRUCT | btf::KIND_UNION => {
            let name = btf.name(ty).ok().filter(|n| !n.is_empty()).map(str::to_string);
            let fields = ty
                .member_bits()
                .map(|(name_off, mty, bit_offset, bit_size)| Field {
                    name: btf.str_at(name_off).unwrap_or("").to_string(),
                    bit_offset,
                    bit_size,
                    ty: describe(btf, mty, depth + 1),
                })
                .collect();
            CType::Struct { name, size: ty.size(), union: ty.kind() == btf::KIND_UNION, fields }
        }
        _ => opaque(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::btf::tests::blob;

    #[test]
    fn describes_structs_arrays_enums_and_bitfields() {
        // 1 "unsigned int", 5 "char", 10 "key", 14 "prefixlen", 24 "addr", 29 "flags",
        // 35 "color", 41 "RED", 45 "__u32", 51 "lo", 54 "hi"
        let strings = b"\0uint\0char\0key\0prefixlen\0addr\0flags\0color\0RED\0__u32\0lo\0hi\0";
        let k = |kind: u32, vlen: u32, flag: u32| (flag << 31) | (kind << 24) | vlen;
        let types = [
            1,
            k(btf::KIND_INT, 0, 0),
            4,
            32, // [1] unsigned int
            6,
            k(btf::KIND_INT, 0, 0),
            1,
            (2 << 24) | 8, // [2] char
            0,
            k(btf::KIND_ARRAY, 0, 0),
            0,
            2,
            1,
            4, // [3] char[4]
            46,
            k(btf::KIND_TYPEDEF, 0, 0),
            1, // [4] __u32 -> unsigned int
            36,
            k(btf::KIND_ENUM, 1, 0),
            4,
            42,
            0, // [5] enum color { RED = 0 }
            11,
            k(btf::KIND_STRUCT, 4, 1),
            16,
            15,
            4,
            0,
            25,
            3,
            32,
            30,
            1,
            (3 << 24) | 64,
            36,
            5,
            96, // [6] struct key { __u32 prefixlen; char addr[4]; uint flags:3; enum color color; }
        ];
        let data = blob(&types, strings);
        let btf = Btf::parse(&data).unwrap();
        let t = Types::from_btf(&btf);
        let key = t.named("key").unwrap();
        assert_eq!(key.size(), 16);
        let CType::Struct { fields, union: false, .. } = key else { panic!("{key:?}") };
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["prefixlen", "addr", "flags", "color"]);
        assert_eq!(fields[0].ty, CType::Int { size: 4, signed: false, char: false, bool: false });
        assert_eq!(fields[1].bit_offset, 32);
        assert!(
            matches!(&fields[1].ty, CType::Array { len: 4, elem } if matches!(**elem, CType::Int { char: true, .. }))
        );
        assert_eq!((fields[2].bit_offset, fields[2].bit_size), (64, 3));
        assert!(matches!(&fields[3].ty, CType::Enum { values, .. } if values == &[("RED".to_string(), 0)]));
        assert_eq!(t.named("__u32"), Some(&CType::Int { size: 4, signed: false, char: false, bool: false }));
        assert_eq!(t.map("nosuch"), None);
    }

    #[test]
    fn loops_and_depth_end_opaque() {
        // [1] typedef -> [2] const -> [1]
        let data = blob(&[1, btf::KIND_TYPEDEF << 24, 2, 0, btf::KIND_CONST << 24, 1], b"\0t\0");
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(describe(&btf, 1, 0), CType::Opaque { size: 0 });
        assert!(Types::from_object(b"not an elf").is_err());
    }
}
