//! Received frames: from WebSocket message bytes to a routed [`Frame`] whose payload is still
//! encoded, so it can be decoded straight into the route's type.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::codec::AnyCodec;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::legacy::{DataField, DataPart};
use crate::{hex, zlib};

/// How messages are laid out on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// webmesh 0.1.2: a TEXT frame holding the `{"path", "data"}` map (hex of zlib of msgpack, or
    /// JSON). No ids, no errors: replies come back in the order the peer sends them.
    Legacy,
    /// The Rust-to-Rust protocol: BINARY frames with a kind, a correlation id and a path in a
    /// small header, then the payload, compressed per message. See `docs/PROTOCOL.md`.
    V1,
}

impl Framing {
    /// A short name for logs: `"legacy"` or `"v1"`.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Legacy => "legacy",
            Framing::V1 => "v1",
        }
    }
}

/// Prefix of every webmesh WebSocket subprotocol.
pub const SUBPROTOCOL_PREFIX: &str = "webmesh.v1.";

/// The WebSocket subprotocol that selects the v1 framing with `codec`: `webmesh.v1.<name>`.
pub fn subprotocol(codec: &AnyCodec) -> String {
    format!("{SUBPROTOCOL_PREFIX}{}", codec.name())
}

/// The codec name in a webmesh v1 subprotocol, or `None` for any other subprotocol.
pub fn parse_subprotocol(protocol: &str) -> Option<&str> {
    protocol
        .trim()
        .strip_prefix(SUBPROTOCOL_PREFIX)
        .filter(|name| !name.is_empty())
}

/// The WebSocket frame type a message arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// A TEXT frame (UTF-8).
    Text,
    /// A BINARY frame.
    Binary,
}

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// v1: a request that expects a `Reply` or an `Error` with the same id.
    Call,
    /// v1: a one-way message on a path (an `emit`, or a server push); never answered.
    Notify,
    /// v1: the successful answer to the `Call` with the same id.
    Reply,
    /// v1: the failed answer to the `Call` with the same id; the payload is an [`ErrorBody`].
    Error,
    /// v1: the caller gave up on the `Call` with this id; the callee may stop working on it.
    Cancel,
    /// v1: subscribe to a topic path or pattern; the id names the subscription, and the answer is
    /// a `Reply` (or an `Error`) with it.
    Subscribe,
    /// v1: end the subscription with this id; never answered.
    Unsubscribe,
    /// v1, client to server: publish on a topic through the server; answered like a `Call` when
    /// the id is not zero.
    Publish,
    /// v1, server to client: one message of a topic, with its sequence number (flag `0x40`); the
    /// same bytes for every subscriber.
    TopicMessage,
    /// v1, server to client: news of the subscription with this id (a gap, a lag, an end).
    Notice,
    /// A 0.1.2 `{"path", "data"}` map: a request when a server receives it, a reply when a client
    /// does.
    Legacy,
    /// v1: a kind this version does not know. Answer with an `unsupported` error when the id is
    /// not zero, ignore otherwise.
    Unknown(u8),
}

impl Kind {
    /// The kind's number in the low four bits of the v1 header.
    pub fn to_bits(self) -> Option<u8> {
        Some(match self {
            Kind::Call => 0,
            Kind::Notify => 1,
            Kind::Reply => 2,
            Kind::Error => 3,
            Kind::Cancel => 4,
            Kind::Subscribe => 5,
            Kind::Unsubscribe => 6,
            Kind::Publish => 7,
            Kind::TopicMessage => 8,
            Kind::Notice => 9,
            Kind::Unknown(bits) if bits < 16 => bits,
            Kind::Legacy | Kind::Unknown(_) => return None,
        })
    }

    fn from_bits(bits: u8) -> Kind {
        match bits {
            0 => Kind::Call,
            1 => Kind::Notify,
            2 => Kind::Reply,
            3 => Kind::Error,
            4 => Kind::Cancel,
            5 => Kind::Subscribe,
            6 => Kind::Unsubscribe,
            7 => Kind::Publish,
            8 => Kind::TopicMessage,
            9 => Kind::Notice,
            other => Kind::Unknown(other),
        }
    }
}

/// v1 header flag: the body is a zlib stream.
pub(crate) const FLAG_COMPRESSED: u8 = 0x10;
/// v1 header flag: a varint follows the id, the call's time budget in milliseconds.
pub(crate) const FLAG_DEADLINE: u8 = 0x20;
/// v1 header flag: a varint follows (the budget, if any, and) the id: a topic message's sequence
/// number.
pub(crate) const FLAG_SEQ: u8 = 0x40;

