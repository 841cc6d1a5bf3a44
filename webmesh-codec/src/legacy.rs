//! The 0.1.2 envelope: a map `{"path": str, "data": any}`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};

/// The legacy map as it is written: `path` first, then `data`, like 0.1.2's `SimpleDictProtocol`.
/// Always a map, even in a codec that writes structs as arrays.
pub(crate) struct LegacyMap<'a, T: ?Sized> {
    pub(crate) path: &'a str,
    pub(crate) data: &'a T,
}

impl<T: Serialize + ?Sized> Serialize for LegacyMap<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("path", self.path)?;
        map.serialize_entry("data", self.data)?;
        map.end()
    }
}

/// The `path` value of a legacy map.
pub(crate) enum PathPart<'a> {
    Str(Cow<'a, str>),
    NotString,
}

/// Where the `data` of a legacy map is.
pub(crate) enum DataPart<'a> {
    /// No `data` key: 0.1.2 reads it as `None`.
    Absent,
    /// The encoded data value itself.
    Raw(&'a [u8]),
    /// Only known to be the `data` field of this encoded map (third-party codecs).
    InMap(&'a [u8]),
}

/// The parts of a legacy map, found without decoding the data.
pub struct LegacyParts<'a> {
    pub(crate) path: Cow<'a, str>,
    pub(crate) data: DataPart<'a>,
}

impl<'a> LegacyParts<'a> {
    pub(crate) fn new(path: Option<PathPart<'a>>, data: Option<&'a [u8]>) -> Result<Self> {
        let path = match path {
            None => return Err(Error::MissingPath),
            Some(PathPart::NotString) => return Err(Error::PathNotString),
            Some(PathPart::Str(p)) => p,
        };
        let data = data.map_or(DataPart::Absent, DataPart::Raw);
        Ok(LegacyParts { path, data })
    }
}

impl fmt::Debug for LegacyParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyParts")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The two-pass split for codecs without a dedicated scanner.
pub(crate) fn split_generic<C: Codec + ?Sized>(bytes: &[u8]) -> Result<LegacyParts<'_>> {
    match C::decode_seed(bytes, GenericSplit).map_err(|e| match e {
        Error::Payload { source } => Error::Malformed {
            codec: C::NAME,
            source,
        },
        e => e,
    })? {
        None => Err(Error::NotAMap),
        Some((path, has_data)) => {
            let mut parts = LegacyParts::new(path, None)?;
            if has_data {
                parts.data = DataPart::InMap(bytes);
            }
            Ok(parts)
        }
    }
}

struct GenericSplit;

type SplitOut = Option<(Option<PathPart<'static>>, bool)>;

impl<'de> DeserializeSeed<'de> for GenericSplit {
    type Value = SplitOut;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SplitOut, D::Error> {
        d.deserialize_any(GenericSplit)
    }
}

impl<'de> Visitor<'de> for GenericSplit {
    type Value = SplitOut;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a {\"path\", \"data\"} map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SplitOut, A::Error> {
        let mut path = None;
        let mut data = false;
        while let Some(key) = map.next_key::<KeyName>()? {
            match key {
                KeyName::Path => {
                    path = Some(match map.next_value::<Option<AnyString>>()? {
                        Some(AnyString(Some(s))) => PathPart::Str(Cow::Owned(s)),
                        _ => PathPart::NotString,
                    })
                }
                KeyName::Data => {
                    map.next_value::<IgnoredAny>()?;
                    data = true;
                }
                KeyName::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some((path, data)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SplitOut, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<SplitOut, E> {
        Ok(None)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SplitOut, E> {
        Ok(None)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SplitOut, E> {
        Ok(None)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SplitOut, E> {
        Ok(None)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SplitOut, E> {
        Ok(None)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SplitOut, E> {
        Ok(None)
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SplitOut, E> {
        Ok(None)
    }
}

enum KeyName {
    Path,
    Data,
    Other,
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(match v {
                    "path" => KeyName::Path,
                    "data" => KeyName::Data,
                    _ => KeyName::Other,
                })
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<KeyName, E> {
                Ok(KeyName::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<KeyName, E> {
                Ok(KeyName::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<KeyName, E> {
                Ok(KeyName::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, or `None` inside for any other value (read through).
struct AnyString(Option<String>);

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AnyString, E> {
                Ok(AnyString(Some(v.to_owned())))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<AnyString, E> {
                Ok(AnyString(None))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<AnyString, E> {
                Ok(AnyString(None))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<AnyString, E> {
                Ok(AnyString(None))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<AnyString, E> {
                Ok(AnyString(None))
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<AnyString, E> {
                Ok(AnyString(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<AnyString, E> {
                Ok(AnyString(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyString(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes the `data` field of a legacy map as a `T` (second pass of the generic split).
pub(crate) struct DataField<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for DataField<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = DataField<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with a \"data\" field")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut data = None;
                while let Some(key) = map.next_key::<KeyName>()? {
                    match key {
                        KeyName::Data => data = Some(map.next_value::<T>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                data.map(DataField)
                    .ok_or_else(|| serde::de::Error::missing_field("data"))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}
