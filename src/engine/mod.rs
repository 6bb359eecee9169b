//! Pure-Rust engine. Nothing here knows about Python.

pub mod cksm;
pub mod copy;
pub mod device;
pub mod error;
pub mod kdump;
#[cfg(test)]
pub(crate) mod testdata;
