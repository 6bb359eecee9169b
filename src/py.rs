//! The only PyO3 file: thin wrappers that release the GIL and map errors.
//!
//! The copy runs inside `py.detach`. The engine calls back on this thread about every
//! 100 ms; the callback re-attaches to run `check_signals()` and the Python progress
//! callback. Any exception there (KeyboardInterrupt, an exception raised by a signal
//! handler, or by the progress callback) stops the engine, which joins its threads, and
//! the exception propagates unchanged.
//!
//! I/O errors are raised as `zfcpdump._pyengine.EngineIOError` (an `OSError` subclass
//! with `errno`, `strerror`, `filename`, `op`, `offset`, `length`), the same class the
//! pure-Python twin raises.

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};

use crate::engine;
use crate::engine::copy::{CopyOptions, IoEngine};
use crate::engine::error::{CopyError, EngineError};
use crate::engine::kdump::{self, compress::Algo, header::HeaderInfo, Event, KdumpOptions};
use crate::engine::pageclass::{self, PageStruct};

/// CKSM of `data` (formats.md §7).
#[pyfunction]
#[pyo3(signature = (data, seed = 0x1234_5678))]
fn cksm(data: &[u8], seed: u32) -> u32 {
    engine::cksm::cksm(data, seed)
}

/// Result of `copy_ranges`.
#[pyclass(frozen, module = "zfcpdump._core")]
struct CopyResult {
    #[pyo3(get)]
    bytes_copied: u64,
    #[pyo3(get)]
    digests: Py<PyList>,
    #[pyo3(get)]
    direct: bool,
    #[pyo3(get)]
    io_engine: &'static str,
    #[pyo3(get)]
    read_mode: &'static str,
    #[pyo3(get)]
    aio_errno: i32,
}

#[pymethods]
impl CopyResult {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CopyResult(bytes_copied={}, digests=<{} digests>, direct={}, io_engine={:?}, read_mode={:?})",
            self.bytes_copied,
            self.digests.bind(py).len(),
            if self.direct { "True" } else { "False" },
            self.io_engine,
            self.read_mode
        )
    }
}

fn engine_io_error(py: Python<'_>, e: EngineError) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("zfcpdump._pyengine")?.getattr("EngineIOError")?;
        let kw = PyDict::new(py);
        kw.set_item("op", e.op.as_str())?;
        kw.set_item("offset", e.offset)?;
        kw.set_item("length", e.length)?;
        let inst = cls.call((e.errno, &e.strerror, &e.path), Some(&kw))?;
        Ok(PyErr::from_value(inst))
    };
    build().unwrap_or_else(|err| err)
}

fn map_err(py: Python<'_>, e: CopyError, pending: Option<PyErr>) -> PyErr {
    match e {
        CopyError::Io(e) => engine_io_error(py, e),
        CopyError::Cancelled => pending.unwrap_or_else(|| PyKeyboardInterrupt::new_err(())),
        CopyError::Invalid(m) => PyValueError::new_err(m),
        CopyError::Os(e) => {
            let n = e.raw_os_error().unwrap_or(libc::EIO);
            PyOSError::new_err((n, engine::error::strerror(n)))
        }
    }
}

/// The callback the engine runs between buffers (detached): re-attach, check signals,
/// report progress. Stores the Python exception and answers `false` to stop.
fn make_callback<'a>(
    progress: &'a Option<Py<PyAny>>,
    pending: &'a mut Option<PyErr>,
) -> impl FnMut(u64) -> bool + 'a {
    move |done: u64| {
        Python::attach(|py| {
            if let Err(e) = py.check_signals() {
                *pending = Some(e);
                return false;
            }
            if let Some(p) = progress {
                if let Err(e) = p.call1(py, (done,)) {
                    *pending = Some(e);
                    return false;
                }
            }
            true
        })
    }
}

