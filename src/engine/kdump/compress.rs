//! Per-page compression as makedumpfile does it (formats.md §13.4, performance.md §5):
//! every page on its own, stored compressed only if that makes it smaller.
//!
//! * zlib: `compress2`-equivalent output (zlib header, window 15, memLevel 8, default
//!   strategy) from the **system** zlib through flate2/libz-sys, with the stream reset
//!   per page instead of re-initialised (makedumpfile commit aa5ee50). Python's `zlib`
//!   module links the same libz, hence byte-identical pages in the pure-Python twin.
//! * zstd: one `ZSTD_compress2` frame per page (content size in the frame header, no
//!   checksum), libzstd 1.5.7 bundled by zstd-sys, the version the Python `zstandard`
//!   wheel bundles too.
//! * snappy: raw snappy blocks (`snappy_compress`) from the `snap` crate.
//! * LZO is not offered: the only Rust LZO1X-1 compressors are GPL (the project is MIT)
//!   or unmaintained.
//! * LZ4 has no page flag any reader knows; it is refused with an explanation.

use std::io;

pub const FLAG_ZLIB: u32 = 0x1;
pub const FLAG_LZO: u32 = 0x2;
pub const FLAG_SNAPPY: u32 = 0x4;
pub const FLAG_ZSTD: u32 = 0x20;

/// Explanation given when LZ4 is asked for (also used by the Python CLI).
pub const LZ4_REFUSED: &str = "lz4 cannot be used: the kdump-compressed format has no LZ4 \
page flag (only zlib 0x1, lzo 0x2, snappy 0x4, zstd 0x20), so crash, drgn, libkdumpfile \
and makedumpfile could not read the dump; use zstd instead";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    None,
    Zlib,
    Snappy,
    Zstd,
}

impl Algo {
    pub fn parse(name: &str) -> Result<Algo, String> {
        match name {
            "none" => Ok(Algo::None),
            "zlib" => Ok(Algo::Zlib),
            "snappy" => Ok(Algo::Snappy),
            "zstd" => Ok(Algo::Zstd),
            "lz4" => Err(LZ4_REFUSED.into()),
            "lzo" => Err(
                "lzo is not available in the rust engine (no MIT-compatible \
                          LZO1X compressor crate); use zstd or snappy"
                    .into(),
            ),
            other => Err(format!(
                "unknown compression {other:?}; choose none, zlib, snappy or zstd"
            )),
        }
    }

    /// The `page_desc.flags` / header status bit.
    pub fn flag(self) -> u32 {
        match self {
            Algo::None => 0,
            Algo::Zlib => FLAG_ZLIB,
            Algo::Snappy => FLAG_SNAPPY,
            Algo::Zstd => FLAG_ZSTD,
        }
    }

    /// makedumpfile's level when none is given: zlib 1 (Z_BEST_SPEED), zstd 1.
    pub fn default_level(self) -> i32 {
        1
    }
}

