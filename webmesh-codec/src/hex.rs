//! Hex text, as the 0.1.2 msgpack serializer puts binary data in TEXT frames.

use crate::error::{Error, Result};

const LOWER: &[u8; 16] = b"0123456789abcdef";

/// Value of each ASCII hex digit (either case), `0xff` for anything else.
const DECODE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// The lowercase hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut buf = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        buf.push(LOWER[usize::from(b >> 4)]);
        buf.push(LOWER[usize::from(b & 0x0f)]);
    }
    // Every byte pushed is an ASCII hex digit, so this never fails.
    String::from_utf8(buf).unwrap_or_default()
}

/// Decodes hex text (either case) into `out`, which is cleared first.
pub(crate) fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if text.len() % 2 != 0 {
        return Err(Error::OddHexLength { len: text.len() });
    }
    out.clear();
    out.reserve(text.len() / 2);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = DECODE[usize::from(pair[0])];
        let lo = DECODE[usize::from(pair[1])];
        if (hi | lo) & 0xf0 != 0 {
            let (offset, byte) = if hi == 0xff {
                (2 * i, pair[0])
            } else {
                (2 * i + 1, pair[1])
            };
            return Err(Error::InvalidHex { offset, byte });
        }
        out.push(hi << 4 | lo);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_bytes() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = encode(&bytes);
        assert_eq!(&text[..8], "00010203");
        assert_eq!(&text[text.len() - 4..], "feff");
        let mut back = Vec::new();
        decode_into(text.as_bytes(), &mut back).unwrap();
        assert_eq!(back, bytes);
        decode_into(text.to_uppercase().as_bytes(), &mut back).unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn rejects_odd_and_bad_digits() {
        let mut out = Vec::new();
        assert!(matches!(
            decode_into(b"abc", &mut out),
            Err(Error::OddHexLength { len: 3 })
        ));
        assert!(matches!(
            decode_into(b"00zz", &mut out),
            Err(Error::InvalidHex {
                offset: 2,
                byte: b'z'
            })
        ));
        assert!(matches!(
            decode_into(b"0g", &mut out),
            Err(Error::InvalidHex {
                offset: 1,
                byte: b'g'
            })
        ));
    }
}
