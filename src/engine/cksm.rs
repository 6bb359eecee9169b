//! The s390 CKSM checksum (formats.md §7): one's-complement sum of big-endian u32 words,
//! a trailing partial word left-justified.

/// CKSM of `data` starting from `seed`.
pub fn cksm(data: &[u8], seed: u32) -> u32 {
    let mut sum: u64 = seed as u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        sum += u32::from_be_bytes(last) as u64;
    }
    while sum > 0xFFFF_FFFF {
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    }
    sum as u32
}

#[cfg(test)]
mod tests {
    use super::cksm;

    #[test]
    fn worked_examples_from_formats_md() {
        assert_eq!(cksm(&[0u8; 4096], 0x1234_5678), 0x1234_5678);
        let ramp: Vec<u8> = (0..4096u32).map(|i| (i % 256) as u8).collect();
        assert_eq!(cksm(&ramp, 0x1234_5678), 0x1036_5C72);
        let words: Vec<u8> = (0..1024u32).flat_map(|k| k.to_be_bytes()).collect();
        assert_eq!(cksm(&words, 0x1234_5678), 0x123C_5478);
        let mut busy = vec![0u8; 4096];
        busy[..14].copy_from_slice(b"zfcpdump busy\0");
        assert_eq!(cksm(&busy, 0x1234_5678), 0x8A72_9CCC);
        assert_eq!(cksm(&[0xFFu8; 4096], 0x1234_5678), 0x1234_5678);
        assert_eq!(cksm(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2], 0), 2);
        assert_eq!(cksm(&[1, 2, 3, 4, 5, 6, 7], 0), 0x0608_0A04);
        assert_eq!(cksm(&[1, 2, 3, 4, 5, 6, 7], 0x1234_5678), 0x183C_607C);
    }
}
