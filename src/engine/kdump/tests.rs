//! End-to-end tests of the kdump writer with a minimal decoder (formats.md §13).

use super::compress::Algo;
use super::header::HeaderInfo;
use super::*;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;

const PS: usize = 4096;

fn page(pfn: u64) -> Vec<u8> {
    match pfn % 3 {
        0 => vec![0u8; PS],
        1 => format!("page {pfn:016x} text text text ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(PS)
            .collect(),
        _ => crate::engine::testdata::pseudo_random(PS, pfn),
    }
}

#[allow(clippy::type_complexity)]
/// A source file holding memory [paddr, paddr+size) for each range, one after the
/// other from file offset 4096, plus the memory model (paddr -> byte).
fn source(ranges: &[(u64, u64)]) -> (std::fs::File, Vec<Segment>, Vec<(u64, Vec<u8>)>) {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[0xEE; 4096]).unwrap();
    let mut segs = Vec::new();
    let mut model = Vec::new();
    let mut off = 4096u64;
    for &(paddr, size) in ranges {
        let mut bytes = Vec::new();
        let first = paddr / PS as u64;
        let last = (paddr + size).div_ceil(PS as u64);
        for pfn in first..last {
            bytes.extend_from_slice(&page(pfn));
        }
        let skip = (paddr % PS as u64) as usize;
        let mem = bytes[skip..skip + size as usize].to_vec();
        f.write_all(&mem).unwrap();
        segs.push(Segment {
            paddr,
            src: Some(off),
            size,
        });
        model.push((paddr, mem));
        off += size;
    }
    (f, segs, model)
}

fn plan(segs: Vec<Segment>, algo: Algo, dump_level: u32, big: bool) -> Plan {
    let notes = b"\x0b\0\0\0\x05\0\0\0\0\0\0\0VMCOREINFO\0\0OSREL\0\0\0".to_vec();
    Plan {
        segments: segs,
        header: HeaderInfo {
            big_endian: big,
            utsname: ["Linux", "n", "6.1", "#1", "s390x", "(none)"].map(String::from),
            tv_sec: 1_735_689_600,
            nr_cpus: 2,
            block_size: PS as u32,
            ..Default::default()
        },
        vmcoreinfo: Some((24, 5)),
        notes,
        algo,
        level: 1,
        dump_level,
        dumpable: None,
    }
}

struct Decoded {
    header: Vec<u8>,
    bitmap1: Vec<u8>,
    bitmap2: Vec<u8>,
    pages: std::collections::BTreeMap<u64, Vec<u8>>,
    descs: Vec<(u64, u32, u32)>,
}

fn rd32(b: &[u8], at: usize, big: bool) -> u32 {
    let a: [u8; 4] = b[at..at + 4].try_into().unwrap();
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}
fn rd64(b: &[u8], at: usize, big: bool) -> u64 {
    let a: [u8; 8] = b[at..at + 8].try_into().unwrap();
    if big {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    }
}

