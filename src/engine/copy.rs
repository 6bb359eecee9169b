//! Bulk-copy engine: `pread` into a pool of reused, pre-faulted, page-aligned buffers,
//! hand them through bounded channels to `queue_depth` writer threads (`pwrite` at
//! disjoint offsets, optionally through an `O_DIRECT` reopen of the destination) and to
//! one hasher thread (SHA-256 per range, in range order).
//!
//! Threads (all scoped, all joined before returning):
//! * the **calling thread** only coordinates: every ~100 ms it calls the progress
//!   callback (which the Python layer uses to check signals); a `false` answer stops
//!   the pipeline;
//! * with `digest`: one **reader** walks the ranges in list order and fills buffers,
//!   `queue_depth` **writers** write them, and one **hasher** hashes them in read order;
//! * without `digest`: `queue_depth` **workers** each take the next chunk, `pread` it
//!   into their own buffer (or take it through an mmap window: `source_map`, `--mmap`)
//!   and write it, so that the copy out of the source (the part that costs CPU:
//!   /proc/vmcore is memory) runs on several cores too;
//! * with `IoEngine::Aio` (direct writes, no digest): one thread reads and queues the
//!   writes with native AIO instead (`copy_aio`).
//!
//! A buffer goes back to the free pool when its last consumer (writer and/or hasher) is
//! done with it. No allocation per chunk, no user-space copy besides the kernel's.
//!
//! O_DIRECT: the aligned interior of each range is written with `O_DIRECT`; the partial
//! edge blocks (at most two per range, each smaller than a block) are kept in memory and
//! written at the end, serially and in range order, with a buffered `pwrite` on the
//! caller's descriptor. The kernel does the read-modify-write of the block in the page
//! cache, so two ranges sharing an edge block stay correct, and a regular file is never
//! extended past the end of the last range. The final `fdatasync` flushes both.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::aio::Aio;
use super::device::{fdatasync, logical_block_size, open_direct, pread_full, pwrite_all, Pool};
use super::error::{CopyError, EngineError};
use super::source_map::{Chunk as MapChunk, MapSource};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use sha2::{Digest, Sha256};

/// How often the coordinator calls the progress callback.
pub const TICK: Duration = Duration::from_millis(100);

/// Options of [`copy_ranges`]; see the Python docstring in `_core.pyi`.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// `None`: try O_DIRECT, fall back to buffered on any failure to open it, or redo
    /// the copy buffered on `EINVAL` from a direct write. `Some(true)`: O_DIRECT or error.
    pub direct: Option<bool>,
    pub buffer_size: usize,
    pub queue_depth: usize,
    pub block_size: usize,
    pub digest: bool,
    pub sync: bool,
    /// How direct writes without digests are kept in flight.
    pub io_engine: IoEngine,
    /// Read the source through mmap windows (threads, no digests; see `source_map`).
    pub mmap: bool,
}

/// How `queue_depth` writes are kept in flight. Threads are the default: native AIO
/// measured no faster on the loop devices here (aio/threads 0.89x and 1.02x medians of
/// two 6-round A/Bs, spreads 0.7-1.4x); it stays selectable for disks where it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEngine {
    /// `queue_depth` threads, each `pread` + `pwrite` (or reader/writers/hasher)
    Threads,
    /// native AIO (one thread, writes in order) whenever writes are direct and no
    /// digest is asked for (threads otherwise); an error if the kernel refuses AIO
    Aio,
}

