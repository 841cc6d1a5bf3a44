//! MessagePack through rmp-serde, structs as maps.

use serde::de::{Deserialize, DeserializeSeed};
use serde::Serialize;

use super::Codec;
use crate::error::{Error, Result};
use crate::legacy::{LegacyParts, PathPart};

/// MessagePack (rmp-serde), the default codec and the one 0.1.2 uses (under zlib and hex).
///
/// Structs are written as maps keyed by field name, as Python's msgpack writes dicts: a Python
/// peer sees a dict, and a field added later with `#[serde(default)]` still decodes on older
/// peers. Decoding accepts structs written as arrays too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

impl Codec for MsgPack {
    const NAME: &'static str = "msgpack";
    const TEXT: bool = false;
    const NIL: &'static [u8] = &[0xc0];

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        if super::msgpack_fast::encode(value, out).is_ok() {
            return Ok(());
        }
        // What the fast path leaves to rmp-serde (ext values, sequences of unknown length) or
        // fails on: rmp-serde writes it, or says what is wrong.
        out.truncate(start);
        let mut ser = rmp_serde::Serializer::new(out).with_struct_map();
        value.serialize(&mut ser).map_err(Error::encode)
    }

    fn decode_seed<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value> {
        // A structural scan first: it costs a fraction of the decode, tells malformed bytes apart
        // from a type mismatch, and rejects trailing bytes (rmp-serde ignores them).
        let end = skip_value(bytes, 0)?;
        if end != bytes.len() {
            return Err(Error::malformed(
                MsgPack::NAME,
                format!("{} trailing bytes after the value", bytes.len() - end),
            ));
        }
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_DEPTH);
        seed.deserialize(&mut de).map_err(Error::payload)
    }

    fn split_legacy(bytes: &[u8]) -> Result<LegacyParts<'_>> {
        split_map(bytes)
    }
}

/// Decodes an owned `T` from all of `bytes`: the runtime's hot path. The fast decoder
/// (`msgpack_fast`) takes what typed payloads hold; anything else, and every error, goes to
/// rmp-serde, reading the slice in place (strings are copied once, into the value; its
/// `io::Read` path copied each through a buffer with `read_to_end`). Both catch trailing bytes
/// without the structural pre-scan that [`MsgPack::decode_seed`] does (that scan costs ~7% of a
/// 64 KiB call): after the value, reading one more must fail at the end of the bytes.
pub(crate) fn decode_owned<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if let Some(value) = super::msgpack_fast::decode(bytes, MAX_DEPTH) {
        return Ok(value);
    }
    // What the fast path leaves to rmp-serde, or an error: rmp-serde decodes it or says why.
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut de).map_err(classify)?;
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        _ => Err(Error::malformed(MsgPack::NAME, "trailing bytes after the value")),
    }
}

/// Malformed bytes (truncated, bad marker, bad UTF-8, too deep) versus a well-formed value of the
/// wrong type.
fn classify(e: rmp_serde::decode::Error) -> Error {
    use rmp_serde::decode::Error as E;
    match e {
        E::InvalidMarkerRead(_) | E::InvalidDataRead(_) | E::Utf8Error(_) | E::DepthLimitExceeded => {
            Error::malformed(MsgPack::NAME, e)
        }
        e => Error::payload(e),
    }
}

/// Nesting limit of the typed decoder, as serde_json's: rmp-serde's own (1024) lets a small
/// hostile frame overflow a 2 MiB thread stack.
pub(crate) const MAX_DEPTH: usize = 128;

fn truncated() -> Error {
    Error::malformed(MsgPack::NAME, "data ends inside a value")
}

fn byte(bytes: &[u8], at: usize) -> Result<u8> {
    bytes.get(at).copied().ok_or_else(truncated)
}

