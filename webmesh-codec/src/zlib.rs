//! zlib with reused state and bounded inflation.
//!
//! Compressor and decompressor state lives in thread-locals and is reset, not rebuilt, per message:
//! building a fresh zlib state costs far more than compressing a small message (heap churn of a
//! few hundred KiB per stream). Inflation writes only into capacity this module reserves, never
//! more than `max + 1` bytes, so a zlib bomb is stopped while it inflates.

use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};

thread_local! {
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Size of each step by which the inflate buffer grows.
const INFLATE_STEP: usize = 64 * 1024;

/// Upper bound of the zlib output for `len` input bytes (zlib's `compressBound`).
fn compress_bound(len: usize) -> usize {
    len + (len >> 12) + (len >> 14) + (len >> 25) + 13
}

/// Appends the zlib stream of `input`, at `level` (0-9), to `out`.
pub(crate) fn compress_into(input: &[u8], level: u32, out: &mut Vec<u8>) -> Result<()> {
    let level = level.min(9);
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compress = match &mut *slot {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            other => {
                let (_, c) = other.insert((level, Compress::new(flate2::Compression::new(level), true)));
                c
            }
        };
        out.reserve_exact(compress_bound(input.len()));
        let start_in = compress.total_in();
        loop {
            let consumed = (compress.total_in() - start_in) as usize;
            match compress.compress_vec(&input[consumed..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Ok(()),
                Ok(_) => out.reserve_exact(INFLATE_STEP),
                Err(e) => return Err(Error::encode(e)),
            }
        }
    })
}

/// Checks the two-byte zlib header (RFC 1950): deflate method, window <= 32 KiB, check bits.
fn valid_header(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Inflates the zlib stream `input`, appending to `out`, failing with
/// [`Error::InflatedTooLarge`] as soon as the inflated data would pass `max` bytes.
pub(crate) fn inflate_into(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<()> {
    let base = out.len();
    let max = max.saturating_add(base);
    if input.len() < 2 {
        return Err(if input.is_empty() || valid_prefix(input) {
            Error::TruncatedZlib
        } else {
            Error::NotZlib
        });
    }
    if !valid_header(input) {
        return Err(Error::NotZlib);
    }
    INFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflate = match &mut *slot {
            Some(d) => {
                d.reset(true);
                d
            }
            other => other.insert(Decompress::new(true)),
        };
        // A first guess from the input size (structured data deflates 4-8:1); growth doubles.
        let first = input.len().saturating_mul(8).clamp(256, 16 * INFLATE_STEP);
        out.reserve_exact(first.min(max.saturating_add(1) - base));
        loop {
            let consumed = inflate.total_in() as usize;
            let before = (consumed, out.len());
            let status = inflate
                .decompress_vec(&input[consumed..], out, FlushDecompress::None)
                .map_err(|e| Error::CorruptZlib(e.to_string()))?;
            if out.len() > max {
                return Err(Error::InflatedTooLarge { max: max - base });
            }
            let consumed = inflate.total_in() as usize;
            match status {
                Status::StreamEnd if consumed == input.len() => return Ok(()),
                Status::StreamEnd => {
                    return Err(Error::CorruptZlib(format!(
                        "{} trailing bytes after the end of the stream",
                        input.len() - consumed
                    )))
                }
                Status::Ok | Status::BufError => {
                    if out.len() == out.capacity() {
                        // Output full: grow, but never past max + 1 in total.
                        let room = max.saturating_add(1).saturating_sub(out.len());
                        out.reserve_exact(room.min(out.capacity().max(INFLATE_STEP)));
                    } else if (consumed, out.len()) == before || consumed == input.len() {
                        // Room to write and nothing left to read: the stream stops early.
                        return Err(Error::TruncatedZlib);
                    }
                }
            }
        }
    })
}

/// A single byte that could begin a valid header.
fn valid_prefix(input: &[u8]) -> bool {
    input.first().is_some_and(|cmf| cmf & 0x0f == 8 && cmf >> 4 <= 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut out = Vec::new();
        compress_into(data, level, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_and_state_reuse() {
        for level in [0, 1, 6, 9, 1] {
            for data in [&b""[..], b"a", &[7u8; 100_000][..]] {
                let z = deflate(data, level);
                let mut back = b"head".to_vec();
                inflate_into(&z, data.len(), &mut back).unwrap();
                assert_eq!(&back[..4], b"head");
                assert_eq!(&back[4..], data);
            }
        }
    }

    #[test]
    fn bomb_is_stopped_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let z = deflate(&zeros, 9);
        assert!(z.len() < 16 << 10);
        let mut out = Vec::new();
        let err = inflate_into(&z, 1 << 20, &mut out).unwrap_err();
        assert!(matches!(err, Error::InflatedTooLarge { max } if max == 1 << 20));
        assert!(out.capacity() <= (1 << 20) + 1, "capacity {}", out.capacity());
        // Exactly at the limit is fine.
        out.clear();
        inflate_into(&z, 8 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 8 << 20);
    }

    #[test]
    fn malformed_streams_have_their_own_errors() {
        let z = deflate(b"hello hello hello hello", 6);
        let mut out = Vec::new();
        assert!(matches!(
            inflate_into(b"", 100, &mut out),
            Err(Error::TruncatedZlib)
        ));
        assert!(matches!(
            inflate_into(b"\x78", 100, &mut out),
            Err(Error::TruncatedZlib)
        ));
        assert!(matches!(
            inflate_into(b"hello", 100, &mut out),
            Err(Error::NotZlib)
        ));
        assert!(matches!(
            inflate_into(&z[..z.len() - 3], 100, &mut out),
            Err(Error::TruncatedZlib)
        ));
        assert!(matches!(
            inflate_into(&z[..4], 100, &mut out),
            Err(Error::TruncatedZlib)
        ));
        let mut bad_sum = z.clone();
        *bad_sum.last_mut().unwrap() ^= 1;
        assert!(matches!(
            inflate_into(&bad_sum, 100, &mut out),
            Err(Error::CorruptZlib(_))
        ));
        let mut trailing = z.clone();
        trailing.push(0);
        assert!(matches!(
            inflate_into(&trailing, 100, &mut out),
            Err(Error::CorruptZlib(_))
        ));
    }
}
