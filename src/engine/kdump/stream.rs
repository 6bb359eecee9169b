//! Sequential output streams into the dump partition, with an upper limit.
//!
//! A [`Stream`] collects bytes for one contiguous region (the metadata + descriptor
//! table, or the page data) in a page-aligned buffer whose start is aligned *down* to
//! the O_DIRECT block size. Full buffers are written in place: with O_DIRECT the
//! block-aligned part goes through the direct descriptor and the partial blocks at
//! the region's two ends (the only ones another region can share) are kept as *edges*
//! and written buffered by [`Sink::finish`], before the final `fdatasync`. Without
//! O_DIRECT everything is written buffered. The bytes on disk are the same either way.
//!
//! Every append is checked against `limit` (the end of the dump area, `base +
//! dump_size`): a stream never writes past it and fails with ENOSPC instead.

use std::os::unix::io::RawFd;

use crate::engine::aio::Aio;
use crate::engine::device::{fdatasync, pwrite_all, Pool};
use crate::engine::error::{fd_path, EngineError, Op};

/// Where streams write, and the edges they leave for the end.
pub struct Sink {
    /// buffered descriptor (the caller's)
    pub fd: RawFd,
    /// O_DIRECT reopen of `fd`, while it works
    pub direct_fd: Option<RawFd>,
    /// `direct` was "auto": on EINVAL, continue buffered
    pub auto: bool,
    /// O_DIRECT offset/length alignment
    pub align: u64,
    /// absolute offset nothing may be written at or beyond
    pub limit: u64,
    edges: Vec<(u64, Vec<u8>)>,
    pub direct_used: bool,
}

impl Sink {
    pub fn new(fd: RawFd, direct_fd: Option<RawFd>, auto: bool, align: u64, limit: u64) -> Sink {
        Sink {
            fd,
            direct_fd,
            auto,
            align,
            limit,
            edges: Vec::new(),
            direct_used: false,
        }
    }

    fn no_space(&self, offset: u64, length: u64) -> EngineError {
        EngineError {
            op: Op::Write,
            offset,
            length,
            errno: libc::ENOSPC,
            strerror: format!(
                "the dump does not fit: it would pass the end of the dump area at 0x{:x}",
                self.limit
            ),
            path: fd_path(self.fd),
        }
    }

    /// Write `data` at absolute `off`; `data` is a slice of an aligned buffer at
    /// `buf_off`-relative position (so direct writes see aligned memory).
    fn write_region(&mut self, data: &[u8], off: u64) -> Result<(), EngineError> {
        let Some((lo, hi, a)) = self.split(data, off)? else {
            return Ok(());
        };
        self.write_direct(&data[lo..hi], a)
    }

    /// Check `data` at `off` against the limit and write what cannot go direct: all
    /// of it without O_DIRECT, else the partial blocks at its ends (kept as edges).
    /// Returns the block-aligned middle still to write, `data[lo..hi]` at `a`.
    fn split(&mut self, data: &[u8], off: u64) -> Result<Option<(usize, usize, u64)>, EngineError> {
        if data.is_empty() {
            return Ok(None);
        }
        let end = off + data.len() as u64;
        if end > self.limit {
            return Err(self.no_space(off, data.len() as u64));
        }
        if self.direct_fd.is_none() {
            pwrite_all(self.fd, self.fd, data, off)?;
            return Ok(None);
        }
        let a = off.div_ceil(self.align) * self.align;
        let b = end / self.align * self.align;
        if a >= b {
            self.edges.push((off, data.to_vec()));
            return Ok(None);
        }
        if a > off {
            self.edges.push((off, data[..(a - off) as usize].to_vec()));
        }
        if end > b {
            self.edges.push((b, data[(b - off) as usize..].to_vec()));
        }
        Ok(Some(((a - off) as usize, (b - off) as usize, a)))
    }