enum State {
    None,
    Zlib(Box<flate2::Compress>),
    Snappy(Box<snap::raw::Encoder>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

/// One thread's compressor, reused for every page.
pub struct PageCompressor {
    state: State,
    flag: u32,
    scratch: Vec<u8>,
}

impl PageCompressor {
    pub fn new(algo: Algo, level: i32, page_size: usize) -> io::Result<PageCompressor> {
        let state = match algo {
            Algo::None => State::None,
            Algo::Zlib => {
                let lvl = level.clamp(0, 9) as u32;
                State::Zlib(Box::new(flate2::Compress::new(
                    flate2::Compression::new(lvl),
                    true,
                )))
            }
            Algo::Snappy => State::Snappy(Box::new(snap::raw::Encoder::new())),
            Algo::Zstd => State::Zstd(Box::new(zstd::bulk::Compressor::new(level)?)),
        };
        // Room for any result (compressBound of a page is below twice the page).
        let scratch = vec![0u8; 2 * page_size + 1024];
        Ok(PageCompressor {
            state,
            flag: algo.flag(),
            scratch,
        })
    }

    /// Compress `page`. Returns `Some((bytes, flag))` if the result is strictly smaller
    /// than the page, `None` if the page must be stored raw.
    pub fn compress(&mut self, page: &[u8]) -> io::Result<Option<(&[u8], u32)>> {
        let n = match &mut self.state {
            State::None => return Ok(None),
            State::Zlib(c) => {
                c.reset();
                match c.compress(page, &mut self.scratch, flate2::FlushCompress::Finish) {
                    Ok(flate2::Status::StreamEnd) => c.total_out() as usize,
                    Ok(_) => return Ok(None), // did not fit: incompressible
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            State::Snappy(enc) => enc
                .compress(page, &mut self.scratch)
                .map_err(io::Error::other)?,
            State::Zstd(c) => c.compress_to_buffer(page, &mut self.scratch[..])?,
        };
        if n < page.len() {
            Ok(Some((&self.scratch[..n], self.flag)))
        } else {
            Ok(None)
        }
    }
}

/// Versions of the libraries behind the compressors, for the twin tests:
/// (zlib runtime version, zstd version number).
pub fn library_versions() -> (String, u32) {
    // SAFETY: zlibVersion returns a static NUL-terminated string.
    let z = unsafe { std::ffi::CStr::from_ptr(libz_sys::zlibVersion()) };
    (
        z.to_string_lossy().into_owned(),
        zstd::zstd_safe::version_number(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn text_page() -> Vec<u8> {
        let t = b"Linux memory page; the quick brown fox jumps over the lazy dog.\n";
        t.iter().cycle().take(4096).copied().collect()
    }

    fn random_page() -> Vec<u8> {
        crate::engine::testdata::pseudo_random(4096, 1)
    }

    #[test]
    fn round_trips_and_incompressible_pages_stay_raw() {
        for algo in [Algo::Zlib, Algo::Snappy, Algo::Zstd] {
            let mut c = PageCompressor::new(algo, 1, 4096).unwrap();
            for _ in 0..2 {
                let page = text_page();
                let (data, flag) = c.compress(&page).unwrap().expect("text compresses");
                assert_eq!(flag, algo.flag());
                assert!(data.len() < 4096);
                let back = match algo {
                    Algo::Zlib => {
                        let mut v = Vec::new();
                        flate2::read::ZlibDecoder::new(data)
                            .read_to_end(&mut v)
                            .unwrap();
                        v
                    }
                    Algo::Snappy => snap::raw::Decoder::new().decompress_vec(data).unwrap(),
                    Algo::Zstd => zstd::bulk::decompress(data, 4096).unwrap(),
                    Algo::None => unreachable!(),
                };
                assert_eq!(back, page);
                assert!(c.compress(&random_page()).unwrap().is_none(), "{algo:?}");
            }
        }
        let mut none = PageCompressor::new(Algo::None, 0, 4096).unwrap();
        assert!(none.compress(&[0u8; 4096]).unwrap().is_none());
    }

    #[test]
    fn zlib_output_is_compress2_level1() {
        // compress2(level 1) of a zero page, as produced by zlib 1.2.x / 1.3.x.
        let mut c = PageCompressor::new(Algo::Zlib, 1, 4096).unwrap();
        let (data, _) = c.compress(&[0u8; 4096]).unwrap().unwrap();
        assert_eq!(&data[..2], &[0x78, 0x01]);
        let mut v = Vec::new();
        flate2::read::ZlibDecoder::new(data)
            .read_to_end(&mut v)
            .unwrap();
        assert_eq!(v, vec![0u8; 4096]);
    }

    #[test]
    fn names() {
        assert_eq!(Algo::parse("zstd").unwrap().flag(), 0x20);
        assert!(Algo::parse("lz4").unwrap_err().contains("no LZ4 page flag"));
        assert!(Algo::parse("bogus").is_err());
    }
}
