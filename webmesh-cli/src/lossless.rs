//! The lossless JSON form of msgpack values: what `webmesh` reads and prints.
//!
//! Plain JSON stands for itself (null, booleans, numbers, strings, arrays, objects with string
//! keys). What JSON cannot say is an object with one key, a tag:
//!
//! | msgpack | JSON |
//! |---|---|
//! | bin | `{"$bin": "<base64>"}` |
//! | ext | `{"$ext": [type, "<base64>"]}` |
//! | an integer beyond ±(2^53 − 1) (JavaScript's exact range) | `{"$int": "18446744073709551615"}` |
//! | NaN, ±infinity | `{"$float": "NaN"}`, `"Infinity"`, `"-Infinity"` |
//! | a map with keys that are not strings, or repeated keys | `{"$map": [[key, value], ...]}` |
//! | a str that is not UTF-8 | `{"$str": "<base64 of its bytes>"}` |
//!
//! A map whose only key is one of these tags is itself written as `{"$map": [...]}`, so every
//! value reads back as what it was. Integers inside ±(2^53 − 1) may also be written as plain
//! numbers up to the 64-bit range on input. Floats keep their value; a 32-bit float prints as a
//! number and reads back as a 64-bit one (msgpack width is the one thing not kept).
//! Object keys keep their order both ways.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rmpv::{Utf8String, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// The largest integer JavaScript (and many JSON readers) hold exactly.
const MAX_SAFE: i128 = (1 << 53) - 1;

const TAGS: [&str; 6] = ["$bin", "$ext", "$int", "$float", "$map", "$str"];

/// Reads JSON text in the lossless form.
///
/// # Errors
///
/// What is wrong and where (line, column), for text that is not JSON or a malformed tag.
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Seed.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// A value to print in the lossless form (`serde_json::to_string(&Lossless(&v))`).
pub(crate) struct Lossless<'a>(pub &'a Value);

impl Serialize for Lossless<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Nil => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Integer(i) => {
                let n = i
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| i.as_u64().map(i128::from))
                    .unwrap_or_default();
                if n.abs() <= MAX_SAFE {
                    s.serialize_i64(n as i64)
                } else {
                    tagged(s, "$int", &n.to_string())
                }
            }
            Value::F32(f) => float(s, f64::from(*f)),
            Value::F64(f) => float(s, *f),
            Value::String(text) => match text.as_str() {
                Some(t) => s.serialize_str(t),
                None => tagged(s, "$str", &BASE64.encode(text.as_bytes())),
            },
            Value::Binary(b) => tagged(s, "$bin", &BASE64.encode(b)),
            Value::Ext(t, data) => tagged(s, "$ext", &(t, BASE64.encode(data))),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Lossless(v))?;
                }
                seq.end()
            }
            Value::Map(entries) if plain_object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k.as_str().unwrap_or_default(), &Lossless(v))?;
                }
                map.end()
            }
            Value::Map(entries) => {
                let pairs: Vec<[Lossless<'_>; 2]> =
                    entries.iter().map(|(k, v)| [Lossless(k), Lossless(v)]).collect();
                tagged(s, "$map", &pairs)
            }
        }
    }
}

fn tagged<S: Serializer, T: Serialize + ?Sized>(s: S, tag: &str, value: &T) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(tag, value)?;
    map.end()
}

fn float<S: Serializer>(s: S, f: f64) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        s.serialize_f64(f)
    } else if f.is_nan() {
        tagged(s, "$float", "NaN")
    } else if f > 0.0 {
        tagged(s, "$float", "Infinity")
    } else {
        tagged(s, "$float", "-Infinity")
    }
}

/// A map that JSON can hold as an object: UTF-8 string keys, none repeated, and not one that
/// would read back as a tag.
fn plain_object(entries: &[(Value, Value)]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let all_strings = entries
        .iter()
        .all(|(k, _)| k.as_str().is_some_and(|k| seen.insert(k)));
    let looks_tagged = entries.len() == 1 && entries[0].0.as_str().is_some_and(|k| TAGS.contains(&k));
    all_strings && !looks_tagged
}

/// Deserializes one value in the lossless form, keeping object key order.
struct Seed;

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::F64(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Value, Value)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Seed)?;
            entries.push((Value::String(k.into()), v));
        }
        if entries.len() == 1 {
            if let Some(tag) = entries[0].0.as_str().filter(|k| TAGS.contains(k)) {
                return untag(tag, &entries[0].1).map_err(de::Error::custom);
            }
        }
        Ok(Value::Map(entries))
    }
}

