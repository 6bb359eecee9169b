//! The bounded read → compress → write pipeline.
//!
//! Threads (scoped, all joined before returning):
//! * the **calling thread** coordinates: every ~100 ms it reports progress; it answers
//!   the reader's "HSA read" message (the caller releases the HSA then);
//! * one **reader** plans batches of `batch_pages` pages in pfn order in recycled
//!   buffers: the `pread`s of the vmcore it leaves to the compressor that takes the
//!   batch, so the copy out of the source runs on every CPU (one reader alone held a
//!   raw-storing capture to its speed); with `mmap`, a batch of consecutive pages is a
//!   mapping of the source instead, which the compressor reads and unmaps: no copy.
//!   HSA pages it reads itself: the HSA is released when the first page past it is
//!   reached, and every HSA page must have been read by then;
//! * `threads` **compressors** (the available CPUs, never more) read their batch and
//!   turn it into descriptors + data with their own codec state;
//! * one **writer** puts the results back in batch order, assigns data offsets, appends
//!   descriptors to the metadata stream and data to the data stream (aligned buffers,
//!   O_DIRECT where possible).
//!
//! Adaptive mode (`Job::adaptive`): compression must not make the dump slower, so
//! the writer times two modes and the compressors use the faster one:
//! * **compress**: a compressor that finds the writer waiting for work stores its
//!   batch raw (one such batch in flight at a time), which keeps a disk a little
//!   faster than the compressors busy;
//! * **raw**: every batch stored raw (zero pages still elided), for a disk, or CPUs,
//!   where compressing costs more time than the writes it saves.
//!
//! A probe runs a mode for at least [`PROBE_BATCHES`] batches and some time
//! ([`PROBE_TIME_COMPRESS`], [`PROBE_TIME_RAW`]: a disk's write cache or a throttle
//! lets short bursts through faster than it sustains, so the raw probe is timed long
//! enough to see the disk's own speed) and measures the non-zero pages written per
//! second. The compress probe comes first; if the writer hardly ever waited in it,
//! the disk is what holds compressing up, storing raw could only be slower, and no
//! raw probe is run, and compressing goes on for [`CHOSEN_DISK_BOUND`] only before the
//! next compress probe (free while compressing is right: a disk that stalled in the
//! probe no longer holds compressing on for seconds). Otherwise the faster mode (raw
//! only if [`RAW_MARGIN`] times as fast) runs [`CHOSEN_PER_PROBE`] times as long as
//! the probes took, from [`CHOSEN_MIN`] to [`CHOSEN_MAX`], before the next probe. The
//! dump's bytes then depend on timing; without adaptive mode they do not.
//!
//! Memory bound: `4 × threads + 4` (at most 32) input batches and as many output
//! batches of `batch_pages` × page size each (1 MiB by default), plus the stream
//! buffers (1 MiB metadata, 3 × 4 MiB data: one filling, two written behind) and one
//! 1 MiB bitmap window: with 2 CPUs and the defaults about 38 MiB, and never more than
//! about 78 MiB, whatever the size of the dump. A compressor takes an output
//! buffer *before* it takes a batch, so the batch the writer waits for always has its
//! output buffer and the reorder step cannot deadlock.

use std::collections::BTreeMap;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::bitmap;
use super::compress::{Algo, PageCompressor};
use super::header::{self, encode_desc, Endian, HeaderInfo, DESC_SIZE};
use super::stream::{Sink, Stream};
use super::{Event, Layout, Run, Src};
use crate::engine::copy::TICK;
use crate::engine::device::pread_full;
use crate::engine::error::CopyError;
use crate::engine::source_map::{copy_via_map, Window};