impl IoEngine {
    pub fn parse(name: &str) -> Result<IoEngine, String> {
        match name {
            "aio" => Ok(IoEngine::Aio),
            "threads" => Ok(IoEngine::Threads),
            other => Err(format!(
                "unknown io_engine {other:?}; choose threads or aio"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IoEngine::Aio => "aio",
            IoEngine::Threads => "threads",
        }
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            direct: None,
            buffer_size: 4 << 20,
            queue_depth: 4,
            block_size: 512,
            digest: false,
            sync: true,
            io_engine: IoEngine::Threads,
            mmap: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyResult {
    pub bytes_copied: u64,
    pub digests: Vec<[u8; 32]>,
    pub direct: bool,
    /// what kept the writes in flight: `Aio` or `Threads`
    pub io_engine: IoEngine,
    /// how the source was read: "pread", "mmap" (through mappings) or "mmap-direct"
    /// (at least one chunk written with O_DIRECT straight from a mapping)
    pub read_mode: &'static str,
    /// why Linux AIO was refused (io_setup's errno; the threads ran instead), 0 if it
    /// was not asked for or worked
    pub aio_errno: i32,
}

// ---------------------------------------------------------------------------------------
// Pipeline

/// One range: (src_offset, dst_offset, length).
pub(super) type Range3 = (u64, u64, u64);

/// A partial destination block kept for the end of the copy.
#[derive(Debug)]
pub(super) struct Edge {
    pub(super) dst: u64,
    pub(super) data: Vec<u8>,
}

struct WJob {
    buf: usize,
    len: usize,
    dst: u64,
}

enum HMsg {
    Chunk { buf: usize, len: usize },
    Bytes(Vec<u8>),
    End,
}

pub(super) struct Shared {
    stop: AtomicBool,
    /// the failure to report, with the sequence number of the piece it came from
    err: Mutex<Option<(usize, CopyError)>>,
    /// bytes written (copy) or hashed (read_digests)
    pub(super) done: AtomicU64,
    pending: Vec<AtomicU32>,
}

impl Shared {
    pub(super) fn fail(&self, e: CopyError) {
        self.fail_at(usize::MAX, e);
    }

    /// Record a failure of piece `seq`. Parallel workers may fail out of order: the
    /// earliest piece wins, which is the error the sequential twin reports.
    pub(super) fn fail_at(&self, seq: usize, e: CopyError) {
        let mut g = self.err.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_none_or(|(s, _)| seq < *s) {
            *g = Some((seq, e));
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn release(&self, buf: usize, free: &Sender<usize>) {
        if self.pending[buf].fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = free.send(buf);
        }
    }
}

/// Marker error: a direct write gave EINVAL in auto mode: redo the copy buffered.
pub(super) const DIRECT_EINVAL: &str = "\0direct-einval";

/// What a failed write means for the copy: with `auto_direct`, EINVAL says O_DIRECT
/// does not work here (redo buffered); anything else is the error to report.
pub(super) fn write_failed(e: EngineError, auto_direct: bool) -> CopyError {
    if auto_direct && e.errno == libc::EINVAL {
        CopyError::Invalid(DIRECT_EINVAL.into())
    } else {
        e.into()
    }
}

pub(super) struct Pipe<'a> {
    pub(super) src_fd: RawFd,
    pub(super) ranges: &'a [Range3],
    /// (fd to write, fd to name in errors); None: no writers (read_digests)
    pub(super) dst: Option<(RawFd, RawFd)>,
    /// O_DIRECT block size: interiors aligned, edges kept aside
    pub(super) align: Option<u64>,
    /// treat EINVAL on a direct write as "fall back to buffered"
    pub(super) auto_direct: bool,
    digest: bool,
    pub(super) bufsize: usize,
    writers: usize,
    /// read chunks through mmap windows (parallel workers only)
    map: Option<&'a MapSource>,
}

/// One piece of work, in range order: a partial edge block (kept aside and written
/// buffered at the end), a buffer-sized chunk of a range's aligned interior, or the end
/// of a range (where the hasher closes that range's digest).
pub(super) enum Piece {
    Edge { src: u64, dst: u64, len: u64 },
    Chunk { src: u64, dst: u64, len: usize },
    RangeEnd,
}

/// Walks the ranges in list order and cuts them into [`Piece`]s: per range the head
/// edge, the interior in `bufsize` chunks, the tail edge, then `RangeEnd`.
pub(super) struct Cursor<'a> {
    ranges: &'a [Range3],
    align: Option<u64>,
    bufsize: u64,
    idx: usize,
    /// 0: head edge next, 1: interior, 2: tail edge, 3: range end
    stage: u8,
    pos: u64,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(ranges: &'a [Range3], align: Option<u64>, bufsize: usize) -> Self {
        Cursor {
            ranges,
            align,
            bufsize: bufsize as u64,
            idx: 0,
            stage: 0,
            pos: 0,
        }
    }

    /// [a, b): the part of range (dst, end) written in whole blocks.
    fn interior(&self, dst: u64, end: u64) -> (u64, u64) {
        match self.align {
            Some(bs) => {
                let a = dst.div_ceil(bs) * bs;
                if a >= end {
                    (end, end)
                } else {
                    (a, end / bs * bs)
                }
            }
            None => (dst, end),
        }
    }
}

impl Iterator for Cursor<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        loop {
            let &(src, dst, len) = self.ranges.get(self.idx)?;
            let end = dst + len;
            let (a, b) = self.interior(dst, end);
            match self.stage {
                0 => {
                    self.stage = 1;
                    self.pos = a;
                    if a > dst {
                        return Some(Piece::Edge {
                            src,
                            dst,
                            len: a - dst,
                        });
                    }
                }
                1 => {
                    if self.pos < b {
                        let n = (b - self.pos).min(self.bufsize);
                        let piece = Piece::Chunk {
                            src: src + (self.pos - dst),
                            dst: self.pos,
                            len: n as usize,
                        };
                        self.pos += n;
                        return Some(piece);
                    }
                    self.stage = 2;
                }
                2 => {
                    self.stage = 3;
                    let t = a.max(b);
                    if end > t {
                        return Some(Piece::Edge {
                            src: src + (t - dst),
                            dst: t,
                            len: end - t,
                        });
                    }
                }
                _ => {
                    self.stage = 0;
                    self.idx += 1;
                    return Some(Piece::RangeEnd);
                }
            }
        }
    }
}

struct PipeOut {
    digests: Vec<[u8; 32]>,
    edges: Vec<Edge>,
}

impl Pipe<'_> {
    /// Run the pipeline; `progress(bytes_done)` is called every [`TICK`] on this thread.
    fn run(
        &self,
        pool: &Pool,
        aio: Option<&mut Aio>,
        progress: &mut dyn FnMut(u64) -> bool,
        reported: &mut u64,
    ) -> Result<PipeOut, CopyError> {
        let shared = Shared {
            stop: AtomicBool::new(false),
            err: Mutex::new(None),
            done: AtomicU64::new(0),
            pending: (0..pool.n).map(|_| AtomicU32::new(0)).collect(),
        };
        let (free_tx, free_rx) = bounded::<usize>(pool.n);
        for i in 0..pool.n {
            free_tx.send(i).expect("free pool");
        }
        let (ev_tx, ev_rx) = bounded::<()>(1);
        let (w_tx, w_rx) = bounded::<WJob>(pool.n);
        let (h_tx, h_rx) = unbounded::<HMsg>();
        let nwriters = if self.dst.is_some() {
            self.writers.max(1)
        } else {
            0
        };

        // Without digests, each worker reads and writes its own chunks: reads run in
        // parallel too (the source copy is what costs CPU). With digests, one reader
        // keeps the order the hasher needs.
        let parallel = !self.digest && self.dst.is_some();
        let cursor = Mutex::new((Cursor::new(self.ranges, self.align, self.bufsize), 0usize));
        let worker_edges: Mutex<Vec<(usize, Edge)>> = Mutex::new(Vec::new());

        let out = std::thread::scope(|s| {
            let hasher = self.digest.then(|| {
                let (rx, free, ev, sh) = (h_rx.clone(), free_tx.clone(), ev_tx.clone(), &shared);
                let count_done = self.dst.is_none();
                s.spawn(move || hasher_thread(rx, free, sh, pool, count_done, ev))
            });
            let mut reader = None;
            if let Some(aio) = aio {
                let (ev, sh) = (ev_tx.clone(), &shared);
                reader = Some(s.spawn(move || {
                    let _ev = ev; // disconnects the coordinator when the loop ends
                    self.aio_loop(pool, aio, sh)
                }));
            } else if parallel {
                for buf in 0..nwriters {
                    let (ev, sh, cur, edges) = (ev_tx.clone(), &shared, &cursor, &worker_edges);
                    s.spawn(move || self.worker_thread(pool, buf, cur, edges, sh, ev));
                }
            } else {
                for _ in 0..nwriters {
                    let (rx, free, ev, sh) =
                        (w_rx.clone(), free_tx.clone(), ev_tx.clone(), &shared);
                    let (fd, report_fd) = self.dst.unwrap();
                    let einval_fallback = self.auto_direct;
                    s.spawn(move || {
                        writer_thread(rx, free, sh, pool, fd, report_fd, einval_fallback, ev)
                    });
                }
                let w = self.dst.is_some().then(|| w_tx.clone());
                let h = self.digest.then(|| h_tx.clone());
                let (ev, sh) = (ev_tx.clone(), &shared);
                reader = Some(s.spawn(move || self.reader_thread(pool, free_rx, w, h, sh, ev)));
            }
            drop((ev_tx, w_tx, h_tx, w_rx, h_rx, free_tx));

            // Coordinator: wake every TICK until every worker has dropped its event sender.
            let mut cancelled = false;
            loop {
                match ev_rx.recv_timeout(TICK) {
                    Err(RecvTimeoutError::Disconnected) => break,
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                }
                if !cancelled {
                    let d = shared.done.load(Ordering::Relaxed).max(*reported);
                    *reported = d;
                    if !progress(d) {
                        cancelled = true;
                        shared.fail_at(0, CopyError::Cancelled); // before any piece: it wins
                    }
                }
            }
            let edges = match reader {
                Some(r) => r.join().expect("reader thread panicked"),
                None => {
                    let mut e = std::mem::take(
                        &mut *worker_edges.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    e.sort_by_key(|(seq, _)| *seq); // range order, as the reader gives them
                    e.into_iter().map(|(_, e)| e).collect()
                }
            };
            let digests = hasher
                .map(|h| h.join().expect("hasher thread panicked"))
                .unwrap_or_default();
            PipeOut { digests, edges }
        });
        match shared.err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }

    fn reader_thread(
        &self,
        pool: &Pool,
        free: Receiver<usize>,
        w: Option<Sender<WJob>>,
        h: Option<Sender<HMsg>>,
        sh: &Shared,
        _ev: Sender<()>,
    ) -> Vec<Edge> {
        let mut edges = Vec::new();
        let consumers = w.is_some() as u32 + h.is_some() as u32;
        for piece in Cursor::new(self.ranges, self.align, self.bufsize) {
            if sh.stopped() {
                break;
            }
            match piece {
                Piece::Edge { src, dst, len } => match read_edge(self.src_fd, src, dst, len) {
                    Ok(e) => {
                        if let Some(h) = &h {
                            let _ = h.send(HMsg::Bytes(e.data.clone()));
                        }
                        edges.push(e);
                    }
                    Err(e) => {
                        sh.fail(e.into());
                        break;
                    }
                },
                Piece::Chunk { src, dst, len } => {
                    let Ok(buf) = free.recv() else { break };
                    // SAFETY: `buf` came from the free pool: we hold it exclusively.
                    let slice = unsafe { pool.buf_mut(buf, len) };
                    if let Err(e) = pread_full(self.src_fd, slice, src) {
                        sh.fail(e.into());
                        break;
                    }
                    sh.pending[buf].store(consumers, Ordering::Release);
                    if let Some(h) = &h {
                        let _ = h.send(HMsg::Chunk { buf, len });
                    }
                    if let Some(w) = &w {
                        let _ = w.send(WJob { buf, len, dst });
                    }
                }
                Piece::RangeEnd => {
                    if let Some(h) = &h {
                        let _ = h.send(HMsg::End);
                    }
                }
            }
        }
        edges
    }
}

impl Pipe<'_> {
    /// Parallel mode: take the next piece, read it into this worker's own buffer, write
    /// it. Edges are read and kept (with their sequence number) for the end.
    fn worker_thread(
        &self,
        pool: &Pool,
        buf: usize,
        cursor: &Mutex<(Cursor<'_>, usize)>,
        edges: &Mutex<Vec<(usize, Edge)>>,
        sh: &Shared,
        _ev: Sender<()>,
    ) {
        let (fd, report_fd) = self.dst.expect("workers write");
        while !sh.stopped() {
            let (piece, seq) = {
                let mut g = cursor.lock().unwrap_or_else(|p| p.into_inner());
                let Some(piece) = g.0.next() else { break };
                g.1 += 1;
                (piece, g.1)
            };
            match piece {
                Piece::Edge { src, dst, len } => match read_edge(self.src_fd, src, dst, len) {
                    Ok(e) => edges
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((seq, e)),
                    Err(e) => sh.fail_at(seq, e.into()),
                },
                Piece::Chunk { src, dst, len } => {
                    // SAFETY: worker `buf` is the only user of pool buffer `buf`.
                    let slice = unsafe { pool.buf_mut(buf, len) };
                    match self.copy_chunk(slice, src, dst, fd, report_fd) {
                        Ok(()) => {
                            sh.done.fetch_add(len as u64, Ordering::Relaxed);
                        }
                        Err(e) => sh.fail_at(seq, e), // stops the loop
                    }
                }
                Piece::RangeEnd => {}
            }
        }
    }
}

impl Pipe<'_> {
    /// One chunk, source [src, src + buf.len()) to `dst`: through an mmap window
    /// (written straight from it, or copied into `buf` first) or `pread` into `buf`.
    fn copy_chunk(
        &self,
        buf: &mut [u8],
        src: u64,
        dst: u64,
        fd: RawFd,
        report_fd: RawFd,
    ) -> Result<(), CopyError> {
        let mut write = |d: &[u8]| pwrite_all(fd, report_fd, d, dst);
        let how = match self.map {
            Some(m) => m.chunk(self.src_fd, src, buf, self.align.is_some(), &mut write),
            None => Ok(MapChunk::NotMapped),
        };
        let written = match how.map_err(|e| write_failed(e, self.auto_direct))? {
            MapChunk::Written => Ok(()),
            MapChunk::InBuffer => write(buf),
            MapChunk::NotMapped => {
                pread_full(self.src_fd, buf, src)?;
                write(buf)
            }
        };
        written.map_err(|e| write_failed(e, self.auto_direct))
    }
}

