//! Storing frames: raw `.bin` files (one frame, the bytes as they are on the wire, no FCS) and
//! classic libpcap files; reading pcap files back.
//!
//! Written pcap files use the microsecond magic 0xa1b2c3d4 in little-endian byte order, version
//! 2.4, snap length 65535 and link type Ethernet (1). Record `i` is stamped `i` microseconds after
//! the epoch, so the same frames always give the same file. The reader accepts either byte order
//! and the nanosecond magic 0xa1b23c4d, and only Ethernet captures.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Magic number of classic pcap with microsecond timestamps.
pub const PCAP_MAGIC_USEC: u32 = 0xa1b2_c3d4;
/// Magic number of classic pcap with nanosecond timestamps.
pub const PCAP_MAGIC_NSEC: u32 = 0xa1b2_3c4d;
/// pcap link type for Ethernet II frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Snap length of written pcap files; longer frames are refused rather than cut.
pub const PCAP_SNAPLEN: u32 = 65535;

const FILE_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// Errors from writing or reading frame files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be created or written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A frame is longer than the snap length, so it cannot be stored whole.
    #[error("cannot write {}: frame {index} is {len} bytes, over the pcap snap length {PCAP_SNAPLEN}", path.display())]
    FrameTooLong { path: PathBuf, index: usize, len: usize },
    /// The file does not start with a classic pcap magic number.
    #[error("{} is not a classic pcap file (magic {magic:#010x})", path.display())]
    NotPcap { path: PathBuf, magic: u32 },
    /// The capture holds something other than Ethernet frames.
    #[error("{}: pcap link type {link_type} is not Ethernet ({LINKTYPE_ETHERNET})", path.display())]
    LinkType { path: PathBuf, link_type: u32 },
    /// The file ends inside a header or a record.
    #[error("{}: truncated pcap file, {what} at byte {offset} is cut short", path.display())]
    Truncated { path: PathBuf, what: &'static str, offset: usize },
}

/// Writes one frame as raw bytes, replacing the file if it exists.
///
/// # Errors
///
/// [`FileError::Write`] when the file cannot be created or written.
pub fn write_bin(path: impl AsRef<Path>, frame: &[u8]) -> Result<(), FileError> {
    let path = path.as_ref();
    fs::write(path, frame).map_err(|source| FileError::Write { path: path.to_owned(), source })
}

/// Writes frames as a classic little-endian microsecond pcap file, replacing the file if it
/// exists.
///
/// # Errors
///
/// [`FileError::FrameTooLong`] (before anything is written) when a frame exceeds
/// [`PCAP_SNAPLEN`], [`FileError::Write`] when the file cannot be created or written.
pub fn write_pcap<F: AsRef<[u8]>>(path: impl AsRef<Path>, frames: &[F]) -> Result<(), FileError> {
    let path = path.as_ref();
    let bytes = encode_pcap(frames).map_err(|(index, len)| FileError::FrameTooLong {
        path: path.to_owned(),
        index,
        len,
    })?;
    fs::write(path, bytes).map_err(|source| FileError::Write { path: path.to_owned(), source })
}

/// Reads every frame of a classic pcap file (either byte order, micro- or nanosecond
/// timestamps) whose link type is Ethernet. Timestamps and original lengths are dropped.
///
/// # Errors
///
/// [`FileError::Read`] when the file cannot be read, [`FileError::NotPcap`],
/// [`FileError::LinkType`] or [`FileError::Truncated`] when its contents are not such a capture.
pub fn read_pcap(path: impl AsRef<Path>) -> Result<Vec<Vec<u8>>, FileError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
    decode_pcap(&bytes, path)
}

/// The pcap file for `frames`, or `(index, len)` of the first frame over the snap length.
fn encode_pcap<F: AsRef<[u8]>>(frames: &[F]) -> Result<Vec<u8>, (usize, usize)> {
    let total: usize = frames.iter().map(|f| RECORD_HEADER_LEN + f.as_ref().len()).sum();
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + total);
    out.extend_from_slice(&PCAP_MAGIC_USEC.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // version major
    out.extend_from_slice(&4u16.to_le_bytes()); // version minor
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone: timestamps are UTC
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&PCAP_SNAPLEN.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (index, frame) in frames.iter().enumerate() {
        let frame = frame.as_ref();
        let len =
            u32::try_from(frame.len()).ok().filter(|&len| len <= PCAP_SNAPLEN).ok_or((index, frame.len()))?;
        // Timestamps wrap after 2^32 seconds' worth of records, far beyond any real file.
        let ts_sec = (index / 1_000_000) as u32;
        let ts_usec = (index % 1_000_000) as u32;
        for field in [ts_sec, ts_usec, len, len] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(frame);
    }
    Ok(out)
}

