//! Source line info from `.BTF.ext`: which C line each instruction came from, for the messages a
//! user reads first (verifier errors).
//!
//! Layout (`struct btf_ext_header`, then the line-info block): a header with the offsets of the
//! func-info and line-info blocks relative to its end; the line-info block is a record size,
//! then per section its name (a `.BTF` string), a count and that many
//! `{insn_off (bytes), file_name_off, line_off, line_col}` records. Anything malformed yields no
//! line info rather than an error: it is a diagnostic aid, never needed to run.

use std::collections::HashMap;

use super::btf::Btf;

/// Where an instruction came from in the C source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The source line itself, as clang recorded it ("" when absent).
    pub text: String,
}

/// One line-info record of a linked program: from instruction `insn` on, until the next record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo {
    pub insn: usize,
    pub line: SourceLine,
}

/// The source line of instruction `insn`: the last record at or before it.
#[must_use]
pub fn line_for(lines: &[LineInfo], insn: usize) -> Option<SourceLine> {
    let i = lines.partition_point(|l| l.insn <= insn);
    i.checked_sub(1).map(|i| lines[i].line.clone())
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Line records by section name, each `(instruction index in the section, line)`, sorted.
pub(super) fn parse(ext: &[u8], btf: &Btf<'_>) -> HashMap<String, Vec<(usize, SourceLine)>> {
    parse_inner(ext, btf).unwrap_or_default()
}

fn parse_inner(ext: &[u8], btf: &Btf<'_>) -> Option<HashMap<String, Vec<(usize, SourceLine)>>> {
    if ext.get(..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = u32_at(ext, 4)? as usize;
    let line_off = u32_at(ext, 16)? as usize;
    let line_len = u32_at(ext, 20)? as usize;
    let start = hdr_len.checked_add(line_off)?;
    let block = ext.get(start..start.checked_add(line_len)?)?;
    let rec_size = u32_at(block, 0)? as usize;
    if rec_size < 16 {
        return None;
    }
    let mut out: HashMap<String, Vec<(usize, SourceLine)>> = HashMap::new();
    let mut pos = 4;
    while pos + 8 <= block.len() {
        let sec = btf.text_at(u32_at(block, pos)?)?;
        let n = u32_at(block, pos + 4)? as usize;
        pos += 8;
        let recs = out.entry(sec).or_default();
        for _ in 0..n {
            let r = block.get(pos..pos.checked_add(rec_size)?)?;
            let insn = u32_at(r, 0)? as usize / 8;
            let file = btf.text_at(u32_at(r, 4)?).unwrap_or_default();
            let text = btf.text_at(u32_at(r, 8)?).unwrap_or_default();
            let line_col = u32_at(r, 12)?;
            recs.push((insn, SourceLine { file, line: line_col >> 10, column: line_col & 0x3ff, text }));
            pos += rec_size;
        }
        recs.sort_by_key(|(i, _)| *i);
    }
    Some(out)
}