/// Copy byte ranges from `src_fd` to `dst_fd`; see `_core.pyi`.
#[pyfunction]
#[pyo3(signature = (src_fd, dst_fd, ranges, *, direct = None, buffer_size = 4 << 20,
                    queue_depth = 4, block_size = 512, digest = false, sync = true,
                    progress = None, io_engine = "threads", mmap = false))]
#[allow(clippy::too_many_arguments)]
fn copy_ranges(
    py: Python<'_>,
    src_fd: i32,
    dst_fd: i32,
    ranges: Vec<(u64, u64, u64)>,
    direct: Option<bool>,
    buffer_size: usize,
    queue_depth: usize,
    block_size: usize,
    digest: bool,
    sync: bool,
    progress: Option<Bound<'_, PyAny>>,
    io_engine: &str,
    mmap: bool,
) -> PyResult<CopyResult> {
    let opts = CopyOptions {
        direct,
        buffer_size,
        queue_depth,
        block_size,
        digest,
        sync,
        io_engine: IoEngine::parse(io_engine).map_err(PyValueError::new_err)?,
        mmap,
    };
    let progress = progress.filter(|p| !p.is_none()).map(Bound::unbind);
    let mut pending: Option<PyErr> = None;
    let res = py.detach(|| {
        let mut cb = make_callback(&progress, &mut pending);
        engine::copy::copy_ranges(src_fd, dst_fd, &ranges, &opts, &mut cb)
    });
    match res {
        Ok(r) => {
            let digests = PyList::empty(py);
            for d in &r.digests {
                digests.append(PyBytes::new(py, d))?;
            }
            Ok(CopyResult {
                bytes_copied: r.bytes_copied,
                digests: digests.unbind(),
                direct: r.direct,
                io_engine: r.io_engine.as_str(),
                read_mode: r.read_mode,
                aio_errno: r.aio_errno,
            })
        }
        Err(e) => Err(map_err(py, e, pending)),
    }
}

/// SHA-256 of each `(offset, length)` range of `fd`; see `_core.pyi`.
#[pyfunction]
#[pyo3(signature = (fd, ranges, *, buffer_size = 4 << 20, progress = None))]
fn read_digests<'py>(
    py: Python<'py>,
    fd: i32,
    ranges: Vec<(u64, u64)>,
    buffer_size: usize,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let progress = progress.filter(|p| !p.is_none()).map(Bound::unbind);
    let mut pending: Option<PyErr> = None;
    let res = py.detach(|| {
        let mut cb = make_callback(&progress, &mut pending);
        engine::copy::read_digests(fd, &ranges, buffer_size, &mut cb)
    });
    match res {
        Ok(ds) => {
            let out = PyList::empty(py);
            for d in &ds {
                out.append(PyBytes::new(py, d))?;
            }
            Ok(out)
        }
        Err(e) => Err(map_err(py, e, pending)),
    }
}

/// Result of `kdump_write`.
#[pyclass(frozen, module = "zfcpdump._core")]
struct KdumpResult {
    /// block 0 (`disk_dump_header`): the caller writes it last
    #[pyo3(get)]
    header: Py<PyBytes>,
    #[pyo3(get)]
    file_size: u64,
    #[pyo3(get)]
    pages: u64,
    #[pyo3(get)]
    zero_pages: u64,
    #[pyo3(get)]
    compressed_pages: u64,
    #[pyo3(get)]
    mapped_pages: u64,
    #[pyo3(get)]
    adaptive_raw_pages: u64,
    #[pyo3(get)]
    data_offset: u64,
    #[pyo3(get)]
    direct: bool,
    #[pyo3(get)]
    threads: usize,
}

#[pymethods]
impl KdumpResult {
    fn __repr__(&self) -> String {
        format!(
            "KdumpResult(file_size={}, pages={}, zero_pages={}, compressed_pages={}, direct={}, threads={})",
            self.file_size,
            self.pages,
            self.zero_pages,
            self.compressed_pages,
            if self.direct { "True" } else { "False" },
            self.threads
        )
    }
}