fn be(bytes: &[u8], at: usize, n: usize) -> Result<u64> {
    let end = at.checked_add(n).ok_or_else(truncated)?;
    let slice = bytes.get(at..end).ok_or_else(truncated)?;
    Ok(slice.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

/// What a marker at some position is followed by.
enum Item {
    /// `n` more bytes of data after the marker and its length field, then done.
    Bytes { header: usize, len: u64 },
    /// A container of `n` more values.
    Nested { header: usize, values: u64 },
}

fn item(bytes: &[u8], at: usize) -> Result<Item> {
    use Item::*;
    let m = byte(bytes, at)?;
    Ok(match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Bytes { header: 1, len: 0 },
        0x80..=0x8f => Nested {
            header: 1,
            values: 2 * u64::from(m & 0x0f),
        },
        0x90..=0x9f => Nested {
            header: 1,
            values: u64::from(m & 0x0f),
        },
        0xa0..=0xbf => Bytes {
            header: 1,
            len: u64::from(m & 0x1f),
        },
        0xc1 => return Err(Error::malformed(MsgPack::NAME, "reserved marker 0xc1")),
        0xc4 | 0xd9 => Bytes {
            header: 2,
            len: be(bytes, at + 1, 1)?,
        },
        0xc5 | 0xda => Bytes {
            header: 3,
            len: be(bytes, at + 1, 2)?,
        },
        0xc6 | 0xdb => Bytes {
            header: 5,
            len: be(bytes, at + 1, 4)?,
        },
        0xc7 => Bytes {
            header: 3,
            len: be(bytes, at + 1, 1)?,
        },
        0xc8 => Bytes {
            header: 4,
            len: be(bytes, at + 1, 2)?,
        },
        0xc9 => Bytes {
            header: 6,
            len: be(bytes, at + 1, 4)?,
        },
        0xca => Bytes { header: 1, len: 4 },
        0xcb => Bytes { header: 1, len: 8 },
        0xcc | 0xd0 => Bytes { header: 1, len: 1 },
        0xcd | 0xd1 => Bytes { header: 1, len: 2 },
        0xce | 0xd2 => Bytes { header: 1, len: 4 },
        0xcf | 0xd3 => Bytes { header: 1, len: 8 },
        0xd4 => Bytes { header: 2, len: 1 },
        0xd5 => Bytes { header: 2, len: 2 },
        0xd6 => Bytes { header: 2, len: 4 },
        0xd7 => Bytes { header: 2, len: 8 },
        0xd8 => Bytes { header: 2, len: 16 },
        0xdc => Nested {
            header: 3,
            values: be(bytes, at + 1, 2)?,
        },
        0xdd => Nested {
            header: 5,
            values: be(bytes, at + 1, 4)?,
        },
        0xde => Nested {
            header: 3,
            values: 2 * be(bytes, at + 1, 2)?,
        },
        0xdf => Nested {
            header: 5,
            values: 2 * be(bytes, at + 1, 4)?,
        },
    })
}

/// Returns the offset just past the msgpack value starting at `at`. Iterative: no recursion, so
/// deep nesting cannot overflow the stack; every value takes at least one byte, so the loop ends
/// within `bytes.len()` steps.
pub(crate) fn skip_value(bytes: &[u8], mut at: usize) -> Result<usize> {
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        match item(bytes, at)? {
            Item::Bytes { header, len } => {
                let len = usize::try_from(len).map_err(|_| truncated())?;
                at = at
                    .checked_add(header)
                    .and_then(|a| a.checked_add(len))
                    .filter(|&end| end <= bytes.len())
                    .ok_or_else(truncated)?;
            }
            Item::Nested { header, values } => {
                at += header;
                pending += values;
            }
        }
    }
    Ok(at)
}

/// The range of the string at `at`, if the value there is a string.
fn string_at(bytes: &[u8], at: usize) -> Result<Option<std::ops::Range<usize>>> {
    let m = byte(bytes, at)?;
    if !matches!(m, 0xa0..=0xbf | 0xd9 | 0xda | 0xdb) {
        return Ok(None);
    }
    match item(bytes, at)? {
        Item::Bytes { header, len } => {
            let start = at + header;
            let end = skip_value(bytes, at)?;
            debug_assert_eq!(end as u64, start as u64 + len);
            Ok(Some(start..end))
        }
        Item::Nested { .. } => Ok(None),
    }
}