/// Error codes the webmesh runtimes put in [`ErrorBody::code`]. Any other string is allowed: a
/// receiver shows codes it does not know as they are.
pub mod code {
    /// No route at the path.
    pub const NOT_FOUND: &str = "not_found";
    /// The payload is malformed or does not fit the route's request type.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The handler returned an error; `data` holds the handler's error value.
    pub const HANDLER: &str = "handler";
    /// The handler panicked or its reply could not be encoded.
    pub const INTERNAL: &str = "internal";
    /// The connection is closing (the server shuts down, or closes it): the call did not run,
    /// so it is safe to send again elsewhere.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// The frame kind is not supported by the peer.
    pub const UNSUPPORTED: &str = "unsupported";
    /// The call's deadline passed before its handler finished: the handler was stopped.
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    /// The connection's identity may not call this path (an authorization rule of the server).
    pub const FORBIDDEN: &str = "forbidden";
    /// The call could not reach the node that serves it (the cluster's broker is down): it did
    /// not run, so it is safe to send again later.
    pub const UNAVAILABLE: &str = "unavailable";
}

/// The payload of an `Error` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody<'a, D = IgnoredAny> {
    /// A machine-readable code, see [`code`].
    pub code: Cow<'a, str>,
    /// A human-readable message.
    pub message: Cow<'a, str>,
    /// Typed detail, such as the handler's error value.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

fn none<D>() -> Option<D> {
    None
}

#[derive(Clone)]
enum PathRepr {
    Range(Range<usize>),
    Owned(Box<str>),
}

#[derive(Clone)]
enum PayloadRepr {
    Absent,
    Range(Range<usize>),
    InMap(Range<usize>),
}

/// A received frame: kind, id and path read, payload still encoded.
///
/// Decode the payload with [`decode`](Self::decode) once the route, and so the payload's type, is
/// known: there is no detour through a dynamic value tree. Owns its bytes (cheap to clone), so it
/// can move to the task that runs the handler.
#[derive(Clone)]
pub struct Frame {
    kind: Kind,
    id: u64,
    compressed: bool,
    /// A CALL's time budget in milliseconds, when the caller sent one.
    budget_ms: Option<u64>,
    /// A topic message's sequence number.
    seq: Option<u64>,
    codec: AnyCodec,
    buf: Bytes,
    path: PathRepr,
    payload: PayloadRepr,
}

impl Frame {
    /// What the frame is for.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The correlation id; 0 when the frame has none (legacy frames, `Notify`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The route path; empty in v1 `Reply`, `Error` and `Cancel` frames.
    pub fn path(&self) -> &str {
        match &self.path {
            PathRepr::Range(r) => std::str::from_utf8(&self.buf[r.clone()]).unwrap_or_default(),
            PathRepr::Owned(s) => s,
        }
    }

    /// The codec the payload is in (for legacy frames, the one the frame was recognized as).
    pub fn codec(&self) -> &AnyCodec {
        &self.codec
    }

    /// True when the frame arrived compressed.
    pub fn was_compressed(&self) -> bool {
        self.compressed
    }

    /// The time budget a v1 CALL carries: how long the caller still waits for the answer, as of
    /// when it sent the call. `None` when it sent none.
    pub fn budget(&self) -> Option<std::time::Duration> {
        self.budget_ms.map(std::time::Duration::from_millis)
    }

    /// A topic message's sequence number on its path (flag `0x40`).
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// True when the frame has no payload or its payload is null: a legacy request without a
    /// `data` key, or a null value.
    pub fn payload_is_nil(&self) -> bool {
        match &self.payload {
            PayloadRepr::Absent => true,
            PayloadRepr::Range(r) => self.codec.is_nil(&self.buf[r.clone()]),
            PayloadRepr::InMap(_) => false,
        }
    }

    /// The frame's bytes exactly as they arrived, for a v1 frame that was not compressed (to pass
    /// it on unchanged); `None` otherwise.
    pub fn v1_bytes(&self) -> Option<&Bytes> {
        (self.kind != Kind::Legacy && !self.compressed).then_some(&self.buf)
    }

    /// The encoded payload bytes, when they sit apart in the frame (always, for the built-in
    /// codecs; `None` for an absent legacy `data`).
    pub fn payload_bytes(&self) -> Option<&[u8]> {
        match &self.payload {
            PayloadRepr::Range(r) => Some(&self.buf[r.clone()]),
            _ => None,
        }
    }

