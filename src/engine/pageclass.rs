//! Page classes from the crashed kernel's `struct page` array: which pages a filtered
//! dump leaves out (makedumpfile's dump levels 2 cache, 4 cache + private, 8 user,
//! 16 free). The caller finds the array (VMCOREINFO, sparsemem, page tables) and hands
//! it over section by section; this is the per-page loop, which for a 1 TiB machine
//! runs 268 million times. Twin: `python/zfcpdump/pagefilter/classify.py`.
//!
//! The rules are makedumpfile's (`__exclude_unnecessary_pages`, version 1.7), in its
//! order: compound tail pages are skipped, then free (buddy), cache, cache private,
//! user (anonymous or hugetlbfs), hardware-poisoned and logically offline pages.
//! One deliberate difference: a buddy page whose order is not below `max_order`, or
//! whose pfn is not aligned to it, is kept (makedumpfile would drop `1 << order` pages
//! on the word of a possibly corrupted `struct page`).

use crate::engine::kdump::bitmap::bit_set;

/// makedumpfile dump_level bits walked here.
pub const DL_EXCLUDE_CACHE: u32 = 2;
pub const DL_EXCLUDE_CACHE_PRIVATE: u32 = 4;
pub const DL_EXCLUDE_USER: u32 = 8;
pub const DL_EXCLUDE_FREE: u32 = 16;

/// Larger `SIZE(page)` values are refused: struct page is 56 to 80 bytes in practice.
pub const MAX_STRUCT_PAGE: usize = 512;

/// Index of each class in [`Counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Free = 0,
    Cache = 1,
    CachePrivate = 2,
    User = 3,
    HwPoison = 4,
    Offline = 5,
}

/// Pages excluded per [`Class`] (only bits that were set and are now clear).
pub type Counts = [u64; 6];

/// Where the fields of `struct page` are and what the flag numbers mean
/// (VMCOREINFO `SIZE(page)`, `OFFSET(page.*)`, `NUMBER(*)`). `None`: not in VMCOREINFO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageStruct {
    pub size: usize,
    pub big_endian: bool,
    pub flags: usize,
    pub mapping: usize,
    pub mapcount: Option<usize>,
    pub private: Option<usize>,
    pub compound_head: Option<usize>,
    /// in the page after the head (one byte, kernels 4.16 and later)
    pub compound_order: Option<usize>,
    /// in the page after the head (one byte)
    pub compound_dtor: Option<usize>,
    pub pg_lru: u32,
    pub pg_private: u32,
    pub pg_swapcache: u32,
    pub pg_swapbacked: Option<u32>,
    pub pg_slab: u32,
    pub pg_hwpoison: Option<u32>,
    pub pg_head_mask: u64,
    /// `_mapcount` of a free page heading a buddy block (PAGE_BUDDY_MAPCOUNT_VALUE)
    pub buddy_mapcount: Option<u32>,
    pub offline_mapcount: Option<u32>,
    pub hugetlb_dtor: Option<u64>,
    /// buddy orders are below this (LENGTH(zone.free_area), MAX_ORDER)
    pub max_order: u32,
}

impl PageStruct {
    /// The fields this loop reads must lie inside one `struct page`, and the numbers
    /// must be possible ones (a corrupted VMCOREINFO must not steer the loop).
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 || self.size > MAX_STRUCT_PAGE {
            return Err(format!(
                "SIZE(page)={} is not a struct page size (1-{MAX_STRUCT_PAGE})",
                self.size
            ));
        }
        if self.max_order == 0 || self.max_order > 64 {
            return Err(format!(
                "LENGTH(zone.free_area)={} is not a number of buddy orders (1-64)",
                self.max_order
            ));
        }
        let fits = |name: &str, off: Option<usize>, width: usize| match off {
            Some(o) if o + width > self.size => Err(format!(
                "OFFSET(page.{name})={o} does not fit in SIZE(page)={}",
                self.size
            )),
            _ => Ok(()),
        };
        fits("flags", Some(self.flags), 8)?;
        fits("mapping", Some(self.mapping), 8)?;
        fits("_mapcount", self.mapcount, 4)?;
        fits("private", self.private, 8)?;
        fits("compound_head", self.compound_head, 8)?;
        fits("compound_order", self.compound_order, 1)?;
        fits("compound_dtor", self.compound_dtor, 1)?;
        for (name, bit) in [
            ("PG_lru", Some(self.pg_lru)),
            ("PG_private", Some(self.pg_private)),
            ("PG_swapcache", Some(self.pg_swapcache)),
            ("PG_swapbacked", self.pg_swapbacked),
            ("PG_slab", Some(self.pg_slab)),
            ("PG_hwpoison", self.pg_hwpoison),
        ] {
            if let Some(b) = bit {
                if b >= 64 {
                    return Err(format!("NUMBER({name})={b} is not a bit of page.flags"));
                }
            }
        }
        Ok(())
    }

    fn u64_at(&self, page: &[u8], off: usize) -> u64 {
        let b: [u8; 8] = page[off..off + 8].try_into().expect("8 bytes");
        if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    }

    fn u32_at(&self, page: &[u8], off: usize) -> u32 {
        let b: [u8; 4] = page[off..off + 4].try_into().expect("4 bytes");
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
}

