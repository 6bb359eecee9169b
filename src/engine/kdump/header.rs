//! `disk_dump_header` (block 0) and `kdump_sub_header` (block 1) of the kdump-compressed
//! format, header_version 6 (formats.md §13.2, §13.3), and the 24-byte `page_desc`
//! (§13.4). Integers use the byte order of the dumped machine.
//!
//! Python twin: `zfcpdump.formats.kdump_layout` (same offsets, same bytes).

/// `KDUMP` + three spaces.
pub const SIGNATURE: &[u8; 8] = b"KDUMP   ";
pub const HEADER_VERSION: i32 = 6;
/// Bytes of `disk_dump_header` that carry data (the rest of block 0 is zero).
pub const HEADER_SIZE: usize = 464;
/// Bytes of `kdump_sub_header` (v6).
pub const SUB_HEADER_SIZE: usize = 104;
pub const DESC_SIZE: usize = 24;
pub const UTS_FIELD: usize = 65;

/// Byte-order-aware little encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endian {
    pub big: bool,
}

impl Endian {
    pub fn u32(self, out: &mut [u8], at: usize, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        out[at..at + 4].copy_from_slice(&b);
    }

    pub fn u64(self, out: &mut [u8], at: usize, v: u64) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        out[at..at + 8].copy_from_slice(&b);
    }
}

/// Everything the two headers say. `utsname` is sysname, nodename, release, version,
/// machine, domainname; each is cut to 64 bytes and NUL-terminated.
#[derive(Clone, Debug, Default)]
pub struct HeaderInfo {
    pub big_endian: bool,
    pub utsname: [String; 6],
    pub tv_sec: i64,
    pub tv_usec: i64,
    /// compression flag (0x1, 0x2, 0x4, 0x20) or 0
    pub status: u32,
    pub block_size: u32,
    pub sub_hdr_size: u32,
    pub bitmap_blocks: u32,
    pub max_mapnr: u64,
    pub nr_cpus: u32,
    pub phys_base: u64,
    pub dump_level: u32,
    /// file offset of the VMCOREINFO text (0 if none) and its size
    pub offset_vmcoreinfo: u64,
    pub size_vmcoreinfo: u64,
    pub size_note: u64,
}

/// Block 0: `disk_dump_header`, zero-padded to `block_size`.
pub fn encode_header(h: &HeaderInfo) -> Vec<u8> {
    let e = Endian { big: h.big_endian };
    let mut b = vec![0u8; (h.block_size as usize).max(HEADER_SIZE)];
    b[0..8].copy_from_slice(SIGNATURE);
    e.u32(&mut b, 8, HEADER_VERSION as u32);
    for (i, field) in h.utsname.iter().enumerate() {
        let bytes = field.as_bytes();
        let n = bytes.len().min(UTS_FIELD - 1);
        let at = 12 + UTS_FIELD * i;
        b[at..at + n].copy_from_slice(&bytes[..n]);
    }
    // 402..408: padding before the 8-byte aligned timeval
    e.u64(&mut b, 408, h.tv_sec as u64);
    e.u64(&mut b, 416, h.tv_usec as u64);
    e.u32(&mut b, 424, h.status);
    e.u32(&mut b, 428, h.block_size);
    e.u32(&mut b, 432, h.sub_hdr_size);
    e.u32(&mut b, 436, h.bitmap_blocks);
    e.u32(&mut b, 440, h.max_mapnr as u32); // obsolete 32-bit copy (truncated)
                                            // 444 total_ram_blocks, 448 device_blocks, 452 written_blocks, 456 current_cpu: 0
    e.u32(&mut b, 460, h.nr_cpus);
    b
}

