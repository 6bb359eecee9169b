//! zfcpdump engine: the hot paths of the capture and read-back, free of PyO3 so that
//! `cargo test` runs without Python. `py.rs` is the only binding file.

pub mod engine;

#[cfg(feature = "python")]
mod py;