    /// Write an aligned middle with O_DIRECT (buffered once the device refused it).
    fn write_direct(&mut self, mid: &[u8], a: u64) -> Result<(), EngineError> {
        let Some(dfd) = self.direct_fd else {
            return pwrite_all(self.fd, self.fd, mid, a);
        };
        match pwrite_all(dfd, self.fd, mid, a) {
            Ok(()) => self.direct_used = true,
            Err(e) if self.auto && e.errno == libc::EINVAL => {
                // The device or file system refused O_DIRECT here: continue buffered.
                self.direct_fd = None;
                pwrite_all(self.fd, self.fd, mid, a)?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Write the kept edges (buffered, in order) and flush everything.
    pub fn finish(&mut self, sync: bool) -> Result<(), EngineError> {
        for (off, data) in std::mem::take(&mut self.edges) {
            pwrite_all(self.fd, self.fd, &data, off)?;
        }
        if sync {
            fdatasync(self.fd)?;
        }
        Ok(())
    }
}

/// One contiguous output region, filled front to back.
pub struct Stream {
    start: u64,
    /// absolute offset of the current buffer's first byte (aligned down)
    buf_off: u64,
    /// bytes of the current buffer in use, counting the not-ours prefix of the first
    fill: usize,
    cap: usize,
    /// full buffers being written while the next one fills (dropped before `pool`:
    /// dropping the AIO context waits for its writes)
    behind: Option<WriteBehind>,
    pool: Pool,
    /// the buffer being filled
    cur: usize,
}

/// Write-behind of a stream's full buffers with Linux AIO (O_DIRECT only): the
/// writer goes on filling the next buffer while the disk takes the last ones.
struct WriteBehind {
    aio: Aio,
    /// per buffer: the aligned middle in flight, `(first byte in the buffer, length,
    /// absolute offset)`
    inflight: Vec<Option<(usize, usize, u64)>>,
    /// buffers queued so far
    queued: u64,
}

impl Stream {
    /// A stream for the region starting at absolute `start`, buffering `cap` bytes
    /// (rounded up to a multiple of `align`).
    pub fn new(start: u64, cap: usize, align: u64) -> std::io::Result<Stream> {
        let cap = Self::rounded(cap, align);
        Ok(Self::over(start, cap, align, Pool::new(1, cap)?, None))
    }

    fn rounded(cap: usize, align: u64) -> usize {
        let a = align as usize;
        cap.div_ceil(a).max(1) * a
    }

    fn over(start: u64, cap: usize, align: u64, pool: Pool, behind: Option<WriteBehind>) -> Stream {
        let buf_off = start / align * align;
        Stream {
            start,
            buf_off,
            fill: (start - buf_off) as usize,
            cap,
            behind,
            pool,
            cur: 0,
        }
    }

    /// The same with `buffers` buffers, full ones written behind (AIO) while the
    /// next fills, for a sink with O_DIRECT (`direct`); without it, or where AIO or
    /// the memory is not available, one buffer written in place.
    pub fn with_write_behind(
        start: u64,
        cap: usize,
        align: u64,
        buffers: usize,
        direct: bool,
    ) -> std::io::Result<Stream> {
        if buffers > 1 && direct {
            // only these buffers: no single one allocated (and pre-faulted) first
            let cap = Self::rounded(cap, align);
            if let (Ok(aio), Ok(pool)) = (Aio::new(buffers), Pool::new(buffers, cap)) {
                let behind = WriteBehind {
                    aio,
                    inflight: vec![None; buffers],
                    queued: 0,
                };
                return Ok(Self::over(start, cap, align, pool, Some(behind)));
            }
        }
        Stream::new(start, cap, align)
    }

    /// Absolute offset of the next byte.
    pub fn pos(&self) -> u64 {
        self.buf_off + self.fill as u64
    }

    pub fn append(&mut self, sink: &mut Sink, mut data: &[u8]) -> Result<(), EngineError> {
        let end = self.pos() + data.len() as u64;
        if end > sink.limit {
            return Err(sink.no_space(self.pos(), data.len() as u64));
        }
        while !data.is_empty() {
            let n = data.len().min(self.cap - self.fill);
            // SAFETY: the current buffer is not in flight (`write_behind` waited for it).
            let buf = unsafe { self.pool.buf_mut(self.cur, self.cap) };
            buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == self.cap {
                if self.behind.is_some() && sink.direct_used {
                    self.write_behind(sink)?;
                } else {
                    self.flush(sink)?;
                }
            }
        }
        Ok(())
    }

    /// Queue the full current buffer's aligned middle (its edges are kept now) and
    /// go on with the next buffer. Only once a direct write has worked, so that a
    /// device refusing O_DIRECT is found by a plain write.
    fn write_behind(&mut self, sink: &mut Sink) -> Result<(), EngineError> {
        let lo = self.start.max(self.buf_off);
        let skip = (lo - self.buf_off) as usize;
        // SAFETY: the current buffer is ours until it is submitted below.
        let buf = unsafe { self.pool.buf(self.cur, self.cap) };
        if let Some((a0, a1, at)) = sink.split(&buf[skip..self.fill], lo)? {
            let (lo_i, len) = (skip + a0, a1 - a0);
            let wb = self.behind.as_mut().expect("write-behind");
            // SAFETY: the buffer is neither written nor reused until its completion
            // has been taken (`wait_for`), or the context is dropped (which waits).
            let queued = sink.direct_fd.is_some_and(|dfd| unsafe {
                wb.aio
                    .submit_write(dfd, buf[lo_i..].as_ptr(), len, at, self.cur as u64)
                    .is_ok()
            });
            if queued {
                wb.inflight[self.cur] = Some((lo_i, len, at));
                wb.queued += 1;
            } else {
                sink.write_direct(&buf[lo_i..lo_i + len], at)?;
            }
        }
        self.advance(sink);
        self.cur = (self.cur + 1) % self.pool.n;
        self.wait_for(sink, Some(self.cur))
    }

    /// Take completions until buffer `buffer` is free (`None`: all of them). A short
    /// or failed write is done again in place once nothing is in flight any more (so
    /// that a fall-back to buffered writes never overlaps a direct one), which
    /// reports its error or completes it.
    fn wait_for(&mut self, sink: &mut Sink, buffer: Option<usize>) -> Result<(), EngineError> {
        let Some(wb) = self.behind.as_mut() else {
            return Ok(());
        };
        let mut failed = Vec::new();
        loop {
            let busy = match buffer {
                Some(i) if failed.is_empty() => wb.inflight[i].is_some(),
                _ => wb.inflight.iter().any(Option::is_some),
            };
            if !busy || wb.aio.inflight() == 0 {
                break;
            }
            let done = wb.aio.wait().map_err(|e| EngineError {
                op: Op::Write,
                offset: 0,
                length: 0,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
                strerror: format!("io_getevents: {e}"),
                path: fd_path(sink.fd),
            })?;
            for c in done {
                let i = c.tag as usize;
                match wb.inflight[i].take() {
                    Some((_, len, _)) if c.res == len as i64 => {}
                    Some(w) => failed.push((i, w)),
                    None => {}
                }
            }
        }
        for (i, (lo_i, len, at)) in failed {
            // SAFETY: nothing is in flight any more.
            let data = unsafe { self.pool.buf(i, self.cap) };
            sink.write_direct(&data[lo_i..lo_i + len], at)?;
        }
        Ok(())
    }

    /// The current buffer is written (or on its way): the stream moves on by it.
    fn advance(&mut self, sink: &Sink) {
        self.buf_off += self.fill as u64;
        self.fill = 0;
        // A flush of a partial buffer ends the stream's alignment: keep offsets right.
        let aligned = self.buf_off / sink.align * sink.align;
        if aligned != self.buf_off {
            self.fill = (self.buf_off - aligned) as usize;
            self.buf_off = aligned;
            self.start = self.start.max(aligned + self.fill as u64);
        }
    }

    /// Write what is buffered (at the end of the stream: also wait for the writes
    /// behind).
    pub fn flush(&mut self, sink: &mut Sink) -> Result<(), EngineError> {
        self.wait_for(sink, None)?;
        let lo = self.start.max(self.buf_off);
        let skip = (lo - self.buf_off) as usize;
        if self.fill > skip {
            // SAFETY: nothing is in flight any more.
            let buf = unsafe { self.pool.buf(self.cur, self.cap) };
            sink.write_region(&buf[skip..self.fill], lo)?;
        }
        self.advance(sink);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn two_streams_sharing_a_block_give_exact_bytes() {
        for direct in [false, true] {
            let f = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
            let fd = f.as_file().as_raw_fd();
            let dfd = if direct {
                crate::engine::device::open_direct(fd).ok()
            } else {
                None
            };
            let mut sink = Sink::new(fd, dfd.as_ref().map(|d| d.0), true, 4096, 1 << 30);
            let base = 4096 + 100;
            let split = base + 3 * 4096 + 1234;
            let mut s1 = Stream::new(base, 8192, 4096).unwrap();
            let mut s2 = Stream::new(split, 8192, 4096).unwrap();
            let a: Vec<u8> = (0..(split - base)).map(|i| (i % 251) as u8).collect();
            let b: Vec<u8> = (0..50_000u32).map(|i| (i % 13 + 1) as u8).collect();
            for (i, c) in b.chunks(777).enumerate() {
                s2.append(&mut sink, c).unwrap();
                if i < a.len() / 999 {
                    s1.append(&mut sink, &a[i * 999..(i + 1) * 999]).unwrap();
                }
            }
            let done = a.len() / 999 * 999;
            s1.append(&mut sink, &a[done..]).unwrap();
            s1.flush(&mut sink).unwrap();
            s2.flush(&mut sink).unwrap();
            sink.finish(true).unwrap();
            let mut got = Vec::new();
            std::fs::File::open(f.path())
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            let mut want = vec![0u8; base as usize];
            want.extend_from_slice(&a);
            want.extend_from_slice(&b);
            assert_eq!(got.len(), want.len(), "direct={direct}");
            assert!(got == want, "direct={direct}");
        }
    }

    #[test]
    fn written_behind_gives_the_same_bytes() {
        // an unaligned start, 40 full buffers and a partial one, in pieces of 777
        let f = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
        let fd = f.as_file().as_raw_fd();
        let dfd = crate::engine::device::open_direct(fd).ok();
        let mut sink = Sink::new(fd, dfd.as_ref().map(|d| d.0), true, 4096, 1 << 30);
        let base = 4096 + 100;
        let mut s = Stream::with_write_behind(base, 8192, 4096, 3, dfd.is_some()).unwrap();
        let data: Vec<u8> = (0..40 * 8192 + 5000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(777) {
            s.append(&mut sink, c).unwrap();
        }
        s.flush(&mut sink).unwrap();
        sink.finish(true).unwrap();
        // all but the first full buffer went behind (where AIO and O_DIRECT work)
        if let (Some(wb), Some(_)) = (&s.behind, &dfd) {
            assert_eq!(wb.queued, 39);
        }
        let mut got = Vec::new();
        std::fs::File::open(f.path())
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got.len(), base as usize + data.len());
        assert!(got[base as usize..] == data[..]);
        assert_eq!(sink.direct_used, dfd.is_some());
    }

    #[test]
    fn never_writes_past_the_limit() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let fd = f.as_file().as_raw_fd();
        let mut sink = Sink::new(fd, None, false, 512, 10_000);
        let mut s = Stream::new(0, 4096, 512).unwrap();
        s.append(&mut sink, &[1u8; 9_000]).unwrap();
        let e = s.append(&mut sink, &[1u8; 1_001]).unwrap_err();
        assert_eq!(e.errno, libc::ENOSPC);
        assert_eq!(e.offset, 9_000);
        s.flush(&mut sink).unwrap();
        sink.finish(false).unwrap();
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 9_000);
    }
}
