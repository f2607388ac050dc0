//! Named shared memory for a map store: a region another process can map and read while the
//! dataplane runs. The only `unsafe` of the shared-memory backing lives here.
//!
//! A region is a file in `/dev/hugepages` (huge pages, when the hugetlbfs mount exists and pages
//! are reserved) or, failing that, a POSIX shared memory object (`shm_open`, i.e. `/dev/shm`),
//! sized with `ftruncate` and mapped `MAP_SHARED`. The creator unlinks the name when the region is
//! dropped; readers that still have it mapped keep their mapping.
//!
//! Invariants: the mapping is page-aligned, zero-filled at creation (`ftruncate` of a new file),
//! never moved or unmapped while the [`Region`] lives, and accessed only as `AtomicU64` words, so
//! two processes sharing it race only through atomics.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

const HUGE_PAGE: usize = 2 << 20;
const HUGETLBFS: &str = "/dev/hugepages";

/// A mapped shared region.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<AtomicU64>,
    bytes: usize,
    /// Where the name lives, to unlink it on drop (creators only).
    unlink: Option<Unlink>,
    huge: bool,
    _fd: OwnedFd,
}

#[derive(Debug)]
enum Unlink {
    Shm(CString),
    Path(std::path::PathBuf),
}

// SAFETY: the region is plain shared memory accessed only through `&AtomicU64`, which is `Sync`;
// the pointer is never handed out mutably and the mapping lives as long as the `Region`.
unsafe impl Send for Region {}
// SAFETY: as above: every access is an atomic operation on `AtomicU64`.
unsafe impl Sync for Region {}

fn shm_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "shared map store names are one path component",
        ));
    }
    CString::new(format!("/{name}")).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn map(fd: &OwnedFd, bytes: usize, writable: bool, huge: bool) -> io::Result<NonNull<AtomicU64>> {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    let flags = libc::MAP_SHARED | if huge { libc::MAP_HUGETLB } else { 0 };
    // SAFETY: a fresh mapping chosen by the kernel (no fixed address), of a file descriptor we
    // own, `bytes` long; nothing else is affected.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, flags, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<AtomicU64>()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

fn size_fd(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: `stat` is plain old data; fstat fills it for a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, exclusively borrowed `stat` buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(st.st_size).map_err(|_| io::Error::other("negative size"))
}

fn truncate(fd: &OwnedFd, bytes: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(bytes).map_err(|_| io::Error::other("region too large"))?;
    // SAFETY: ftruncate on a descriptor we own; it only sizes the file.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wraps a descriptor a libc call just returned.
fn own(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor, just returned to us and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Region {
    /// Creates region `name` of at least `bytes` zeroed bytes, replacing a stale one of that
    /// name. Tries huge pages first; the flag says whether it got them.
    pub(crate) fn create(name: &str, bytes: usize) -> io::Result<Region> {
        let cname = shm_name(name)?;
        if let Ok(region) = Self::create_huge(name, bytes) {
            return Ok(region);
        }
        let bytes = bytes.max(1).next_multiple_of(4096);
        // SAFETY: `cname` is a valid NUL-terminated string; a stale object may not exist.
        unsafe { libc::shm_unlink(cname.as_ptr()) };
        // SAFETY: as above; O_EXCL makes this a new object only we opened.
        let fd = own(unsafe {
            libc::shm_open(cname.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o644)
        })?;
        let unlink = Unlink::Shm(cname);
        let done = truncate(&fd, bytes).and_then(|()| map(&fd, bytes, true, false));
        match done {
            Ok(base) => Ok(Region { base, bytes, unlink: Some(unlink), huge: false, _fd: fd }),
            Err(e) => {
                do_unlink(&unlink);
                Err(e)
            }
        }
    }

    fn create_huge(name: &str, bytes: usize) -> io::Result<Region> {
        let path = std::path::Path::new(HUGETLBFS).join(name);
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
        let bytes = bytes.max(1).next_multiple_of(HUGE_PAGE);
        // SAFETY: `cpath` is a valid NUL-terminated path.
        unsafe { libc::unlink(cpath.as_ptr()) };
        // SAFETY: as above; O_EXCL makes this a new file only we opened.
        let fd =
            own(unsafe { libc::open(cpath.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o644) })?;
        let unlink = Unlink::Path(path);
        // hugetlbfs files are mapped with MAP_HUGETLB implied; without reserved pages the mmap
        // (or the first touch) fails, so touch every page now while a fallback is still possible.
        let done = truncate(&fd, bytes).and_then(|()| map(&fd, bytes, true, false));
        match done {
            Ok(base) => {
                let region = Region { base, bytes, unlink: Some(unlink), huge: true, _fd: fd };
                // Reserve now: MAP_POPULATE-like touch through atomics (zero stays zero).
                for page in (0..bytes).step_by(HUGE_PAGE) {
                    region.words()[page / 8].fetch_add(0, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(region)
            }
            Err(e) => {
                do_unlink(&unlink);
                Err(e)
            }
        }
    }

    /// Maps existing region `name` read-only (the huge-page file if there is one).
    pub(crate) fn open(name: &str) -> io::Result<Region> {
        let cname = shm_name(name)?;
        let path = std::path::Path::new(HUGETLBFS).join(name);
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
        // SAFETY: `cpath` is a valid NUL-terminated path; read-only open.
        let (fd, huge) = match own(unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY) }) {
            Ok(fd) => (fd, true),
            // SAFETY: `cname` is a valid NUL-terminated name; read-only open.
            Err(_) => (own(unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDONLY, 0) })?, false),
        };
        let bytes = size_fd(&fd)?;
        if bytes < 64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "region too small"));
        }
        let base = map(&fd, bytes, false, false)?;
        Ok(Region { base, bytes, unlink: None, huge, _fd: fd })
    }

    /// The whole region as words.
    #[inline]
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `base` is the start of a live mapping of `bytes` bytes (a page multiple, so a
        // multiple of 8), page-aligned so aligned for `AtomicU64`; the bytes are initialized (zero
        // or written through atomics); the slice borrows `self`, which keeps the mapping alive;
        // only shared references are ever made. Read-only mappings only ever see atomic loads,
        // which do not write on x86-64 and aarch64.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.bytes / 8) }
    }

    /// Whether the region is on huge pages.
    pub(crate) fn huge(&self) -> bool {
        self.huge
    }
}

fn do_unlink(u: &Unlink) {
    match u {
        // SAFETY: a valid NUL-terminated name; failure (already gone) is harmless.
        Unlink::Shm(name) => unsafe {
            libc::shm_unlink(name.as_ptr());
        },
        Unlink::Path(path) => drop(std::fs::remove_file(path)),
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this region made; no reference into it survives
        // `self` (every borrow of `words()` is tied to `&self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
        if let Some(u) = &self.unlink {
            do_unlink(u);
        }
    }
}
