//! Outgoing frames.

use std::cell::{Cell, RefCell};

use serde::Serialize;

use crate::codec::AnyCodec;
use crate::config::{Compression, COMPRESSION_SAMPLE, COMPRESSION_SAMPLE_FROM};
use crate::error::{Error, Result};
use crate::frame::{Framing, Kind, FLAG_COMPRESSED, FLAG_DEADLINE, FLAG_SEQ};
use crate::legacy::LegacyMap;
use crate::{hex, zlib};

/// A message ready to be sent in one WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    /// Send as a TEXT frame.
    Text(String),
    /// Send as a BINARY frame.
    Binary(Vec<u8>),
}

impl WireMessage {
    /// Length in bytes as it goes on the wire (without WebSocket framing).
    pub fn len(&self) -> usize {
        match self {
            WireMessage::Text(s) => s.len(),
            WireMessage::Binary(b) => b.len(),
        }
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WireMessage::Text(s) => s.as_bytes(),
            WireMessage::Binary(b) => b,
        }
    }
}

/// Largest scratch buffer kept per thread between messages.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Large payloads sent without sampling after a sample of their route's (of the same kind) said
/// deflating them does not pay (see `Encoder::worth_deflating`).
const SKIPS_AFTER_NO: u8 = 15;
const VERDICT_SLOTS: usize = 8;

/// One verdict in [`NOT_WORTH`]: about a route's calls, replies or topic messages.
#[derive(Clone, Copy)]
struct Verdict {
    /// The [`verdict_key`] of what was judged; 0 for an empty slot.
    key: u64,
    /// Large payloads still to send without a sample.
    skips: u8,
    /// The length of the last large payload judged: the next one is encoded straight into a
    /// buffer of about this size.
    len: u32,
}

thread_local! {
    /// Routes whose last sample said no, with the skips left: a small direct-mapped cache, so
    /// a thread serving many such routes only samples more often.
    static NOT_WORTH: Cell<[Verdict; VERDICT_SLOTS]> =
        const { Cell::new([Verdict { key: 0, skips: 0, len: 0 }; VERDICT_SLOTS]) };
    /// Whether any sample on this thread said no: until one does, encoding a message does not
    /// hash its path to look for a verdict.
    static ANY_NOT_WORTH: Cell<bool> = const { Cell::new(false) };
}

/// A v1 frame's header fields, and the route its payload is judged with for deflating.
struct Head<'a> {
    kind: Kind,
    id: u64,
    budget_ms: Option<u64>,
    seq: Option<u64>,
    path: &'a str,
    /// The header's path, except in a reply, whose header has none.
    route: &'a str,
}

impl<'a> Head<'a> {
    fn new(kind: Kind, id: u64, path: &'a str) -> Self {
        Head {
            kind,
            id,
            budget_ms: None,
            seq: None,
            path,
            route: path,
        }
    }
}

/// Whose payloads a deflate verdict is about: a route's payloads of one kind (its calls, its
/// replies or its topic messages).
#[derive(Clone, Copy)]
struct Judged<'a> {
    kind_bits: u8,
    route: &'a str,
}

/// FNV-1a of what was judged and the compression settings that judged it (never 0, the empty
/// slot).
fn verdict_key(judged: Judged<'_>, compression: &Compression) -> u64 {
    let settings = [judged.kind_bits, compression.level as u8, compression.min_saving];
    let hash = judged
        .route
        .bytes()
        .chain(settings)
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    hash.max(1)
}

/// Runs `f` with two cleared per-thread scratch buffers (fresh ones if already in use).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut pair) => {
            let (a, b) = &mut *pair;
            a.clear();
            b.clear();
            let r = f(a, b);
            for v in [a, b] {
                if v.capacity() > SCRATCH_KEEP {
                    *v = Vec::new();
                }
            }
            r
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// How many bytes [`write_varint`] writes for `value`.
fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `value` as an unsigned LEB128 varint.
pub(crate) fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Builds outgoing frames for one connection: a framing, a codec and a compression policy.
///
/// Cheap to clone. Compression state and scratch buffers are reused per thread, so encoding
/// allocates the outgoing message and nothing else.
///
/// # Examples
///
/// ```
/// use webmesh_codec::{decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits, WireMessage};
///
/// let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
/// let WireMessage::Binary(bytes) = enc.call(7, "/echo", &"hi")? else { unreachable!() };
/// assert_eq!(bytes, b"\x00\x07\x05/echo\xa2hi");
///
/// let frame = decode_frame(Framing::V1, &AnyCodec::MSGPACK, &Limits::default(), FrameType::Binary, bytes.into())?;
/// assert_eq!((frame.kind(), frame.id(), frame.path()), (Kind::Call, 7, "/echo"));
/// assert_eq!(frame.decode::<String>()?, "hi");
/// # Ok::<(), webmesh_codec::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    framing: Framing,
    codec: AnyCodec,
    compression: Compression,
}

