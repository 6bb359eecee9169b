//! The system calls of the engine: full reads and writes, fdatasync, the O_DIRECT
//! reopen, the device's logical block size, and the pool of aligned, pre-faulted
//! buffers. The only `unsafe` of the copy path lives here.

use std::os::unix::io::RawFd;

use super::error::{errno, EngineError, Op};

// ---------------------------------------------------------------------------------------
// Small OS helpers

/// `pread` until `buf` is full. EINTR is retried; EOF before the end is an error.
pub fn pread_full(fd: RawFd, buf: &mut [u8], offset: u64) -> Result<(), EngineError> {
    let mut done = 0usize;
    while done < buf.len() {
        let off = offset + done as u64;
        let want = buf.len() - done;
        // SAFETY: the pointer/length pair is inside `buf`.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                want,
                off as libc::off_t,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(EngineError::new(Op::Read, fd, off, want as u64, e));
        }
        if n == 0 {
            return Err(EngineError::eof(fd, off, want as u64));
        }
        done += n as usize;
    }
    Ok(())
}

/// Write all of `buf` at `offset` through `write(chunk, offset) -> io::Result<usize>`,
/// looping on short writes and retrying EINTR. A write that returns 0 is an error (EIO).
/// On failure returns `(offset, length, errno)` of the failing call.
pub fn write_all_at<F>(mut write: F, buf: &[u8], offset: u64) -> Result<(), (u64, u64, i32)>
where
    F: FnMut(&[u8], u64) -> std::io::Result<usize>,
{
    let mut done = 0usize;
    while done < buf.len() {
        let off = offset + done as u64;
        let want = (buf.len() - done) as u64;
        match write(&buf[done..], off) {
            Ok(0) => return Err((off, want, libc::EIO)),
            Ok(n) => done += n.min(buf.len() - done),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((off, want, e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
    Ok(())
}

fn pwrite_fn(fd: RawFd) -> impl FnMut(&[u8], u64) -> std::io::Result<usize> {
    move |b: &[u8], off: u64| {
        // SAFETY: valid slice.
        let n = unsafe { libc::pwrite(fd, b.as_ptr().cast(), b.len(), off as libc::off_t) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

pub(crate) fn pwrite_all(
    fd: RawFd,
    report_fd: RawFd,
    buf: &[u8],
    offset: u64,
) -> Result<(), EngineError> {
    write_all_at(pwrite_fn(fd), buf, offset)
        .map_err(|(o, l, e)| EngineError::new(Op::Write, report_fd, o, l, e))
}

pub(crate) fn fdatasync(fd: RawFd) -> Result<(), EngineError> {
    loop {
        // SAFETY: plain syscall.
        if unsafe { libc::fdatasync(fd) } == 0 {
            return Ok(());
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(EngineError::new(Op::Flush, fd, 0, 0, e));
        }
    }
}

/// An owned descriptor closed on drop (the O_DIRECT reopen).
pub(crate) struct OwnedFd(pub(crate) RawFd);

impl Drop for OwnedFd {
    fn drop(&mut self) {
        // SAFETY: we own it.
        unsafe { libc::close(self.0) };
    }
}

/// Reopen `fd` through /proc/self/fd with O_DIRECT|O_RDWR (a new open file description).
/// Refused (EBADF) if `fd` itself is not open for writing, so the reopen never grants
/// more access than the caller's descriptor has.
pub(crate) fn open_direct(fd: RawFd) -> Result<OwnedFd, EngineError> {
    // SAFETY: plain fcntl.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(EngineError::new(Op::Open, fd, 0, 0, errno()));
    }
    if fl & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(EngineError::new(Op::Open, fd, 0, 0, libc::EBADF));
    }
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
    loop {
        // SAFETY: valid C string.
        let n = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC,
            )
        };
        if n >= 0 {
            return Ok(OwnedFd(n));
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(EngineError::new(Op::Open, fd, 0, 0, e));
        }
    }
}

/// Logical block size of `fd` if it is a block device (`BLKSSZGET`).
pub(crate) fn logical_block_size(fd: RawFd) -> Option<usize> {
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFBLK {
        return None;
    }
    const BLKSSZGET: libc::c_ulong = 0x1268;
    let mut n: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int.
    let r = unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut n as *mut libc::c_int) };
    (r == 0 && n > 0 && (n as usize).is_power_of_two()).then_some(n as usize)
}

// ---------------------------------------------------------------------------------------
// Buffer pool

/// Huge page size the pool aligns to: with transparent huge pages, O_DIRECT pins one
/// 2 MiB folio where it pinned 512 pages, and the copy into the buffers takes fewer TLB
/// misses. Where THP is off or the architecture's PMD size differs, only alignment is lost.
const HUGE: usize = 2 << 20;

/// `n` buffers of `size` bytes in one anonymous, pre-faulted mapping (page aligned;
/// 2 MiB aligned and backed by transparent huge pages where the kernel allows them).
pub(crate) struct Pool {
    map: *mut u8,
    map_len: usize,
    ptr: *mut u8,
    size: usize,
    pub(crate) n: usize,
}

// SAFETY: the pipeline hands each buffer index to one writer (the reader) at a time, and
// to readers only after it has been filled; the channels provide the happens-before.
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

impl Pool {
    pub(crate) fn new(n: usize, size: usize) -> std::io::Result<Pool> {
        let total = n
            .checked_mul(size)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        let huge = total >= HUGE;
        let map_len = if huge {
            total
                .checked_add(HUGE)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?
        } else {
            total
        };
        // SAFETY: anonymous private mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let map: *mut u8 = p.cast();
        let skip = if huge {
            (HUGE - (map as usize) % HUGE) % HUGE
        } else {
            0
        };
        // SAFETY: `skip + total <= map_len`.
        let ptr = unsafe { map.add(skip) };
        if huge {
            // SAFETY: a range of our mapping; advice only, its failure changes nothing.
            unsafe { libc::madvise(ptr.cast(), total, libc::MADV_HUGEPAGE) };
        }
        // Fault every page in now, not in the middle of the copy.
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        for off in (0..total).step_by(page) {
            // SAFETY: inside the mapping; volatile so the touch is not optimised away.
            unsafe { ptr.add(off).write_volatile(0) };
        }
        Ok(Pool {
            map,
            map_len,
            ptr,
            size,
            n,
        })
    }

    /// SAFETY: the caller must hold buffer `i` exclusively.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn buf_mut(&self, i: usize, len: usize) -> &mut [u8] {
        debug_assert!(i < self.n && len <= self.size);
        std::slice::from_raw_parts_mut(self.ptr.add(i * self.size), len)
    }

    /// SAFETY: nobody may write buffer `i` while the slice lives.
    pub(crate) unsafe fn buf(&self, i: usize, len: usize) -> &[u8] {
        debug_assert!(i < self.n && len <= self.size);
        std::slice::from_raw_parts(self.ptr.add(i * self.size), len)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_buffers_are_huge_page_aligned_writable_and_separate() {
        let size = 1 << 20;
        let pool = Pool::new(6, size).unwrap();
        // SAFETY: the test holds every buffer.
        let first = unsafe { pool.buf(0, size) }.as_ptr() as usize;
        assert_eq!(
            first % HUGE,
            0,
            "a pool of 6 MiB starts on a 2 MiB boundary"
        );
        for i in 0..pool.n {
            // SAFETY: one buffer at a time.
            let b = unsafe { pool.buf_mut(i, size) };
            assert!(b.iter().all(|&x| x == 0), "buffer {i} starts zeroed");
            b.fill(i as u8 + 1);
        }
        for i in 0..pool.n {
            // SAFETY: no writer.
            let b = unsafe { pool.buf(i, size) };
            assert!(
                b.iter().all(|&x| x == i as u8 + 1),
                "buffer {i} kept its bytes"
            );
        }
    }

    #[test]
    fn a_pool_too_large_for_the_address_space_is_enomem_not_a_wrapped_size() {
        // 3 x (2^64 / 3 rounded down to pages): the product fits in usize, the
        // alignment slack added to it would not
        let size = (usize::MAX / 3) & !4095;
        let err = Pool::new(3, size).err().expect("refused");
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
    }

    #[test]
    fn small_pools_are_page_aligned_only() {
        let pool = Pool::new(3, 8192).unwrap();
        // SAFETY: the test holds the buffer.
        let p = unsafe { pool.buf(2, 8192) }.as_ptr() as usize;
        assert_eq!(p % 4096, 0);
        assert_eq!(
            pool.map_len,
            3 * 8192,
            "no huge-page slack for a 24 KiB pool"
        );
    }
}
