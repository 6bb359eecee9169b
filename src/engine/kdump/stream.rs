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
        if data.is_empty() {
            return Ok(());
        }
        let end = off + data.len() as u64;
        if end > self.limit {
            return Err(self.no_space(off, data.len() as u64));
        }
        let Some(dfd) = self.direct_fd else {
            return pwrite_all(self.fd, self.fd, data, off);
        };
        let a = off.div_ceil(self.align) * self.align;
        let b = end / self.align * self.align;
        if a >= b {
            self.edges.push((off, data.to_vec()));
            return Ok(());
        }
        if a > off {
            self.edges.push((off, data[..(a - off) as usize].to_vec()));
        }
        let mid = &data[(a - off) as usize..(b - off) as usize];
        match pwrite_all(dfd, self.fd, mid, a) {
            Ok(()) => self.direct_used = true,
            Err(e) if self.auto && e.errno == libc::EINVAL => {
                // The device or file system refused O_DIRECT here: continue buffered.
                self.direct_fd = None;
                pwrite_all(self.fd, self.fd, mid, a)?;
            }
            Err(e) => return Err(e),
        }
        if end > b {
            self.edges.push((b, data[(b - off) as usize..].to_vec()));
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
    /// absolute offset of `buf[0]` (aligned down)
    buf_off: u64,
    /// bytes of `buf` in use, counting the not-ours prefix of the first buffer
    fill: usize,
    cap: usize,
    pool: Pool,
}

impl Stream {
    /// A stream for the region starting at absolute `start`, buffering `cap` bytes
    /// (rounded up to a multiple of `align`).
    pub fn new(start: u64, cap: usize, align: u64) -> std::io::Result<Stream> {
        let a = align as usize;
        let cap = cap.div_ceil(a).max(1) * a;
        let buf_off = start / align * align;
        Ok(Stream {
            start,
            buf_off,
            fill: (start - buf_off) as usize,
            cap,
            pool: Pool::new(1, cap)?,
        })
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
            // SAFETY: the stream owns its one-buffer pool.
            let buf = unsafe { self.pool.buf_mut(0, self.cap) };
            buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == self.cap {
                self.flush(sink)?;
            }
        }
        Ok(())
    }

    /// Write what is buffered (the last, partial buffer at the end of the stream).
    pub fn flush(&mut self, sink: &mut Sink) -> Result<(), EngineError> {
        let lo = self.start.max(self.buf_off);
        let skip = (lo - self.buf_off) as usize;
        if self.fill > skip {
            // SAFETY: the stream owns its one-buffer pool.
            let buf = unsafe { self.pool.buf(0, self.cap) };
            sink.write_region(&buf[skip..self.fill], lo)?;
        }
        self.buf_off += self.fill as u64;
        self.fill = 0;
        // A flush of a partial buffer ends the stream's alignment: keep offsets right.
        let aligned = self.buf_off / sink.align * sink.align;
        if aligned != self.buf_off {
            self.fill = (self.buf_off - aligned) as usize;
            self.buf_off = aligned;
            self.start = self.start.max(aligned + self.fill as u64);
        }
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