impl FrameEncoder {
    /// An encoder for `framing` with `codec`, compressing as `compression` says.
    pub fn new(framing: Framing, codec: AnyCodec, compression: Compression) -> Self {
        FrameEncoder {
            framing,
            codec,
            compression,
        }
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The codec.
    pub fn codec(&self) -> &AnyCodec {
        &self.codec
    }

    /// The compression policy.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The same encoder with another compression policy (a legacy reply to an uncompressed
    /// request goes out uncompressed).
    #[must_use]
    pub fn with_compression(&self, compression: Compression) -> Self {
        FrameEncoder {
            compression,
            ..self.clone()
        }
    }

    /// The same encoder with another codec (a legacy reply goes out in the request's codec).
    #[must_use]
    pub fn with_codec(&self, codec: AnyCodec) -> Self {
        FrameEncoder {
            codec,
            ..self.clone()
        }
    }

    /// A call of `path` with correlation `id`. Legacy: the `{"path", "data"}` map (no id).
    pub fn call<T: Serialize + ?Sized>(&self, id: u64, path: &str, value: &T) -> Result<WireMessage> {
        self.message(Kind::Call, id, path, value)
    }

    /// A call that tells the callee how long the caller waits: `budget`, sent in whole
    /// milliseconds rounded up (v1 flag `0x20`). Legacy framing has no deadlines: the same as
    /// [`call`](Self::call).
    pub fn call_within<T: Serialize + ?Sized>(
        &self,
        id: u64,
        path: &str,
        value: &T,
        budget: std::time::Duration,
    ) -> Result<WireMessage> {
        match self.framing {
            Framing::V1 => {
                let ms = u64::try_from(budget.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
                self.v1_with(
                    Head {
                        budget_ms: Some(ms),
                        ..Head::new(Kind::Call, id, path)
                    },
                    |out| self.codec.encode(value, out),
                )
            }
            Framing::Legacy => self.legacy(path, value),
        }
    }

    /// A one-way message on `path` (emit, push). Legacy: the `{"path", "data"}` map.
    pub fn notify<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<WireMessage> {
        self.message(Kind::Notify, 0, path, value)
    }

    /// The reply to call `id` on `path`.
    ///
    /// Legacy: the `{"path", "data"}` map, or `None` when the value encodes to null: 0.1.2 sends
    /// no reply for `None`. v1 always answers a call; its header carries no path, but a large
    /// payload is judged for deflating with `path`'s earlier replies (see [`Compression`]).
    pub fn reply<T: Serialize + ?Sized>(
        &self,
        id: u64,
        path: &str,
        value: &T,
    ) -> Result<Option<WireMessage>> {
        match self.framing {
            // A reply's header has no path; its payloads are judged as the route's replies.
            Framing::V1 => self
                .v1_with(
                    Head {
                        route: path,
                        ..Head::new(Kind::Reply, id, "")
                    },
                    |out| self.codec.encode(value, out),
                )
                .map(Some),
            Framing::Legacy if crate::nil::is_nil(value) => Ok(None),
            Framing::Legacy => self.legacy(path, value).map(Some),
        }
    }

    /// An `Error` answer to call `id`. Legacy framing has no errors: `None` (log it instead).
    pub fn error<D: Serialize + ?Sized>(
        &self,
        id: u64,
        code: &str,
        message: &str,
        data: Option<&D>,
    ) -> Result<Option<WireMessage>> {
        #[derive(Serialize)]
        struct Body<'a, D: ?Sized> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a D>,
        }
        match self.framing {
            Framing::V1 => {
                let body = Body { code, message, data };
                self.v1(Kind::Error, id, "", |out| self.codec.encode(&body, out))
                    .map(Some)
            }
            Framing::Legacy => Ok(None),
        }
    }

    /// An `Error` answer with no data; see [`error`](Self::error).
    pub fn error_plain(&self, id: u64, code: &str, message: &str) -> Result<Option<WireMessage>> {
        self.error::<()>(id, code, message, None)
    }

    /// A `Cancel` of call `id`. Legacy framing has no cancellation: `None`.
    pub fn cancel(&self, id: u64) -> Option<WireMessage> {
        match self.framing {
            Framing::V1 => {
                let mut out = Vec::with_capacity(12);
                out.push(4);
                write_varint(&mut out, id);
                out.push(0);
                Some(WireMessage::Binary(out))
            }
            Framing::Legacy => None,
        }
    }

    /// A v1 frame of any kind with `value` as its body: the topic kinds (`Subscribe`,
    /// `Unsubscribe`, `Publish`, `Notice`) and the others. Legacy framing has none of them.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`](crate::Error) with legacy framing, or when `value` does not encode.
    pub fn v1_frame<T: Serialize + ?Sized>(
        &self,
        kind: Kind,
        id: u64,
        path: &str,
        value: &T,
    ) -> Result<WireMessage> {
        match self.framing {
            Framing::V1 => self.v1(kind, id, path, |out| self.codec.encode(value, out)),
            Framing::Legacy => Err(Error::encode(format!("{kind:?} has no legacy encoding"))),
        }
    }

    /// A topic message: `value` on topic `path` with sequence number `seq` (kind `TopicMessage`,
    /// id 0, flag `0x40`). The same bytes go to every subscriber.
    ///
    /// # Errors
    ///
    /// As [`v1_frame`](Self::v1_frame).
    pub fn topic_message<T: Serialize + ?Sized>(
        &self,
        seq: u64,
        path: &str,
        value: &T,
    ) -> Result<WireMessage> {
        match self.framing {
            Framing::V1 => self.v1_with(
                Head {
                    seq: Some(seq),
                    ..Head::new(Kind::TopicMessage, 0, path)
                },
                |out| self.codec.encode(value, out),
            ),
            Framing::Legacy => Err(Error::encode("topics have no legacy encoding")),
        }
    }

    /// A frame whose payload is already encoded in this encoder's codec (forwarding, tools).
    /// Legacy framing needs a decodable value: use [`call`](Self::call) there.
    pub fn v1_raw(&self, kind: Kind, id: u64, path: &str, payload: &[u8]) -> Result<WireMessage> {
        self.v1(kind, id, path, |out| {
            out.extend_from_slice(payload);
            Ok(())
        })
    }

    /// [`v1_raw`](Self::v1_raw) with a deadline: `budget` as in [`call_within`](Self::call_within)
    /// (forwarding a call elsewhere).
    pub fn v1_raw_within(
        &self,
        kind: Kind,
        id: u64,
        path: &str,
        payload: &[u8],
        budget: Option<std::time::Duration>,
    ) -> Result<WireMessage> {
        let ms = budget.map(|b| u64::try_from(b.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX));
        self.v1_with(
            Head {
                budget_ms: ms,
                ..Head::new(kind, id, path)
            },
            |out| {
                out.extend_from_slice(payload);
                Ok(())
            },
        )
    }

    fn message<T: Serialize + ?Sized>(
        &self,
        kind: Kind,
        id: u64,
        path: &str,
        value: &T,
    ) -> Result<WireMessage> {
        match self.framing {
            Framing::V1 => self.v1(kind, id, path, |out| self.codec.encode(value, out)),
            Framing::Legacy => self.legacy(path, value),
        }
    }

    fn v1(
        &self,
        kind: Kind,
        id: u64,
        path: &str,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<WireMessage> {
        self.v1_with(Head::new(kind, id, path), write_payload)
    }

    /// A v1 frame with `head`, its payload written by `write_payload`, judged for deflating with
    /// `head.route`'s payloads of its kind.
    fn v1_with(
        &self,
        head: Head<'_>,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<WireMessage> {
        let Head {
            kind,
            id,
            budget_ms,
            seq,
            path,
            route,
        } = head;
        let bits = kind
            .to_bits()
            .ok_or_else(|| Error::encode(format!("{kind:?} has no v1 encoding")))?;
        let judged = Judged {
            kind_bits: bits,
            route,
        };
        let header = 1
            + varint_len(id)
            + budget_ms.map_or(0, varint_len)
            + seq.map_or(0, varint_len)
            + varint_len(path.len() as u64)
            + path.len();
        let write_header = |out: &mut Vec<u8>| {
            out.push(bits);
            write_varint(out, id);
            if let Some(ms) = budget_ms {
                out[0] |= FLAG_DEADLINE;
                write_varint(out, ms);
            }
            if let Some(seq) = seq {
                out[0] |= FLAG_SEQ;
                write_varint(out, seq);
            }
            write_varint(out, path.len() as u64);
            out.extend_from_slice(path.as_bytes());
        };
        if let Some(hint) = self.direct_size(judged) {
            // This path's large payloads do not deflate well (a sample said so): the payload
            // is written straight after the header, sized by the last one, instead of into
            // the scratch buffer and then copied (64 KiB of copying per 64 KiB message).
            let mut out = Vec::with_capacity(header + hint + hint / 8);
            write_header(&mut out);
            write_payload(&mut out)?;
            let len = out.len() - header;
            if out.capacity() / 2 > out.len() {
                // Far smaller than the last one: not held in a buffer sized for that.
                out.shrink_to_fit();
            }
            if len >= COMPRESSION_SAMPLE_FROM {
                self.note_direct_size(judged, len);
                return Ok(WireMessage::Binary(out));
            }
            // Smaller than this path's earlier payloads, too small to be judged by a sample:
            // deflated if large enough, as any such payload is.
            if len >= self.compression.min_size {
                let (head, payload) = out.split_at(header);
                if let Some(deflated) = self.deflated(header, |o| o.extend_from_slice(head), payload)? {
                    return Ok(WireMessage::Binary(deflated));
                }
            }
            return Ok(WireMessage::Binary(out));
        }
        with_scratch(|payload, sample| {
            write_payload(payload)?;
            let deflate = payload.len() >= self.compression.min_size
                && self.worth_deflating(judged, payload, sample)?;
            if deflate {
                if let Some(deflated) = self.deflated(header, write_header, payload)? {
                    return Ok(WireMessage::Binary(deflated));
                }
            }
            // Not deflated: the exact size, so that it is copied once, and the message becomes
            // `Bytes` without an allocation of its own (`Bytes::from` a full `Vec`).
            let mut out = Vec::with_capacity(header + payload.len());
            write_header(&mut out);
            out.extend_from_slice(payload);
            Ok(WireMessage::Binary(out))
        })
    }

    /// A header of `header` bytes (written by `write_header`) followed by `payload` deflated,
    /// with the compressed flag set; `None` when deflating did not make the payload smaller.
    fn deflated(
        &self,
        header: usize,
        write_header: impl FnOnce(&mut Vec<u8>),
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(header + payload.len().min(self.compression.min_size));
        write_header(&mut out);
        zlib::compress_into(payload, self.compression.level, &mut out)?;
        if out.len() - header < payload.len() {
            out[0] |= FLAG_COMPRESSED;
            Ok(Some(out))
        } else {
            Ok(None)
        }
    }

    /// The size to encode a payload of `judged` for, straight into its message, when its
    /// last sample said its large payloads are not worth deflating (a skip is used up, as the
    /// payload will not be sampled). `None` otherwise, and for third-party codecs (only the
    /// built-in ones are known to append to the buffer they are given).
    fn direct_size(&self, judged: Judged<'_>) -> Option<usize> {
        if !ANY_NOT_WORTH.get() || !self.codec.is_builtin() || self.compression.min_saving == 0 {
            return None;
        }
        let key = verdict_key(judged, &self.compression);
        NOT_WORTH.with(|cache| {
            let mut slots = cache.get();
            let v = &mut slots[key as usize % VERDICT_SLOTS];
            if v.key != key || v.skips == 0 {
                return None;
            }
            v.skips -= 1;
            let len = v.len as usize;
            cache.set(slots);
            Some(len)
        })
    }

    /// Remembers the length of `judged`'s last large payload sent as it is.
    fn note_direct_size(&self, judged: Judged<'_>, len: usize) {
        let key = verdict_key(judged, &self.compression);
        NOT_WORTH.with(|cache| {
            let mut slots = cache.get();
            let v = &mut slots[key as usize % VERDICT_SLOTS];
            if v.key == key {
                v.len = u32::try_from(len).unwrap_or(u32::MAX);
                cache.set(slots);
            }
        });
    }

    /// Whether deflating `payload` is likely to save at least `min_saving` percent: always for
    /// small payloads, otherwise judged on a sample from its middle (deflated into `scratch`).
    /// A route whose sample said no is not sampled again for its next [`SKIPS_AFTER_NO`] large
    /// payloads of that kind on this thread: a route's payload type is fixed, so its
    /// compressibility changes little from call to call, and a sample costs a deflate stream's setup plus 2 KiB of
    /// deflate (~11 % of the CPU of a 64 KiB call of numbers).
    fn worth_deflating(&self, judged: Judged<'_>, payload: &[u8], scratch: &mut Vec<u8>) -> Result<bool> {
        let min_saving = usize::from(self.compression.min_saving);
        if min_saving == 0 || payload.len() < COMPRESSION_SAMPLE_FROM {
            return Ok(true);
        }
        let key = verdict_key(judged, &self.compression);
        let slot = key as usize % VERDICT_SLOTS;
        let skip = NOT_WORTH.with(|cache| {
            let mut slots = cache.get();
            let v = &mut slots[slot];
            let skip = v.key == key && v.skips > 0;
            if skip {
                v.skips -= 1;
                cache.set(slots);
            }
            skip
        });
        if skip {
            return Ok(false);
        }
        let from = payload.len() / 2 - COMPRESSION_SAMPLE / 2;
        let sample = &payload[from..from + COMPRESSION_SAMPLE];
        scratch.clear();
        zlib::compress_into(sample, self.compression.level, scratch)?;
        let worth = scratch.len() * 100 <= COMPRESSION_SAMPLE * (100 - min_saving);
        NOT_WORTH.with(|cache| {
            let mut slots = cache.get();
            slots[slot] = match worth {
                true => Verdict {
                    key: 0,
                    skips: 0,
                    len: 0,
                },
                false => Verdict {
                    key,
                    skips: SKIPS_AFTER_NO,
                    len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                },
            };
            cache.set(slots);
        });
        if !worth {
            ANY_NOT_WORTH.set(true);
        }
        Ok(worth)
    }

    /// The legacy map.
    fn legacy<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<WireMessage> {
        with_scratch(|map, zipped| {
            self.codec.encode(&LegacyMap { path, data: value }, map)?;
            if self.codec.is_text() {
                let text = String::from_utf8(std::mem::take(map))
                    .map_err(|_| Error::encode("text codec produced invalid UTF-8"))?;
                return Ok(WireMessage::Text(text));
            }
            let bytes = if self.compression.legacy_zlib {
                zlib::compress_into(map, self.compression.level.max(1), zipped)?;
                &zipped[..]
            } else {
                &map[..]
            };
            Ok(WireMessage::Text(hex::encode(bytes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn varint_len_is_what_write_varint_writes() {
        let mut values = vec![0, 1, u64::MAX, u64::MAX >> 1];
        for shift in 0..64 {
            let p = 1u64 << shift;
            values.extend([p - 1, p, p + 1]);
        }
        for v in values {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn a_frame_that_is_not_deflated_fills_its_buffer_exactly() {
        let enc = FrameEncoder::new(Framing::V1, AnyCodec::default(), Compression::default());
        for (id, budget) in [
            (1, None),
            (300, Some(Duration::from_millis(1500))),
            (u64::MAX, None),
        ] {
            let msg = match budget {
                Some(b) => enc.call_within(id, "/echo/a/path", &("small", 7u8), b),
                None => enc.call(id, "/echo/a/path", &("small", 7u8)),
            };
            let WireMessage::Binary(b) = msg.unwrap() else {
                panic!("msgpack is binary")
            };
            assert_eq!(b.len(), b.capacity());
        }
        // A large payload that does not deflate (pseudo-random numbers) too.
        let numbers: Vec<u32> = (0..20_000u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let WireMessage::Binary(b) = enc.call(7, "/numbers", &numbers).unwrap() else {
            panic!("msgpack is binary")
        };
        assert_eq!(b[0] & FLAG_COMPRESSED, 0, "random numbers are sent as they are");
        assert_eq!(b.len(), b.capacity());
    }

    fn binary(msg: Result<WireMessage>) -> Vec<u8> {
        match msg.unwrap() {
            WireMessage::Binary(b) => b,
            WireMessage::Text(_) => panic!("msgpack is binary"),
        }
    }

    #[test]
    fn a_path_whose_payloads_do_not_deflate_gets_them_encoded_in_place_with_the_same_bytes() {
        let enc = FrameEncoder::new(Framing::V1, AnyCodec::default(), Compression::default());
        let numbers = |n: u32| -> Vec<u32> { (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect() };
        let limits = crate::Limits::default();
        let check = |b: &[u8], id: u64, value: &Vec<u32>| {
            let bytes = bytes::Bytes::copy_from_slice(b);
            let frame = crate::decode_frame(
                Framing::V1,
                &AnyCodec::default(),
                &limits,
                crate::FrameType::Binary,
                bytes,
            )
            .unwrap();
            assert_eq!(
                (frame.kind(), frame.id(), frame.path()),
                (Kind::Call, id, "/numbers")
            );
            assert_eq!(&frame.decode::<Vec<u32>>().unwrap(), value);
        };
        // The first is sampled (and sized exactly, through the scratch buffer); the next ones,
        // without a sample, are written in place: the same bytes, in a buffer sized by the
        // last payload (so not exactly).
        let large = numbers(20_000);
        let first = binary(enc.call_within(1, "/numbers", &large, Duration::from_secs(3)));
        assert_eq!(first.len(), first.capacity());
        check(&first, 1, &large);
        let second = binary(enc.call_within(1, "/numbers", &large, Duration::from_secs(3)));
        assert_eq!(second, first);
        assert!(second.capacity() > second.len(), "encoded in place");
        // A larger one, then a far smaller one: right either way, and the small one is not
        // held in a buffer sized for the large ones.
        let larger = numbers(60_000);
        let b = binary(enc.call(2, "/numbers", &larger));
        assert_eq!(b[0] & FLAG_COMPRESSED, 0);
        check(&b, 2, &larger);
        let small = numbers(10);
        let b = binary(enc.call(3, "/numbers", &small));
        assert!(
            b.capacity() <= 2 * b.len(),
            "{} bytes held for {}",
            b.capacity(),
            b.len()
        );
        check(&b, 3, &small);
        // A payload too small to be sampled but large enough to deflate is deflated, as on a
        // path with no verdict.
        enc.call(4, "/numbers", &large).unwrap();
        let compressible = vec![7u32; 1_500];
        let b = binary(enc.call(5, "/numbers", &compressible));
        assert_ne!(b[0] & FLAG_COMPRESSED, 0, "deflated");
        check(&b, 5, &compressible);
        // Every skip used up (five so far, one per payload since the sample, whatever its
        // size): the next large payload is sampled again, and sized exactly.
        for _ in 5..usize::from(SKIPS_AFTER_NO) {
            enc.call(6, "/numbers", &large).unwrap();
        }
        let b = binary(enc.call(7, "/numbers", &large));
        assert_eq!(b.len(), b.capacity(), "sampled again");
        check(&b, 7, &large);
    }

    #[test]
    fn replies_are_judged_by_their_route_and_apart_from_its_calls() {
        let enc = FrameEncoder::new(Framing::V1, AnyCodec::default(), Compression::default());
        fn reply<T: Serialize>(enc: &FrameEncoder, id: u64, route: &str, value: &T) -> Vec<u8> {
            binary(enc.reply(id, route, value).map(|m| m.expect("v1 always answers")))
        }
        let numbers: Vec<u32> = (0..20_000u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let lines: Vec<String> = (0..2_000).map(|i| format!("GET /items/{} 200", i % 40)).collect();
        // `/numbers`' replies: a sample says no, and the next ones are sent as they are.
        for id in 1..=2 {
            assert_eq!(reply(&enc, id, "/numbers", &numbers)[0] & FLAG_COMPRESSED, 0);
        }
        // Every reply header carries the same (empty) path; another route's replies are still
        // judged on their own, and these deflate.
        assert_ne!(
            reply(&enc, 3, "/lines", &lines)[0] & FLAG_COMPRESSED,
            0,
            "deflated"
        );
        // And `/numbers`' own calls are not its replies.
        assert_ne!(
            binary(enc.call(4, "/numbers", &lines))[0] & FLAG_COMPRESSED,
            0,
            "deflated"
        );
    }
}
