//! The two kdump bitmaps (formats.md §13.4): bit N (`byte[N >> 3] & (1 << (N & 7))`,
//! LSB first) says pfn N is RAM (1st bitmap) or dumpable (2nd bitmap). Both are built
//! window by window from sorted pfn runs, so memory stays bounded whatever `max_mapnr`.

/// Set the bits of `runs` (sorted, non-overlapping `(first_pfn, count)`) that fall in the
/// window of pfns `[first_bit, first_bit + 8 * out.len())`. `out` is zeroed first.
pub fn fill_window(runs: &[(u64, u64)], first_bit: u64, out: &mut [u8]) {
    out.fill(0);
    let end_bit = first_bit + 8 * out.len() as u64;
    // first run that ends after the window start
    let start = runs.partition_point(|&(p, n)| p + n <= first_bit);
    for &(pfn, count) in &runs[start..] {
        if pfn >= end_bit {
            break;
        }
        let lo = pfn.max(first_bit) - first_bit;
        let hi = (pfn + count).min(end_bit) - first_bit;
        set_bits(out, lo, hi);
    }
}

/// Set bits `[lo, hi)` of `out`: partial bytes bit by bit, whole bytes at once.
fn set_bits(out: &mut [u8], lo: u64, hi: u64) {
    let mut i = lo;
    while i < hi && !i.is_multiple_of(8) {
        out[(i >> 3) as usize] |= 1 << (i & 7);
        i += 1;
    }
    let whole_end = hi / 8 * 8;
    if i < whole_end {
        out[(i >> 3) as usize..(whole_end >> 3) as usize].fill(0xFF);
        i = whole_end;
    }
    while i < hi {
        out[(i >> 3) as usize] |= 1 << (i & 7);
        i += 1;
    }
}

/// Whether bit `pfn` of a bitmap by pfn (LSB first) is set; bits past its end are not.
pub fn bit_set(bitmap: &[u8], pfn: u64) -> bool {
    let i = (pfn >> 3) as usize;
    i < bitmap.len() && bitmap[i] & (1 << (pfn & 7)) != 0
}

/// How many pages of `runs` have their bit set in `dumpable`: the descriptors a
/// filtered dump has. Whole bytes are counted at once.
pub fn count_dumpable(runs: &[(u64, u64)], dumpable: &[u8]) -> u64 {
    let mut n = 0;
    for &(first, count) in runs {
        let (mut pfn, end) = (first, first + count);
        while pfn < end {
            if pfn & 7 == 0 && end - pfn >= 8 {
                n += dumpable
                    .get((pfn >> 3) as usize)
                    .map_or(0, |b| b.count_ones() as u64);
                pfn += 8;
            } else {
                n += bit_set(dumpable, pfn) as u64;
                pfn += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(runs: &[(u64, u64)], first: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for &(p, n) in runs {
            for pfn in p..p + n {
                if pfn >= first && pfn < first + 8 * len as u64 {
                    let b = pfn - first;
                    v[(b >> 3) as usize] |= 1 << (b & 7);
                }
            }
        }
        v
    }

    #[test]
    fn windows_match_bit_by_bit_model() {
        let runs = [(0, 1), (3, 20), (40, 1), (64, 64), (130, 3), (1000, 77)];
        for &first in &[0u64, 8, 16, 64, 128, 1024] {
            for &len in &[1usize, 3, 16, 200] {
                let mut out = vec![0xEEu8; len];
                fill_window(&runs, first, &mut out);
                assert_eq!(out, model(&runs, first, len), "first={first} len={len}");
            }
        }
    }

    #[test]
    fn lsb_first() {
        let mut out = [0u8; 2];
        fill_window(&[(1, 1), (9, 7)], 0, &mut out);
        assert_eq!(out, [0b0000_0010, 0b1111_1110]);
    }
}