    /// Decodes the payload as a `T`. An absent legacy `data` decodes as null, as in 0.1.2.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.payload {
            PayloadRepr::Absent => self.codec.decode(self.codec.nil()),
            PayloadRepr::Range(r) => self.codec.decode(&self.buf[r.clone()]),
            PayloadRepr::InMap(r) => self
                .codec
                .decode::<DataField<T>>(&self.buf[r.clone()])
                .map(|f| f.0),
        }
    }

    /// Decodes the [`ErrorBody`] of an `Error` frame, with typed `data`.
    ///
    /// When `data` does not fit `D`, the body is still returned with `data: None` and the second
    /// value holds the decode error, so that a code and message are never lost.
    pub fn decode_error<D: DeserializeOwned>(&self) -> Result<(ErrorBody<'static, D>, Option<Error>)> {
        match self.decode::<ErrorBody<'static, D>>() {
            Ok(body) => Ok((body, None)),
            Err(typed) => {
                let body = self.decode::<ErrorBody<'static, IgnoredAny>>()?;
                let body = ErrorBody {
                    code: body.code,
                    message: body.message,
                    data: None,
                };
                Ok((body, Some(typed)))
            }
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("path", &self.path())
            .field("codec", &self.codec.name())
            .field("compressed", &self.compressed)
            .field("len", &self.buf.len())
            .finish()
    }
}

/// Reads a received WebSocket message as a frame of `framing`, within `limits`.
///
/// `codec` is the connection's codec. Legacy text frames are recognized by their first byte: `{`
/// is a JSON map, anything else is hex (of zlib of msgpack, or of plain msgpack), so a server
/// configured for one 0.1.2 serializer still understands a peer using the other; the returned
/// frame's [`codec`](Frame::codec) says which it was, for the reply.
pub fn decode_frame(
    framing: Framing,
    codec: &AnyCodec,
    limits: &Limits,
    frame_type: FrameType,
    bytes: Bytes,
) -> Result<Frame> {
    if bytes.len() > limits.max_frame_size {
        return Err(Error::FrameTooLarge {
            size: bytes.len(),
            max: limits.max_frame_size,
        });
    }
    match (framing, frame_type) {
        (Framing::V1, FrameType::Binary) => decode_v1(codec, limits, bytes),
        (Framing::Legacy, FrameType::Text) => decode_legacy(codec, limits, bytes),
        (framing, got) => Err(Error::WrongFrameType {
            framing: framing.name(),
            got: type_name(got),
            expected: type_name(match framing {
                Framing::V1 => FrameType::Binary,
                Framing::Legacy => FrameType::Text,
            }),
        }),
    }
}

fn type_name(t: FrameType) -> &'static str {
    match t {
        FrameType::Text => "text",
        FrameType::Binary => "binary",
    }
}

/// The kind and id of a v1 frame, read from its first bytes only: lets a receiver answer a frame
/// whose body failed to decode (for example an inflate error) with an `Error` for its id.
pub fn peek_v1_header(bytes: &[u8]) -> Option<(Kind, u64)> {
    let header = *bytes.first()?;
    let mut at = 1;
    let id = read_varint(bytes, &mut at, "id").ok()?;
    Some((Kind::from_bits(header & 0x0f), id))
}

/// The v1 frame `bytes` with its id replaced by `id` (everything else as it was, compressed
/// payload included): for passing on an answer that was made for another id.
///
/// # Errors
///
/// [`Error::TruncatedHeader`](crate::Error) or [`Error::VarintOverflow`](crate::Error) when
/// `bytes` does not start with a v1 header.
pub fn with_id(bytes: &[u8], id: u64) -> Result<Vec<u8>> {
    let header = *bytes.first().ok_or(Error::TruncatedHeader("kind"))?;
    let mut at = 1;
    read_varint(bytes, &mut at, "id")?;
    let mut out = Vec::with_capacity(bytes.len() + 10);
    out.push(header);
    crate::encode::write_varint(&mut out, id);
    out.extend_from_slice(&bytes[at..]);
    Ok(out)
}

/// Reads an unsigned LEB128 varint at `*at`.
pub(crate) fn read_varint(buf: &[u8], at: &mut usize, what: &'static str) -> Result<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*at).ok_or_else(|| Error::TruncatedHeader(what))?;
        *at += 1;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(Error::VarintOverflow);
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::VarintOverflow)
}