fn decode_pcap(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, FileError> {
    let truncated = |what, offset| FileError::Truncated { path: path.to_owned(), what, offset };
    let header = bytes.get(..FILE_HEADER_LEN).ok_or_else(|| {
        if bytes.len() < 4 {
            FileError::NotPcap { path: path.to_owned(), magic: 0 }
        } else {
            truncated("file header", 0)
        }
    })?;
    let magic_le = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let big_endian = match magic_le {
        PCAP_MAGIC_USEC | PCAP_MAGIC_NSEC => false,
        m if m.swap_bytes() == PCAP_MAGIC_USEC || m.swap_bytes() == PCAP_MAGIC_NSEC => true,
        magic => return Err(FileError::NotPcap { path: path.to_owned(), magic: magic.swap_bytes() }),
    };
    let u32_at = |b: &[u8], at: usize| {
        let raw = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if big_endian { u32::from_be_bytes(raw) } else { u32::from_le_bytes(raw) }
    };
    // The link type's upper 16 bits may carry FCS information (pcap-linktype(7)); ignore them.
    let link_type = u32_at(header, 20) & 0xffff;
    if link_type != LINKTYPE_ETHERNET {
        return Err(FileError::LinkType { path: path.to_owned(), link_type });
    }

    let mut frames = Vec::new();
    let mut offset = FILE_HEADER_LEN;
    while offset < bytes.len() {
        let record = bytes
            .get(offset..offset + RECORD_HEADER_LEN)
            .ok_or_else(|| truncated("record header", offset))?;
        let incl_len = u32_at(record, 8) as usize;
        let start = offset + RECORD_HEADER_LEN;
        let frame = bytes.get(start..start + incl_len).ok_or_else(|| truncated("record data", start))?;
        frames.push(frame.to_vec());
        offset = start + incl_len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{icmp_echo, test_frames};

    /// A fresh path under the system temp directory, unique per test and process.
    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pktgen-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// A pcap file byte for byte as libpcap would write it, in the given order and resolution.
    fn foreign_pcap(big_endian: bool, magic: u32, frames: &[&[u8]]) -> Vec<u8> {
        let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut out = vec![];
        out.extend_from_slice(&u32b(magic));
        out.extend_from_slice(&u16b(2));
        out.extend_from_slice(&u16b(4));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&u32b(262144));
        out.extend_from_slice(&u32b(1));
        for (i, f) in frames.iter().enumerate() {
            let len = f.len() as u32;
            for v in [1_700_000_000 + i as u32, 999_999_999, len, len + 4] {
                out.extend_from_slice(&u32b(v));
            }
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn bin_is_the_raw_frame() {
        let path = temp_path("icmp.bin");
        write_bin(&path, &icmp_echo()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), icmp_echo());
    }

    #[test]
    fn pcap_round_trips() {
        let frames: Vec<Vec<u8>> = test_frames().into_iter().map(|(_, f)| f).collect();
        let path = temp_path("table.pcap");
        write_pcap(&path, &frames).unwrap();
        assert_eq!(read_pcap(&path).unwrap(), frames);
        let empty: [&[u8]; 0] = [];
        write_pcap(&path, &empty).unwrap();
        assert_eq!(fs::read(&path).unwrap().len(), FILE_HEADER_LEN);
        assert!(read_pcap(&path).unwrap().is_empty());
    }

    #[test]
    fn pcap_layout_is_classic_little_endian() {
        let bytes = encode_pcap(&[icmp_echo(), icmp_echo()]).unwrap();
        let expected_header: [u8; 24] =
            [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0];
        assert_eq!(bytes[..24], expected_header);
        assert_eq!(bytes[24..40], [0, 0, 0, 0, 0, 0, 0, 0, 98, 0, 0, 0, 98, 0, 0, 0]);
        assert_eq!(bytes[40..138], icmp_echo());
        assert_eq!(bytes[138..154], [0, 0, 0, 0, 1, 0, 0, 0, 98, 0, 0, 0, 98, 0, 0, 0]);
        assert_eq!(bytes.len(), 24 + 2 * (16 + 98));
    }

    #[test]
    fn reads_both_byte_orders_and_nanosecond_files() {
        let frames: [&[u8]; 3] = [&icmp_echo(), &[], &[1, 2, 3]];
        for big_endian in [false, true] {
            for magic in [PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC] {
                let bytes = foreign_pcap(big_endian, magic, &frames);
                let got = decode_pcap(&bytes, Path::new("x.pcap")).unwrap();
                assert_eq!(got, frames, "big_endian={big_endian} magic={magic:#x}");
            }
        }
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let p = Path::new("capture.pcap");
        let err = decode_pcap(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", p).unwrap_err();
        assert_eq!(err.to_string(), "capture.pcap is not a classic pcap file (magic 0x7f454c46)");
        assert!(matches!(decode_pcap(b"", p), Err(FileError::NotPcap { .. })));

        let good = foreign_pcap(false, PCAP_MAGIC_USEC, &[&icmp_echo()]);
        let err = decode_pcap(&good[..10], p).unwrap_err();
        assert_eq!(err.to_string(), "capture.pcap: truncated pcap file, file header at byte 0 is cut short");
        let err = decode_pcap(&good[..30], p).unwrap_err();
        assert!(matches!(err, FileError::Truncated { what: "record header", offset: 24, .. }), "{err}");
        let err = decode_pcap(&good[..good.len() - 1], p).unwrap_err();
        assert!(matches!(err, FileError::Truncated { what: "record data", offset: 40, .. }), "{err}");

        let mut raw_ip = good.clone();
        raw_ip[20] = 101; // LINKTYPE_RAW
        let err = decode_pcap(&raw_ip, p).unwrap_err();
        assert_eq!(err.to_string(), "capture.pcap: pcap link type 101 is not Ethernet (1)");

        let missing = temp_path("missing-dir").join("no.pcap");
        let err = read_pcap(&missing).unwrap_err();
        assert!(matches!(err, FileError::Read { .. }));
        assert!(err.to_string().starts_with("cannot read ") && err.to_string().ends_with("no.pcap"));
        let err = write_bin(&missing, &[1]).unwrap_err();
        assert!(matches!(err, FileError::Write { .. }) && err.to_string().ends_with("no.pcap"));
    }

    #[test]
    fn frames_over_the_snap_length_are_refused() {
        let path = temp_path("big.pcap");
        let frames = [vec![0u8; 10], vec![0u8; PCAP_SNAPLEN as usize + 1]];
        let err = write_pcap(&path, &frames).unwrap_err();
        assert!(matches!(err, FileError::FrameTooLong { index: 1, len: 65536, .. }), "{err}");
        assert!(!path.exists(), "nothing written");
    }
}
