//! JSON through serde_json.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::value::RawValue;

use super::Codec;
use crate::error::{Error, Result};
use crate::legacy::{LegacyParts, PathPart};

/// JSON (serde_json), the readable codec; 0.1.2's `StandardJsonSerializer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

fn classify(e: serde_json::Error) -> Error {
    match e.classify() {
        serde_json::error::Category::Data => Error::payload(e),
        _ => Error::malformed(Json::NAME, e),
    }
}

impl Codec for Json {
    const NAME: &'static str = "json";
    const TEXT: bool = true;
    const NIL: &'static [u8] = b"null";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
        serde_json::to_writer(out, value).map_err(Error::encode)
    }

    fn decode_seed<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = seed.deserialize(&mut de).map_err(classify)?;
        de.end().map_err(classify)?;
        Ok(value)
    }

    fn split_legacy(bytes: &[u8]) -> Result<LegacyParts<'_>> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let split = de.deserialize_any(SplitVisitor).map_err(classify)?;
        de.end().map_err(classify)?;
        match split {
            Split::NotAMap => Err(Error::NotAMap),
            Split::Map { path, data } => LegacyParts::new(path, data.map(|raw| raw.get().as_bytes())),
        }
    }
}

enum Split<'a> {
    NotAMap,
    Map {
        path: Option<PathPart<'a>>,
        data: Option<&'a RawValue>,
    },
}

/// Reads one JSON value as a legacy envelope: keys, a string path, the raw data; anything else
/// is read through and reported as "not a map".
struct SplitVisitor;

macro_rules! not_a_map {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: serde::de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Ok(Split::NotAMap)
        }
    )*};
}

impl<'de> Visitor<'de> for SplitVisitor {
    type Value = Split<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a {\"path\", \"data\"} object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut path = None;
        let mut data = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "path" => path = Some(map.next_value_seed(PathSeed)?),
                "data" => data = Some(map.next_value::<&'de RawValue>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Split::Map { path, data })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Split::NotAMap)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Split::NotAMap)
    }

    not_a_map!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
}

/// A map key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// The `path` value: a string, or noted as not one (and read through).
struct PathSeed;

impl<'de> DeserializeSeed<'de> for PathSeed {
    type Value = PathPart<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(PathVisitor)
    }
}

struct PathVisitor;

macro_rules! not_a_string {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: serde::de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Ok(PathPart::NotString)
        }
    )*};
}

impl<'de> Visitor<'de> for PathVisitor {
    type Value = PathPart<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a path")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(PathPart::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PathPart::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(PathPart::NotString)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(PathPart::NotString)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(PathPart::NotString)
    }

    not_a_string!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);
}
