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
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::engine;
use crate::engine::copy::{CopyError, CopyOptions, EngineError};

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
}

#[pymethods]
impl CopyResult {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CopyResult(bytes_copied={}, digests=<{} digests>, direct={})",
            self.bytes_copied,
            self.digests.bind(py).len(),
            if self.direct { "True" } else { "False" }
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
            PyOSError::new_err((n, engine::copy::strerror(n)))
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
                    progress = None))]
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
) -> PyResult<CopyResult> {
    let opts = CopyOptions {
        direct,
        buffer_size,
        queue_depth,
        block_size,
        digest,
        sync,
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cksm, m)?)?;
    m.add_function(wrap_pyfunction!(copy_ranges, m)?)?;
    m.add_function(wrap_pyfunction!(read_digests, m)?)?;
    m.add_class::<CopyResult>()?;
    Ok(())
}
