//! The one-thread submission loop of `copy_ranges` (O_DIRECT, no digests): read the
//! next chunk into a free pool buffer, queue its write with native AIO, keep up to
//! `queue_depth` writes in flight, and reuse a buffer when its write has completed.
//! Writes reach the device in range order, as from `fio --ioengine=libaio`.
//!
//! Every buffer handed to the kernel is waited for before this function returns, also
//! after an error or a cancel, so the pool is never freed under a pending write.

use std::sync::atomic::Ordering;

use super::aio::{Aio, Completion};
use super::copy::{read_edge, write_failed, Cursor, Edge, Piece, Pipe, Shared};
use super::device::{pread_full, Pool};
use super::error::{CopyError, EngineError, Op};

/// A write in flight: the piece it belongs to, where it goes, how much is done.
#[derive(Clone, Copy)]
struct Pending {
    seq: usize,
    dst: u64,
    len: usize,
    written: usize,
}

struct Loop<'p> {
    fd: i32,
    report_fd: i32,
    auto_direct: bool,
    pool: &'p Pool,
    sh: &'p Shared,
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
}

impl Loop<'_> {
    /// Queue (the rest of) buffer `buf`'s write.
    fn submit(&mut self, aio: &mut Aio, buf: usize, p: Pending) -> Result<(), CopyError> {
        // SAFETY: the buffer stays owned by this loop (in `slots`) until its completion.
        let data = unsafe { self.pool.buf(buf, p.len) };
        let rest = &data[p.written..];
        let off = p.dst + p.written as u64;
        // SAFETY: see above; the pool outlives the AIO context (copy_ranges drops it first).
        unsafe { aio.submit_write(self.fd, rest.as_ptr(), rest.len(), off, buf as u64) }.map_err(
            |e| self.write_error(off, rest.len(), e.raw_os_error().unwrap_or(libc::EIO)),
        )?;
        self.slots[buf] = Some(p);
        Ok(())
    }

    fn write_error(&self, off: u64, len: usize, errno: i32) -> CopyError {
        let e = EngineError::new(Op::Write, self.report_fd, off, len as u64, errno);
        write_failed(e, self.auto_direct)
    }

    /// Wait for completions; free finished buffers, requeue short writes, record errors.
    fn reap(&mut self, aio: &mut Aio) {
        let done = match aio.wait() {
            Ok(d) => d,
            Err(e) => {
                // Nothing more can be learnt about what is in flight; dropping the
                // context (io_destroy) waits for it.
                self.sh.fail(CopyError::Os(e));
                return;
            }
        };
        for Completion { tag, res } in done {
            let buf = tag as usize;
            let Some(mut p) = self.slots[buf].take() else {
                continue;
            };
            let off = p.dst + p.written as u64;
            let want = p.len - p.written;
            let failed = if res < 0 {
                Some(self.write_error(off, want, (-res) as i32))
            } else if res == 0 {
                Some(self.write_error(off, want, libc::EIO))
            } else if (res as usize) < want && !self.sh.stopped() {
                p.written += res as usize; // short write: queue the rest
                match self.submit(aio, buf, p) {
                    Ok(()) => continue,
                    Err(e) => Some(e),
                }
            } else {
                if res as usize >= want {
                    self.sh.done.fetch_add(p.len as u64, Ordering::Relaxed);
                }
                None
            };
            if let Some(e) = failed {
                self.sh.fail_at(p.seq, e);
            }
            self.free.push(buf);
        }
    }
}

impl Pipe<'_> {
    /// The submission loop; returns the edge blocks (in range order) for the end.
    pub(super) fn aio_loop(&self, pool: &Pool, aio: &mut Aio, sh: &Shared) -> Vec<Edge> {
        let (fd, report_fd) = self.dst.expect("the AIO loop writes");
        let depth = aio.depth().min(pool.n).max(1);
        let mut lp = Loop {
            fd,
            report_fd,
            auto_direct: self.auto_direct,
            pool,
            sh,
            slots: vec![None; pool.n],
            free: (0..pool.n).rev().collect(),
        };
        let mut edges = Vec::new();
        for (i, piece) in Cursor::new(self.ranges, self.align, self.bufsize).enumerate() {
            let seq = i + 1; // 0 is the coordinator's cancel
            if sh.stopped() {
                break;
            }
            match piece {
                Piece::Edge { src, dst, len } => match read_edge(self.src_fd, src, dst, len) {
                    Ok(e) => edges.push(e),
                    Err(e) => {
                        sh.fail_at(seq, e.into());
                        break;
                    }
                },
                Piece::Chunk { src, dst, len } => {
                    while (lp.free.is_empty() || aio.inflight() >= depth) && !sh.stopped() {
                        lp.reap(aio);
                    }
                    if sh.stopped() {
                        break;
                    }
                    let Some(buf) = lp.free.pop() else { break };
                    // SAFETY: a free buffer: no write of it is in flight.
                    let slice = unsafe { pool.buf_mut(buf, len) };
                    let queued = pread_full(self.src_fd, slice, src)
                        .map_err(CopyError::from)
                        .and_then(|()| {
                            let p = Pending {
                                seq,
                                dst,
                                len,
                                written: 0,
                            };
                            lp.submit(aio, buf, p)
                        });
                    if let Err(e) = queued {
                        lp.free.push(buf);
                        sh.fail_at(seq, e);
                        break;
                    }
                }
                Piece::RangeEnd => {}
            }
        }
        while aio.inflight() > 0 {
            let before = aio.inflight();
            lp.reap(aio);
            if aio.inflight() == before && sh.stopped() {
                break; // io_getevents failed: io_destroy (on drop) waits instead
            }
        }
        edges
    }
}