/// Write a kdump-compressed dump except block 0; see `_core.pyi`.
#[pyfunction]
#[pyo3(signature = (src_fd, dst_fd, segments, *, base, limit, utsname, tv_sec, tv_usec = 0,
                    nr_cpus = 0, big_endian, notes, vmcoreinfo = None, phys_base = 0,
                    compress = "zstd", level = 1, dump_level = 1, page_size = 4096,
                    threads = 0, direct = None, block_size = 512, batch_pages = 256,
                    sync = true, hsa_pfn = 0, progress = None, on_hsa_read = None,
                    mmap = false, dumpable = None, adaptive = false))]
#[allow(clippy::too_many_arguments)]
fn kdump_write(
    py: Python<'_>,
    src_fd: i32,
    dst_fd: i32,
    segments: Vec<(u64, Option<u64>, u64)>,
    base: u64,
    limit: u64,
    utsname: [String; 6],
    tv_sec: i64,
    tv_usec: i64,
    nr_cpus: u32,
    big_endian: bool,
    notes: Vec<u8>,
    vmcoreinfo: Option<(u64, u64)>,
    phys_base: u64,
    compress: &str,
    level: i32,
    dump_level: u32,
    page_size: u32,
    threads: usize,
    direct: Option<bool>,
    block_size: usize,
    batch_pages: usize,
    sync: bool,
    hsa_pfn: u64,
    progress: Option<Bound<'_, PyAny>>,
    on_hsa_read: Option<Bound<'_, PyAny>>,
    mmap: bool,
    dumpable: Option<Bound<'_, PyAny>>,
    adaptive: bool,
) -> PyResult<KdumpResult> {
    let algo = Algo::parse(compress).map_err(PyValueError::new_err)?;
    // bytes or bytearray, copied once (a Vec<u8> extraction would go int by int)
    let dumpable = match dumpable.filter(|d| !d.is_none()) {
        None => None,
        Some(d) => Some(if let Ok(b) = d.cast::<PyByteArray>() {
            b.to_vec()
        } else {
            d.cast::<PyBytes>()?.as_bytes().to_vec()
        }),
    };
    let plan = kdump::Plan {
        segments: segments
            .into_iter()
            .map(|(paddr, src, size)| kdump::Segment { paddr, src, size })
            .collect(),
        header: HeaderInfo {
            big_endian,
            utsname,
            tv_sec,
            tv_usec,
            nr_cpus,
            phys_base,
            block_size: page_size,
            ..Default::default()
        },
        notes,
        vmcoreinfo,
        algo,
        level,
        dump_level,
        dumpable,
    };
    let opts = KdumpOptions {
        base,
        limit,
        threads,
        direct,
        block_size,
        batch_pages,
        sync,
        hsa_pfn,
        mmap,
        adaptive,
    };
    let progress = progress.filter(|p| !p.is_none()).map(Bound::unbind);
    let on_hsa = on_hsa_read.filter(|p| !p.is_none()).map(Bound::unbind);
    let mut pending: Option<PyErr> = None;
    let res = py.detach(|| {
        let mut tick = make_callback(&progress, &mut pending);
        let mut cb = |e: Event| match e {
            Event::Progress(done) => tick(done),
            Event::HsaRead => match &on_hsa {
                None => true,
                Some(f) => Python::attach(|py| match f.call0(py) {
                    Ok(_) => true,
                    Err(e) => {
                        // reported through the progress path's slot on the next tick
                        e.restore(py);
                        false
                    }
                }),
            },
        };
        kdump::write_kdump(src_fd, dst_fd, &plan, &opts, &mut cb)
    });
    match res {
        Ok(r) => Ok(KdumpResult {
            header: PyBytes::new(py, &r.header).unbind(),
            file_size: r.file_size,
            pages: r.pages,
            zero_pages: r.zero_pages,
            compressed_pages: r.compressed_pages,
            mapped_pages: r.mapped_pages,
            adaptive_raw_pages: r.adaptive_raw_pages,
            data_offset: r.layout.data_off,
            direct: r.direct,
            threads: r.threads,
        }),
        Err(e) => {
            let pending = pending.or_else(|| PyErr::take(py));
            Err(map_err(py, e, pending))
        }
    }
}

