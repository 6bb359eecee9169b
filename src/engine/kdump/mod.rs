//! kdump-compressed ("diskdump") writer (formats.md §13): the vmcore's memory, page by
//! page, compressed on all CPUs, written in makedumpfile's layout, header_version 6.
//!
//! ```text
//! block 0              disk_dump_header          <- returned, NOT written (the caller
//!                                                   writes it last: it makes the dump valid)
//! block 1..            kdump_sub_header + ELF notes
//! next bitmap_blocks   1st bitmap (RAM), 2nd bitmap (dumpable)
//! desc_off             page_desc[ndesc]          one per dumpable pfn, ascending
//! data_off             [shared zero page] page data ...   (not block aligned)
//! ```
//!
//! The layout is fixed before the first byte: descriptors are one per RAM page known
//! from the ELF program headers, so only the data length depends on compression. The
//! writer is [`pipeline`]: read → compress in parallel → write in order, bounded memory.
//!
//! Modules: [`header`] (byte layouts), [`bitmap`], [`compress`] (per-page codecs),
//! [`stream`] (aligned, limit-checked output), [`pipeline`] (threads).

pub mod bitmap;
pub mod compress;
pub mod header;
pub mod pipeline;
pub mod stream;

use std::os::unix::io::RawFd;

use crate::engine::device::{logical_block_size, open_direct};
use crate::engine::error::{fd_path, CopyError, EngineError, Op};
use compress::Algo;
use header::{HeaderInfo, DESC_SIZE, SUB_HEADER_SIZE};

/// makedumpfile `dump_level` bit for zero pages.
pub const DL_EXCLUDE_ZERO: u32 = 1;

/// A byte range of physical memory and where its bytes are in the source file
/// (`None`: the range reads as zeroes, e.g. `p_memsz` beyond `p_filesz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub paddr: u64,
    pub src: Option<u64>,
    pub size: u64,
}

/// `(offset in page, source offset or None for zeroes, length)`.
pub type Piece = (u32, Option<u64>, u32);

/// Where a run of pages comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Src {
    /// whole pages, contiguous in the source file from this offset
    File(u64),
    /// whole pages of zeroes
    Zero,
    /// one page assembled from pieces `(offset in page, source offset, length)`;
    /// the rest of the page is zero
    Pieces(Vec<Piece>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub pfn: u64,
    pub count: u64,
    pub src: Src,
}

/// Turn sorted, non-overlapping segments into runs of pages in pfn order. A page that
/// segments cover only in part gets its other bytes as zeroes.
pub fn page_runs(segments: &[Segment], page_size: u64) -> Result<Vec<Run>, String> {
    let ps = page_size;
    let mut runs: Vec<Run> = Vec::new();
    let mut partial: Option<(u64, Vec<Piece>)> = None;
    let mut prev_end = 0u64;
    for (i, s) in segments.iter().enumerate() {
        let end = s
            .paddr
            .checked_add(s.size)
            .ok_or_else(|| format!("segment {i} wraps around"))?;
        if i > 0 && s.paddr < prev_end {
            return Err(format!(
                "segment {i} is not sorted / overlaps the previous one"
            ));
        }
        prev_end = end;
        let mut a = s.paddr;
        while a < end {
            let pfn = a / ps;
            let page_start = pfn * ps;
            let src_at = s.src.map(|o| o + (a - s.paddr));
            if a == page_start && end - a >= ps {
                if let Some((p, pieces)) = partial.take() {
                    runs.push(Run {
                        pfn: p,
                        count: 1,
                        src: Src::Pieces(pieces),
                    });
                }
                let n = (end - a) / ps;
                runs.push(Run {
                    pfn,
                    count: n,
                    src: src_at.map_or(Src::Zero, Src::File),
                });
                a += n * ps;
            } else {
                let take = end.min(page_start + ps) - a;
                let piece = ((a - page_start) as u32, src_at, take as u32);
                match &mut partial {
                    Some((p, pieces)) if *p == pfn => pieces.push(piece),
                    _ => {
                        if let Some((p, pieces)) = partial.take() {
                            runs.push(Run {
                                pfn: p,
                                count: 1,
                                src: Src::Pieces(pieces),
                            });
                        }
                        partial = Some((pfn, vec![piece]));
                    }
                }
                a += take;
            }
        }
    }
    if let Some((p, pieces)) = partial.take() {
        runs.push(Run {
            pfn: p,
            count: 1,
            src: Src::Pieces(pieces),
        });
    }
    Ok(runs)
}

/// `(first pfn, count)` of the runs, adjacent ones merged (for the bitmaps).
pub fn pfn_ranges(runs: &[Run]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in runs {
        match out.last_mut() {
            Some((p, n)) if *p + *n == r.pfn => *n += r.count,
            _ => out.push((r.pfn, r.count)),
        }
    }
    out
}

