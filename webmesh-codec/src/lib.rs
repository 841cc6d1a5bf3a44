//! The wire format of [webmesh]: codecs, envelopes, framing and decoding limits, with no I/O.
//!
//! - A [`Codec`] turns one serde value into bytes and back: [`MsgPack`] (default) and [`Json`]
//!   are built in, any other can be plugged in. [`AnyCodec`] picks one at run time.
//! - A [`Framing`] lays messages out in WebSocket frames: [`Framing::Legacy`] is webmesh 0.1.2
//!   (`{"path", "data"}` maps in TEXT frames: hex of zlib of msgpack, or JSON);
//!   [`Framing::V1`] is the Rust-to-Rust protocol (BINARY frames with kind, correlation id and
//!   path, payload compressed per message). `docs/PROTOCOL.md` in the repository specifies both
//!   byte by byte.
//! - [`decode_frame`] reads the kind, id and path of a received frame and leaves the payload
//!   encoded: [`Frame::decode`] then decodes it straight into the route's type.
//! - [`FrameEncoder`] builds outgoing frames, reusing compression state per thread.
//! - [`Limits`] bound what a frame may cost: its size, and its inflated size, checked while
//!   inflating (a zlib bomb allocates at most the limit).
//!
//! Nothing here panics on any input: every malformed class is an [`Error`] variant.
//!
//! # Examples
//!
//! A 0.1.2 frame, as the Python `MessagePackSerializer` writes it:
//!
//! ```
//! use webmesh_codec::{decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Limits, WireMessage};
//!
//! let enc = FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default());
//! let WireMessage::Text(text) = enc.call(0, "/echo", &"hi")? else { unreachable!() };
//! assert!(text.starts_with("78")); // hex of a zlib stream
//!
//! let frame = decode_frame(Framing::Legacy, &AnyCodec::MSGPACK, &Limits::default(), FrameType::Text, text.into())?;
//! assert_eq!(frame.path(), "/echo");
//! assert_eq!(frame.decode::<String>()?, "hi");
//! # Ok::<(), webmesh_codec::Error>(())
//! ```
//!
//! [webmesh]: https://docs.rs/webmesh

#![forbid(unsafe_code)]

mod codec;
mod config;
mod encode;
mod error;
mod frame;
mod hex;
mod legacy;
mod nil;
mod zlib;

pub use codec::{AnyCodec, Codec, Json, MsgPack};
pub use config::{
    Compression, Limits, COMPRESSION_SAMPLE, COMPRESSION_SAMPLE_FROM, DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_COMPRESSION_MIN_SAVING, DEFAULT_COMPRESSION_MIN_SIZE, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_INFLATED_SIZE,
};
pub use encode::{FrameEncoder, WireMessage};
pub use error::{BoxError, Error, Result};
pub use frame::{
    code, decode_frame, parse_subprotocol, peek_v1_header, subprotocol, with_id, ErrorBody, Frame, FrameType,
    Framing, Kind, SUBPROTOCOL_PREFIX,
};
pub use legacy::LegacyParts;

/// True when `value` serializes as null (`()`, `None`, a unit struct): the value 0.1.2 sends no
/// reply for.
pub fn is_nil<T: serde::Serialize + ?Sized>(value: &T) -> bool {
    nil::is_nil(value)
}
