//! Reading the source through `mmap` windows instead of `pread` (`--mmap`,
//! performance.md §2.2-2.3): one read-only `MAP_PRIVATE` window per chunk, at a
//! page-aligned offset, unmapped as soon as the chunk is written.
//!
//! * On `/proc/vmcore` this avoids the kernel's per-page read path; the mapping is
//!   `VM_PFNMAP`, so an O_DIRECT write from it fails with `EFAULT`: the chunk is copied
//!   into the pool buffer first (one memcpy, as with `pread`).
//! * On a regular file (a saved vmcore, the benchmark's input) the O_DIRECT write goes
//!   straight from the mapping: no copy at all in user space.
//! * Buffered writes always go straight from the mapping (the kernel copies it).
//!
//! The first `EFAULT` turns the direct-from-mapping attempt off for the rest of the
//! copy; the first failing `mmap` turns mapping off (back to `pread`). The bytes written
//! are the same in every mode.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::error::EngineError;

/// One read-only window of the source, mapped from the page that holds `src`.
pub(crate) struct Window {
    ptr: *mut libc::c_void,
    /// mapped bytes
    len: usize,
    /// where source byte `src` is in the mapping
    delta: usize,
}

// SAFETY: the window owns its read-only mapping; any thread may read it or unmap it
// (once, on drop).
unsafe impl Send for Window {}

impl Window {
    /// The window that covers source bytes [src, src + len), or None if it cannot be
    /// mapped.
    pub(crate) fn covering(fd: RawFd, src: u64, len: usize) -> Option<Window> {
        let page = page_size();
        let start = src / page * page;
        let delta = (src - start) as usize;
        // SAFETY: a new read-only private mapping; checked for failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                delta + len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                fd,
                start as libc::off_t,
            )
        };
        (p != libc::MAP_FAILED).then_some(Window {
            ptr: p,
            len: delta + len,
            delta,
        })
    }

    /// The source bytes asked for.
    pub(crate) fn data(&self) -> &[u8] {
        // SAFETY: inside the mapping, which lives as long as `self`. The caller has
        // checked that the range lies within the source file (no SIGBUS).
        unsafe {
            std::slice::from_raw_parts(self.ptr.cast::<u8>().add(self.delta), self.len - self.delta)
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The page size mappings are aligned to.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    }
}

/// Copy source bytes [src, src + buf.len()) into `buf` through a mapping; false if
/// the source cannot be mapped there (the caller reads it instead).
pub(crate) fn copy_via_map(fd: RawFd, src: u64, buf: &mut [u8]) -> bool {
    match Window::covering(fd, src, buf.len()) {
        Some(w) => {
            buf.copy_from_slice(w.data());
            true
        }
        None => false,
    }
}

/// How a chunk was handled.
pub(super) enum Chunk {
    /// already written to the destination (straight from the mapping)
    Written,
    /// copied into the caller's buffer: write that
    InBuffer,
    /// the mapping failed: read it with `pread`
    NotMapped,
}

/// Shared by the workers of one copy.
pub(super) struct MapSource {
    usable: AtomicBool,
    from_mapping: AtomicBool,
    /// chunks written with O_DIRECT straight from a mapping / otherwise from one
    pub(super) direct_from_map: AtomicU64,
    pub(super) via_map: AtomicU64,
}

impl MapSource {
    pub(super) fn new() -> MapSource {
        MapSource {
            usable: AtomicBool::new(true),
            from_mapping: AtomicBool::new(true),
            direct_from_map: AtomicU64::new(0),
            via_map: AtomicU64::new(0),
        }
    }

    /// How most chunks were read: "mmap-direct" (O_DIRECT from the mapping, never
    /// refused), "mmap" (through mappings; after an EFAULT, copied out of them) or
    /// "pread". Parallel workers may write a few chunks from a mapping before another
    /// one meets the EFAULT (on /proc/vmcore the notes, in vmalloc memory, can be
    /// pinned; the memory ranges cannot): an EFAULT seen means "mmap".
    pub(super) fn read_mode(&self) -> &'static str {
        let direct = self.direct_from_map.load(Ordering::Relaxed);
        let via = self.via_map.load(Ordering::Relaxed);
        if direct > 0 && self.from_mapping.load(Ordering::Relaxed) {
            "mmap-direct"
        } else if direct + via > 0 {
            "mmap"
        } else {
            "pread"
        }
    }

    /// Source bytes [src, src + buf.len()) of `fd`, for a write to come. `write` writes
    /// a slice to the destination; `direct` says whether it is an O_DIRECT write.
    pub(super) fn chunk(
        &self,
        fd: RawFd,
        src: u64,
        buf: &mut [u8],
        direct: bool,
        write: &mut dyn FnMut(&[u8]) -> Result<(), EngineError>,
    ) -> Result<Chunk, EngineError> {
        if !self.usable.load(Ordering::Relaxed) {
            return Ok(Chunk::NotMapped);
        }
        let Some(w) = Window::covering(fd, src, buf.len()) else {
            self.usable.store(false, Ordering::Relaxed);
            return Ok(Chunk::NotMapped);
        };
        let data = w.data();
        // A page-aligned mapping is aligned for O_DIRECT; anything else would fail with
        // EINVAL, which the caller reads as "O_DIRECT does not work here".
        let straight = !direct || (w.delta == 0 && self.from_mapping.load(Ordering::Relaxed));
        if straight {
            match write(data) {
                Ok(()) => {
                    let n = if direct {
                        &self.direct_from_map
                    } else {
                        &self.via_map
                    };
                    n.fetch_add(1, Ordering::Relaxed);
                    return Ok(Chunk::Written);
                }
                // a VM_PFNMAP mapping (/proc/vmcore): pages cannot be pinned
                Err(e) if direct && e.errno == libc::EFAULT => {
                    self.from_mapping.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        buf.copy_from_slice(data);
        self.via_map.fetch_add(1, Ordering::Relaxed);
        Ok(Chunk::InBuffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn chunks_come_from_the_mapping_at_any_offset() {
        let data = crate::engine::testdata::pseudo_random(3 * 4096 + 100, 7);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let ms = MapSource::new();
        for (src, len) in [(0usize, 4096usize), (4096 + 17, 5000), (100, 3 * 4096)] {
            let mut buf = vec![0u8; len];
            let mut got = Vec::new();
            // buffered: written straight from the mapping
            let r = ms
                .chunk(f.as_raw_fd(), src as u64, &mut buf, false, &mut |d| {
                    got = d.to_vec();
                    Ok(())
                })
                .unwrap();
            assert!(matches!(r, Chunk::Written));
            assert_eq!(got, &data[src..src + len]);
            // direct, and the write refuses the mapping's pages: copied into the buffer
            let r = ms
                .chunk(f.as_raw_fd(), src as u64, &mut buf, true, &mut |_| {
                    Err(EngineError::new(
                        super::super::error::Op::Write,
                        -1,
                        0,
                        0,
                        libc::EFAULT,
                    ))
                })
                .unwrap();
            assert!(matches!(r, Chunk::InBuffer));
            assert_eq!(buf, &data[src..src + len]);
        }
        assert_eq!(ms.direct_from_map.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unmappable_source_falls_back_to_pread() {
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe into a two-element array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        let ms = MapSource::new();
        let mut buf = vec![0u8; 4096];
        let got = ms.chunk(r, 0, &mut buf, true, &mut |_| Ok(())).unwrap();
        assert!(matches!(got, Chunk::NotMapped));
        // SAFETY: our descriptors.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }
}
