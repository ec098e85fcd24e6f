// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The `--verify` data pattern and the random number generator of the data path.
//!
//! Every block's content is a function of its LBA and a seed only, never of which
//! write put it there: a block rewritten by any run with the same seed holds the same
//! bytes, so reads racing writes, and reads in a later run, can be checked. The first
//! 8 bytes of a block are its LBA and the next 8 the seed (readable in a hex dump);
//! the rest is a xorshift stream started from both.

/// A tiny xorshift64* generator: no allocation, a few instructions per number.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        XorShift(splitmix64(seed) | 1)
    }
    /// The next number.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n` (`n` > 0), by multiply-shift (no division).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
fn block_words(lba: u64, seed: u64, words: usize, mut f: impl FnMut(usize, u64) -> bool) {
    let mut x = splitmix64(seed ^ splitmix64(lba)) | 1;
    for i in 0..words {
        let w = match i {
            0 => lba,
            1 => seed,
            _ => {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                x.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
        };
        if !f(i, w) {
            return;
        }
    }
}

/// Fills `buf` (whole blocks of `block_size` bytes, starting at `first_lba`) with the
/// pattern.
pub fn fill(buf: &mut [u8], first_lba: u64, block_size: usize, seed: u64) {
    for (b, block) in buf.chunks_exact_mut(block_size).enumerate() {
        let words = block_size / 8;
        block_words(first_lba + b as u64, seed, words, |i, w| {
            block[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            true
        });
    }
}

/// The first difference between `buf` and the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// The block that differs.
    pub lba: u64,
    /// Byte offset in that block.
    pub offset: usize,
    /// The 8 bytes expected there (little endian).
    pub expected: u64,
    /// The 8 bytes found.
    pub found: u64,
}

/// Checks `buf` against the pattern; returns the first mismatch.
pub fn check(buf: &[u8], first_lba: u64, block_size: usize, seed: u64) -> Option<Mismatch> {
    let mut out = None;
    for (b, block) in buf.chunks_exact(block_size).enumerate() {
        let lba = first_lba + b as u64;
        block_words(lba, seed, block_size / 8, |i, w| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&block[i * 8..i * 8 + 8]);
            let found = u64::from_le_bytes(word);
            if found != w {
                out = Some(Mismatch {
                    lba,
                    offset: i * 8,
                    expected: w,
                    found,
                });
                return false;
            }
            true
        });
        if out.is_some() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trips_and_depends_on_lba_and_seed() {
        let mut a = vec![0u8; 4096];
        fill(&mut a, 100, 512, 7);
        assert_eq!(check(&a, 100, 512, 7), None);
        assert_eq!(&a[0..8], &100u64.to_le_bytes());
        assert_eq!(&a[512..520], &101u64.to_le_bytes());
        assert_eq!(&a[8..16], &7u64.to_le_bytes());
        // Other seed, other LBA: the first differing word is reported.
        let m = check(&a, 100, 512, 8).unwrap();
        assert_eq!((m.lba, m.offset, m.found, m.expected), (100, 8, 7, 8));
        let m = check(&a, 101, 512, 7).unwrap();
        assert_eq!((m.lba, m.offset), (101, 0));
        // Same LBA, whatever the I/O size: a block is the same in any buffer.
        let mut b = vec![0u8; 512];
        fill(&mut b, 103, 512, 7);
        assert_eq!(&a[1536..2048], &b[..]);
        // A flipped byte deep in a block is found, with its LBA.
        a[3 * 512 + 300] ^= 1;
        let m = check(&a, 100, 512, 7).unwrap();
        assert_eq!((m.lba, m.offset), (103, 296));
        // Zeroes (never written) do not pass.
        assert!(check(&[0u8; 512], 0, 512, 0).is_some());
    }

    #[test]
    fn rng_stays_in_range_and_spreads() {
        let mut r = XorShift::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_ne!(XorShift::new(1).next_u64(), XorShift::new(2).next_u64());
    }
}