/// File offsets (relative to the dump start) of every part; all derived from the
/// program headers and the notes size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub page_size: u64,
    pub sub_hdr_size: u64,
    pub bitmap_blocks: u64,
    pub max_mapnr: u64,
    pub ndesc: u64,
    pub desc_off: u64,
    pub data_off: u64,
    /// where the first non-shared page's data goes (data_off, or after the zero page)
    pub first_page_off: u64,
}

impl Layout {
    /// For the RAM in `ram`, of which `ndesc` pages go into the dump.
    pub fn new(
        page_size: u64,
        notes_len: u64,
        ram: &[Run],
        ndesc: u64,
        exclude_zero: bool,
    ) -> Layout {
        let ps = page_size;
        let max_mapnr = ram.last().map_or(0, |r| r.pfn + r.count);
        let sub_hdr_size = (SUB_HEADER_SIZE as u64 + notes_len).div_ceil(ps);
        let bitmap_blocks = 2 * max_mapnr.div_ceil(8 * ps);
        let desc_off = ps * (1 + sub_hdr_size + bitmap_blocks);
        let data_off = desc_off + DESC_SIZE as u64 * ndesc;
        Layout {
            page_size: ps,
            sub_hdr_size,
            bitmap_blocks,
            max_mapnr,
            ndesc,
            desc_off,
            data_off,
            first_page_off: data_off + if exclude_zero { ps } else { 0 },
        }
    }
}

/// What to write: memory, header fields, compression.
#[derive(Clone, Debug)]
pub struct Plan {
    pub segments: Vec<Segment>,
    /// utsname, time, cpus, phys_base, byte order; the layout fields are filled in
    pub header: HeaderInfo,
    /// the source's PT_NOTE bytes, copied after the sub header
    pub notes: Vec<u8>,
    /// (offset inside `notes`, size) of the VMCOREINFO text
    pub vmcoreinfo: Option<(u64, u64)>,
    pub algo: Algo,
    pub level: i32,
    /// makedumpfile dump_level recorded in the sub header; bit 1 elides zero pages
    pub dump_level: u32,
    /// page-class filtering (`pageclass`): bit N set if pfn N goes into the dump; it
    /// must cover every RAM page. `None`: every RAM page does.
    pub dumpable: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct KdumpOptions {
    /// absolute offset of the dump start in `dst_fd` (partition start + dump_offset)
    pub base: u64,
    /// bytes available from `base` (dump_size); nothing is written beyond
    pub limit: u64,
    /// compression threads; 0 = available CPUs (never more)
    pub threads: usize,
    pub direct: Option<bool>,
    pub block_size: usize,
    /// pages per batch handed to a compression thread
    pub batch_pages: usize,
    pub sync: bool,
    /// pages with a pfn below this are read first and then `Event::HsaRead` is sent
    /// (0: no HSA)
    pub hsa_pfn: u64,
    /// read the pages at and above `hsa_pfn` through mmap windows (`source_map`)
    pub mmap: bool,
    /// store batches raw while the writer would wait for the compressors
    /// (`pipeline` module doc): never slower than the disk, output timing-dependent
    pub adaptive: bool,
}

impl Default for KdumpOptions {
    fn default() -> Self {
        KdumpOptions {
            base: 0,
            limit: u64::MAX / 2,
            threads: 0,
            direct: None,
            block_size: 512,
            batch_pages: 256,
            sync: true,
            hsa_pfn: 0,
            mmap: false,
            adaptive: false,
        }
    }
}

/// What the engine tells its caller while it runs (on the calling thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// source bytes (pages × page size) processed so far
    Progress(u64),
    /// every page below `hsa_pfn` has been read; the reader waits for the answer
    HsaRead,
}

#[derive(Clone, Debug)]
pub struct KdumpResult {
    /// block 0 (`disk_dump_header`, `page_size` bytes): the caller writes it last
    pub header: Vec<u8>,
    pub layout: Layout,
    /// size of the whole dump file (relative to `base`)
    pub file_size: u64,
    pub pages: u64,
    pub zero_pages: u64,
    pub compressed_pages: u64,
    /// pages read straight from a mapping of the source (`mmap`), never copied
    pub mapped_pages: u64,
    /// non-zero pages adaptive mode stored raw without trying to compress them
    pub adaptive_raw_pages: u64,
    pub direct: bool,
    pub threads: usize,
}

/// Available CPUs (sched affinity aware), at least 1.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Fill the derived header fields of `plan` for `layout`.
pub fn header_info(plan: &Plan, layout: &Layout) -> HeaderInfo {
    let mut h = plan.header.clone();
    h.status = plan.algo.flag();
    h.block_size = layout.page_size as u32;
    h.sub_hdr_size = layout.sub_hdr_size as u32;
    h.bitmap_blocks = layout.bitmap_blocks as u32;
    h.max_mapnr = layout.max_mapnr;
    h.dump_level = plan.dump_level;
    h.size_note = plan.notes.len() as u64;
    let (off, size) = plan.vmcoreinfo.unwrap_or((0, 0));
    h.offset_vmcoreinfo = if size > 0 {
        layout.page_size + SUB_HEADER_SIZE as u64 + off
    } else {
        0
    };
    h.size_vmcoreinfo = size;
    h
}