fn decode(file: &[u8], big: bool) -> Decoded {
    let h = &file[..PS];
    assert_eq!(&h[..8], b"KDUMP   ");
    assert_eq!(rd32(h, 8, big), 6);
    let sub = rd32(h, 432, big) as usize;
    let bmb = rd32(h, 436, big) as usize;
    let max_mapnr = rd64(file, PS + 96, big);
    let half = bmb / 2 * PS;
    let bm1 = &file[(1 + sub) * PS..(1 + sub) * PS + half];
    let bm2 = &file[(1 + sub) * PS + half..(1 + sub) * PS + 2 * half];
    let mut desc_at = (1 + sub) * PS + 2 * half;
    let mut pages = std::collections::BTreeMap::new();
    let mut descs = Vec::new();
    for pfn in 0..max_mapnr {
        if bm2[(pfn >> 3) as usize] & (1 << (pfn & 7)) == 0 {
            continue;
        }
        let d = &file[desc_at..desc_at + 24];
        desc_at += 24;
        let (off, size, flags) = (rd64(d, 0, big), rd32(d, 8, big), rd32(d, 12, big));
        descs.push((off, size, flags));
        let raw = &file[off as usize..off as usize + size as usize];
        let data = match flags {
            0 => raw.to_vec(),
            0x1 => {
                let mut v = Vec::new();
                flate2::read::ZlibDecoder::new(raw)
                    .read_to_end(&mut v)
                    .unwrap();
                v
            }
            0x4 => snap::raw::Decoder::new().decompress_vec(raw).unwrap(),
            0x20 => zstd::bulk::decompress(raw, PS).unwrap(),
            f => panic!("flags {f:#x}"),
        };
        assert_eq!(data.len(), PS);
        pages.insert(pfn, data);
    }
    Decoded {
        header: h.to_vec(),
        bitmap1: bm1.to_vec(),
        bitmap2: bm2.to_vec(),
        pages,
        descs,
    }
}

fn expected(model: &[(u64, Vec<u8>)]) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for (paddr, mem) in model {
        for (i, &b) in mem.iter().enumerate() {
            let a = paddr + i as u64;
            let p = out.entry(a / PS as u64).or_insert_with(|| vec![0u8; PS]);
            p[(a % PS as u64) as usize] = b;
        }
    }
    out
}

fn write(src: &std::fs::File, p: &Plan, opts: &KdumpOptions) -> (Vec<u8>, KdumpResult) {
    let mut dst = tempfile::tempfile().unwrap();
    let mut noop = |_e: Event| true;
    let r = write_kdump(src.as_raw_fd(), dst.as_raw_fd(), p, opts, &mut noop).unwrap();
    let mut v = Vec::new();
    use std::io::Seek;
    dst.seek(std::io::SeekFrom::Start(0)).unwrap();
    dst.read_to_end(&mut v).unwrap();
    assert!(
        v[..PS].iter().all(|&b| b == 0),
        "block 0 must be left to the caller"
    );
    v[..PS].copy_from_slice(&r.header);
    (v, r)
}

#[test]
fn every_algorithm_round_trips_in_both_byte_orders() {
    let ranges = [
        (0u64, 300 * PS as u64),
        (1000 * PS as u64 + 100, 5000),
        (2000 * PS as u64, 7 * PS as u64),
    ];
    let (src, segs, model) = source(&ranges);
    let want = expected(&model);
    for algo in [Algo::None, Algo::Zlib, Algo::Snappy, Algo::Zstd] {
        for big in [true, false] {
            for level in [0, 1] {
                let p = plan(segs.clone(), algo, level, big);
                let opts = KdumpOptions {
                    batch_pages: 7,
                    ..Default::default()
                };
                let (file, r) = write(&src, &p, &opts);
                let d = decode(&file, big);
                assert_eq!(d.pages, want, "{algo:?} big={big} level={level}");
                assert_eq!(d.bitmap1, d.bitmap2, "unfiltered: RAM == dumpable");
                assert_eq!(r.file_size as usize, file.len());
                assert_eq!(rd32(&d.header, 424, big), algo.flag());
                if level == 1 {
                    // every zero page shares the one zero page at the data start
                    let zero_off = r.layout.data_off;
                    let zeros = d.descs.iter().filter(|x| x.0 == zero_off).count() as u64;
                    assert_eq!(zeros, r.zero_pages);
                    assert!(r.zero_pages >= 100);
                    assert!(file[zero_off as usize..zero_off as usize + PS]
                        .iter()
                        .all(|&b| b == 0));
                } else {
                    assert_eq!(r.zero_pages, 0);
                }
            }
        }
    }
}

