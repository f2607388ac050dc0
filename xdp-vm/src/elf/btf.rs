//! The `.BTF` section: just enough of the type graph to read map definitions and data sections.
//!
//! Invariant: every type the parser returns lies wholly inside the section (kind-specific trailing
//! records included), so accessors only fail on dangling ids or string offsets. Nothing is allocated
//! from a count read out of the file: the type table grows one checked record at a time, and every
//! walk along `type` links is bounded by [`MAX_DEPTH`].

/// BTF's magic number, as the first two bytes of the header read little-endian.
const BTF_MAGIC: u16 = 0xeb9f;
/// Size of one fixed type record (`struct btf_type`).
const TYPE_SIZE: usize = 12;
/// How many `type` links a resolution follows before calling the graph a loop (the kernel allows 32).
const MAX_DEPTH: usize = 32;

pub(crate) const KIND_INT: u32 = 1;
pub(crate) const KIND_PTR: u32 = 2;
pub(crate) const KIND_ARRAY: u32 = 3;
pub(crate) const KIND_STRUCT: u32 = 4;
pub(crate) const KIND_UNION: u32 = 5;
pub(crate) const KIND_ENUM: u32 = 6;
pub(crate) const KIND_FWD: u32 = 7;
pub(crate) const KIND_TYPEDEF: u32 = 8;
pub(crate) const KIND_VOLATILE: u32 = 9;
pub(crate) const KIND_CONST: u32 = 10;
pub(crate) const KIND_RESTRICT: u32 = 11;
pub(crate) const KIND_FUNC: u32 = 12;
pub(crate) const KIND_FUNC_PROTO: u32 = 13;
pub(crate) const KIND_VAR: u32 = 14;
pub(crate) const KIND_DATASEC: u32 = 15;
pub(crate) const KIND_FLOAT: u32 = 16;
pub(crate) const KIND_DECL_TAG: u32 = 17;
pub(crate) const KIND_TYPE_TAG: u32 = 18;
pub(crate) const KIND_ENUM64: u32 = 19;

/// What can be wrong with a `.BTF` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("bad header: {reason}")]
    BadHeader { reason: &'static str },
    #[error("type {id} is cut short")]
    TruncatedType { id: u32 },
    #[error("type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("no type with id {id}")]
    NoSuchType { id: u32 },
    #[error("string offset {offset} is outside the string section or not a printable utf-8 name")]
    BadString { offset: u32 },
    #[error("type {id} does not resolve within {MAX_DEPTH} links")]
    TypeLoop { id: u32 },
    #[error("type {id} has no size")]
    NoSize { id: u32 },
}

/// One type record and its kind-specific trailing data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Type<'a> {
    pub id: u32,
    name_off: u32,
    info: u32,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT, else the referenced `type`.
    size_or_type: u32,
    extra: &'a [u8],
}

impl Type<'_> {
    pub(crate) fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
    /// The referenced type of PTR, TYPEDEF, modifiers, VAR, FUNC.
    pub(crate) fn target(&self) -> u32 {
        self.size_or_type
    }
    pub(crate) fn size(&self) -> u32 {
        self.size_or_type
    }
    fn word(&self, i: usize) -> u32 {
        // The parser sized `extra` for the kind, so in-range reads always succeed; a miss reads 0.
        self.extra.get(i * 4..i * 4 + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// ARRAY: (element type, number of elements).
    pub(crate) fn array(&self) -> (u32, u32) {
        (self.word(0), self.word(2))
    }
    /// STRUCT/UNION members: (name offset, type, offset in bytes).
    pub(crate) fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let bitfield = self.kind_flag();
        (0..self.vlen()).map(move |i| {
            let raw = self.word(i * 3 + 2);
            let bits = if bitfield { raw & 0x00ff_ffff } else { raw };
            Member { name_off: self.word(i * 3), ty: self.word(i * 3 + 1), offset: bits / 8 }
        })
    }
    /// DATASEC entries: (VAR type, offset, size).
    pub(crate) fn datasec_vars(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        (0..self.vlen()).map(move |i| (self.word(i * 3), self.word(i * 3 + 1), self.word(i * 3 + 2)))
    }
    /// INT: (encoding bits — 1 signed, 2 char, 4 bool —, number of bits).
    pub(crate) fn int_info(&self) -> (u32, u32) {
        let w = self.word(0);
        ((w >> 24) & 0xf, w & 0xff)
    }
    /// STRUCT/UNION members with bit precision: (name offset, type, bit offset, bitfield size
    /// or 0).
    pub(crate) fn member_bits(&self) -> impl Iterator<Item = (u32, u32, u32, u32)> + '_ {
        let bitfield = self.kind_flag();
        (0..self.vlen()).map(move |i| {
            let raw = self.word(i * 3 + 2);
            let (off, size) = if bitfield { (raw & 0x00ff_ffff, raw >> 24) } else { (raw, 0) };
            (self.word(i * 3), self.word(i * 3 + 1), off, size)
        })
    }
    /// ENUM / ENUM64 values: (name offset, value), and whether they are signed.
    pub(crate) fn enum_values(&self) -> (Vec<(u32, i64)>, bool) {
        let signed = self.kind_flag();
        let vals = (0..self.vlen())
            .map(|i| {
                if self.kind() == KIND_ENUM64 {
                    let v = u64::from(self.word(i * 3 + 1)) | (u64::from(self.word(i * 3 + 2)) << 32);
                    (self.word(i * 3), v as i64)
                } else {
                    let v = self.word(i * 2 + 1);
                    (self.word(i * 2), if signed { i64::from(v as i32) } else { i64::from(v) })
                }
            })
            .collect();
        (vals, signed)
    }
}