/// The value a tag stands for.
fn untag(tag: &str, v: &Value) -> Result<Value, String> {
    let base64 = |v: &Value| -> Result<Vec<u8>, String> {
        let text = v.as_str().ok_or_else(|| format!("{tag} takes a base64 string"))?;
        BASE64
            .decode(text)
            .map_err(|e| format!("{tag}: invalid base64: {e}"))
    };
    match tag {
        "$bin" => Ok(Value::Binary(base64(v)?)),
        "$str" => Ok(Value::String(raw_str(base64(v)?)?)),
        "$ext" => match v.as_array().map(Vec::as_slice) {
            Some([t, data]) => {
                let t = t
                    .as_i64()
                    .and_then(|t| i8::try_from(t).ok())
                    .ok_or("$ext: the type is an integer from -128 to 127")?;
                Ok(Value::Ext(t, base64(data)?))
            }
            _ => Err("$ext takes [type, \"<base64>\"]".into()),
        },
        "$int" => {
            let text = v.as_str().ok_or("$int takes a decimal string")?;
            if let Ok(n) = text.parse::<u64>() {
                Ok(Value::from(n))
            } else {
                text.parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("$int: {text:?} is not a 64-bit integer"))
            }
        }
        "$float" => match v.as_str() {
            Some("NaN") => Ok(Value::F64(f64::NAN)),
            Some("Infinity") => Ok(Value::F64(f64::INFINITY)),
            Some("-Infinity") => Ok(Value::F64(f64::NEG_INFINITY)),
            _ => Err("$float takes \"NaN\", \"Infinity\" or \"-Infinity\"".into()),
        },
        "$map" => {
            let pairs = v.as_array().ok_or("$map takes [[key, value], ...]")?;
            pairs
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([k, v]) => Ok((k.clone(), v.clone())),
                    _ => Err("$map takes [[key, value], ...]".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Map)
        }
        _ => unreachable!("only the listed tags get here"),
    }
}

/// A msgpack str holding `bytes`, UTF-8 or not (read back from a str32 encoding, the only way
/// rmpv makes one that is not UTF-8).
fn raw_str(bytes: Vec<u8>) -> Result<Utf8String, String> {
    let len = u32::try_from(bytes.len()).map_err(|_| "$str: longer than 4 GiB".to_owned())?;
    let mut buf = Vec::with_capacity(bytes.len() + 5);
    buf.push(0xdb);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&bytes);
    match rmpv::decode::read_value(&mut &buf[..]) {
        Ok(Value::String(s)) => Ok(s),
        _ => Err("$str: not a string".into()),
    }
}

/// Prints `value` as JSON text (pretty: indented).
pub(crate) fn to_string(value: &Value, pretty: bool) -> String {
    let out = if pretty {
        serde_json::to_string_pretty(&Lossless(value))
    } else {
        serde_json::to_string(&Lossless(value))
    };
    // Serializing a Value into a String cannot fail: every case above is JSON.
    out.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) {
        let text = to_string(&v, false);
        let back = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        match (&v, &back) {
            (Value::F64(a), Value::F64(b)) if a.is_nan() => assert!(b.is_nan()),
            _ => assert_eq!(back, v, "{text}"),
        }
    }

    #[test]
    fn what_json_lacks_reads_back_as_it_was() {
        round_trip(Value::Binary(vec![0, 1, 255]));
        round_trip(Value::Ext(-5, b"hello".to_vec()));
        round_trip(Value::from(u64::MAX));
        round_trip(Value::from(i64::MIN));
        round_trip(Value::from(1u64 << 53));
        round_trip(Value::F64(f64::NAN));
        round_trip(Value::F64(f64::NEG_INFINITY));
        round_trip(Value::F64(0.1));
        round_trip(Value::Map(vec![
            (1.into(), "one".into()),
            (Value::Nil, true.into()),
        ]));
        round_trip(Value::Map(vec![("a".into(), 1.into()), ("a".into(), 2.into())]));
        round_trip(Value::Map(vec![("$bin".into(), "not base64".into())]));
        round_trip(Value::String(raw_str(vec![0xff, 0xfe]).unwrap()));
        round_trip(Value::Map(vec![
            ("z".into(), 1.into()),
            ("a".into(), Value::Array(vec![Value::Nil, 2.5.into()])),
        ]));
    }

    #[test]
    fn plain_json_stands_for_itself_in_order() {
        let v = parse(r#"{"z": 1, "a": [true, null, "x", -3, 2.5]}"#).unwrap();
        assert_eq!(to_string(&v, false), r#"{"z":1,"a":[true,null,"x",-3,2.5]}"#);
        assert_eq!(
            to_string(&Value::from(9_007_199_254_740_991u64), false),
            "9007199254740991"
        );
        assert_eq!(
            to_string(&Value::from(9_007_199_254_740_992u64), false),
            r#"{"$int":"9007199254740992"}"#
        );
        assert_eq!(parse("18446744073709551615").unwrap(), Value::from(u64::MAX));
    }

    #[test]
    fn malformed_tags_and_text_are_errors() {
        assert!(parse(r#"{"$bin": "%%"}"#).unwrap_err().contains("base64"));
        assert!(parse(r#"{"$ext": [300, ""]}"#).unwrap_err().contains("-128"));
        assert!(parse(r#"{"$int": "x"}"#).unwrap_err().contains("64-bit"));
        assert!(parse("{").is_err());
        assert!(parse("1 2").is_err());
    }
}
