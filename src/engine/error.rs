//! Errors of the engine: which operation failed, where, and the errno; no PyO3 here
//! (src/py.rs turns them into OSError with errno, op, offset and length).

use std::os::unix::io::RawFd;

/// The operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
    Open,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Open => "open",
        }
    }
}

/// An I/O failure with everything needed for the `ERROR: ... offset=0x... bytes=0x...`
/// message: errno, operation, byte offset in the file that failed and request length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    pub op: Op,
    pub offset: u64,
    pub length: u64,
    pub errno: i32,
    pub strerror: String,
    pub path: Option<String>,
}

impl EngineError {
    pub fn new(op: Op, fd: RawFd, offset: u64, length: u64, errno: i32) -> Self {
        EngineError {
            op,
            offset,
            length,
            errno,
            strerror: strerror(errno),
            path: fd_path(fd),
        }
    }

    pub(crate) fn eof(fd: RawFd, offset: u64, length: u64) -> Self {
        EngineError {
            op: Op::Read,
            offset,
            length,
            errno: libc::EIO,
            strerror: "unexpected end of file".into(),
            path: fd_path(fd),
        }
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: offset=0x{:016x} bytes=0x{:016x}: [Errno {}] {}",
            self.op.as_str(),
            self.offset,
            self.length,
            self.errno,
            self.strerror
        )?;
        if let Some(p) = &self.path {
            write!(f, ": {p}")?;
        }
        Ok(())
    }
}

/// Why a copy did not complete.
#[derive(Debug)]
pub enum CopyError {
    /// A read/write/flush/open failed.
    Io(EngineError),
    /// The progress callback returned `false`.
    Cancelled,
    /// Bad arguments (maps to `ValueError`).
    Invalid(String),
    /// Any other OS failure (e.g. the buffer pool could not be allocated).
    Os(std::io::Error),
}

impl From<EngineError> for CopyError {
    fn from(e: EngineError) -> Self {
        CopyError::Io(e)
    }
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Io(e) => e.fmt(f),
            CopyError::Cancelled => f.write_str("cancelled"),
            CopyError::Invalid(m) => f.write_str(m),
            CopyError::Os(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CopyError {}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `strerror` text without Rust's " (os error N)" suffix.
pub fn strerror(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The path behind a descriptor, for error messages.
pub fn fd_path(fd: RawFd) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}