fn decode_v1(codec: &AnyCodec, limits: &Limits, bytes: Bytes) -> Result<Frame> {
    let header = *bytes.first().ok_or_else(|| Error::TruncatedHeader("kind"))?;
    let flags = header & 0xf0;
    if flags & !(FLAG_COMPRESSED | FLAG_DEADLINE | FLAG_SEQ) != 0 {
        return Err(Error::ReservedFlags(flags));
    }
    let mut at = 1;
    let id = read_varint(&bytes, &mut at, "id")?;
    let budget_ms = if flags & FLAG_DEADLINE != 0 {
        Some(read_varint(&bytes, &mut at, "deadline")?)
    } else {
        None
    };
    let seq = if flags & FLAG_SEQ != 0 {
        Some(read_varint(&bytes, &mut at, "sequence number")?)
    } else {
        None
    };
    let path_len = read_varint(&bytes, &mut at, "path length")?;
    let path_end = usize::try_from(path_len)
        .ok()
        .and_then(|n| at.checked_add(n))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| Error::TruncatedHeader("path"))?;
    std::str::from_utf8(&bytes[at..path_end]).map_err(|_| Error::PathNotUtf8)?;
    let path = PathRepr::Range(at..path_end);
    let compressed = flags & FLAG_COMPRESSED != 0;
    let (buf, payload) = if compressed {
        // Keep the header bytes in front so the path range still points at the path.
        let mut whole = bytes[..path_end].to_vec();
        zlib::inflate_into(&bytes[path_end..], limits.max_inflated_size, &mut whole)?;
        let len = whole.len();
        (Bytes::from(whole), PayloadRepr::Range(path_end..len))
    } else {
        let len = bytes.len();
        (bytes, PayloadRepr::Range(path_end..len))
    };
    Ok(Frame {
        kind: Kind::from_bits(header & 0x0f),
        id,
        compressed,
        budget_ms,
        seq,
        codec: codec.clone(),
        buf,
        path,
        payload,
    })
}

fn decode_legacy(codec: &AnyCodec, limits: &Limits, bytes: Bytes) -> Result<Frame> {
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    let (codec, compressed, buf) = if first == Some(b'{') {
        let codec = if codec.is_text() {
            codec.clone()
        } else {
            AnyCodec::JSON
        };
        (codec, false, bytes)
    } else {
        let codec = if codec.is_text() {
            AnyCodec::MSGPACK
        } else {
            codec.clone()
        };
        let mut raw = Vec::new();
        hex::decode_into(&bytes, &mut raw)?;
        // zlib streams and msgpack maps start with disjoint bytes: a zlib header's first byte
        // has low nibble 8 (0x08..0x78), a map marker is 0x80..0x8f, 0xde or 0xdf.
        if matches!(raw.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
            if raw.len() > limits.max_inflated_size {
                return Err(Error::InflatedTooLarge {
                    max: limits.max_inflated_size,
                });
            }
            (codec, false, Bytes::from(raw))
        } else {
            let mut out = Vec::new();
            zlib::inflate_into(&raw, limits.max_inflated_size, &mut out)?;
            (codec, true, Bytes::from(out))
        }
    };
    let parts = codec.split_legacy(&buf)?;
    let base = buf.as_ptr() as usize;
    let range_of = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let path = match parts.path {
        Cow::Borrowed(p) => PathRepr::Range(range_of(p.as_bytes())),
        Cow::Owned(p) => PathRepr::Owned(p.into_boxed_str()),
    };
    let payload = match parts.data {
        DataPart::Absent => PayloadRepr::Absent,
        DataPart::Raw(d) => PayloadRepr::Range(range_of(d)),
        DataPart::InMap(d) => PayloadRepr::InMap(range_of(d)),
    };
    Ok(Frame {
        kind: Kind::Legacy,
        id: 0,
        compressed,
        budget_ms: None,
        seq: None,
        codec,
        buf,
        path,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            crate::encode::write_varint(&mut buf, v);
            let mut at = 0;
            assert_eq!(read_varint(&buf, &mut at, "id").unwrap(), v);
            assert_eq!(at, buf.len());
        }
        let mut at = 0;
        assert!(matches!(
            read_varint(&[0x80, 0x80], &mut at, "id"),
            Err(Error::TruncatedHeader("id"))
        ));
        let mut at = 0;
        assert!(matches!(
            read_varint(&[0xff; 10], &mut at, "id"),
            Err(Error::VarintOverflow)
        ));
        let mut at = 0;
        let eleven = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert!(matches!(
            read_varint(&eleven, &mut at, "id"),
            Err(Error::VarintOverflow)
        ));
    }

    #[test]
    fn subprotocol_names() {
        assert_eq!(subprotocol(&AnyCodec::MSGPACK), "webmesh.v1.msgpack");
        assert_eq!(parse_subprotocol(" webmesh.v1.json"), Some("json"));
        assert_eq!(parse_subprotocol("webmesh.v1."), None);
        assert_eq!(parse_subprotocol("graphql-ws"), None);
    }
}