#[test]
fn thread_count_batch_size_and_mapping_do_not_change_the_bytes() {
    // two runs with a hole and a zero range: batches from the mapping end with a run
    let (src, segs, _) = source(&[(0, 300 * PS as u64), (400 * PS as u64, 130 * PS as u64)]);
    let p = plan(segs, Algo::Zstd, 1, true);
    let (a, a_res) = write(
        &src,
        &p,
        &KdumpOptions {
            threads: 1,
            batch_pages: 1,
            ..Default::default()
        },
    );
    assert_eq!(a_res.mapped_pages, 0);
    for (threads, batch_pages, mmap) in [(8, 64, false), (2, 64, true), (3, 7, true)] {
        let (b, r) = write(
            &src,
            &p,
            &KdumpOptions {
                threads,
                batch_pages,
                direct: Some(false),
                mmap,
                ..Default::default()
            },
        );
        assert!(a == b, "threads {threads} batch {batch_pages} mmap {mmap}");
        // every page came from the mapping, none was copied
        assert_eq!(
            r.mapped_pages,
            if mmap { r.pages } else { 0 },
            "mmap {mmap}"
        );
    }
}

#[test]
fn too_small_fails_without_writing_past_the_limit() {
    let (src, segs, _) = source(&[(0, 400 * PS as u64)]);
    let p = plan(segs, Algo::None, 0, false);
    let mut dst = tempfile::tempfile().unwrap();
    let mut noop = |_e: Event| true;
    let opts = KdumpOptions {
        base: 8192,
        limit: 100 * PS as u64,
        ..Default::default()
    };
    let err = write_kdump(src.as_raw_fd(), dst.as_raw_fd(), &p, &opts, &mut noop).unwrap_err();
    match err {
        CopyError::Io(e) => assert_eq!(e.errno, libc::ENOSPC),
        e => panic!("{e}"),
    }
    let len = dst.metadata().unwrap().len();
    assert!(len <= 8192 + 100 * PS as u64, "{len}");
    // metadata alone too big: nothing written at all
    let opts = KdumpOptions {
        base: 0,
        limit: 2 * PS as u64,
        ..Default::default()
    };
    let dst2 = tempfile::tempfile().unwrap();
    assert!(write_kdump(src.as_raw_fd(), dst2.as_raw_fd(), &p, &opts, &mut noop).is_err());
    assert_eq!(dst2.metadata().unwrap().len(), 0);
    let _ = dst.flush();
}

#[test]
fn hsa_event_comes_once_and_cancel_stops() {
    let (src, segs, _) = source(&[(0, 600 * PS as u64)]);
    let p = plan(segs, Algo::Zlib, 1, true);
    let mut dst = tempfile::tempfile().unwrap();
    let mut events = Vec::new();
    let opts = KdumpOptions {
        hsa_pfn: 100,
        batch_pages: 16,
        ..Default::default()
    };
    let mut cb = |e: Event| {
        events.push(e);
        true
    };
    write_kdump(src.as_raw_fd(), dst.as_raw_fd(), &p, &opts, &mut cb).unwrap();
    assert_eq!(events.iter().filter(|e| **e == Event::HsaRead).count(), 1);
    let mut cancel = |_e: Event| false;
    let r = write_kdump(src.as_raw_fd(), dst.as_raw_fd(), &p, &opts, &mut cancel);
    assert!(matches!(r, Err(CopyError::Cancelled)));
    let _ = dst.flush();
}

#[test]
fn page_runs_split_partial_pages() {
    let segs = [
        Segment {
            paddr: 0,
            src: Some(0),
            size: 2 * PS as u64 + 10,
        },
        Segment {
            paddr: 2 * PS as u64 + 10,
            src: None,
            size: 100,
        },
        Segment {
            paddr: 5 * PS as u64,
            src: Some(9000),
            size: PS as u64,
        },
    ];
    let runs = page_runs(&segs, PS as u64).unwrap();
    assert_eq!(
        runs[0],
        Run {
            pfn: 0,
            count: 2,
            src: Src::File(0)
        }
    );
    assert_eq!(
        runs[1],
        Run {
            pfn: 2,
            count: 1,
            src: Src::Pieces(vec![(0, Some(2 * PS as u64), 10), (10, None, 100)])
        }
    );
    assert_eq!(
        runs[2],
        Run {
            pfn: 5,
            count: 1,
            src: Src::File(9000)
        }
    );
    assert_eq!(pfn_ranges(&runs), vec![(0, 3), (5, 1)]);
    assert!(page_runs(&[segs[2], segs[0]], PS as u64).is_err());
}