/// One member of a STRUCT or UNION.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub name_off: u32,
    pub ty: u32,
    /// Byte offset (bit offset / 8).
    pub offset: u32,
}

/// A parsed `.BTF` section borrowing the object's bytes.
#[derive(Debug)]
pub(crate) struct Btf<'a> {
    /// `types[i]` has id `i + 1`; id 0 is `void`.
    types: Vec<Type<'a>>,
    strings: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn region(data: &[u8], base: usize, off: u32, len: u32) -> Option<&[u8]> {
    let start = base.checked_add(off as usize)?;
    data.get(start..start.checked_add(len as usize)?)
}

impl<'a> Btf<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let bad = |reason| BtfError::BadHeader { reason };
        if data.len() < 24 {
            return Err(bad("shorter than the 24-byte header"));
        }
        if u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(bad("wrong magic (or not little-endian)"));
        }
        if data[2] != 1 {
            return Err(bad("unsupported version"));
        }
        let field = |i: usize| u32_at(data, 4 + 4 * i).unwrap_or(0);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0), field(1), field(2), field(3), field(4));
        if (hdr_len as usize) < 24 {
            return Err(bad("header length below 24"));
        }
        let base = hdr_len as usize;
        let type_sec = region(data, base, type_off, type_len).ok_or(bad("type section outside the data"))?;
        let strings = region(data, base, str_off, str_len).ok_or(bad("string section outside the data"))?;
        if strings.first().is_some_and(|&b| b != 0) {
            return Err(bad("string section does not start with an empty string"));
        }

        let mut types = Vec::new();
        let mut rest = type_sec;
        while !rest.is_empty() {
            let id = u32::try_from(types.len() + 1).map_err(|_| bad("too many types"))?;
            let truncated = BtfError::TruncatedType { id };
            let head = rest.get(..TYPE_SIZE).ok_or(truncated.clone())?;
            let word = |i: usize| u32_at(head, i * 4).unwrap_or(0);
            let (name_off, info, size_or_type) = (word(0), word(1), word(2));
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                _ => return Err(BtfError::UnknownKind { id, kind }),
            };
            let extra = rest.get(TYPE_SIZE..TYPE_SIZE + extra_len).ok_or(truncated)?;
            types.push(Type { id, name_off, info, size_or_type, extra });
            rest = &rest[TYPE_SIZE + extra_len..];
        }
        Ok(Self { types, strings })
    }

    /// The type with this id (`void`, id 0, has no record).
    pub(crate) fn get(&self, id: u32) -> Result<&Type<'a>, BtfError> {
        (id as usize).checked_sub(1).and_then(|i| self.types.get(i)).ok_or(BtfError::NoSuchType { id })
    }

    pub(crate) fn str_at(&self, offset: u32) -> Result<&'a str, BtfError> {
        let tail = self.strings.get(offset as usize..).ok_or(BtfError::BadString { offset })?;
        let end = tail.iter().position(|&b| b == 0).ok_or(BtfError::BadString { offset })?;
        // Names are C identifiers and section names: control characters only come from corruption.
        std::str::from_utf8(&tail[..end])
            .ok()
            .filter(|s| !s.chars().any(char::is_control))
            .ok_or(BtfError::BadString { offset })
    }

    /// A string as text to show (source lines from `.BTF.ext`): control characters, such as
    /// the tabs of indented C, become spaces; `None` when the offset is bad.
    pub(crate) fn text_at(&self, offset: u32) -> Option<String> {
        let tail = self.strings.get(offset as usize..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&tail[..end]);
        Some(s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
    }

    pub(crate) fn name(&self, ty: &Type<'_>) -> Result<&'a str, BtfError> {
        self.str_at(ty.name_off)
    }

    /// Follows typedefs and modifiers (const, volatile, restrict, type tags) to the real type.
    pub(crate) fn skip_mods(&self, id: u32) -> Result<&Type<'a>, BtfError> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let ty = self.get(cur)?;
            match ty.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    cur = ty.target()
                }
                _ => return Ok(ty),
            }
        }
        Err(BtfError::TypeLoop { id })
    }

    /// The size in bytes of a value of this type, as `sizeof` would give it.
    pub(crate) fn size_of(&self, id: u32) -> Result<u64, BtfError> {
        let mut cur = id;
        let mut scale: u64 = 1;
        for _ in 0..MAX_DEPTH {
            let ty = self.get(cur)?;
            match ty.kind() {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT | KIND_DATASEC => {
                    return scale.checked_mul(u64::from(ty.size())).ok_or(BtfError::NoSize { id });
                }
                KIND_PTR => return scale.checked_mul(8).ok_or(BtfError::NoSize { id }),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG | KIND_VAR => {
                    cur = ty.target();
                }
                KIND_ARRAY => {
                    let (elem, nelems) = ty.array();
                    scale = scale.checked_mul(u64::from(nelems)).ok_or(BtfError::NoSize { id })?;
                    cur = elem;
                }
                _ => return Err(BtfError::NoSize { id }),
            }
        }
        Err(BtfError::TypeLoop { id })
    }

    /// Every type record, in id order.
    pub(crate) fn types(&self) -> &[Type<'a>] {
        &self.types
    }

    /// The DATASEC with this name, if any.
    pub(crate) fn datasec(&self, name: &str) -> Option<&Type<'a>> {
        self.types.iter().find(|t| t.kind() == KIND_DATASEC && self.name(t).is_ok_and(|n| n == name))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob from raw type words and a string table.
    pub(crate) fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_len = u32::try_from(types.len() * 4).unwrap();
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, type_len, type_len, u32::try_from(strings.len()).unwrap()] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for w in types {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(strings);
        b
    }

    const STRINGS: &[u8] = b"\0int\0pair\0a\0b\0";

    #[test]
    fn resolves_sizes_through_typedefs_and_arrays() {
        let types = [
            1,
            KIND_INT << 24,
            4,
            0x20, // [1] int, 4 bytes
            0,
            KIND_ARRAY << 24,
            0,
            1,
            1,
            6, // [2] int[6]
            0,
            KIND_CONST << 24,
            2, // [3] const int[6]
            5,
            (KIND_STRUCT << 24) | 2,
            8,
            7,
            1,
            0,
            9,
            1,
            32, // [4] struct pair { int a; int b; }
            0,
            KIND_PTR << 24,
            4, // [5] struct pair *
        ];
        let data = blob(&types, STRINGS);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.size_of(1), Ok(4));
        assert_eq!(btf.size_of(3), Ok(24));
        assert_eq!(btf.size_of(4), Ok(8));
        assert_eq!(btf.size_of(5), Ok(8));
        let pair = btf.get(4).unwrap();
        assert_eq!(btf.name(pair), Ok("pair"));
        let offsets: Vec<u32> = pair.members().map(|m| m.offset).collect();
        assert_eq!(offsets, [0, 4]);
        assert_eq!(btf.get(6).unwrap_err(), BtfError::NoSuchType { id: 6 });
    }

    #[test]
    fn rejects_loops_and_huge_counts_without_allocating() {
        // [1] typedef -> [2] const -> [1]
        let data = blob(&[0, KIND_TYPEDEF << 24, 2, 0, KIND_CONST << 24, 1], STRINGS);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.size_of(1), Err(BtfError::TypeLoop { id: 1 }));
        assert_eq!(btf.skip_mods(2).unwrap_err(), BtfError::TypeLoop { id: 2 });

        // A struct claiming 65535 members in a 12-byte record.
        let data = blob(&[0, (KIND_STRUCT << 24) | 0xffff, 8], STRINGS);
        assert_eq!(Btf::parse(&data).unwrap_err(), BtfError::TruncatedType { id: 1 });

        // Section lengths far past the end.
        let mut data = blob(&[], STRINGS);
        data[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Btf::parse(&data), Err(BtfError::BadHeader { .. })));

        // An array of 2^32-1 arrays of 2^32-1 ints: size overflows instead of wrapping.
        let types = [
            1,
            KIND_INT << 24,
            4,
            0x20,
            0,
            KIND_ARRAY << 24,
            0,
            1,
            1,
            u32::MAX,
            0,
            KIND_ARRAY << 24,
            0,
            2,
            1,
            u32::MAX,
            0,
            KIND_ARRAY << 24,
            0,
            3,
            1,
            u32::MAX,
        ];
        let data = blob(&types, STRINGS);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.size_of(4), Err(BtfError::NoSize { id: 4 }));
    }

    #[test]
    fn rejects_bad_strings_and_kinds() {
        let data = blob(&[99, KIND_INT << 24, 4, 0x20], STRINGS);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.name(btf.get(1).unwrap()), Err(BtfError::BadString { offset: 99 }));
        let data = blob(&[0, 31 << 24, 0], STRINGS);
        assert_eq!(Btf::parse(&data).unwrap_err(), BtfError::UnknownKind { id: 1, kind: 31 });
        assert!(Btf::parse(b"\x9f\xeb\x01\x00").is_err());
    }
}