/// One scan over a legacy map: finds `path` (must be a string) and the raw bytes of `data`.
fn split_map(bytes: &[u8]) -> Result<LegacyParts<'_>> {
    let pairs = match item(bytes, 0)? {
        Item::Nested { header, values } if matches!(bytes[0], 0x80..=0x8f | 0xde | 0xdf) => {
            (header, values / 2)
        }
        _ => {
            // Still tell garbage from a well-formed non-map.
            skip_value(bytes, 0)?;
            return Err(Error::NotAMap);
        }
    };
    let (mut at, count) = pairs;
    let mut path = None;
    let mut data = None;
    for _ in 0..count {
        let key = string_at(bytes, at)?;
        let value_at = skip_value(bytes, at)?;
        let value_end = skip_value(bytes, value_at)?;
        match key.map(|r| &bytes[r]) {
            Some(b"path") => {
                path = Some(match string_at(bytes, value_at)? {
                    Some(r) => PathPart::Str(
                        std::str::from_utf8(&bytes[r])
                            .map_err(|_| Error::PathNotUtf8)?
                            .into(),
                    ),
                    None => PathPart::NotString,
                });
            }
            Some(b"data") => data = Some(value_at..value_end),
            _ => {}
        }
        at = value_end;
    }
    if at != bytes.len() {
        return Err(Error::malformed(
            MsgPack::NAME,
            format!("{} trailing bytes after the envelope", bytes.len() - at),
        ));
    }
    LegacyParts::new(path, data.map(|r| &bytes[r]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_decode_takes_exactly_one_value() {
        let mut one = Vec::new();
        MsgPack::encode(&("name", vec![1u32, 2, 3]), &mut one).unwrap();
        let ok: (String, Vec<u32>) = decode_owned(&one).unwrap();
        assert_eq!(ok, ("name".to_owned(), vec![1, 2, 3]));
        let err = |bytes: &[u8]| decode_owned::<(String, Vec<u32>)>(bytes).unwrap_err().to_string();
        // A second value, a byte no value starts with, a truncated second value: all trailing.
        for extra in [&[0x01][..], &[0xc1], &[0xa3, b'a']] {
            let mut bytes = one.clone();
            bytes.extend_from_slice(extra);
            assert!(
                err(&bytes).contains("trailing bytes"),
                "{extra:?}: {}",
                err(&bytes)
            );
        }
        // A truncated value is malformed, not trailing; a value of the wrong type is a payload
        // error.
        assert!(!err(&one[..one.len() - 1]).contains("trailing"));
        let mut wrong = Vec::new();
        MsgPack::encode(&7u8, &mut wrong).unwrap();
        assert!(!err(&wrong).contains("trailing"));
    }

    #[test]
    fn skip_handles_every_marker_family() {
        let values = rmpv::Value::Array(vec![
            rmpv::Value::Nil,
            true.into(),
            (-5).into(),
            200u8.into(),
            70_000u32.into(),
            u64::MAX.into(),
            i64::MIN.into(),
            1.5f32.into(),
            2.5f64.into(),
            "x".repeat(40).into(),
            "y".repeat(300).into(),
            rmpv::Value::Binary(vec![1; 70_000]),
            rmpv::Value::Map(vec![("k".into(), rmpv::Value::Array(vec![1.into(); 20]))]),
            rmpv::Value::Ext(5, vec![1, 2, 3, 4]),
            rmpv::Value::Ext(-1, vec![0; 3]),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &values).unwrap();
        assert_eq!(skip_value(&buf, 0).unwrap(), buf.len());
        for cut in [1, 10, buf.len() / 2, buf.len() - 1] {
            assert!(matches!(skip_value(&buf[..cut], 0), Err(Error::Malformed { .. })));
        }
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut buf = vec![0x91; 1_000_000];
        buf.push(0xc0);
        assert_eq!(skip_value(&buf, 0).unwrap(), buf.len());
        // The typed decoder has a depth limit instead of overflowing the stack.
        assert!(MsgPack::decode::<rmpv::Value>(&buf).is_err());
        let mut ok = vec![0x91; MAX_DEPTH - 2];
        ok.push(0xc0);
        MsgPack::decode::<rmpv::Value>(&ok).unwrap();
    }

    #[test]
    fn huge_declared_lengths_are_truncation_not_allocation() {
        for bytes in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xc6, 0xff, 0xff, 0xff, 0xff, 0],
        ] {
            assert!(matches!(skip_value(bytes, 0), Err(Error::Malformed { .. })));
            assert!(matches!(
                MsgPack::decode::<rmpv::Value>(bytes),
                Err(Error::Malformed { .. })
            ));
        }
    }
}
