//! Pure-Rust engine. Nothing here knows about Python.

pub mod aio;
pub mod cksm;
pub mod copy;
mod copy_aio;
pub mod device;
pub mod error;
pub mod kdump;
pub mod pageclass;
pub(crate) mod source_map;
#[cfg(test)]
pub(crate) mod testdata;