/// Write everything but block 0 of the kdump file for `plan` into `dst_fd` at
/// `opts.base`, flush it (`sync`), and return block 0 for the caller to write last.
/// `cb` is called on this thread about every 100 ms with `Event::Progress`, and once
/// with `Event::HsaRead` if `opts.hsa_pfn` > 0; answering `false` stops the run
/// (`CopyError::Cancelled`) after every thread has been joined.
pub fn write_kdump(
    src_fd: RawFd,
    dst_fd: RawFd,
    plan: &Plan,
    opts: &KdumpOptions,
    cb: &mut dyn FnMut(Event) -> bool,
) -> Result<KdumpResult, CopyError> {
    let ps = plan.header.block_size.max(4096) as u64;
    if !ps.is_power_of_two() {
        return Err(CopyError::Invalid(format!(
            "page size {ps} is not a power of two"
        )));
    }
    if opts.block_size == 0 || !opts.block_size.is_power_of_two() {
        return Err(CopyError::Invalid(format!(
            "block_size must be a power of two, got {}",
            opts.block_size
        )));
    }
    if let Some((off, size)) = plan.vmcoreinfo {
        if off + size > plan.notes.len() as u64 {
            return Err(CopyError::Invalid(
                "vmcoreinfo lies outside the notes".into(),
            ));
        }
    }
    let exclude_zero = plan.dump_level & DL_EXCLUDE_ZERO != 0;
    let runs = page_runs(&plan.segments, ps).map_err(CopyError::Invalid)?;
    let ram = pfn_ranges(&runs);
    let ndesc = match &plan.dumpable {
        None => runs.iter().map(|r| r.count).sum(),
        Some(bitmap) => {
            let max_mapnr = runs.last().map_or(0, |r| r.pfn + r.count);
            if (bitmap.len() as u64) < max_mapnr.div_ceil(8) {
                return Err(CopyError::Invalid(format!(
                    "the dumpable bitmap has {} bytes, the RAM needs {}",
                    bitmap.len(),
                    max_mapnr.div_ceil(8)
                )));
            }
            bitmap::count_dumpable(&ram, bitmap)
        }
    };
    let layout = Layout::new(ps, plan.notes.len() as u64, &runs, ndesc, exclude_zero);
    let limit = opts
        .base
        .checked_add(opts.limit)
        .ok_or_else(|| CopyError::Invalid("base + limit overflows".into()))?;
    if opts.base + layout.first_page_off > limit {
        // Even the metadata does not fit: refuse before writing anything.
        return Err(CopyError::Io(EngineError {
            op: Op::Write,
            offset: opts.base,
            length: layout.first_page_off,
            errno: libc::ENOSPC,
            strerror: "the dump metadata alone does not fit in the dump area".into(),
            path: fd_path(dst_fd),
        }));
    }
    let info = header_info(plan, &layout);

    let align = opts
        .block_size
        .max(logical_block_size(dst_fd).unwrap_or(0))
        .max(512) as u64;
    let direct_fd = match opts.direct {
        Some(false) => None,
        Some(true) => Some(open_direct(dst_fd)?),
        None => open_direct(dst_fd).ok(),
    };
    let mut sink = stream::Sink::new(
        dst_fd,
        direct_fd.as_ref().map(|f| f.0),
        opts.direct.is_none(),
        align,
        limit,
    );
    let threads = if opts.threads == 0 {
        available_cpus()
    } else {
        opts.threads.min(available_cpus()).max(1)
    };
    let out = pipeline::run(
        &pipeline::Job {
            src_fd,
            ram: &ram,
            runs: &runs,
            dumpable: plan.dumpable.as_deref(),
            layout: &layout,
            info: &info,
            notes: &plan.notes,
            algo: plan.algo,
            level: plan.level,
            exclude_zero,
            base: opts.base,
            threads,
            batch_pages: opts.batch_pages.max(1),
            hsa_pfn: opts.hsa_pfn,
            mmap: opts.mmap,
            adaptive: opts.adaptive,
        },
        &mut sink,
        cb,
    )?;
    sink.finish(opts.sync)?;
    let direct = sink.direct_used;
    drop(direct_fd);
    let total = layout.ndesc * ps;
    if !cb(Event::Progress(total)) {
        return Err(CopyError::Cancelled);
    }
    Ok(KdumpResult {
        header: header::encode_header(&info),
        layout,
        file_size: out.data_end - opts.base,
        pages: layout.ndesc,
        zero_pages: out.zero_pages,
        compressed_pages: out.compressed_pages,
        mapped_pages: out.mapped_pages,
        adaptive_raw_pages: out.adaptive_raw_pages,
        direct,
        threads,
    })
}

#[cfg(test)]
mod tests;
