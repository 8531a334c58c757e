//! MD5 of several messages at once, one per SIMD lane.
//!
//! One MD5 is a chain: every 64-byte block needs the state the block before left, and every one
//! of a block's 64 steps needs the step before, so a core computes one stream at the latency of
//! that chain (about 5 cycles a byte) however wide its registers are. Independent messages do not
//! wait on each other: put four of them in the four 32-bit lanes of an SSE2 register and one chain
//! of vector instructions advances all four. The parts of a multipart upload are such messages,
//! and on a store that answers without checksums their MD5 is the only proof of the bytes (most of
//! ferry's CPU on a large file there, before this).
//!
//! SSE2 is part of every x86-64 CPU, so no feature detection is needed; elsewhere, and for a lone
//! message, the scalar `md-5` crate does the work. Messages of different lengths share a batch:
//! a lane that runs out of blocks is masked off until the longest is done.

use md5::{Digest, Md5};

/// The MD5 of each message, in order.
pub fn md5_many(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    let mut out = Vec::with_capacity(messages.len());
    for group in messages.chunks(LANES) {
        if group.len() == 1 {
            out.push(Md5::digest(group[0]).into());
            continue;
        }
        out.extend_from_slice(&lanes(group)[..group.len()]);
    }
    out
}

const LANES: usize = 4;

#[cfg(not(target_arch = "x86_64"))]
fn lanes(group: &[&[u8]]) -> [[u8; 16]; LANES] {
    let mut out = [[0u8; 16]; LANES];
    for (digest, message) in out.iter_mut().zip(group) {
        *digest = Md5::digest(message).into();
    }
    out
}

#[cfg(target_arch = "x86_64")]
fn lanes(group: &[&[u8]]) -> [[u8; 16]; LANES] {
    // SAFETY: SSE2 is part of the x86-64 baseline: every CPU this code runs on has it.
    unsafe { x4::digest(group) }
}