pub(super) fn read_edge(fd: RawFd, src: u64, dst: u64, len: u64) -> Result<Edge, EngineError> {
    let mut data = vec![0u8; len as usize];
    pread_full(fd, &mut data, src)?;
    Ok(Edge { dst, data })
}

#[allow(clippy::too_many_arguments)]
fn writer_thread(
    rx: Receiver<WJob>,
    free: Sender<usize>,
    sh: &Shared,
    pool: &Pool,
    fd: RawFd,
    report_fd: RawFd,
    einval_fallback: bool,
    _ev: Sender<()>,
) {
    for job in rx {
        if !sh.stopped() {
            // SAFETY: filled by the reader; nobody writes it until released.
            let data = unsafe { pool.buf(job.buf, job.len) };
            match pwrite_all(fd, report_fd, data, job.dst) {
                Ok(()) => {
                    sh.done.fetch_add(job.len as u64, Ordering::Relaxed);
                }
                Err(e) => sh.fail(write_failed(e, einval_fallback)),
            }
        }
        sh.release(job.buf, &free);
    }
}

fn hasher_thread(
    rx: Receiver<HMsg>,
    free: Sender<usize>,
    sh: &Shared,
    pool: &Pool,
    count_done: bool,
    _ev: Sender<()>,
) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let mut h = Sha256::new();
    for m in rx {
        match m {
            HMsg::Chunk { buf, len } => {
                if !sh.stopped() {
                    // SAFETY: filled by the reader; read-only until released.
                    h.update(unsafe { pool.buf(buf, len) });
                    if count_done {
                        sh.done.fetch_add(len as u64, Ordering::Relaxed);
                    }
                }
                sh.release(buf, &free);
            }
            HMsg::Bytes(b) => {
                h.update(&b);
                if count_done {
                    sh.done.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            }
            HMsg::End => out.push(h.finalize_reset().into()),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Public entry points

fn check_ranges<const N: usize>(ranges: &[[u64; N]]) -> Result<u64, CopyError> {
    let mut total = 0u64;
    for r in ranges {
        let len = r[N - 1];
        for &o in &r[..N - 1] {
            o.checked_add(len)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| CopyError::Invalid(format!("range {r:?} overflows")))?;
        }
        total = total
            .checked_add(len)
            .ok_or_else(|| CopyError::Invalid("total length overflows".into()))?;
    }
    Ok(total)
}

/// Buffer size rounded to a multiple of `align` (at least one).
fn round_buffer(buffer_size: usize, align: usize) -> usize {
    (buffer_size / align).max(1) * align
}

/// Copy `length` bytes from `src_fd` at `src_offset` to `dst_fd` at `dst_offset` for
/// each `(src_offset, dst_offset, length)`, in list order. Never closes the descriptors.
/// `progress(bytes_written_so_far)` is called on the calling thread about every
/// [`TICK`] and once at the end (after the flush) with the total; returning `false`
/// stops the copy (`CopyError::Cancelled`) after all threads have been joined.
pub fn copy_ranges(
    src_fd: RawFd,
    dst_fd: RawFd,
    ranges: &[Range3],
    opts: &CopyOptions,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<CopyResult, CopyError> {
    let bs = opts.block_size;
    if bs == 0 || !bs.is_power_of_two() {
        return Err(CopyError::Invalid(format!(
            "block_size must be a power of two, got {bs}"
        )));
    }
    if opts.buffer_size == 0 {
        return Err(CopyError::Invalid("buffer_size must be positive".into()));
    }
    if opts.queue_depth == 0 {
        return Err(CopyError::Invalid("queue_depth must be positive".into()));
    }
    let arr: Vec<[u64; 3]> = ranges.iter().map(|&(a, b, c)| [a, b, c]).collect();
    let total = check_ranges(&arr)?;
    // O_DIRECT alignment: the caller's block size, at least the device's logical one.
    let bs = bs.max(logical_block_size(dst_fd).unwrap_or(0));
    let bufsize = round_buffer(opts.buffer_size, bs.max(4096));
    let pool = Pool::new(opts.queue_depth + 2, bufsize).map_err(CopyError::Os)?;

    let mut direct_fd = match opts.direct {
        Some(false) => None,
        Some(true) => Some(open_direct(dst_fd)?),
        None => open_direct(dst_fd).ok(),
    };
    // Declared after the pool, so dropped before it: io_destroy waits for any write
    // still in flight before the buffers go away.
    let mut aio: Option<Aio> = None;
    let mut aio_errno = 0;
    let mut used_aio;
    let map = MapSource::new();
    let mut reported = 0u64;
    let out = loop {
        used_aio = direct_fd.is_some()
            && !opts.digest
            && opts.io_engine == IoEngine::Aio
            && aio_errno == 0;
        if used_aio && aio.is_none() {
            match Aio::new(opts.queue_depth) {
                Ok(a) => aio = Some(a),
                // a kernel without AIO (ENOSYS: CONFIG_AIO=n, qemu-user), a seccomp
                // policy (EPERM), fs.aio-max-nr used up (EAGAIN): a dump is not failed
                // for a way of queueing writes; the threads do it, `io_engine` says so
                Err(e) => {
                    aio_errno = e.raw_os_error().unwrap_or(libc::EIO);
                    used_aio = false;
                }
            }
        }
        let pipe = Pipe {
            src_fd,
            ranges,
            dst: Some((direct_fd.as_ref().map_or(dst_fd, |f| f.0), dst_fd)),
            align: direct_fd.as_ref().map(|_| bs as u64),
            auto_direct: opts.direct.is_none() && direct_fd.is_some(),
            digest: opts.digest,
            bufsize,
            writers: opts.queue_depth,
            map: (opts.mmap && !opts.digest && !used_aio).then_some(&map),
        };
        let ctx = if used_aio { aio.as_mut() } else { None };
        match pipe.run(&pool, ctx, progress, &mut reported) {
            Err(CopyError::Invalid(m)) if m == DIRECT_EINVAL => {
                direct_fd = None; // closes it; redo everything buffered
            }
            r => break r?,
        }
    };
    for e in &out.edges {
        pwrite_all(dst_fd, dst_fd, &e.data, e.dst)?;
    }
    if opts.sync {
        fdatasync(dst_fd)?;
    }
    let direct = direct_fd.is_some();
    drop(direct_fd);
    if !progress(total) {
        return Err(CopyError::Cancelled);
    }
    Ok(CopyResult {
        bytes_copied: total,
        digests: out.digests,
        direct,
        io_engine: if used_aio {
            IoEngine::Aio
        } else {
            IoEngine::Threads
        },
        read_mode: map.read_mode(),
        aio_errno,
    })
}

/// SHA-256 of each `(offset, length)` range of `fd` (buffered reads, pipelined with the
/// hashing). `progress` as in [`copy_ranges`] (bytes hashed).
pub fn read_digests(
    fd: RawFd,
    ranges: &[(u64, u64)],
    buffer_size: usize,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<Vec<[u8; 32]>, CopyError> {
    if buffer_size == 0 {
        return Err(CopyError::Invalid("buffer_size must be positive".into()));
    }
    let arr: Vec<[u64; 2]> = ranges.iter().map(|&(a, b)| [a, b]).collect();
    let total = check_ranges(&arr)?;
    let bufsize = round_buffer(buffer_size, 4096);
    let pool = Pool::new(3, bufsize).map_err(CopyError::Os)?;
    let r3: Vec<Range3> = ranges.iter().map(|&(o, l)| (o, o, l)).collect();
    let pipe = Pipe {
        src_fd: fd,
        ranges: &r3,
        dst: None,
        align: None,
        auto_direct: false,
        digest: true,
        bufsize,
        writers: 0,
        map: None,
    };
    let mut reported = 0;
    let out = pipe.run(&pool, None, progress, &mut reported)?;
    if !progress(total) {
        return Err(CopyError::Cancelled);
    }
    Ok(out.digests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::device::write_all_at;
    use crate::engine::error::Op;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::io::AsRawFd;

    fn pattern(n: usize, seed: u64) -> Vec<u8> {
        crate::engine::testdata::pseudo_random(n, seed)
    }

    fn file_with(data: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn contents(f: &mut std::fs::File) -> Vec<u8> {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    /// The obvious model of a copy.
    fn model(src: &[u8], dst: &mut Vec<u8>, ranges: &[Range3]) {
        for &(s, d, l) in ranges {
            let (s, d, l) = (s as usize, d as usize, l as usize);
            if dst.len() < d + l {
                dst.resize(d + l, 0);
            }
            dst[d..d + l].copy_from_slice(&src[s..s + l]);
        }
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    fn layouts() -> Vec<Vec<Range3>> {
        vec![
            vec![(0, 0, 100_000)],
            // unaligned head and tail, interior several buffers
            vec![(123, 4096 + 77, 70_000)],
            // two ranges sharing edge blocks (512 and 4096) in both orders
            vec![(0, 1000, 3000), (5000, 4000, 2500), (9000, 100, 900)],
            // range inside a single block, zero-length range, range at offset 0 last
            vec![
                (4096, 5000, 10),
                (7, 7, 0),
                (8192, 6000, 20_000),
                (0, 0, 4096),
            ],
            // HSA-like order: middle first, then the rest, page 0 last
            vec![
                (20_000, 20_000, 30_000),
                (4096, 4096, 15_904),
                (50_000, 50_000, 10_000),
                (0, 0, 4096),
            ],
        ]
    }

    #[test]
    fn copies_match_model_in_all_modes() {
        let have_aio = crate::engine::aio::Aio::new(1).is_ok();
        let src = pattern(120_000, 1);
        let base = pattern(90_000, 2);
        for ranges in layouts() {
            for (direct, bs) in [
                (Some(false), 512),
                (None, 512),
                (None, 4096),
                (Some(true), 4096),
            ] {
                for (buffer_size, qd, digest, io_engine, mmap) in [
                    (4096, 1, true, IoEngine::Threads, false),
                    (8192, 3, true, IoEngine::Aio, true),
                    (1 << 20, 4, true, IoEngine::Threads, false),
                    (4096, 1, false, IoEngine::Aio, false),
                    (8192, 3, false, IoEngine::Aio, false),
                    (8192, 3, false, IoEngine::Threads, false),
                    (1 << 20, 4, false, IoEngine::Threads, false),
                    (4096, 1, false, IoEngine::Threads, true),
                    (8192, 3, false, IoEngine::Threads, true),
                    (1 << 20, 4, false, IoEngine::Threads, true),
                ] {
                    let mut dst = file_with(&base);
                    let srcf = file_with(&src);
                    let opts = CopyOptions {
                        direct,
                        buffer_size,
                        queue_depth: qd,
                        block_size: bs,
                        digest,
                        sync: true,
                        io_engine,
                        mmap,
                    };
                    let mut last = 0;
                    let mut cb = |n: u64| {
                        assert!(n >= last);
                        last = n;
                        true
                    };
                    let r = copy_ranges(srcf.as_raw_fd(), dst.as_raw_fd(), &ranges, &opts, &mut cb);
                    let r = match r {
                        Err(CopyError::Io(e)) if direct == Some(true) && e.op == Op::Open => {
                            continue
                        } // tmpfs
                        r => r.unwrap(),
                    };
                    let mut want = base.clone();
                    model(&src, &mut want, &ranges);
                    assert_eq!(
                        contents(&mut dst),
                        want,
                        "{ranges:?} {direct:?} {bs} {buffer_size} {qd}"
                    );
                    let total: u64 = ranges.iter().map(|r| r.2).sum();
                    assert_eq!(r.bytes_copied, total);
                    assert_eq!(last, total);
                    let want_d: Vec<_> = ranges
                        .iter()
                        .map(|&(s, _, l)| sha(&src[s as usize..(s + l) as usize]))
                        .collect();
                    assert_eq!(r.digests, if digest { want_d } else { vec![] });
                    if direct == Some(false) {
                        assert!(!r.direct);
                    }
                    // AIO exactly when the writes were direct and undigested and it was
                    // asked for, and the kernel has it (else the threads, qemu-user)
                    let aio = r.direct && !digest && io_engine == IoEngine::Aio && have_aio;
                    assert_eq!(r.io_engine == IoEngine::Aio, aio, "{io_engine:?}");
                    // ... and where it was asked for but refused, the errno says why
                    let refused = r.direct && !digest && io_engine == IoEngine::Aio && !have_aio;
                    assert_eq!(r.aio_errno != 0, refused, "{io_engine:?}");
                    // mappings only where asked for and where they apply (threads, no
                    // digests); the bytes above are the same either way
                    if !mmap || digest || aio {
                        assert_eq!(r.read_mode, "pread");
                    }
                    if r.read_mode == "mmap-direct" {
                        assert!(r.direct);
                    }
                }
            }
        }
    }

    #[test]
    fn extends_a_short_regular_file_exactly() {
        let src = pattern(10_000, 3);
        for direct in [Some(false), None] {
            let mut dst = file_with(&[]);
            let srcf = file_with(&src);
            let ranges = [(0, 4096, 5000), (5000, 0, 4096)];
            let opts = CopyOptions {
                direct,
                block_size: 4096,
                ..Default::default()
            };
            copy_ranges(
                srcf.as_raw_fd(),
                dst.as_raw_fd(),
                &ranges,
                &opts,
                &mut |_| true,
            )
            .unwrap();
            let mut want = Vec::new();
            model(&src, &mut want, &ranges);
            assert_eq!(contents(&mut dst), want);
        }
    }

    #[test]
    fn whole_data_digest_matches_sha2() {
        let src = pattern(3 << 20, 4);
        let srcf = file_with(&src);
        let dst = file_with(&[]);
        let opts = CopyOptions {
            buffer_size: 1 << 20,
            digest: true,
            direct: Some(false),
            ..Default::default()
        };
        let r = copy_ranges(
            srcf.as_raw_fd(),
            dst.as_raw_fd(),
            &[(0, 0, src.len() as u64)],
            &opts,
            &mut |_| true,
        )
        .unwrap();
        assert_eq!(r.digests, vec![sha(&src)]);
        let d = read_digests(
            dst.as_raw_fd(),
            &[(0, src.len() as u64), (5, 0), (100, 1 << 20)],
            65536,
            &mut |_| true,
        )
        .unwrap();
        assert_eq!(
            d,
            vec![sha(&src), sha(&[]), sha(&src[100..100 + (1 << 20)])]
        );
    }

    #[test]
    fn early_eof_is_a_read_error_naming_the_offset() {
        let srcf = file_with(&pattern(10_000, 5));
        let dst = file_with(&[]);
        let opts = CopyOptions {
            buffer_size: 4096,
            direct: Some(false),
            ..Default::default()
        };
        let e = copy_ranges(
            srcf.as_raw_fd(),
            dst.as_raw_fd(),
            &[(0, 0, 100), (5000, 0, 8000)],
            &opts,
            &mut |_| true,
        )
        .unwrap_err();
        match e {
            CopyError::Io(e) => {
                assert_eq!((e.op, e.errno, e.offset), (Op::Read, libc::EIO, 10_000));
                assert_eq!(e.length, 5000 + 8000 - 10_000);
                assert_eq!(e.strerror, "unexpected end of file");
            }
            e => panic!("{e:?}"),
        }
        let e = read_digests(srcf.as_raw_fd(), &[(9000, 2000)], 4096, &mut |_| true).unwrap_err();
        assert!(matches!(
            e,
            CopyError::Io(EngineError {
                op: Op::Read,
                offset: 10_000,
                length: 1000,
                ..
            })
        ));
    }

    #[test]
    fn bad_descriptors() {
        let srcf = file_with(&pattern(10_000, 5));
        let opts = CopyOptions {
            direct: Some(false),
            ..Default::default()
        };
        let e = copy_ranges(
            srcf.as_raw_fd(),
            9999,
            &[(0, 4096, 100)],
            &opts,
            &mut |_| true,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            CopyError::Io(EngineError {
                op: Op::Write,
                offset: 4096,
                length: 100,
                errno: libc::EBADF,
                ..
            })
        ));
        let e =
            copy_ranges(9999, srcf.as_raw_fd(), &[(7, 0, 100)], &opts, &mut |_| true).unwrap_err();
        assert!(matches!(
            e,
            CopyError::Io(EngineError {
                op: Op::Read,
                offset: 7,
                errno: libc::EBADF,
                ..
            })
        ));
        let o = CopyOptions {
            direct: Some(true),
            ..Default::default()
        };
        let e = copy_ranges(srcf.as_raw_fd(), 9999, &[(0, 0, 1)], &o, &mut |_| true).unwrap_err();
        assert!(matches!(e, CopyError::Io(EngineError { op: Op::Open, .. })));
        // a read-only destination is never reopened read-write behind the caller's back
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let ro = std::fs::File::open(tmp.path()).unwrap();
        for direct in [None, Some(false)] {
            let o = CopyOptions {
                direct,
                ..Default::default()
            };
            let e = copy_ranges(
                srcf.as_raw_fd(),
                ro.as_raw_fd(),
                &[(0, 512, 10)],
                &o,
                &mut |_| true,
            )
            .unwrap_err();
            assert!(matches!(
                e,
                CopyError::Io(EngineError {
                    op: Op::Write,
                    offset: 512,
                    errno: libc::EBADF,
                    ..
                })
            ));
        }
        let o = CopyOptions {
            direct: Some(true),
            ..Default::default()
        };
        let e = copy_ranges(
            srcf.as_raw_fd(),
            ro.as_raw_fd(),
            &[(0, 0, 1)],
            &o,
            &mut |_| true,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            CopyError::Io(EngineError {
                op: Op::Open,
                errno: libc::EBADF,
                ..
            })
        ));
    }

    #[test]
    fn short_writes_are_continued_and_zero_is_an_error() {
        let data = pattern(1000, 6);
        let mut sink = vec![0u8; 2000];
        let mut calls = 0;
        write_all_at(
            |b: &[u8], off: u64| {
                calls += 1;
                if calls % 3 == 0 {
                    return Err(std::io::Error::from_raw_os_error(libc::EINTR));
                }
                let n = b.len().min(7);
                sink[off as usize..off as usize + n].copy_from_slice(&b[..n]);
                Ok(n)
            },
            &data,
            500,
        )
        .unwrap();
        assert_eq!(&sink[500..1500], &data[..]);
        let mut left = 10;
        let e = write_all_at(
            |b: &[u8], _| {
                let n = b.len().min(left);
                left -= n;
                Ok(n)
            },
            &data,
            100,
        )
        .unwrap_err();
        assert_eq!(e, (110, 990, libc::EIO));
        let e = write_all_at(
            |_, _| Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            &data,
            3,
        )
        .unwrap_err();
        assert_eq!(e, (3, 1000, libc::ENOSPC));
    }

    #[test]
    fn cancel_stops_and_joins() {
        let src = pattern(8 << 20, 7);
        let srcf = file_with(&src);
        let dst = file_with(&[]);
        // A slow "device": one tick has to pass before the first call, so cancel at once.
        let opts = CopyOptions {
            buffer_size: 4096,
            queue_depth: 2,
            direct: Some(false),
            ..Default::default()
        };
        let mut calls = 0;
        let r = copy_ranges(
            srcf.as_raw_fd(),
            dst.as_raw_fd(),
            &[(0, 0, src.len() as u64)],
            &opts,
            &mut |_| {
                calls += 1;
                false
            },
        );
        assert!(matches!(r, Err(CopyError::Cancelled)));
        assert_eq!(calls, 1);
    }

    #[test]
    fn invalid_arguments() {
        let o = CopyOptions {
            block_size: 1000,
            ..Default::default()
        };
        assert!(matches!(
            copy_ranges(0, 1, &[], &o, &mut |_| true),
            Err(CopyError::Invalid(_))
        ));
        let o = CopyOptions::default();
        assert!(matches!(
            copy_ranges(0, 1, &[(u64::MAX, 0, 2)], &o, &mut |_| true),
            Err(CopyError::Invalid(_))
        ));
    }
}