/// Block 1 onwards: `kdump_sub_header` followed by the copied ELF notes, zero-padded to
/// `sub_hdr_size` blocks.
pub fn encode_sub_header(h: &HeaderInfo, notes: &[u8]) -> Vec<u8> {
    let e = Endian { big: h.big_endian };
    let bs = h.block_size as usize;
    let mut b = vec![0u8; h.sub_hdr_size as usize * bs];
    e.u64(&mut b, 0, h.phys_base);
    e.u32(&mut b, 8, h.dump_level);
    // 12 split, 16 start_pfn, 24 end_pfn: 0 (not a split dump)
    e.u64(&mut b, 32, h.offset_vmcoreinfo);
    e.u64(&mut b, 40, h.size_vmcoreinfo);
    e.u64(
        &mut b,
        48,
        if notes.is_empty() {
            0
        } else {
            (bs + SUB_HEADER_SIZE) as u64
        },
    );
    e.u64(&mut b, 56, h.size_note);
    // 64 offset_eraseinfo, 72 size_eraseinfo, 80 start_pfn_64, 88 end_pfn_64: 0
    e.u64(&mut b, 96, h.max_mapnr);
    b[SUB_HEADER_SIZE..SUB_HEADER_SIZE + notes.len()].copy_from_slice(notes);
    b
}

/// One `page_desc`: offset u64, size u32, flags u32, page_flags u64 (0).
pub fn encode_desc(e: Endian, out: &mut [u8], offset: u64, size: u32, flags: u32) {
    e.u64(out, 0, offset);
    e.u32(out, 8, size);
    e.u32(out, 12, flags);
    e.u64(out, 16, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(big: bool) -> HeaderInfo {
        HeaderInfo {
            big_endian: big,
            utsname: [
                "Linux".into(),
                "node".into(),
                "6.1.0".into(),
                "#1 SMP".into(),
                "s390x".into(),
                "x".repeat(100),
            ],
            tv_sec: 0x0102_0304,
            tv_usec: 5,
            status: 0x20,
            block_size: 4096,
            sub_hdr_size: 1,
            bitmap_blocks: 2,
            max_mapnr: 0x1_0000_0005,
            nr_cpus: 3,
            phys_base: 0,
            dump_level: 1,
            offset_vmcoreinfo: 4096 + 104 + 20,
            size_vmcoreinfo: 10,
            size_note: 40,
        }
    }

    #[test]
    fn header_fields_at_their_offsets() {
        let b = encode_header(&info(true));
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[..8], b"KDUMP   ");
        assert_eq!(&b[8..12], &[0, 0, 0, 6]);
        assert_eq!(&b[12..18], b"Linux\0");
        assert_eq!(&b[12 + 65 * 4..12 + 65 * 4 + 6], b"s390x\0");
        // the domainname is cut to 64 bytes plus NUL; padding stays zero
        assert_eq!(b[12 + 65 * 5 + 63], b'x');
        assert_eq!(&b[12 + 65 * 5 + 64..408], &[0u8; 7]);
        assert_eq!(&b[408..416], &0x0102_0304u64.to_be_bytes());
        assert_eq!(&b[424..428], &0x20u32.to_be_bytes());
        assert_eq!(&b[428..432], &4096u32.to_be_bytes());
        assert_eq!(&b[440..444], &5u32.to_be_bytes()); // truncated max_mapnr
        assert_eq!(&b[460..464], &3u32.to_be_bytes());
        assert!(b[464..].iter().all(|&x| x == 0));
        let l = encode_header(&info(false));
        assert_eq!(&l[8..12], &[6, 0, 0, 0]);
    }

    #[test]
    fn sub_header_and_notes() {
        let notes = [7u8; 40];
        let b = encode_sub_header(&info(false), &notes);
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[8..12], &1u32.to_le_bytes());
        assert_eq!(&b[32..40], &(4096u64 + 124).to_le_bytes());
        assert_eq!(&b[48..56], &(4096u64 + 104).to_le_bytes());
        assert_eq!(&b[56..64], &40u64.to_le_bytes());
        assert_eq!(&b[96..104], &0x1_0000_0005u64.to_le_bytes());
        assert_eq!(&b[104..144], &notes);
        assert!(b[144..].iter().all(|&x| x == 0));
    }

    #[test]
    fn desc_layout() {
        let mut d = [0xAAu8; 24];
        encode_desc(Endian { big: true }, &mut d, 0x1122, 77, 0x20);
        assert_eq!(&d[..8], &0x1122u64.to_be_bytes());
        assert_eq!(&d[8..12], &77u32.to_be_bytes());
        assert_eq!(&d[12..16], &0x20u32.to_be_bytes());
        assert_eq!(&d[16..], &[0u8; 8]);
    }
}
