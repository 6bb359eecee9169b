//! Linux native AIO (`io_setup`/`io_submit`/`io_getevents`), just enough for `O_DIRECT`
//! writes kept in flight by one thread. The raw system calls, no libaio needed.
//!
//! Why: `fio --ioengine=psync --numjobs=4` (threads with synchronous writes, our default)
//! measured 0.86x of `--ioengine=libaio --iodepth=4` on the loop device here (median of
//! 5 rounds), so one thread with writes in flight, in order, was tried. In the capture
//! itself it measured no faster than the threads (see `IoEngine`), so it is opt-in.
//! Why not io_uring: with `O_DIRECT` writes to these devices fio measured it no faster
//! than AIO, and AIO needs no crate and is not switched off by io_uring_disabled.

use std::io;

const IOCB_CMD_PWRITE: u16 = 1;

/// `struct iocb` of linux/aio_abi.h.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Iocb {
    aio_data: u64,
    #[cfg(target_endian = "little")]
    aio_key: u32,
    #[cfg(target_endian = "little")]
    aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    aio_key: u32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of linux/aio_abi.h.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// One finished request: the caller's tag and the kernel's result (bytes written, or a
/// negative errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    pub res: i64,
}

/// An AIO context for up to `depth` requests in flight.
pub struct Aio {
    ctx: libc::c_ulong,
    depth: usize,
    inflight: usize,
    events: Vec<IoEvent>,
}

impl Aio {
    /// `io_setup`. Fails where the kernel has no AIO (ENOSYS), where a seccomp policy
    /// forbids it (EPERM) or where fs.aio-max-nr is used up (EAGAIN): callers fall back.
    pub fn new(depth: usize) -> io::Result<Aio> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the context id into `ctx`.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, depth as libc::c_long, &mut ctx) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Aio {
            ctx,
            depth,
            inflight: 0,
            events: vec![IoEvent::default(); depth],
        })
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Queue one `pwrite(fd, ptr, len, offset)`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay valid and unchanged until this request's completion has
    /// been returned by [`Aio::wait`] (or the context is dropped, which waits for it).
    pub unsafe fn submit_write(
        &mut self,
        fd: i32,
        ptr: *const u8,
        len: usize,
        offset: u64,
        tag: u64,
    ) -> io::Result<()> {
        if self.inflight >= self.depth {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let mut cb = Iocb {
            aio_data: tag,
            aio_lio_opcode: IOCB_CMD_PWRITE,
            aio_fildes: fd as u32,
            aio_buf: ptr as u64,
            aio_nbytes: len as u64,
            aio_offset: offset as i64,
            ..Default::default()
        };
        let mut list = [&mut cb as *mut Iocb];
        loop {
            // SAFETY: one valid iocb; the kernel copies it during the call.
            let r = libc::syscall(
                libc::SYS_io_submit,
                self.ctx,
                1 as libc::c_long,
                list.as_mut_ptr(),
            );
            if r == 1 {
                self.inflight += 1;
                return Ok(());
            }
            let e = if r < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::from_raw_os_error(libc::EAGAIN)
            };
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }

    /// Wait for at least one completion (none if nothing is in flight) and return all
    /// that are ready. EINTR is retried.
    pub fn wait(&mut self) -> io::Result<Vec<Completion>> {
        if self.inflight == 0 {
            return Ok(Vec::new());
        }
        loop {
            // SAFETY: `events` has room for `depth` entries.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    1 as libc::c_long,
                    self.events.len() as libc::c_long,
                    self.events.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            let n = r as usize;
            self.inflight -= n;
            return Ok(self.events[..n]
                .iter()
                .map(|e| Completion {
                    tag: e.data,
                    res: e.res,
                })
                .collect());
        }
    }
}

/// `io_destroy`, which returns only after an RCU grace period (34–40 ms per capture
/// on the machine here: a seventh of a 1 GiB compressed capture to the loop device).
fn destroy(ctx: libc::c_ulong) {
    // SAFETY: a context of ours, used by nothing else any more.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
}

impl Drop for Aio {
    fn drop(&mut self) {
        // Requests still in flight (only after an error in io_getevents) are waited for
        // by io_destroy, so no buffer is freed while the kernel may still read it.
        // With none in flight the kernel holds no buffer of ours: the grace period is
        // waited out on a thread of its own, off the capture's time.
        let ctx = self.ctx;
        if self.inflight == 0
            && std::thread::Builder::new()
                .name("aio-destroy".into())
                .stack_size(64 << 10) // one system call; a dump kernel has little memory
                .spawn(move || destroy(ctx))
                .is_ok()
        {
            return;
        }
        destroy(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn iocb_and_event_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<Iocb>(), 64);
        assert_eq!(std::mem::size_of::<IoEvent>(), 32);
    }

    /// `Aio::new`, or None where the kernel has no AIO (qemu-user answers ENOSYS: the
    /// s390x cross tests run there), said on stderr
    pub(crate) fn aio_or_skip(depth: usize) -> Option<Aio> {
        match Aio::new(depth) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                eprintln!("skipped: no Linux AIO here ({e})");
                None
            }
            r => Some(r.expect("io_setup")),
        }
    }

    #[test]
    fn writes_land_and_complete_with_their_tags() {
        let mut f = tempfile::tempfile().unwrap();
        let Some(mut aio) = aio_or_skip(4) else {
            return;
        };
        let bufs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 4096]).collect();
        for (i, b) in bufs.iter().enumerate() {
            // SAFETY: `bufs` outlives the waits below.
            unsafe {
                aio.submit_write(
                    f.as_raw_fd(),
                    b.as_ptr(),
                    b.len(),
                    i as u64 * 4096,
                    10 + i as u64,
                )
                .unwrap()
            };
        }
        let mut tags = Vec::new();
        while aio.inflight() > 0 {
            for c in aio.wait().unwrap() {
                assert_eq!(c.res, 4096);
                tags.push(c.tag);
            }
        }
        tags.sort();
        assert_eq!(tags, vec![10, 11, 12]);
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, bufs.concat());
    }

    #[test]
    fn a_bad_descriptor_is_reported() {
        let Some(mut aio) = aio_or_skip(1) else {
            return;
        };
        let b = [0u8; 512];
        // SAFETY: `b` outlives the call; the request is refused at submission.
        let e = unsafe { aio.submit_write(-1, b.as_ptr(), b.len(), 0, 1) }.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert_eq!(aio.inflight(), 0);
    }
}