fn bit(flags: u64, nr: u32) -> bool {
    (flags >> nr) & 1 != 0
}

/// Clear bits `[lo, hi)` of `bitmap` (those inside it); how many were set.
fn clear_range(bitmap: &mut [u8], lo: u64, hi: u64) -> u64 {
    let hi = hi.min(8 * bitmap.len() as u64);
    let mut cleared = 0;
    let mut pfn = lo;
    while pfn < hi {
        let i = (pfn >> 3) as usize;
        if pfn & 7 == 0 && hi - pfn >= 8 {
            cleared += bitmap[i].count_ones() as u64;
            bitmap[i] = 0;
            pfn += 8;
        } else {
            let m = 1u8 << (pfn & 7);
            if bitmap[i] & m != 0 {
                bitmap[i] &= !m;
                cleared += 1;
            }
            pfn += 1;
        }
    }
    cleared
}

/// Classify the first `npages` `struct page`s in `memmap` (the array for pfns
/// `first_pfn..`; `memmap` may hold one more, which a compound head at the end reads
/// its order from) and clear the bits of the excluded pages in `dumpable` (a bitmap
/// by pfn, LSB first, with the RAM pages set). Pages whose bit is already clear are
/// not looked at: holes, and pages an earlier block exclusion covered.
pub fn exclude_pages(
    memmap: &[u8],
    first_pfn: u64,
    npages: usize,
    ps: &PageStruct,
    dump_level: u32,
    dumpable: &mut [u8],
    counts: &mut Counts,
) {
    let whole = memmap.len() / ps.size;
    let n = npages.min(whole);
    let buddy = match (ps.buddy_mapcount, ps.mapcount, ps.private) {
        (Some(v), Some(_), Some(_)) if dump_level & DL_EXCLUDE_FREE != 0 => Some(v),
        _ => None,
    };
    for i in 0..n {
        let pfn = first_pfn + i as u64;
        if !bit_set(dumpable, pfn) {
            continue;
        }
        let page = &memmap[i * ps.size..(i + 1) * ps.size];
        let flags = ps.u64_at(page, ps.flags);
        let mapping = ps.u64_at(page, ps.mapping);
        let mapcount = ps.mapcount.map(|o| ps.u32_at(page, o));
        let private = ps.private.map_or(0, |o| ps.u64_at(page, o));
        if ps
            .compound_head
            .is_some_and(|o| ps.u64_at(page, o) & 1 != 0)
        {
            continue; // a tail page: excluded with its head, or kept with it
        }
        let (mut order, mut dtor) = (0u64, 0u64);
        if flags & ps.pg_head_mask != 0 && i + 1 < whole {
            let next = &memmap[(i + 1) * ps.size..(i + 2) * ps.size];
            order = ps.compound_order.map_or(0, |o| next[o] as u64);
            dtor = ps.compound_dtor.map_or(0, |o| next[o] as u64);
            if order >= 64 || pfn & ((1u64 << order) - 1) != 0 {
                order = 0; // not a valid compound head
            }
        }
        let slab = bit(flags, ps.pg_slab);
        let anon = mapping & 1 != 0; // PAGE_MAPPING_ANON
        let cache = bit(flags, ps.pg_lru)
            || (ps.pg_swapbacked.is_none_or(|b| bit(flags, b)) && bit(flags, ps.pg_swapcache));
        let private_flag = bit(flags, ps.pg_private);
        let mut nr_pages = 1u64 << order;
        let class = if buddy.is_some() && !slab && mapcount == buddy {
            if private >= ps.max_order as u64 || pfn & ((1u64 << private) - 1) != 0 {
                continue; // an order no free block has: keep the page
            }
            nr_pages = 1u64 << private;
            Class::Free
        } else if dump_level & DL_EXCLUDE_CACHE != 0 && cache && !private_flag && !anon {
            Class::Cache
        } else if dump_level & DL_EXCLUDE_CACHE_PRIVATE != 0 && cache && !anon {
            if private_flag {
                Class::CachePrivate
            } else {
                Class::Cache
            }
        } else if dump_level & DL_EXCLUDE_USER != 0
            && (anon || (dtor != 0 && ps.hugetlb_dtor == Some(dtor)))
        {
            Class::User
        } else if ps.pg_hwpoison.is_some_and(|b| bit(flags, b)) {
            Class::HwPoison
        } else if ps.offline_mapcount.is_some() && !slab && mapcount == ps.offline_mapcount {
            Class::Offline
        } else {
            continue;
        };
        counts[class as usize] += clear_range(dumpable, pfn, pfn + nr_pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> PageStruct {
        PageStruct {
            size: 64,
            big_endian: false,
            flags: 0,
            mapping: 24,
            mapcount: Some(48),
            private: Some(40),
            compound_head: Some(8),
            compound_order: Some(17),
            compound_dtor: Some(16),
            pg_lru: 4,
            pg_private: 13,
            pg_swapcache: 10,
            pg_swapbacked: Some(19),
            pg_slab: 9,
            pg_hwpoison: Some(23),
            pg_head_mask: 1 << 16,
            buddy_mapcount: Some(-129i32 as u32),
            offline_mapcount: Some(-257i32 as u32),
            hugetlb_dtor: Some(2),
            max_order: 11,
        }
    }

    struct Page {
        flags: u64,
        mapping: u64,
        mapcount: u32,
        private: u64,
        head: u64,
        order: u8,
        dtor: u8,
    }

    fn page() -> Page {
        Page {
            flags: 0,
            mapping: 0,
            mapcount: u32::MAX,
            private: 0,
            head: 0,
            order: 0,
            dtor: 0,
        }
    }

    fn memmap(pages: &[Page]) -> Vec<u8> {
        let mut v = vec![0u8; 64 * pages.len()];
        for (i, p) in pages.iter().enumerate() {
            let b = &mut v[64 * i..64 * (i + 1)];
            b[0..8].copy_from_slice(&p.flags.to_le_bytes());
            b[8..16].copy_from_slice(&p.head.to_le_bytes());
            b[16] = p.dtor;
            b[17] = p.order;
            b[24..32].copy_from_slice(&p.mapping.to_le_bytes());
            b[40..48].copy_from_slice(&p.private.to_le_bytes());
            b[48..52].copy_from_slice(&p.mapcount.to_le_bytes());
        }
        v
    }

    fn run(pages: &[Page], level: u32) -> (Vec<u8>, Counts) {
        let mm = memmap(pages);
        let mut bm = vec![0xFFu8; pages.len().div_ceil(8)];
        let mut counts = [0; 6];
        exclude_pages(&mm, 0, pages.len(), &layout(), level, &mut bm, &mut counts);
        (bm, counts)
    }

    #[test]
    fn buddy_block_excludes_its_order() {
        let mut pages: Vec<Page> = (0..16).map(|_| page()).collect();
        pages[4] = Page {
            mapcount: -129i32 as u32,
            private: 2,
            ..page()
        };
        let (bm, counts) = run(&pages, 31);
        assert_eq!(bm, vec![0x0F, 0xFF]);
        assert_eq!(counts[Class::Free as usize], 4);
        // dump level without 16 keeps them
        let (bm, counts) = run(&pages, 8);
        assert_eq!(bm, vec![0xFF, 0xFF]);
        assert_eq!(counts, [0; 6]);
    }

    #[test]
    fn buddy_with_impossible_order_is_kept() {
        let mut pages: Vec<Page> = (0..16).map(|_| page()).collect();
        pages[4] = Page {
            mapcount: -129i32 as u32,
            private: 40,
            ..page()
        };
        pages[6] = Page {
            mapcount: -129i32 as u32,
            private: 2,
            ..page()
        }; // misaligned
        let (bm, _) = run(&pages, 31);
        assert_eq!(bm, vec![0xFF, 0xFF]);
    }

    #[test]
    fn cache_private_and_user_follow_the_level() {
        let lru = 1 << 4;
        let pages = vec![
            Page {
                flags: lru,
                mapping: 0xffff_0000,
                ..page()
            }, // cache
            Page {
                flags: lru | 1 << 13,
                mapping: 0xffff_0000,
                ..page()
            }, // cache private
            Page {
                flags: lru,
                mapping: 0xffff_0001,
                ..page()
            }, // anon (user)
            Page {
                flags: 1 << 10 | 1 << 19,
                ..page()
            }, // swap cache
            Page {
                flags: 1 << 10,
                ..page()
            }, // swapcache w/o swapbacked
            page(),
            Page {
                flags: 1 << 23,
                ..page()
            }, // hwpoison
            Page {
                mapcount: -257i32 as u32,
                ..page()
            }, // offline
        ];
        let (bm, c) = run(&pages, 2);
        assert_eq!(bm, vec![!(0b0000_1001u8 | 0b1100_0000)]);
        assert_eq!(c, [0, 2, 0, 0, 1, 1]);
        let (bm, c) = run(&pages, 4);
        assert_eq!(bm, vec![!0b1100_1011u8]);
        assert_eq!(c, [0, 2, 1, 0, 1, 1]);
        let (bm, c) = run(&pages, 8);
        assert_eq!(bm, vec![!0b1100_0100u8]);
        assert_eq!(c, [0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn compound_head_takes_its_tails() {
        let mut pages: Vec<Page> = (0..8).map(|_| page()).collect();
        pages[4] = Page {
            flags: 1 << 16,
            mapping: 0x1001,
            ..page()
        };
        for tail in &mut pages[5..8] {
            *tail = Page {
                head: 0x1000 | 1,
                ..page()
            };
        }
        pages[5].order = 2;
        let (bm, c) = run(&pages, 8);
        assert_eq!(bm, vec![0x0F]);
        assert_eq!(c[Class::User as usize], 4);
        // hugetlb: found by its destructor, not its mapping
        pages[4].mapping = 0x1000;
        pages[5].dtor = 2;
        let (bm, _) = run(&pages, 8);
        assert_eq!(bm, vec![0x0F]);
        // slab pages look like nothing here
        let mut slab: Vec<Page> = (0..8).map(|_| page()).collect();
        slab[0] = Page {
            flags: 1 << 9,
            mapcount: -129i32 as u32,
            mapping: 1,
            ..page()
        };
        let (bm, _) = run(&slab, 16);
        assert_eq!(bm, vec![0xFF]);
    }

    #[test]
    fn cleared_bits_are_not_looked_at_and_not_counted_twice() {
        let mut pages: Vec<Page> = (0..8).map(|_| page()).collect();
        pages[0] = Page {
            mapcount: -129i32 as u32,
            private: 3,
            ..page()
        };
        let mm = memmap(&pages);
        let mut bm = vec![0b1111_1011u8]; // pfn 2 is a hole
        let mut counts = [0; 6];
        exclude_pages(&mm, 0, 8, &layout(), 16, &mut bm, &mut counts);
        assert_eq!(bm, vec![0]);
        assert_eq!(counts[Class::Free as usize], 7);
    }

    #[test]
    fn big_endian_fields() {
        let mut ps = layout();
        ps.big_endian = true;
        let mut mm = vec![0u8; 64];
        mm[0..8].copy_from_slice(&(1u64 << 4).to_be_bytes());
        mm[24..32].copy_from_slice(&0x1000u64.to_be_bytes());
        let mut bm = vec![1u8];
        let mut counts = [0; 6];
        exclude_pages(&mm, 0, 1, &ps, 2, &mut bm, &mut counts);
        assert_eq!((bm[0], counts[1]), (0, 1));
    }

    #[test]
    fn validate_rejects_offsets_outside_the_struct_and_impossible_numbers() {
        let mut ps = layout();
        assert!(ps.validate().is_ok());
        ps.mapping = 60;
        assert!(ps.validate().unwrap_err().contains("page.mapping"));
        let mut ps = layout();
        ps.size = 4096;
        assert!(ps.validate().unwrap_err().contains("SIZE(page)"));
        let mut ps = layout();
        ps.max_order = 65;
        assert!(ps.validate().unwrap_err().contains("free_area"));
    }

    #[test]
    fn only_npages_are_classified_and_the_next_one_gives_the_order() {
        // a THP head as the last classified page: its order comes from the extra page
        let mut pages: Vec<Page> = (0..5).map(|_| page()).collect();
        pages[2] = Page {
            mapcount: -129i32 as u32,
            ..page()
        };
        pages[4] = Page {
            flags: 1 << 16,
            mapping: 0x1001,
            ..page()
        };
        let mut extra = page();
        extra.order = 2;
        extra.head = 0x1001;
        pages.push(extra);
        let mm = memmap(&pages);
        let mut bm = vec![0xFFu8; 2];
        let mut counts = [0; 6];
        exclude_pages(&mm, 0, 2, &layout(), 31, &mut bm, &mut counts);
        assert_eq!(bm, vec![0xFF, 0xFF], "pfn 2 is past npages");
        exclude_pages(&mm[64 * 4..], 4, 1, &layout(), 8, &mut bm, &mut counts);
        assert_eq!(bm, vec![0x0F, 0xFF]);
        assert_eq!(counts[Class::User as usize], 4);
    }
}