/// `struct page` layout from a dict with the field names of `pageclass::PageStruct`
/// (the Python side builds it from VMCOREINFO: `pagefilter.PageStruct.as_dict()`).
fn page_struct(d: &Bound<'_, PyDict>) -> PyResult<PageStruct> {
    fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
        match d.get_item(key)? {
            Some(v) => v.extract::<T>().map_err(Into::into),
            None => Err(PyValueError::new_err(format!("page_struct has no {key:?}"))),
        }
    }
    let ps = PageStruct {
        size: get(d, "size")?,
        big_endian: get(d, "big_endian")?,
        flags: get(d, "flags")?,
        mapping: get(d, "mapping")?,
        mapcount: get(d, "mapcount")?,
        private: get(d, "private")?,
        compound_head: get(d, "compound_head")?,
        compound_order: get(d, "compound_order")?,
        compound_dtor: get(d, "compound_dtor")?,
        pg_lru: get(d, "pg_lru")?,
        pg_private: get(d, "pg_private")?,
        pg_swapcache: get(d, "pg_swapcache")?,
        pg_swapbacked: get(d, "pg_swapbacked")?,
        pg_slab: get(d, "pg_slab")?,
        pg_hwpoison: get(d, "pg_hwpoison")?,
        pg_head_mask: get(d, "pg_head_mask")?,
        buddy_mapcount: get(d, "buddy_mapcount")?,
        offline_mapcount: get(d, "offline_mapcount")?,
        hugetlb_dtor: get(d, "hugetlb_dtor")?,
        max_order: get(d, "max_order")?,
        pg_hugetlb: get(d, "pg_hugetlb")?,
        hugetlb_type: get(d, "hugetlb_type")?,
        slab_type: get(d, "slab_type")?,
    };
    ps.validate().map_err(PyValueError::new_err)?;
    Ok(ps)
}

/// Classify the `struct page`s of one mem_map piece; see `_core.pyi`.
#[pyfunction]
#[pyo3(signature = (memmap, first_pfn, page_struct_fields, dump_level, dumpable, npages = None))]
fn exclude_pages(
    memmap: &[u8],
    first_pfn: u64,
    page_struct_fields: &Bound<'_, PyDict>,
    dump_level: u32,
    dumpable: &Bound<'_, PyByteArray>,
    npages: Option<usize>,
) -> PyResult<[u64; 6]> {
    let ps = page_struct(page_struct_fields)?;
    let mut counts = [0u64; 6];
    // SAFETY: the GIL is held for the whole call and no Python code runs during it,
    // so nothing else can resize or read the bytearray meanwhile.
    let bitmap = unsafe { dumpable.as_bytes_mut() };
    let n = npages.unwrap_or(usize::MAX);
    pageclass::exclude_pages(memmap, first_pfn, n, &ps, dump_level, bitmap, &mut counts);
    Ok(counts)
}

/// (zlib runtime version, zstd version number) linked into the engine.
#[pyfunction]
fn kdump_library_versions() -> (String, u32) {
    kdump::compress::library_versions()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cksm, m)?)?;
    m.add_function(wrap_pyfunction!(copy_ranges, m)?)?;
    m.add_function(wrap_pyfunction!(read_digests, m)?)?;
    m.add_class::<CopyResult>()?;
    m.add_function(wrap_pyfunction!(kdump_write, m)?)?;
    m.add_function(wrap_pyfunction!(kdump_library_versions, m)?)?;
    m.add_function(wrap_pyfunction!(exclude_pages, m)?)?;
    m.add_class::<KdumpResult>()?;
    Ok(())
}
