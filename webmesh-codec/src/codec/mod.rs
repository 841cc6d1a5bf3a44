//! Codecs: how a value becomes bytes and back.
//!
//! A codec is a unit type implementing [`Codec`]. It only turns one serde value into bytes and
//! back; framing, compression and hex are layered on top of it by [`FrameEncoder`] and
//! [`decode_frame`](crate::decode_frame), so a third-party codec gets all of them for free.
//!
//! Runtimes pick a codec per connection (the WebSocket subprotocol names it), so they hold an
//! [`AnyCodec`]: the built-in codecs stay monomorphized behind it, and third-party codecs go
//! through [`erased_serde`].
//!
//! [`FrameEncoder`]: crate::FrameEncoder

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::legacy::{self, LegacyParts};

mod json;
mod msgpack;
mod msgpack_fast;

pub use json::Json;
pub use msgpack::MsgPack;

/// A serialization format for one value.
///
/// Implement it on a unit type to plug in another format; hand it to a runtime with
/// [`AnyCodec::of`]. Both ends of a connection must use the same codec: its [`NAME`](Codec::NAME)
/// travels in the WebSocket subprotocol.
///
/// # Examples
///
/// A codec that reuses serde_json with pretty output:
///
/// ```
/// use serde::{de::DeserializeSeed, Serialize};
/// use webmesh_codec::{AnyCodec, Codec, Error};
///
/// struct PrettyJson;
///
/// impl Codec for PrettyJson {
///     const NAME: &'static str = "pretty-json";
///     const TEXT: bool = true;
///     const NIL: &'static [u8] = b"null";
///
///     fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
///         serde_json::to_writer_pretty(out, value).map_err(|e| Error::Encode { source: e.into() })
///     }
///
///     fn decode_seed<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value, Error> {
///         let mut de = serde_json::Deserializer::from_slice(bytes);
///         let value = seed.deserialize(&mut de).map_err(|e| Error::Payload { source: e.into() })?;
///         de.end().map_err(|e| Error::Payload { source: e.into() })?;
///         Ok(value)
///     }
/// }
///
/// let codec = AnyCodec::of::<PrettyJson>();
/// let mut out = Vec::new();
/// codec.encode(&[1, 2], &mut out)?;
/// assert_eq!(codec.decode::<Vec<u8>>(&out)?, [1, 2]);
/// # Ok::<(), Error>(())
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Short lowercase name, used in the WebSocket subprotocol (`webmesh.v1.<NAME>`).
    const NAME: &'static str;
    /// True when encoded values are always UTF-8 text: legacy frames then carry them as they are
    /// instead of in hex.
    const TEXT: bool;
    /// The encoding of the null value (`None`, `()`). A legacy reply whose value encodes to this
    /// is not sent, as 0.1.2 sends no reply for `None`.
    const NIL: &'static [u8];

    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()>;

    /// Decodes one value from all of `bytes` through a serde seed.
    ///
    /// Return [`Error::Malformed`] when the bytes are not valid in the format and
    /// [`Error::Payload`] when they are valid but do not fit the seed's type.
    fn decode_seed<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value>;

    /// Decodes one value of type `T` from all of `bytes`.
    fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
        Self::decode_seed(bytes, std::marker::PhantomData::<T>)
    }

    /// Finds the path and the raw `data` of a legacy `{"path": .., "data": ..}` map without
    /// decoding the data.
    ///
    /// The default decodes the map twice through serde (once for the path, once to find the
    /// data); the built-in codecs override it with a single scan.
    fn split_legacy(bytes: &[u8]) -> Result<LegacyParts<'_>> {
        legacy::split_generic::<Self>(bytes)
    }
}

/// The object-safe face of a [`Codec`], for codecs that are not built in.
trait DynCodec: Send + Sync {
    fn name(&self) -> &'static str;
    fn text(&self) -> bool;
    fn nil(&self) -> &'static [u8];
    fn encode(&self, value: &dyn erased_serde::Serialize, out: &mut Vec<u8>) -> Result<()>;
    fn decode(&self, bytes: &[u8], sink: &mut dyn ErasedSink) -> Result<()>;
    fn split_legacy<'a>(&self, bytes: &'a [u8]) -> Result<LegacyParts<'a>>;
}

/// Receives the erased deserializer of one value.
trait ErasedSink {
    fn accept(&mut self, de: &mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error>;
}

struct SinkFor<T>(Option<T>);

impl<T: DeserializeOwned> ErasedSink for SinkFor<T> {
    fn accept(&mut self, de: &mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> {
        self.0 = Some(erased_serde::deserialize(de)?);
        Ok(())
    }
}

struct ErasedSeed<'s>(&'s mut dyn ErasedSink);

impl<'de> DeserializeSeed<'de> for ErasedSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let mut erased = <dyn erased_serde::Deserializer<'de>>::erase(deserializer);
        self.0.accept(&mut erased).map_err(serde::de::Error::custom)
    }
}

struct Adapter<C>(std::marker::PhantomData<fn() -> C>);