#[cfg(target_arch = "x86_64")]
mod x4 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// The MD5 padding of a message: what follows its last whole block (the remaining bytes, 0x80,
    /// zeros, and the length in bits), as one or two blocks.
    struct Tail {
        blocks: [u8; 128],
        count: usize,
    }

    impl Tail {
        fn of(message: &[u8]) -> Tail {
            let rest = &message[message.len() / 64 * 64..];
            let mut blocks = [0u8; 128];
            blocks[..rest.len()].copy_from_slice(rest);
            blocks[rest.len()] = 0x80;
            let count = if rest.len() < 56 { 1 } else { 2 };
            let bits = (message.len() as u64).wrapping_mul(8);
            blocks[count * 64 - 8..count * 64].copy_from_slice(&bits.to_le_bytes());
            Tail { blocks, count }
        }
    }

    /// A message as the blocks MD5 compresses: its whole blocks, then its padding.
    struct Blocks<'a> {
        whole: &'a [u8],
        tail: Tail,
    }

    impl<'a> Blocks<'a> {
        fn new(message: &'a [u8]) -> Blocks<'a> {
            Blocks {
                whole: &message[..message.len() / 64 * 64],
                tail: Tail::of(message),
            }
        }

        fn len(&self) -> usize {
            self.whole.len() / 64 + self.tail.count
        }

        /// Block `i`, or None past the end.
        fn get(&self, i: usize) -> Option<&[u8; 64]> {
            let whole = self.whole.len() / 64;
            let bytes = if i < whole {
                &self.whole[i * 64..i * 64 + 64]
            } else if i < self.len() {
                &self.tail.blocks[(i - whole) * 64..(i - whole) * 64 + 64]
            } else {
                return None;
            };
            Some(bytes.try_into().expect("a block is 64 bytes"))
        }
    }

    const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    const ZERO: [u8; 64] = [0; 64];

    #[target_feature(enable = "sse2")]
    pub(super) fn digest(group: &[&[u8]]) -> [[u8; 16]; LANES] {
        let lanes: Vec<Blocks> = group.iter().map(|m| Blocks::new(m)).collect();
        let longest = lanes.iter().map(Blocks::len).max().unwrap_or(0);
        let mut state = INIT.map(|w| _mm_set1_epi32(w as i32));
        for i in 0..longest {
            let mut blocks = [&ZERO; LANES];
            let mut live = [0i32; LANES];
            for (j, lane) in lanes.iter().enumerate() {
                if let Some(block) = lane.get(i) {
                    blocks[j] = block;
                    live[j] = -1;
                }
            }
            let next = compress(state, &words(&blocks));
            if live == [-1; LANES] {
                state = next;
            } else {
                // Lanes past their last block keep their state.
                let mask = _mm_set_epi32(live[3], live[2], live[1], live[0]);
                for (s, n) in state.iter_mut().zip(next) {
                    *s = _mm_or_si128(_mm_and_si128(mask, n), _mm_andnot_si128(mask, *s));
                }
            }
        }
        // Word k of every lane's digest is in state[k], lane j in bytes 4j..4j+4.
        let mut out = [[0u8; 16]; LANES];
        for (k, s) in state.into_iter().enumerate() {
            let mut bytes = [0u8; 16];
            // SAFETY: `bytes` is 16 writable bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), s) };
            for (j, digest) in out.iter_mut().enumerate() {
                digest[k * 4..k * 4 + 4].copy_from_slice(&bytes[j * 4..j * 4 + 4]);
            }
        }
        out
    }

    /// The 16 message words of a block in each lane: word `w` of lane `j` in lane `j` of
    /// vector `w` (a 4×4 transpose of each 16-byte row).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn words(blocks: &[&[u8; 64]; LANES]) -> [__m128i; 16] {
        let mut m = [_mm_setzero_si128(); 16];
        for q in 0..4 {
            // SAFETY: each block is 64 readable bytes and q * 16 + 16 <= 64; loads are unaligned.
            let r = blocks.map(|b| unsafe { _mm_loadu_si128(b.as_ptr().add(q * 16).cast()) });
            let t0 = _mm_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm_unpacklo_epi32(r[2], r[3]);
            let t2 = _mm_unpackhi_epi32(r[0], r[1]);
            let t3 = _mm_unpackhi_epi32(r[2], r[3]);
            m[q * 4] = _mm_unpacklo_epi64(t0, t1);
            m[q * 4 + 1] = _mm_unpackhi_epi64(t0, t1);
            m[q * 4 + 2] = _mm_unpacklo_epi64(t2, t3);
            m[q * 4 + 3] = _mm_unpackhi_epi64(t2, t3);
        }
        m
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn f(b: __m128i, c: __m128i, d: __m128i) -> __m128i {
        _mm_xor_si128(d, _mm_and_si128(b, _mm_xor_si128(c, d)))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn g(b: __m128i, c: __m128i, d: __m128i) -> __m128i {
        _mm_xor_si128(c, _mm_and_si128(d, _mm_xor_si128(b, c)))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn h(b: __m128i, c: __m128i, d: __m128i) -> __m128i {
        _mm_xor_si128(_mm_xor_si128(b, c), d)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn i(b: __m128i, c: __m128i, d: __m128i) -> __m128i {
        // c ^ (b | !d)
        _mm_xor_si128(c, _mm_or_si128(b, _mm_xor_si128(d, _mm_set1_epi32(-1))))
    }

    /// One step: a = b + ((a + mix(b, c, d) + m + k) <<< s).
    macro_rules! step {
        ($mix:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:literal) => {
            let sum = _mm_add_epi32(
                _mm_add_epi32($a, $mix($b, $c, $d)),
                _mm_add_epi32($m, _mm_set1_epi32(($k as u32) as i32)),
            );
            let rotated = _mm_or_si128(
                _mm_slli_epi32::<$s>(sum),
                _mm_srli_epi32::<{ 32 - $s }>(sum),
            );
            $a = _mm_add_epi32($b, rotated);
        };
    }

    /// Four steps of one round, with its shifts, on message words `w0..w3` and constants `k`.
    macro_rules! four {
        ($mix:ident, $m:ident, [$w0:literal, $w1:literal, $w2:literal, $w3:literal],
         [$k0:literal, $k1:literal, $k2:literal, $k3:literal],
         [$s0:literal, $s1:literal, $s2:literal, $s3:literal],
         $a:ident, $b:ident, $c:ident, $d:ident) => {
            step!($mix, $a, $b, $c, $d, $m[$w0], $k0, $s0);
            step!($mix, $d, $a, $b, $c, $m[$w1], $k1, $s1);
            step!($mix, $c, $d, $a, $b, $m[$w2], $k2, $s2);
            step!($mix, $b, $c, $d, $a, $m[$w3], $k3, $s3);
        };
    }

    /// MD5's compression function (RFC 1321, section 3.4) on one block in each lane.
    #[inline]
    #[target_feature(enable = "sse2")]
    #[rustfmt::skip]
    fn compress(state: [__m128i; 4], m: &[__m128i; 16]) -> [__m128i; 4] {
        let [mut a, mut b, mut c, mut d] = state;
        four!(f, m, [0, 1, 2, 3], [0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee], [7, 12, 17, 22], a, b, c, d);
        four!(f, m, [4, 5, 6, 7], [0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501], [7, 12, 17, 22], a, b, c, d);
        four!(f, m, [8, 9, 10, 11], [0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be], [7, 12, 17, 22], a, b, c, d);
        four!(f, m, [12, 13, 14, 15], [0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821], [7, 12, 17, 22], a, b, c, d);
        four!(g, m, [1, 6, 11, 0], [0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa], [5, 9, 14, 20], a, b, c, d);
        four!(g, m, [5, 10, 15, 4], [0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8], [5, 9, 14, 20], a, b, c, d);
        four!(g, m, [9, 14, 3, 8], [0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed], [5, 9, 14, 20], a, b, c, d);
        four!(g, m, [13, 2, 7, 12], [0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a], [5, 9, 14, 20], a, b, c, d);
        four!(h, m, [5, 8, 11, 14], [0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c], [4, 11, 16, 23], a, b, c, d);
        four!(h, m, [1, 4, 7, 10], [0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70], [4, 11, 16, 23], a, b, c, d);
        four!(h, m, [13, 0, 3, 6], [0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05], [4, 11, 16, 23], a, b, c, d);
        four!(h, m, [9, 12, 15, 2], [0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665], [4, 11, 16, 23], a, b, c, d);
        four!(i, m, [0, 7, 14, 5], [0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039], [6, 10, 15, 21], a, b, c, d);
        four!(i, m, [12, 3, 10, 1], [0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1], [6, 10, 15, 21], a, b, c, d);
        four!(i, m, [8, 15, 6, 13], [0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1], [6, 10, 15, 21], a, b, c, d);
        four!(i, m, [4, 11, 2, 9], [0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391], [6, 10, 15, 21], a, b, c, d);
        [
            _mm_add_epi32(state[0], a),
            _mm_add_epi32(state[1], b),
            _mm_add_epi32(state[2], c),
            _mm_add_epi32(state[3], d),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes without a random-number dependency (xorshift).
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn scalar(m: &[u8]) -> [u8; 16] {
        Md5::digest(m).into()
    }

    #[test]
    fn equals_the_scalar_md5_at_every_padding_boundary() {
        // Every length around the one- and two-block padding cases, in every lane.
        let lens: Vec<usize> = (0..=130).chain([191, 192, 193, 1000, 4096]).collect();
        let data: Vec<Vec<u8>> = lens.iter().map(|&l| bytes(l, l as u64)).collect();
        for window in data.windows(4) {
            let refs: Vec<&[u8]> = window.iter().map(Vec::as_slice).collect();
            let expected: Vec<[u8; 16]> = refs.iter().map(|m| scalar(m)).collect();
            assert_eq!(md5_many(&refs), expected, "lengths {:?}", lens);
        }
    }

    #[test]
    fn known_answers_of_rfc_1321() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        let messages: Vec<&[u8]> = cases.iter().map(|(m, _)| *m).collect();
        let hex: Vec<String> = md5_many(&messages)
            .iter()
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let expected: Vec<&str> = cases.iter().map(|(_, h)| *h).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn lanes_of_very_different_lengths_and_partial_groups() {
        let data = [
            bytes(5 * 1024 * 1024, 1),
            bytes(64, 2),
            bytes(3 * 1024 * 1024 + 7, 3),
            bytes(0, 4),
            bytes(100_000, 5),
            bytes(5 * 1024 * 1024, 6),
        ];
        for n in 0..=data.len() {
            let refs: Vec<&[u8]> = data[..n].iter().map(Vec::as_slice).collect();
            let expected: Vec<[u8; 16]> = refs.iter().map(|m| scalar(m)).collect();
            assert_eq!(md5_many(&refs), expected, "{n} messages");
        }
    }
}