const META_BUF: usize = 1 << 20;
const DATA_BUF: usize = 4 << 20;
/// data stream buffers: one filling while the others are written (AIO, O_DIRECT)
const DATA_BUFS: usize = 3;
const BITMAP_WINDOW: usize = 1 << 20;
/// upper bound of input (and of output) batches in flight, whatever the CPU count
const MAX_SLOTS: usize = 32;
/// fewest consecutive filtered-in pages worth a mapping of their own
const MIN_MAPPED_PAGES: u64 = 16;
/// adaptive mode: the raw probe lasts at least this long (a throttled loop device
/// passed ~25 MiB bursts every 0.4 s; a shorter probe took a burst for the disk) ...
const PROBE_TIME_RAW: Duration = Duration::from_millis(200);
/// ... the compress probe this long: a burst can only make compressing look faster
/// when its writes are what holds it up, and then it is faster than raw anyway ...
const PROBE_TIME_COMPRESS: Duration = Duration::from_millis(20);
/// ... and each this many batches, several times the batches in flight, with this
/// many non-zero pages (16 MiB: the rates are of those; zero pages cost little) ...
const PROBE_BATCHES: u64 = 32;
const PROBE_PAGES: u64 = 4096;
/// ... unless it has run this long: memory this empty is fast either way (compress)
const PROBE_MAX: Duration = Duration::from_secs(2);
/// the faster mode runs this many times as long as its probes took ...
const CHOSEN_PER_PROBE: u32 = 20;
/// ... and at least this long ...
const CHOSEN_MIN: Duration = Duration::from_secs(2);
/// ... and at most this long (a probe the disk stalled in took seconds)
const CHOSEN_MAX: Duration = Duration::from_secs(4);
/// compressing chosen without a raw probe (the writes held it up) runs this long
const CHOSEN_DISK_BOUND: Duration = Duration::from_millis(250);
/// a compress probe whose writer waited less than 1/this of the time was held up by
/// the disk: raw is then slower, and not probed
const DISK_BOUND_WAIT: u32 = 10;
/// raw must be this much faster to be chosen: probes this short are that noisy, and
/// on a tie the smaller dump is the better one
const RAW_MARGIN: f64 = 1.25;

pub struct Job<'a> {
    pub src_fd: RawFd,
    /// the RAM `(first pfn, count)`: the 1st bitmap
    pub ram: &'a [(u64, u64)],
    /// the RAM pages in pfn order and where they come from
    pub runs: &'a [Run],
    /// page-class filtering: only the pages with their bit set here are dumped (the
    /// 2nd bitmap is the 1st and this); `None`: all of them
    pub dumpable: Option<&'a [u8]>,
    pub layout: &'a Layout,
    pub info: &'a HeaderInfo,
    pub notes: &'a [u8],
    pub algo: Algo,
    pub level: i32,
    pub exclude_zero: bool,
    pub base: u64,
    pub threads: usize,
    pub batch_pages: usize,
    pub hsa_pfn: u64,
    /// read pages past the HSA through mmap windows, `pread` once a mapping fails
    pub mmap: bool,
    /// store a batch raw when the writer is waiting for work (module doc)
    pub adaptive: bool,
}

pub struct PipeOut {
    /// absolute offset after the last data byte
    pub data_end: u64,
    pub zero_pages: u64,
    pub compressed_pages: u64,
    /// pages the compressors read straight from a mapping of the source (no copy)
    pub mapped_pages: u64,
    /// non-zero pages adaptive mode stored raw without trying to compress them
    pub adaptive_raw_pages: u64,
}

struct Batch {
    seq: u64,
    npages: usize,
    buf: Vec<u8>,
    /// reads the compressor does into `buf` first: (offset in `buf`, vmcore offset, length)
    reads: Vec<(usize, u64, usize)>,
    /// the pages straight from a mapping of the source, not copied (`buf` unused then)
    mapped: Option<Window>,
}

impl Batch {
    fn pages(&self, page_size: usize) -> &[u8] {
        match &self.mapped {
            Some(window) => window.data(),
            None => &self.buf[..self.npages * page_size],
        }
    }
}

#[derive(Default)]
struct OutBuf {
    /// (stored size, flags); size 0 = shared zero page
    descs: Vec<(u32, u32)>,
    data: Vec<u8>,
    /// made while adaptive mode's raw mode was on
    raw_mode: bool,
    /// stored raw while the writer waited: holds the `raw_in_flight` token
    waiting_raw: bool,
    /// stored raw: the input batch itself, whose non-zero pages the writer copies
    /// into the data stream (one copy less) before it gives the buffer back
    raw_input: Option<Batch>,
}

struct Done {
    seq: u64,
    out: OutBuf,
}

enum Msg {
    HsaRead,
}

struct Shared {
    stop: AtomicBool,
    /// the error of the earliest batch that failed (reads run in parallel: a later
    /// batch's may come first; a batch taken after the stop is not read at all), with
    /// that batch's number
    err: Mutex<Option<(u64, CopyError)>>,
    done_pages: AtomicU64,
    /// the writer has nothing to write (adaptive mode reads it)
    writer_waiting: AtomicBool,
    /// a raw batch is on its way to the writer: one at a time, or all compressors
    /// would switch at once and flood a disk that had only a little time to spare
    raw_in_flight: AtomicBool,
    /// adaptive mode: store every batch raw (the writer's [`Adaptive`] sets it)
    raw_mode: AtomicBool,
}

