//! RFC 7541 §5.2 / Appendix B Huffman decoding.
//!
//! The code is canonical (Appendix B assigns codes in order of length, then symbol), so it is
//! fully described by the number of codes of each length and the symbols in that order. The
//! decoder keeps a 64-bit bit buffer, looks at the next 30 bits (the longest code) and finds a
//! whole symbol per step:
//!
//! - codes of up to 8 bits (every symbol a header usually holds: 74 symbols covering 254 of the
//!   256 first-byte values) come from one 256-entry table indexed by the next 8 bits;
//! - longer codes (first byte 0xfe or 0xff) compare the 30-bit window against the end of each
//!   code length (at most 21 compares), then index the symbol order.
//!
//! Why this rather than the 4-bit state machine the `h2` crate and nghttp2 use: that machine
//! does two table steps per input byte (about 1.5 per symbol of 6 bits) with a generated table
//! (7.5 KiB in the `h2` crate); this does one step per symbol with about 1.3 KiB of tables built
//! by a `const fn` from the RFC table below, which also checks at compile time that the table is
//! the canonical, complete code it claims to be (a mistyped entry fails the build).
//!
//! Padding rules (§5.2): the bits after the last symbol must be a prefix of EOS (all ones) and at
//! most 7 bits long; an EOS symbol inside the string is an error.

use super::DecodeError;

