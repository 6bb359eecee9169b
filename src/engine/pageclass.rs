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
    /// `None`: slab is a page type (Linux 6.10 and later, [`Self::slab_type`])
    pub pg_slab: Option<u32>,
    pub pg_hwpoison: Option<u32>,
    pub pg_head_mask: u64,
    /// `_mapcount` of a free page heading a buddy block (PAGE_BUDDY_MAPCOUNT_VALUE)
    pub buddy_mapcount: Option<u32>,
    pub offline_mapcount: Option<u32>,
    pub hugetlb_dtor: Option<u64>,
    /// buddy orders are below this (LENGTH(zone.free_area), MAX_ORDER)
    pub max_order: u32,
    /// Linux 6.6-6.8: hugetlb is this flag of the page after the head, whose flags'
    /// low byte is the order (from 6.6 on)
    pub pg_hugetlb: Option<u32>,
    /// Linux 6.9 and later: hugetlb is this page type of the head
    /// (PAGE_HUGETLB_MAPCOUNT_VALUE)
    pub hugetlb_type: Option<u32>,
    /// PAGE_SLAB_MAPCOUNT_VALUE
    pub slab_type: Option<u32>,
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
            ("PG_slab", self.pg_slab),
            ("PG_hwpoison", self.pg_hwpoison),
            ("PG_hugetlb", self.pg_hugetlb),
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

/// Linux 4.18-6.11: page types are bits cleared under this base in `page_type`.
const PAGE_TYPE_BASE: u32 = 0xF000_0000;

/// Is `mapcount` (page_type) the buddy or offline type whose VMCOREINFO value is
/// `value`? Linux 6.12 and later keep the type in the top byte (value = type << 24);
/// before, the whole word is the value.
fn is_page_type(mapcount: u32, value: u32) -> bool {
    if value & 0xFF_FFFF == 0 {
        mapcount >> 24 == value >> 24
    } else {
        mapcount == value
    }
}