impl Shared {
    /// Stop with error `e` of batch `seq`, unless an earlier batch has failed too.
    fn fail_at(&self, seq: u64, e: CopyError) {
        let mut g = self.err.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_none_or(|(s, _)| seq < *s) {
            *g = Some((seq, e));
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stop on a cancel, unless an error stopped the capture already (the progress
    /// callback is asked until every thread has ended: its "stop" then is no cause).
    fn cancel(&self) {
        let mut g = self.err.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert((0, CopyError::Cancelled));
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn is_zero(page: &[u8]) -> bool {
    // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets.
    let (head, mid, tail) = unsafe { page.align_to::<u64>() };
    head.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Write the metadata (sub header + notes, both bitmaps) and, with zero-page
/// elision, the shared zero page; then run the pipeline.
pub fn run(
    job: &Job<'_>,
    sink: &mut Sink,
    cb: &mut dyn FnMut(Event) -> bool,
) -> Result<PipeOut, CopyError> {
    let l = job.layout;
    let ps = l.page_size as usize;
    let mut meta =
        Stream::new(job.base + l.page_size, META_BUF, sink.align).map_err(CopyError::Os)?;
    let direct = sink.direct_fd.is_some();
    let mut data = Stream::with_write_behind(
        job.base + l.data_off,
        DATA_BUF,
        sink.align,
        DATA_BUFS,
        direct,
    )
    .map_err(CopyError::Os)?;
    meta.append(sink, &header::encode_sub_header(job.info, job.notes))?;
    let half_bytes = (l.bitmap_blocks / 2 * l.page_size) as usize;
    let mut window = vec![0u8; BITMAP_WINDOW.min(half_bytes.max(1))];
    for second in [false, true] {
        let mut at = 0usize;
        while at < half_bytes {
            let n = window.len().min(half_bytes - at);
            bitmap::fill_window(job.ram, 8 * at as u64, &mut window[..n]);
            if let (true, Some(dumpable)) = (second, job.dumpable) {
                for (i, b) in window[..n].iter_mut().enumerate() {
                    *b &= dumpable.get(at + i).copied().unwrap_or(0);
                }
            }
            meta.append(sink, &window[..n])?;
            at += n;
        }
    }
    debug_assert_eq!(meta.pos(), job.base + l.desc_off);
    if job.exclude_zero {
        data.append(sink, &vec![0u8; ps])?;
    }

    let shared = Shared {
        stop: AtomicBool::new(false),
        err: Mutex::new(None),
        done_pages: AtomicU64::new(0),
        writer_waiting: AtomicBool::new(false),
        raw_in_flight: AtomicBool::new(false),
        raw_mode: AtomicBool::new(false),
    };
    // Enough batches in flight that the compressors keep going while the writer waits
    // for a write: with threads + 2 they stalled (snappy capture 11% slower, 8 paired
    // rounds); beyond 4 per thread + 4 nothing more was gained.
    let nslots = (4 * job.threads + 4).min(MAX_SLOTS);
    let batch_bytes = job.batch_pages * ps;
    let (free_in_tx, free_in_rx) = bounded::<Vec<u8>>(nslots);
    let (free_out_tx, free_out_rx) = bounded::<OutBuf>(nslots);
    for _ in 0..nslots {
        free_in_tx.send(vec![0u8; batch_bytes]).expect("pool");
        free_out_tx
            .send(OutBuf {
                descs: Vec::with_capacity(job.batch_pages),
                data: Vec::with_capacity(batch_bytes),
                raw_mode: false,
                waiting_raw: false,
                raw_input: None,
            })
            .expect("pool");
    }
    let (work_tx, work_rx) = bounded::<Batch>(nslots);
    let (done_tx, done_rx) = bounded::<Done>(nslots);
    let (msg_tx, msg_rx) = bounded::<Msg>(1);
    let (ack_tx, ack_rx) = bounded::<()>(1);

    let result = std::thread::scope(|s| {
        let sh = &shared;
        let reader = {
            let (free, work, msg) = (free_in_rx, work_tx, msg_tx.clone());
            s.spawn(move || reader_thread(job, sh, free, work, msg, ack_rx))
        };
        let mut workers = Vec::new();
        for _ in 0..job.threads {
            let (outs, work, free, done) = (
                free_out_rx.clone(),
                work_rx.clone(),
                free_in_tx.clone(),
                done_tx.clone(),
            );
            let msg = msg_tx.clone();
            workers.push(s.spawn(move || {
                let _hold = msg; // disconnects the coordinator when the worker ends
                compress_thread(job, sh, outs, work, free, done)
            }));
        }
        let writer = {
            let (rx, free, msg) = (done_rx, free_out_tx, msg_tx.clone());
            let free_in = free_in_tx.clone();
            let (meta, data) = (&mut meta, &mut data);
            let sink = &mut *sink;
            s.spawn(move || {
                let _hold = msg;
                writer_thread(job, sh, rx, free, free_in, sink, meta, data)
            })
        };
        drop((msg_tx, free_in_tx, free_out_rx, work_rx, done_tx));

        let mut cancelled = false;
        loop {
            match msg_rx.recv_timeout(TICK) {
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Msg::HsaRead) => {
                    if !cancelled && !cb(Event::HsaRead) {
                        cancelled = true;
                        sh.cancel();
                    }
                    let _ = ack_tx.send(());
                }
            }
            if !cancelled {
                let d = sh.done_pages.load(Ordering::Relaxed) * l.page_size;
                if !cb(Event::Progress(d)) {
                    cancelled = true;
                    sh.cancel();
                }
            }
        }
        let mapped = reader.join().expect("reader thread panicked");
        let mut counts = PageCounts::default();
        for w in workers {
            let c = w.join().expect("compression thread panicked");
            counts.zero += c.zero;
            counts.compressed += c.compressed;
            counts.adaptive_raw += c.adaptive_raw;
        }
        writer.join().expect("writer thread panicked");
        (counts, mapped)
    });
    if let Some((_, e)) = shared.err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    meta.flush(sink)?;
    let data_end = data.pos();
    data.flush(sink)?;
    let (counts, mapped_pages) = result;
    Ok(PipeOut {
        data_end,
        zero_pages: counts.zero,
        compressed_pages: counts.compressed,
        mapped_pages,
        adaptive_raw_pages: counts.adaptive_raw,
    })
}

fn reader_thread(
    job: &Job<'_>,
    sh: &Shared,
    free: Receiver<Vec<u8>>,
    work: Sender<Batch>,
    msg: Sender<Msg>,
    ack: Receiver<()>,
) -> u64 {
    let ps = job.layout.page_size;
    let mut hsa_pending = job.hsa_pfn > 0;
    let signal_hsa = |sh: &Shared| {
        if msg.send(Msg::HsaRead).is_err() || ack.recv().is_err() {
            sh.cancel();
        }
    };
    // the first page at or past the HSA: tell the caller, which releases it (once);
    // true if that stopped the capture
    let pass_hsa = |pfn: u64, pending: &mut bool| {
        if *pending && pfn >= job.hsa_pfn {
            *pending = false;
            signal_hsa(sh);
            return sh.stopped();
        }
        false
    };
    let (mut ri, mut pi) = (0usize, 0u64);
    let mut seq = 0u64;
    let mut map_ok = job.mmap;
    let mut mapped_pages = 0u64;
    'outer: while ri < job.runs.len() {
        if sh.stopped() {
            break;
        }
        let Ok(mut buf) = free.recv() else { break };
        let mut reads = Vec::new();
        let mut filled = 0usize;
        // Zero-copy: a batch of consecutive pages of one run in the file is handed to
        // the compressor as a mapping of it (a window on /proc/vmcore costs no page
        // faults; the copy into `buf` was a sixth of the CPU time of a snappy capture).
        // HSA pages are not mapped by the kernel.
        let keep = |p: u64| job.dumpable.is_none_or(|bm| bitmap::bit_set(bm, p));
        let mut mapped = None;
        if map_ok {
            // what the filter leaves out first, as the loop below would skip it
            while let Some(run) = job.runs.get(ri) {
                if keep(run.pfn + pi) {
                    break;
                }
                advance(job.runs, &mut ri, &mut pi, 1);
            }
            if let Some(run) = job.runs.get(ri) {
                let pfn = run.pfn + pi;
                if pass_hsa(pfn, &mut hsa_pending) {
                    break 'outer;
                }
                if let (false, Src::File(off)) = (hsa_pending, &run.src) {
                    let most = (job.batch_pages as u64).min(run.count - pi);
                    let n = (1..most).find(|&k| !keep(pfn + k)).unwrap_or(most);
                    // a mapping costs system calls: not for a few pages between filtered ones
                    if job.dumpable.is_none() || n >= MIN_MAPPED_PAGES {
                        mapped = Window::covering(job.src_fd, off + pi * ps, (n * ps) as usize);
                        map_ok = mapped.is_some(); // a mapping failed: read() from here on
                        if mapped.is_some() {
                            mapped_pages += n;
                            filled = n as usize;
                            advance(job.runs, &mut ri, &mut pi, n);
                        }
                    }
                }
            }
        }
        while mapped.is_none() && filled < job.batch_pages && ri < job.runs.len() {
            let run = &job.runs[ri];
            let pfn = run.pfn + pi;
            // filtered out: no descriptor, no data, not even read
            if !keep(pfn) {
                advance(job.runs, &mut ri, &mut pi, 1);
                continue;
            }
            if pass_hsa(pfn, &mut hsa_pending) {
                break 'outer;
            }
            let mut n = ((job.batch_pages - filled) as u64).min(run.count - pi);
            if hsa_pending {
                n = n.min(job.hsa_pfn - pfn);
            }
            if job.dumpable.is_some() {
                n = (1..n).find(|&k| !keep(pfn + k)).unwrap_or(n);
            }
            let dst_at = filled * ps as usize;
            let dst = &mut buf[dst_at..dst_at + n as usize * ps as usize];
            let r = match &run.src {
                Src::File(off) => {
                    // HSA pages are not mapped by the kernel (performance.md §2.1)
                    let at = off + pi * ps;
                    let mut mapped = false;
                    if map_ok && !hsa_pending {
                        mapped = copy_via_map(job.src_fd, at, dst);
                        map_ok = mapped; // a mapping failed: read() from here on
                    }
                    if mapped {
                        Ok(())
                    } else if !hsa_pending {
                        reads.push((dst_at, at, dst.len())); // the compressor reads it
                        Ok(())
                    } else {
                        pread_full(job.src_fd, dst, at)
                    }
                }
                Src::Zero => {
                    dst.fill(0);
                    Ok(())
                }
                Src::Pieces(pieces) => {
                    n = 1;
                    let page = &mut dst[..ps as usize];
                    page.fill(0);
                    pieces.iter().try_for_each(|&(at, src, len)| match src {
                        Some(o) => {
                            pread_full(job.src_fd, &mut page[at as usize..(at + len) as usize], o)
                        }
                        None => Ok(()),
                    })
                }
            };
            if let Err(e) = r {
                sh.fail_at(seq, e.into());
                break 'outer;
            }
            filled += n as usize;
            advance(job.runs, &mut ri, &mut pi, n);
        }
        if work
            .send(Batch {
                seq,
                npages: filled,
                buf,
                reads,
                mapped,
            })
            .is_err()
        {
            break;
        }
        seq += 1;
    }
    if hsa_pending && !sh.stopped() {
        signal_hsa(sh);
    }
    mapped_pages
}

/// Move the reader's place (run `ri`, page `pi` of it) `n` pages on, within one run.
fn advance(runs: &[Run], ri: &mut usize, pi: &mut u64, n: u64) {
    *pi += n;
    if *pi == runs[*ri].count {
        *ri += 1;
        *pi = 0;
    }
}

/// What a compressor did with its pages.
#[derive(Default)]
struct PageCounts {
    zero: u64,
    compressed: u64,
    /// not zero, stored raw by adaptive mode's choice
    adaptive_raw: u64,
}

fn compress_thread(
    job: &Job<'_>,
    sh: &Shared,
    outs: Receiver<OutBuf>,
    work: Receiver<Batch>,
    free: Sender<Vec<u8>>,
    done: Sender<Done>,
) -> PageCounts {
    let ps = job.layout.page_size as usize;
    let mut comp = match PageCompressor::new(job.algo, job.level, ps) {
        Ok(c) => c,
        Err(e) => {
            sh.fail_at(0, CopyError::Os(e));
            return PageCounts::default();
        }
    };
    let mut n = PageCounts::default();
    // Take the output buffer first, then the batch (see the module doc).
    while let Ok(mut out) = outs.recv() {
        let Ok(mut batch) = work.recv() else { break };
        if sh.stopped() {
            break;
        }
        out.descs.clear();
        out.data.clear();
        let read = batch.reads.iter().try_for_each(|&(at, off, len)| {
            pread_full(job.src_fd, &mut batch.buf[at..at + len], off)
        });
        if let Err(e) = read {
            sh.fail_at(batch.seq, e.into());
            // the writer may be waiting for this batch: the empty result wakes it, and
            // it sees the stop
            let _ = free.send(batch.buf);
            let _ = done.send(Done {
                seq: batch.seq,
                out,
            });
            break;
        }
        out.raw_mode = job.adaptive && sh.raw_mode.load(Ordering::Relaxed);
        out.waiting_raw = job.adaptive
            && !out.raw_mode
            && sh.writer_waiting.load(Ordering::Relaxed)
            && sh
                .raw_in_flight
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        let by_choice = out.raw_mode || out.waiting_raw;
        let raw = by_choice || job.algo == Algo::None;
        let pages = batch.pages(ps);
        for page in pages.chunks_exact(ps) {
            if job.exclude_zero && is_zero(page) {
                out.descs.push((0, 0));
                n.zero += 1;
                continue;
            }
            if raw {
                out.descs.push((ps as u32, 0));
                n.adaptive_raw += u64::from(by_choice);
                continue;
            }
            match comp.compress(page) {
                Ok(Some((bytes, flag))) => {
                    out.descs.push((bytes.len() as u32, flag));
                    out.data.extend_from_slice(bytes);
                    n.compressed += 1;
                }
                Ok(None) => {
                    out.descs.push((ps as u32, 0));
                    out.data.extend_from_slice(page);
                }
                Err(e) => {
                    sh.fail_at(batch.seq, CopyError::Os(e));
                    out.descs.clear();
                    out.data.clear();
                    let _ = done.send(Done {
                        seq: batch.seq,
                        out,
                    }); // wakes the writer, as a failed read does
                    return n;
                }
            }
        }
        let seq = batch.seq;
        if raw {
            out.raw_input = Some(batch);
        } else {
            let Batch { buf, mapped, .. } = batch;
            drop(mapped); // unmapped here, before the next batch
            let _ = free.send(buf);
        }
        if done.send(Done { seq, out }).is_err() {
            break;
        }
    }
    n
}

/// Append the pages of a raw batch that are stored (not zero pages) to the data
/// stream, consecutive ones in one piece.
fn append_stored_pages(
    sink: &mut Sink,
    data: &mut Stream,
    batch: &Batch,
    descs: &[(u32, u32)],
    page_size: u64,
) -> Result<(), crate::engine::error::EngineError> {
    let ps = page_size as usize;
    let pages = batch.pages(ps);
    let mut i = 0;
    while i < descs.len() {
        if descs[i].0 == 0 {
            i += 1;
            continue;
        }
        let run = descs[i..].iter().take_while(|d| d.0 != 0).count();
        data.append(sink, &pages[i * ps..(i + run) * ps])?;
        i += run;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn writer_thread(
    job: &Job<'_>,
    sh: &Shared,
    rx: Receiver<Done>,
    free: Sender<OutBuf>,
    free_in: Sender<Vec<u8>>,
    sink: &mut Sink,
    meta: &mut Stream,
    data: &mut Stream,
) {
    let l = job.layout;
    let e = Endian {
        big: job.info.big_endian,
    };
    let zero_off = l.data_off;
    let mut data_pos = l.first_page_off;
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, OutBuf> = BTreeMap::new();
    let mut adaptive = Adaptive::new();
    let mut descs: Vec<u8> = Vec::with_capacity(job.batch_pages * DESC_SIZE);
    loop {
        // "waiting" only while there is really nothing to take (adaptive mode)
        let d = match rx.try_recv() {
            Ok(d) => d,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                sh.writer_waiting.store(true, Ordering::Relaxed);
                let t0 = Instant::now();
                let r = rx.recv();
                adaptive.waited(t0.elapsed());
                sh.writer_waiting.store(false, Ordering::Relaxed);
                let Ok(d) = r else { break };
                d
            }
        };
        if sh.stopped() {
            break;
        }
        pending.insert(d.seq, d.out);
        while let Some(mut out) = pending.remove(&next) {
            descs.clear();
            descs.resize(out.descs.len() * DESC_SIZE, 0);
            for (i, &(size, flags)) in out.descs.iter().enumerate() {
                let slot = &mut descs[i * DESC_SIZE..(i + 1) * DESC_SIZE];
                if size == 0 {
                    encode_desc(e, slot, zero_off, l.page_size as u32, 0);
                } else {
                    encode_desc(e, slot, data_pos, size, flags);
                    data_pos += size as u64;
                }
            }
            let r = meta
                .append(sink, &descs)
                .and_then(|_| match out.raw_input.take() {
                    Some(batch) => {
                        let r = append_stored_pages(sink, data, &batch, &out.descs, l.page_size);
                        let _ = free_in.send(batch.buf); // the mapping, if any, goes here
                        r
                    }
                    None => data.append(sink, &out.data),
                });
            if let Err(err) = r {
                sh.fail_at(next, err.into());
                return;
            }
            sh.done_pages
                .fetch_add(out.descs.len() as u64, Ordering::Relaxed);
            if out.waiting_raw {
                sh.raw_in_flight.store(false, Ordering::Release);
            }
            if job.adaptive {
                let stored = out.descs.iter().filter(|d| d.0 != 0).count() as u64;
                let raw = adaptive.written(out.raw_mode, stored, Instant::now());
                sh.raw_mode.store(raw, Ordering::Relaxed);
            }
            let _ = free.send(out);
            next += 1;
        }
    }
}

/// Adaptive mode's choice, kept by the writer (module doc).
#[derive(Debug)]
enum AdaptState {
    /// timing one mode: from when its first batch was written, the batches and
    /// non-zero pages written since, and how long the writer waited for batches
    Probe {
        raw: bool,
        start: Option<Instant>,
        batches: u64,
        pages: u64,
        waited: Duration,
    },
    /// the faster mode, until the next probe
    Chosen { raw: bool, until: Instant },
}

#[derive(Debug)]
struct Adaptive {
    state: AdaptState,
    /// non-zero pages per second of the last compress probe
    compress_rate: f64,
    /// when the current pair of probes began
    probes_began: Option<Instant>,
}

impl Adaptive {
    fn new() -> Adaptive {
        Adaptive {
            state: Self::probe(false),
            compress_rate: 0.0,
            probes_began: None,
        }
    }

    fn probe(raw: bool) -> AdaptState {
        AdaptState::Probe {
            raw,
            start: None,
            batches: 0,
            pages: 0,
            waited: Duration::ZERO,
        }
    }

    /// The writer waited `d` for a batch.
    fn waited(&mut self, d: Duration) {
        if let AdaptState::Probe {
            start: Some(_),
            waited,
            ..
        } = &mut self.state
        {
            *waited += d;
        }
    }

    /// A batch made in raw mode or not, with `stored` non-zero pages, was written at
    /// `now`; returns the mode the compressors should use from now on.
    fn written(&mut self, batch_raw: bool, stored: u64, now: Instant) -> bool {
        match &mut self.state {
            AdaptState::Chosen { raw, until } => {
                if now < *until {
                    return *raw;
                }
                self.state = Self::probe(false);
                self.probes_began = None;
            }
            AdaptState::Probe {
                raw,
                start,
                batches,
                pages,
                waited,
            } => {
                // batches the compressors made before the switch do not count
                if batch_raw != *raw {
                    return *raw;
                }
                let Some(t0) = *start else {
                    *start = Some(now); // this batch's write ends where the timing starts
                    self.probes_began.get_or_insert(now);
                    return *raw;
                };
                *batches += 1;
                *pages += stored;
                let took = now.duration_since(t0);
                let least = if *raw {
                    PROBE_TIME_RAW
                } else {
                    PROBE_TIME_COMPRESS
                };
                let enough = took >= least && *batches >= PROBE_BATCHES && *pages >= PROBE_PAGES;
                if !enough && took < PROBE_MAX {
                    return *raw;
                }
                let rate = *pages as f64 / took.as_secs_f64();
                let disk_bound = !enough || (!*raw && *waited < took / DISK_BOUND_WAIT);
                let chosen = if disk_bound {
                    // the writes held compressing up: storing raw means more of them (or
                    // the memory is nearly all zero pages, fast either way)
                    Some(false)
                } else if !*raw {
                    self.compress_rate = rate;
                    None
                } else {
                    Some(rate > self.compress_rate * RAW_MARGIN)
                };
                self.state = match chosen {
                    None => Self::probe(true),
                    Some(raw) => {
                        let probes = now.duration_since(self.probes_began.unwrap_or(t0));
                        let period = if disk_bound {
                            CHOSEN_DISK_BOUND
                        } else {
                            (probes * CHOSEN_PER_PROBE).clamp(CHOSEN_MIN, CHOSEN_MAX)
                        };
                        AdaptState::Chosen {
                            raw,
                            until: now + period,
                        }
                    }
                };
            }
        }
        match self.state {
            AdaptState::Probe { raw, .. } | AdaptState::Chosen { raw, .. } => raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `n` batches of `mode`, `every` ms apart from `*t`, each `pages` non-zero
    /// pages, the writer having waited `wait` ms of each interval; the mode the writer
    /// asks for after each.
    fn feed(
        a: &mut Adaptive,
        t: &mut Instant,
        mode: bool,
        n: u64,
        (every, wait): (u64, u64),
        pages: u64,
    ) -> Vec<bool> {
        (0..n)
            .map(|_| {
                *t += Duration::from_millis(every);
                a.waited(Duration::from_millis(wait));
                a.written(mode, pages, *t)
            })
            .collect()
    }

    #[test]
    fn adaptive_keeps_compressing_when_the_disk_is_slower() {
        let (mut a, mut t) = (Adaptive::new(), Instant::now());
        // compress probe: 256 pages per 2 ms, the writer waiting half of it; it ends
        // after 32 batches (64 ms)
        let modes = feed(&mut a, &mut t, false, 33, (2, 1), 256);
        assert!(modes[..32].iter().all(|&m| !m) && modes[32], "{modes:?}");
        // batches made before the switch are not timed as raw ones
        assert!(feed(&mut a, &mut t, false, 5, (2, 0), 256)
            .iter()
            .all(|&m| m));
        // raw probe: the first 10 batches in a burst, then what the disk sustains
        // (256 pages per 8 ms): the burst does not make raw look faster
        assert!(feed(&mut a, &mut t, true, 10, (0, 0), 256)
            .iter()
            .all(|&m| m));
        let modes = feed(&mut a, &mut t, true, 30, (8, 0), 256);
        assert_eq!(modes.last(), Some(&false), "compress chosen");
        // ... for 20 times the probes' time (>= 2 s), then the next compress probe
        assert!(feed(&mut a, &mut t, false, 100, (10, 0), 256)
            .iter()
            .all(|&m| !m));
        assert!(matches!(a.state, AdaptState::Chosen { raw: false, .. }));
        feed(&mut a, &mut t, false, 2, (10_000, 0), 256);
        assert!(matches!(a.state, AdaptState::Probe { raw: false, .. }));
    }

    #[test]
    fn adaptive_does_not_probe_raw_when_the_disk_holds_compressing_up() {
        let (mut a, mut t) = (Adaptive::new(), Instant::now());
        // the writer never waited: compress chosen at the end of its probe
        let modes = feed(&mut a, &mut t, false, 40, (2, 0), 256);
        assert!(modes.iter().all(|&m| !m));
        assert!(matches!(a.state, AdaptState::Chosen { raw: false, .. }));
        // ... for 250 ms only: then the next compress probe (here the disk stalled in
        // the first one, and now the writer waits: the raw probe follows)
        feed(&mut a, &mut t, false, 130, (2, 0), 256);
        assert!(matches!(a.state, AdaptState::Probe { raw: false, .. }));
        let modes = feed(&mut a, &mut t, false, 40, (1, 1), 256);
        assert!(
            modes.last() == Some(&true),
            "raw probe after a waiting compress probe"
        );
    }

    #[test]
    fn adaptive_mode_chosen_after_a_stalled_probe_is_probed_again_within_4_s() {
        let (mut a, mut t) = (Adaptive::new(), Instant::now());
        // compress probe, the writer waiting
        feed(&mut a, &mut t, false, 33, (1, 1), 256);
        // the raw probe meets a stalled disk: 2 s for 32 batches, compress chosen ...
        let modes = feed(&mut a, &mut t, true, 33, (62, 0), 256);
        assert_eq!(modes.last(), Some(&false));
        // ... not for 20 times those 2 s, but 4 s at most
        feed(&mut a, &mut t, false, 39, (100, 0), 256);
        assert!(matches!(a.state, AdaptState::Chosen { raw: false, .. }));
        feed(&mut a, &mut t, false, 2, (100, 0), 256);
        assert!(matches!(a.state, AdaptState::Probe { raw: false, .. }));
    }

    #[test]
    fn adaptive_times_non_zero_pages_and_compresses_nearly_empty_memory() {
        let (mut a, mut t) = (Adaptive::new(), Instant::now());
        // batches of zero pages (nothing stored) do not end a probe ...
        let modes = feed(&mut a, &mut t, false, 300, (2, 1), 0);
        assert!(modes.iter().all(|&m| !m));
        assert!(matches!(a.state, AdaptState::Probe { raw: false, .. }));
        // ... until 2 s have passed: compress, never raw on a rate of nothing
        feed(&mut a, &mut t, false, 800, (2, 1), 1);
        assert!(matches!(a.state, AdaptState::Chosen { raw: false, .. }));
    }

    #[test]
    fn adaptive_stores_raw_when_that_is_faster() {
        let (mut a, mut t) = (Adaptive::new(), Instant::now());
        // 40 batches at once: not yet the compress probe's 20 ms ...
        let modes = feed(&mut a, &mut t, false, 40, (0, 0), 128);
        assert!(modes.iter().all(|&m| !m));
        // ... which batches 1 ms apart reach at the 20th
        let modes = feed(&mut a, &mut t, false, 30, (1, 1), 128);
        assert_eq!(modes.iter().position(|&m| m), Some(19));
        // raw: 1024 pages a millisecond, more than twice the compress probe's 7552 pages
        // in 20 ms
        let modes = feed(&mut a, &mut t, true, 250, (1, 0), 1024);
        assert!(modes.iter().all(|&m| m), "raw chosen and kept");
        assert!(matches!(a.state, AdaptState::Chosen { raw: true, .. }));
    }
}