#[test]
fn filtered_pages_leave_the_2nd_bitmap_and_the_data_only() {
    let ranges = [
        (0u64, 64 * PS as u64),
        (100 * PS as u64 + 40, 3 * PS as u64),
    ];
    let (src, segs, model) = source(&ranges);
    let all = expected(&model);
    let max_mapnr = 104u64;
    let mut dumpable = vec![0xFFu8; (max_mapnr as usize).div_ceil(8)];
    let dropped = [0u64, 5, 6, 7, 8, 9, 63, 101];
    for pfn in dropped {
        dumpable[(pfn >> 3) as usize] &= !(1 << (pfn & 7));
    }
    let mut want = all.clone();
    for pfn in dropped {
        want.remove(&pfn);
    }
    for algo in [Algo::None, Algo::Zstd] {
        let mut p = plan(segs.clone(), algo, 1, false);
        p.dumpable = Some(dumpable.clone());
        let (file, r) = write(
            &src,
            &p,
            &KdumpOptions {
                batch_pages: 5,
                ..Default::default()
            },
        );
        let d = decode(&file, false);
        assert_eq!(d.pages, want, "{algo:?}");
        assert_eq!(r.pages, all.len() as u64 - dropped.len() as u64);
        // the same bytes when long filtered-in stretches come from mappings: the first
        // batch starts with 4 pages before a gap, too few to map, and is copied (1-4,
        // 10-37); the second maps 38-62
        let opts = KdumpOptions {
            batch_pages: 32,
            mmap: true,
            ..Default::default()
        };
        let (mapped_file, mapped) = write(&src, &p, &opts);
        assert!(mapped_file == file, "{algo:?} mmap");
        assert_eq!(mapped.mapped_pages, 25, "{algo:?}");
        for pfn in 0..max_mapnr {
            let b = |bm: &[u8]| bm[(pfn >> 3) as usize] & (1 << (pfn & 7)) != 0;
            assert_eq!(b(&d.bitmap1), all.contains_key(&pfn), "bitmap1 pfn {pfn}");
            assert_eq!(b(&d.bitmap2), want.contains_key(&pfn), "bitmap2 pfn {pfn}");
        }
    }
    // a bitmap that does not cover the RAM is refused, nothing written
    let mut p = plan(segs, Algo::None, 1, false);
    p.dumpable = Some(vec![0xFF; 3]);
    let dst = tempfile::tempfile().unwrap();
    let mut noop = |_e: Event| true;
    let err = write_kdump(
        src.as_raw_fd(),
        dst.as_raw_fd(),
        &p,
        &KdumpOptions::default(),
        &mut noop,
    )
    .unwrap_err();
    assert!(
        matches!(err, CopyError::Invalid(ref m) if m.contains("dumpable bitmap")),
        "{err:?}"
    );
    assert_eq!(dst.metadata().unwrap().len(), 0);
}

#[test]
fn count_dumpable_counts_set_bits_inside_the_runs() {
    let bitmap = [0b1110_0110u8, 0xFF, 0b0000_1001];
    assert_eq!(bitmap::count_dumpable(&[(0, 24)], &bitmap), 5 + 8 + 2);
    assert_eq!(
        bitmap::count_dumpable(&[(1, 2), (9, 3), (16, 8), (30, 5)], &bitmap),
        2 + 3 + 2
    );
}