impl<C: Codec> DynCodec for Adapter<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn text(&self) -> bool {
        C::TEXT
    }
    fn nil(&self) -> &'static [u8] {
        C::NIL
    }
    fn encode(&self, value: &dyn erased_serde::Serialize, out: &mut Vec<u8>) -> Result<()> {
        C::encode(value, out)
    }
    fn decode(&self, bytes: &[u8], sink: &mut dyn ErasedSink) -> Result<()> {
        C::decode_seed(bytes, ErasedSeed(sink))
    }
    fn split_legacy<'a>(&self, bytes: &'a [u8]) -> Result<LegacyParts<'a>> {
        C::split_legacy(bytes)
    }
}

#[derive(Clone)]
enum Inner {
    MsgPack,
    Json,
    Custom(Arc<dyn DynCodec>),
}

/// A codec chosen at run time: one of the built-in codecs, or any [`Codec`] behind a pointer.
///
/// Cheap to clone. The built-in codecs are matched to their concrete functions, so a typed
/// decode through `AnyCodec` costs one branch over calling [`MsgPack`] or [`Json`] directly.
#[derive(Clone)]
pub struct AnyCodec(Inner);

impl AnyCodec {
    /// msgpack, the default (compression is a separate layer: [`Compression`](crate::Compression)).
    pub const MSGPACK: AnyCodec = AnyCodec(Inner::MsgPack);
    /// JSON, the readable one.
    pub const JSON: AnyCodec = AnyCodec(Inner::Json);

    /// The run-time handle of codec `C`.
    pub fn of<C: Codec>() -> Self {
        let id = TypeId::of::<C>();
        if id == TypeId::of::<MsgPack>() {
            Self::MSGPACK
        } else if id == TypeId::of::<Json>() {
            Self::JSON
        } else {
            AnyCodec(Inner::Custom(Arc::new(Adapter::<C>(std::marker::PhantomData))))
        }
    }

    /// The codec's [`Codec::NAME`].
    pub fn name(&self) -> &'static str {
        match &self.0 {
            Inner::MsgPack => MsgPack::NAME,
            Inner::Json => Json::NAME,
            Inner::Custom(c) => c.name(),
        }
    }

    /// True for the built-in codecs (msgpack and JSON).
    pub(crate) fn is_builtin(&self) -> bool {
        !matches!(self.0, Inner::Custom(_))
    }

    /// The codec's [`Codec::TEXT`].
    pub fn is_text(&self) -> bool {
        match &self.0 {
            Inner::MsgPack => MsgPack::TEXT,
            Inner::Json => Json::TEXT,
            Inner::Custom(c) => c.text(),
        }
    }

    /// The codec's [`Codec::NIL`].
    pub fn nil(&self) -> &'static [u8] {
        match &self.0 {
            Inner::MsgPack => MsgPack::NIL,
            Inner::Json => Json::NIL,
            Inner::Custom(c) => c.nil(),
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        match &self.0 {
            Inner::MsgPack => MsgPack::encode(value, out),
            Inner::Json => Json::encode(value, out),
            Inner::Custom(c) => c.encode(&value as &dyn erased_serde::Serialize, out),
        }
    }

    /// Decodes a `T` from all of `bytes`.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        match &self.0 {
            Inner::MsgPack => msgpack::decode_owned(bytes),
            Inner::Json => Json::decode(bytes),
            Inner::Custom(c) => {
                let mut sink = SinkFor::<T>(None);
                c.decode(bytes, &mut sink)?;
                sink.0.ok_or_else(|| Error::payload("codec produced no value"))
            }
        }
    }

    /// Decodes a `T` that may borrow from `bytes`. Third-party codecs only support owned types
    /// here: use [`decode`](Self::decode) with them.
    pub fn decode_borrowed<'de, T: Deserialize<'de>>(&self, bytes: &'de [u8]) -> Result<T> {
        match &self.0 {
            Inner::MsgPack => MsgPack::decode(bytes),
            Inner::Json => Json::decode(bytes),
            Inner::Custom(c) => Err(Error::payload(format!(
                "codec {:?} cannot decode borrowed types",
                c.name()
            ))),
        }
    }

    /// True when `bytes` is this codec's encoding of null.
    pub fn is_nil(&self, bytes: &[u8]) -> bool {
        bytes == self.nil()
    }

    pub(crate) fn split_legacy<'a>(&self, bytes: &'a [u8]) -> Result<LegacyParts<'a>> {
        match &self.0 {
            Inner::MsgPack => MsgPack::split_legacy(bytes),
            Inner::Json => Json::split_legacy(bytes),
            Inner::Custom(c) => c.split_legacy(bytes),
        }
    }
}

impl Default for AnyCodec {
    /// msgpack.
    fn default() -> Self {
        Self::MSGPACK
    }
}

impl fmt::Debug for AnyCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AnyCodec").field(&self.name()).finish()
    }
}

impl PartialEq for AnyCodec {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for AnyCodec {}