/// The kernel's own test for the slab and hugetlb types: the top byte from 6.12; in
/// 6.9-6.11 the type's bit (`!value`) cleared under PAGE_TYPE_BASE, the low bits
/// carrying other data (a slab's count of objects in use).
fn has_page_type(mapcount: u32, value: u32) -> bool {
    if value & 0xFF_FFFF == 0 {
        mapcount >> 24 == value >> 24
    } else {
        mapcount & (PAGE_TYPE_BASE | !value) == PAGE_TYPE_BASE
    }
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
        let (mut order, mut hugetlb) = (0u64, false);
        if flags & ps.pg_head_mask != 0 && i + 1 < whole {
            let next = &memmap[(i + 1) * ps.size..(i + 2) * ps.size];
            if ps.hugetlb_type.is_some() || ps.pg_hugetlb.is_some() {
                let flags_1 = ps.u64_at(next, ps.flags);
                order = flags_1 & 0xFF;
                hugetlb = match (ps.hugetlb_type, ps.pg_hugetlb) {
                    (Some(t), _) => mapcount.is_some_and(|m| has_page_type(m, t)),
                    (None, Some(b)) => bit(flags_1, b),
                    (None, None) => false,
                };
            } else {
                order = ps.compound_order.map_or(0, |o| next[o] as u64);
                let dtor = ps.compound_dtor.map_or(0, |o| next[o] as u64);
                hugetlb = dtor != 0 && ps.hugetlb_dtor == Some(dtor);
            }
            if order >= 64 || pfn & ((1u64 << order) - 1) != 0 {
                order = 0; // not a valid compound head
            }
        }
        let slab = match (ps.pg_slab, ps.slab_type, mapcount) {
            (Some(b), _, _) => bit(flags, b),
            (None, Some(t), Some(m)) => has_page_type(m, t),
            _ => false,
        };
        // PAGE_MAPPING_ANON; from 6.10 a slab's word there is no mapping
        let anon = mapping & 1 != 0 && !slab;
        let cache = bit(flags, ps.pg_lru)
            || (ps.pg_swapbacked.is_none_or(|b| bit(flags, b)) && bit(flags, ps.pg_swapcache));
        let private_flag = bit(flags, ps.pg_private);
        let mut nr_pages = 1u64 << order;
        let typed = |value: Option<u32>| match (value, mapcount) {
            (Some(v), Some(m)) => is_page_type(m, v),
            _ => false,
        };
        let class = if buddy.is_some() && !slab && typed(buddy) {
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
        } else if dump_level & DL_EXCLUDE_USER != 0 && (anon || hugetlb) {
            Class::User
        } else if ps.pg_hwpoison.is_some_and(|b| bit(flags, b)) {
            Class::HwPoison
        } else if !slab && typed(ps.offline_mapcount) {
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
            pg_slab: Some(9),
            pg_hwpoison: Some(23),
            pg_head_mask: 1 << 16,
            buddy_mapcount: Some(-129i32 as u32),
            offline_mapcount: Some(-257i32 as u32),
            hugetlb_dtor: Some(2),
            max_order: 11,
            pg_hugetlb: None,
            hugetlb_type: None,
            slab_type: None,
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

    /// Linux 6.12: slab, buddy, offline and hugetlb are page types in the top byte of
    /// page_type; the order of a large folio is the low byte of the next page's flags.
    fn layout_6_12() -> PageStruct {
        PageStruct {
            compound_order: None,
            compound_dtor: None,
            hugetlb_dtor: None,
            pg_slab: None,
            buddy_mapcount: Some(0xF000_0000),
            offline_mapcount: Some(0xF100_0000),
            hugetlb_type: Some(0xF400_0000),
            slab_type: Some(0xF500_0000),
            ..layout()
        }
    }

    fn run_with(ps: &PageStruct, pages: &[Page], level: u32) -> (Vec<u8>, Counts) {
        let mm = memmap(pages);
        let mut bm = vec![0xFFu8; pages.len().div_ceil(8)];
        let mut counts = [0; 6];
        exclude_pages(&mm, 0, pages.len(), ps, level, &mut bm, &mut counts);
        (bm, counts)
    }

    #[test]
    fn linux_6_12_page_types_and_folio_orders() {
        let ps = layout_6_12();
        let mut pages: Vec<Page> = (0..16).map(|_| page()).collect();
        // a free order-2 block at pfn 0
        pages[0] = Page {
            mapcount: 0xF000_0000,
            private: 2,
            ..page()
        };
        // an anonymous order-2 folio at pfn 4: the order is in pfn 5's flags
        pages[4] = Page {
            flags: 1 << 16,
            mapping: 0x1001,
            ..page()
        };
        pages[5] = Page {
            flags: 2,
            head: 0x1001,
            ..page()
        };
        for tail in &mut pages[6..8] {
            tail.head = 0x1001;
        }
        // a slab page whose word at page.mapping happens to be odd: not user data
        pages[8] = Page {
            mapping: 0x1003,
            mapcount: 0xF500_0000,
            ..page()
        };
        // an order-1 hugetlb folio at pfn 10 (no anonymous mapping)
        pages[10] = Page {
            flags: 1 << 16,
            mapping: 0x1000,
            mapcount: 0xF400_0000,
            ..page()
        };
        pages[11] = Page {
            flags: 1,
            head: 0x1001,
            ..page()
        };
        pages[12].mapcount = 0xF100_0000; // offline
        let (bm, c) = run_with(&ps, &pages, 16);
        assert_eq!((bm, c[Class::Free as usize]), (vec![0xF0, 0xEF], 4)); // and pfn 12
        let (bm, c) = run_with(&ps, &pages, 8);
        assert_eq!(bm, vec![0x0F, 0b1110_0011]);
        assert_eq!(
            (c[Class::User as usize], c[Class::Offline as usize]),
            (6, 1)
        );
        // the kernels before 6.12 compare the whole word: 0xF0000000 is no buddy there
        let old = PageStruct {
            buddy_mapcount: Some(-129i32 as u32),
            ..layout_6_12()
        };
        let (bm, c) = run_with(&old, &pages, 16);
        assert_eq!((bm, c[Class::Free as usize]), (vec![0xFF, 0xEF], 0));
    }

    #[test]
    fn linux_6_10_slab_type_keeps_its_count_in_the_low_bits() {
        // 6.10-6.11: PG_slab is gone; the slab type is bit 0x1000 cleared under
        // PAGE_TYPE_BASE, the low bits count the objects in use
        let ps = PageStruct {
            pg_slab: None,
            slab_type: Some(!0x1000u32),
            ..layout()
        };
        let slab = vec![Page {
            mapping: 1,
            mapcount: !0x1000u32 - 5,
            ..page()
        }];
        assert_eq!(run_with(&ps, &slab, 8).0, vec![0xFF]);
        // a page without the type is anonymous
        let anon = vec![Page {
            mapping: 1,
            ..page()
        }];
        assert_eq!(run_with(&ps, &anon, 8).0, vec![0xFE]);
    }
}