#[test]
fn adaptive_mode_writes_the_same_memory() {
    // whatever share of the batches it stores raw, the dump decodes to the same pages
    let (src, segs, model) = source(&[(0, 400 * PS as u64), (500 * PS as u64, 37 * PS as u64)]);
    let want = expected(&model);
    for algo in [Algo::Zstd, Algo::Snappy, Algo::Zlib] {
        let p = plan(segs.clone(), algo, 1, false);
        let fixed = write(&src, &p, &KdumpOptions::default()).1;
        for batch_pages in [1, 16] {
            let opts = KdumpOptions {
                adaptive: true,
                batch_pages,
                ..Default::default()
            };
            let (file, r) = write(&src, &p, &opts);
            assert_eq!(
                decode(&file, false).pages,
                want,
                "{algo:?} batch {batch_pages}"
            );
            assert_eq!(r.zero_pages, fixed.zero_pages);
            assert!(r.compressed_pages <= fixed.compressed_pages);
            assert_eq!(r.file_size as usize, file.len());
        }
    }
}

#[test]
fn a_failed_read_of_the_vmcore_stops_the_capture_with_its_offset() {
    // The compressors read their own batches: a short source fails in one of them,
    // the writer (maybe waiting for that very batch) is woken, and the error says
    // where, whatever the thread count and batch size.
    for (threads, batch_pages, hsa_pfn) in [(1, 8, 0), (2, 8, 0), (4, 3, 0), (2, 16, 40)] {
        let (src, segs, _) = source(&[(0, 600 * PS as u64)]);
        let cut = 4096 + 250 * PS as u64;
        src.set_len(cut).unwrap();
        let p = plan(segs, Algo::Zlib, 1, false);
        let dst = tempfile::tempfile().unwrap();
        let opts = KdumpOptions {
            threads,
            batch_pages,
            hsa_pfn,
            ..Default::default()
        };
        let mut noop = |_e: Event| true;
        let err = write_kdump(src.as_raw_fd(), dst.as_raw_fd(), &p, &opts, &mut noop).unwrap_err();
        match err {
            CopyError::Io(e) => {
                assert!(matches!(e.op, crate::engine::error::Op::Read), "{e}");
                assert!(e.offset >= cut && e.offset < 4096 + 600 * PS as u64, "{e}");
            }
            e => panic!("{e}"),
        }
    }
}

#[test]
fn every_hsa_page_is_read_before_the_hsa_is_released() {
    // The caller releases the HSA when it hears HsaRead; pages read after that would be
    // the HSA's next contents. Here the release overwrites them: the dump must still
    // hold what they were, whoever reads the pages (the reader or the compressors).
    use std::os::unix::fs::FileExt;
    for (threads, batch_pages, hsa_pfn, mmap) in [
        (2, 16, 100, false),
        (2, 7, 100, true),
        (4, 3, 37, false),
        (1, 256, 300, false),
    ] {
        let (src, segs, model) = source(&[(0, 600 * PS as u64)]);
        let want = expected(&model);
        let p = plan(segs, Algo::Snappy, 1, false);
        let opts = KdumpOptions {
            threads,
            batch_pages,
            hsa_pfn,
            mmap,
            ..Default::default()
        };
        let mut dst = tempfile::tempfile().unwrap();
        let mut cb = |e: Event| {
            if e == Event::HsaRead {
                let junk = vec![0x5A; hsa_pfn as usize * PS];
                src.write_all_at(&junk, 4096).unwrap();
            }
            true
        };
        let r = write_kdump(src.as_raw_fd(), dst.as_raw_fd(), &p, &opts, &mut cb).unwrap();
        let mut file = Vec::new();
        use std::io::Seek;
        dst.seek(std::io::SeekFrom::Start(0)).unwrap();
        dst.read_to_end(&mut file).unwrap();
        file[..PS].copy_from_slice(&r.header);
        let got = decode(&file, false).pages;
        assert_eq!(
            got, want,
            "threads {threads} batch {batch_pages} hsa {hsa_pfn}"
        );
    }
}