// RFC 7541 Appendix B: (code, length in bits) for symbols 0..=255, then EOS (256).
// Codes are right-aligned (as printed in the RFC).
pub(super) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),     // 0
    (0x7fffd8, 23),   // 1
    (0xfffffe2, 28),  // 2
    (0xfffffe3, 28),  // 3
    (0xfffffe4, 28),  // 4
    (0xfffffe5, 28),  // 5
    (0xfffffe6, 28),  // 6
    (0xfffffe7, 28),  // 7
    (0xfffffe8, 28),  // 8
    (0xffffea, 24),   // 9
    (0x3ffffffc, 30), // 10
    (0xfffffe9, 28),  // 11
    (0xfffffea, 28),  // 12
    (0x3ffffffd, 30), // 13
    (0xfffffeb, 28),  // 14
    (0xfffffec, 28),  // 15
    (0xfffffed, 28),  // 16
    (0xfffffee, 28),  // 17
    (0xfffffef, 28),  // 18
    (0xffffff0, 28),  // 19
    (0xffffff1, 28),  // 20
    (0xffffff2, 28),  // 21
    (0x3ffffffe, 30), // 22
    (0xffffff3, 28),  // 23
    (0xffffff4, 28),  // 24
    (0xffffff5, 28),  // 25
    (0xffffff6, 28),  // 26
    (0xffffff7, 28),  // 27
    (0xffffff8, 28),  // 28
    (0xffffff9, 28),  // 29
    (0xffffffa, 28),  // 30
    (0xffffffb, 28),  // 31
    (0x14, 6),        // ' '
    (0x3f8, 10),      // '!'
    (0x3f9, 10),      // '"'
    (0xffa, 12),      // '#'
    (0x1ff9, 13),     // '$'
    (0x15, 6),        // '%'
    (0xf8, 8),        // '&'
    (0x7fa, 11),      // "'"
    (0x3fa, 10),      // '('
    (0x3fb, 10),      // ')'
    (0xf9, 8),        // '*'
    (0x7fb, 11),      // '+'
    (0xfa, 8),        // ','
    (0x16, 6),        // '-'
    (0x17, 6),        // '.'
    (0x18, 6),        // '/'
    (0x0, 5),         // '0'
    (0x1, 5),         // '1'
    (0x2, 5),         // '2'
    (0x19, 6),        // '3'
    (0x1a, 6),        // '4'
    (0x1b, 6),        // '5'
    (0x1c, 6),        // '6'
    (0x1d, 6),        // '7'
    (0x1e, 6),        // '8'
    (0x1f, 6),        // '9'
    (0x5c, 7),        // ':'
    (0xfb, 8),        // ';'
    (0x7ffc, 15),     // '<'
    (0x20, 6),        // '='
    (0xffb, 12),      // '>'
    (0x3fc, 10),      // '?'
    (0x1ffa, 13),     // '@'
    (0x21, 6),        // 'A'
    (0x5d, 7),        // 'B'
    (0x5e, 7),        // 'C'
    (0x5f, 7),        // 'D'
    (0x60, 7),        // 'E'
    (0x61, 7),        // 'F'
    (0x62, 7),        // 'G'
    (0x63, 7),        // 'H'
    (0x64, 7),        // 'I'
    (0x65, 7),        // 'J'
    (0x66, 7),        // 'K'
    (0x67, 7),        // 'L'
    (0x68, 7),        // 'M'
    (0x69, 7),        // 'N'
    (0x6a, 7),        // 'O'
    (0x6b, 7),        // 'P'
    (0x6c, 7),        // 'Q'
    (0x6d, 7),        // 'R'
    (0x6e, 7),        // 'S'
    (0x6f, 7),        // 'T'
    (0x70, 7),        // 'U'
    (0x71, 7),        // 'V'
    (0x72, 7),        // 'W'
    (0xfc, 8),        // 'X'
    (0x73, 7),        // 'Y'
    (0xfd, 8),        // 'Z'
    (0x1ffb, 13),     // '['
    (0x7fff0, 19),    // '\\'
    (0x1ffc, 13),     // ']'
    (0x3ffc, 14),     // '^'
    (0x22, 6),        // '_'
    (0x7ffd, 15),     // '`'
    (0x3, 5),         // 'a'
    (0x23, 6),        // 'b'
    (0x4, 5),         // 'c'
    (0x24, 6),        // 'd'
    (0x5, 5),         // 'e'
    (0x25, 6),        // 'f'
    (0x26, 6),        // 'g'
    (0x27, 6),        // 'h'
    (0x6, 5),         // 'i'
    (0x74, 7),        // 'j'
    (0x75, 7),        // 'k'
    (0x28, 6),        // 'l'
    (0x29, 6),        // 'm'
    (0x2a, 6),        // 'n'
    (0x7, 5),         // 'o'
    (0x2b, 6),        // 'p'
    (0x76, 7),        // 'q'
    (0x2c, 6),        // 'r'
    (0x8, 5),         // 's'
    (0x9, 5),         // 't'
    (0x2d, 6),        // 'u'
    (0x77, 7),        // 'v'
    (0x78, 7),        // 'w'
    (0x79, 7),        // 'x'
    (0x7a, 7),        // 'y'
    (0x7b, 7),        // 'z'
    (0x7ffe, 15),     // '{'
    (0x7fc, 11),      // '|'
    (0x3ffd, 14),     // '}'
    (0x1ffd, 13),     // '~'
    (0xffffffc, 28),  // 127
    (0xfffe6, 20),    // 128
    (0x3fffd2, 22),   // 129
    (0xfffe7, 20),    // 130
    (0xfffe8, 20),    // 131
    (0x3fffd3, 22),   // 132
    (0x3fffd4, 22),   // 133
    (0x3fffd5, 22),   // 134
    (0x7fffd9, 23),   // 135
    (0x3fffd6, 22),   // 136
    (0x7fffda, 23),   // 137
    (0x7fffdb, 23),   // 138
    (0x7fffdc, 23),   // 139
    (0x7fffdd, 23),   // 140
    (0x7fffde, 23),   // 141
    (0xffffeb, 24),   // 142
    (0x7fffdf, 23),   // 143
    (0xffffec, 24),   // 144
    (0xffffed, 24),   // 145
    (0x3fffd7, 22),   // 146
    (0x7fffe0, 23),   // 147
    (0xffffee, 24),   // 148
    (0x7fffe1, 23),   // 149
    (0x7fffe2, 23),   // 150
    (0x7fffe3, 23),   // 151
    (0x7fffe4, 23),   // 152
    (0x1fffdc, 21),   // 153
    (0x3fffd8, 22),   // 154
    (0x7fffe5, 23),   // 155
    (0x3fffd9, 22),   // 156
    (0x7fffe6, 23),   // 157
    (0x7fffe7, 23),   // 158
    (0xffffef, 24),   // 159
    (0x3fffda, 22),   // 160
    (0x1fffdd, 21),   // 161
    (0xfffe9, 20),    // 162
    (0x3fffdb, 22),   // 163
    (0x3fffdc, 22),   // 164
    (0x7fffe8, 23),   // 165
    (0x7fffe9, 23),   // 166
    (0x1fffde, 21),   // 167
    (0x7fffea, 23),   // 168
    (0x3fffdd, 22),   // 169
    (0x3fffde, 22),   // 170
    (0xfffff0, 24),   // 171
    (0x1fffdf, 21),   // 172
    (0x3fffdf, 22),   // 173
    (0x7fffeb, 23),   // 174
    (0x7fffec, 23),   // 175
    (0x1fffe0, 21),   // 176
    (0x1fffe1, 21),   // 177
    (0x3fffe0, 22),   // 178
    (0x1fffe2, 21),   // 179
    (0x7fffed, 23),   // 180
    (0x3fffe1, 22),   // 181
    (0x7fffee, 23),   // 182
    (0x7fffef, 23),   // 183
    (0xfffea, 20),    // 184
    (0x3fffe2, 22),   // 185
    (0x3fffe3, 22),   // 186
    (0x3fffe4, 22),   // 187
    (0x7ffff0, 23),   // 188
    (0x3fffe5, 22),   // 189
    (0x3fffe6, 22),   // 190
    (0x7ffff1, 23),   // 191
    (0x3ffffe0, 26),  // 192
    (0x3ffffe1, 26),  // 193
    (0xfffeb, 20),    // 194
    (0x7fff1, 19),    // 195
    (0x3fffe7, 22),   // 196
    (0x7ffff2, 23),   // 197
    (0x3fffe8, 22),   // 198
    (0x1ffffec, 25),  // 199
    (0x3ffffe2, 26),  // 200
    (0x3ffffe3, 26),  // 201
    (0x3ffffe4, 26),  // 202
    (0x7ffffde, 27),  // 203
    (0x7ffffdf, 27),  // 204
    (0x3ffffe5, 26),  // 205
    (0xfffff1, 24),   // 206
    (0x1ffffed, 25),  // 207
    (0x7fff2, 19),    // 208
    (0x1fffe3, 21),   // 209
    (0x3ffffe6, 26),  // 210
    (0x7ffffe0, 27),  // 211
    (0x7ffffe1, 27),  // 212
    (0x3ffffe7, 26),  // 213
    (0x7ffffe2, 27),  // 214
    (0xfffff2, 24),   // 215
    (0x1fffe4, 21),   // 216
    (0x1fffe5, 21),   // 217
    (0x3ffffe8, 26),  // 218
    (0x3ffffe9, 26),  // 219
    (0xffffffd, 28),  // 220
    (0x7ffffe3, 27),  // 221
    (0x7ffffe4, 27),  // 222
    (0x7ffffe5, 27),  // 223
    (0xfffec, 20),    // 224
    (0xfffff3, 24),   // 225
    (0xfffed, 20),    // 226
    (0x1fffe6, 21),   // 227
    (0x3fffe9, 22),   // 228
    (0x1fffe7, 21),   // 229
    (0x1fffe8, 21),   // 230
    (0x7ffff3, 23),   // 231
    (0x3fffea, 22),   // 232
    (0x3fffeb, 22),   // 233
    (0x1ffffee, 25),  // 234
    (0x1ffffef, 25),  // 235
    (0xfffff4, 24),   // 236
    (0xfffff5, 24),   // 237
    (0x3ffffea, 26),  // 238
    (0x7ffff4, 23),   // 239
    (0x3ffffeb, 26),  // 240
    (0x7ffffe6, 27),  // 241
    (0x3ffffec, 26),  // 242
    (0x3ffffed, 26),  // 243
    (0x7ffffe7, 27),  // 244
    (0x7ffffe8, 27),  // 245
    (0x7ffffe9, 27),  // 246
    (0x7ffffea, 27),  // 247
    (0x7ffffeb, 27),  // 248
    (0xffffffe, 28),  // 249
    (0x7ffffec, 27),  // 250
    (0x7ffffed, 27),  // 251
    (0x7ffffee, 27),  // 252
    (0x7ffffef, 27),  // 253
    (0x7fffff0, 27),  // 254
    (0x3ffffee, 26),  // 255
    (0x3fffffff, 30), // EOS
];

