//! Standard base64 with padding (RFC 4648 §4): how etcd's JSON gateway carries keys and values.
//! A dozen lines here instead of a dependency.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), what the gateway uses for bytes fields.
pub(crate) fn b64(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn unb64(input: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = input.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &d) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == d)?;
            n |= (v as u32) << (18 - 6 * i);
        }
        // A chunk of k digits carries k - 1 bytes; a lone digit is malformed.
        if chunk.len() < 2 {
            return None;
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), encoded);
            assert_eq!(unb64(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(unb64("Z"), None);
        assert_eq!(unb64("Z!=="), None);
    }
}