/// The canonical-code description of [`CODES`], built at compile time.
struct Canon {
    /// `first[l]`: the first (right-aligned) code of length `l`.
    first: [u32; 31],
    /// `limit[l]`: one past the last code of length `l`, left-aligned in a 30-bit window. A
    /// window `w` holds a code of length `l` when `limit[l - 1] <= w < limit[l]`.
    limit: [u32; 31],
    /// `offset[l]`: where the symbols of length `l` start in `symbols`.
    offset: [u16; 31],
    /// The symbols ordered by (code length, symbol).
    symbols: [u16; 257],
    /// Indexed by the next 8 bits: `length << 8 | symbol` for codes of at most 8 bits, else 0.
    fast: [u16; 256],
}

const fn build() -> Canon {
    let mut count = [0u16; 31];
    let mut s = 0;
    while s < 257 {
        let len = CODES[s].1 as usize;
        assert!(len >= 5 && len <= 30);
        count[len] += 1;
        s += 1;
    }
    let mut offset = [0u16; 31];
    let mut total = 0u16;
    let mut l = 1;
    while l <= 30 {
        offset[l] = total;
        total += count[l];
        l += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = offset;
    s = 0;
    while s < 257 {
        let len = CODES[s].1 as usize;
        symbols[next[len] as usize] = s as u16;
        next[len] += 1;
        s += 1;
    }
    let mut first = [0u32; 31];
    let mut limit = [0u32; 31];
    let mut code = 0u32;
    l = 1;
    while l <= 30 {
        first[l] = code;
        code += count[l] as u32;
        limit[l] = code << (30 - l);
        code <<= 1;
        l += 1;
    }
    // Complete (Kraft sum 1): the 30-bit codes end exactly at 2^30.
    assert!(limit[30] == 1 << 30);
    // Canonical: every symbol's code is the one its (length, symbol) rank gives.
    let mut i = 0;
    while i < 257 {
        let sym = symbols[i] as usize;
        let len = CODES[sym].1 as usize;
        assert!(CODES[sym].0 == first[len] + (i as u32 - offset[len] as u32));
        i += 1;
    }
    let mut fast = [0u16; 256];
    l = 5;
    while l <= 8 {
        let mut k = 0u32;
        while k < count[l] as u32 {
            let lo = ((first[l] + k) << (8 - l)) as usize;
            let entry = ((l as u16) << 8) | symbols[offset[l] as usize + k as usize];
            let mut j = 0;
            while j < 1 << (8 - l) {
                fast[lo + j] = entry;
                j += 1;
            }
            k += 1;
        }
        l += 1;
    }
    Canon {
        first,
        limit,
        offset,
        symbols,
        fast,
    }
}

static CANON: Canon = build();

/// The symbol (256 = EOS) and length of a code longer than 8 bits at the start of a 30-bit
/// left-aligned window (its first byte is 0xfe or 0xff).
#[cold]
fn lookup_long(w: u32) -> (u16, u32) {
    let c = &CANON;
    let mut l = 9;
    // `limit[30]` is 2^30 > every window, so the scan stops at 30 at the latest.
    while l < 30 && w >= c.limit[l] {
        l += 1;
    }
    let rank = (w >> (30 - l)).wrapping_sub(c.first[l]) as usize;
    let sym = c
        .symbols
        .get(usize::from(c.offset[l]) + rank)
        .copied()
        .unwrap_or(256);
    (sym, l as u32)
}

/// The most bytes `len` Huffman-coded octets can decode to (every code is at least 5 bits).
pub(super) const fn max_decoded_len(len: usize) -> usize {
    len / 5 * 8 + (len % 5) * 8 / 5
}

/// Decodes `src` into the front of `out` (at least [`max_decoded_len`]`(src.len())` long) and
/// returns the decoded length.
pub(super) fn decode(src: &[u8], out: &mut [u8]) -> Result<usize, DecodeError> {
    // `acc` holds the next `nbits` input bits at its top and ones below them, so its top 30 bits
    // are always the lookup window, padded with ones past the end of the input: a complete code
    // still matches there, and a tail that is a prefix of EOS reads as "longer than what is left".
    let mut acc: u64 = !0;
    let mut nbits: u32 = 0;
    let mut bytes = src.iter();
    let mut n = 0;
    loop {
        // Refill only when the window could run short: up to 64 bits at a time, so most
        // symbols skip this.
        if nbits < 30 {
            while nbits <= 56 {
                match bytes.next() {
                    // The 8 bits below the valid ones are ones: xor with !b makes them b.
                    Some(&b) => {
                        acc ^= u64::from(!b) << (56 - nbits);
                        nbits += 8;
                    }
                    None => break,
                }
            }
            // At most 7 bits left means the input is exhausted (the refill stops only at the
            // end or past 56 bits): all ones is the padding (no code shorter than 30 bits is
            // all ones).
            if nbits <= 7 && acc == !0 {
                return Ok(n);
            }
        }
        let e = CANON.fast[(acc >> 56) as usize];
        let (sym, len) = if e != 0 {
            (e as u8, u32::from(e >> 8))
        } else {
            match lookup_long((acc >> 34) as u32) {
                (256, len) if len <= nbits => return Err(DecodeError::HuffmanEos),
                (sym, len) => (sym as u8, len),
            }
        };
        if len > nbits {
            // The input ended inside a code, or with padding that is not a prefix of EOS or is
            // longer than 7 bits.
            return Err(DecodeError::HuffmanPadding);
        }
        match out.get_mut(n) {
            Some(slot) => *slot = sym,
            None => return Err(DecodeError::HuffmanPadding),
        }
        n += 1;
        acc = (acc << len) | ((1u64 << len) - 1);
        nbits -= len;
    }
}

#[cfg(test)]
pub(super) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    for &b in src {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        nbits += u32::from(len);
        while nbits >= 8 {
            nbits -= 8;
            dst.push((acc >> nbits) as u8);
        }
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        dst.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_decodes_alone_and_after_others() {
        for b in 0..=255u8 {
            let mut enc = Vec::new();
            encode(&[b], &mut enc);
            let mut out = vec![0; max_decoded_len(enc.len())];
            assert_eq!(decode(&enc, &mut out), Ok(1), "symbol {b}");
            assert_eq!(out[0], b);
            let input = [b'a', b, 0xff, b, b'z', 0, b];
            let mut enc = Vec::new();
            encode(&input, &mut enc);
            let mut out = vec![0; max_decoded_len(enc.len())];
            let n = decode(&enc, &mut out).unwrap();
            assert_eq!(&out[..n], &input);
        }
    }

    #[test]
    fn max_decoded_len_bounds_five_bit_codes() {
        for len in 0..64 {
            assert_eq!(max_decoded_len(len), len * 8 / 5);
        }
    }

    #[test]
    fn eos_and_padding_rules() {
        // EOS (30 ones) then padding: an error even though it is all ones.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut [0; 8]),
            Err(DecodeError::HuffmanEos)
        );
        // Padding of 8 ones (longer than 7 bits).
        assert_eq!(
            decode(&[0xff], &mut [0; 8]),
            Err(DecodeError::HuffmanPadding)
        );
        // 'a' (00011) then padding 110 (not all ones).
        assert_eq!(
            decode(&[0b0001_1110], &mut [0; 8]),
            Err(DecodeError::HuffmanPadding)
        );
        // 'a' then padding 111: fine.
        let mut out = [0; 8];
        assert_eq!(decode(&[0b0001_1111], &mut out), Ok(1));
        assert_eq!(out[0], b'a');
        // '0' (00000) then 000: 000 is not a prefix of EOS.
        assert_eq!(decode(&[0], &mut [0; 8]), Err(DecodeError::HuffmanPadding));
        // Empty string.
        assert_eq!(decode(&[], &mut []), Ok(0));
    }
}
