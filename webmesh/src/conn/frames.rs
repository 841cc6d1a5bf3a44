//! WebSocket frames (RFC 6455 §5) read straight from [`Io`]'s buffer, for both drivers.
//!
//! tungstenite performs the server's opening handshake only; this side's frames are written by
//! the [`Outbox`](super::Outbox) and the peer's are read here. tungstenite read through a buffer
//! that it keeps for the connection's life, at most that buffer's size per read, zero-filling
//! each piece first: with the 512 bytes the idle-memory target allows, a 64 KiB frame took 128
//! reads and a copy more than needed (11 % of the busy CPU of 64 KiB calls). Here a frame that
//! is in [`Io`]'s buffer is taken from it, and a large one that is not is read from the stream
//! straight into a buffer of its own size.

use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use webmesh_codec::FrameType;

use super::io::CHUNK;
use super::Io;

/// A message or control frame from the peer.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    /// A whole data message (its fragments joined).
    Data(FrameType, Bytes),
    /// A ping, with its payload (the pong answers with it).
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// A close frame: the code and reason, if it had them.
    Close(Option<(u16, String)>),
}

/// A large frame's buffer is allocated at most this much ahead of the bytes that arrived.
const GROW_BY: usize = 1 << 20;

/// Why the peer's frames cannot be read any more.
#[derive(Debug, PartialEq)]
pub(crate) enum Broken {
    /// The peer broke the protocol: close with this code (1002, or 1007 for text that is not
    /// UTF-8) and reason.
    Protocol(u16, String),
    /// A frame or message over the size limit (close with 1009).
    TooBig(String),
    /// The stream ended or failed.
    Lost(String),
}

fn protocol(why: impl Into<String>) -> Broken {
    Broken::Protocol(super::close::PROTOCOL, why.into())
}

/// The text of a message or close frame was not UTF-8 (close code 1007).
const INVALID_DATA: u16 = 1007;

/// The peer's frames, as a server reads them (masked) or a client does (unmasked).
pub(crate) struct FrameReader {
    server: bool,
    /// The largest frame, and the largest message (fragments joined), in bytes.
    max_frame: usize,
    max_message: usize,
    /// A fragmented message: its type and what arrived so far.
    partial: Option<(FrameType, BytesMut)>,
    /// A large frame whose payload is being read straight into its buffer.
    reading: Option<(Header, BytesMut)>,
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: usize,
}

impl FrameReader {
    pub(crate) fn new(server: bool, max_frame: usize, max_message: usize) -> Self {
        FrameReader {
            server,
            max_frame,
            max_message,
            partial: None,
            reading: None,
        }
    }

    /// The peer's next message or control frame.
    pub(crate) fn poll_next(&mut self, io: &mut Io, cx: &mut Context<'_>) -> Poll<Result<Incoming, Broken>> {
        loop {
            let (header, payload) = if let Some((header, payload)) = &mut self.reading {
                while payload.len() < header.len {
                    let want = header.len - payload.len();
                    payload.reserve(want.min(GROW_BY));
                    match ready!(io.poll_read_into(cx, payload, want)) {
                        Ok(0) => return Poll::Ready(Err(ended())),
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(lost(e))),
                    }
                }
                self.reading.take().expect("a frame being read")
            } else {
                match parse(io.buffered(), self.server, self.max_frame) {
                    Err(broken) => return Poll::Ready(Err(broken)),
                    Ok(Some((header, at))) if io.buffered().len() - at >= header.len => {
                        io.consume(at);
                        (header, io.take(header.len))
                    }
                    Ok(Some((header, at))) if header.len >= CHUNK => {
                        // Large and not all here: the rest goes straight into its own buffer.
                        io.consume(at);
                        // Sized as announced, up to a point: a header costs a peer 14 bytes.
                        let mut payload = BytesMut::with_capacity(header.len.min(GROW_BY));
                        let have = io.buffered().len();
                        payload.extend_from_slice(io.buffered());
                        io.consume(have);
                        self.reading = Some((header, payload));
                        continue;
                    }
                    Ok(_) => match ready!(io.poll_more(cx)) {
                        Ok(0) if io.buffered().is_empty() && self.partial.is_none() => {
                            return Poll::Ready(Err(Broken::Lost("connection closed".into())))
                        }
                        Ok(0) => return Poll::Ready(Err(ended())),
                        Ok(_) => continue,
                        Err(e) => return Poll::Ready(Err(lost(e))),
                    },
                }
            };
            match self.complete(header, payload) {
                Ok(None) => {} // a fragment: the message goes on
                Ok(Some(incoming)) => return Poll::Ready(Ok(incoming)),
                Err(broken) => return Poll::Ready(Err(broken)),
            }
        }
    }

    /// What a frame whose payload is all here means: `None` for a fragment of a message.
    fn complete(&mut self, header: Header, mut payload: BytesMut) -> Result<Option<Incoming>, Broken> {
        if let Some(mask) = header.mask {
            unmask(&mut payload, mask);
        }
        match header.opcode {
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(protocol("a message began inside a fragmented one"));
                }
                let kind = match header.opcode {
                    OP_TEXT => FrameType::Text,
                    _ => FrameType::Binary,
                };
                if header.fin {
                    return data(kind, payload).map(Some);
                }
                self.partial = Some((kind, payload));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some((kind, mut joined)) = self.partial.take() else {
                    return Err(protocol("a continuation frame with no message to continue"));
                };
                if joined.len() + payload.len() > self.max_message {
                    return Err(Broken::TooBig(format!(
                        "a fragmented message over {} bytes",
                        self.max_message
                    )));
                }
                joined.extend_from_slice(&payload);
                if header.fin {
                    return data(kind, joined).map(Some);
                }
                self.partial = Some((kind, joined));
                Ok(None)
            }
            OP_CLOSE => close_of(&payload).map(|c| Some(Incoming::Close(c))),
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            _ => Ok(Some(Incoming::Pong(payload.freeze()))), // the only opcode `parse` leaves
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// The frame header at the start of `bytes` and its length, checked (reserved bits, opcode,
/// masking, control frame rules, size); `None` while it is not all there. The size is checked
/// before the mask key is needed: an oversized frame is refused from its first bytes.
fn parse(bytes: &[u8], server: bool, max_frame: usize) -> Result<Option<(Header, usize)>, Broken> {
    let [b0, b1, ..] = *bytes else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(protocol(
            "reserved bits set in a frame header (no extension was negotiated)",
        ));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG if !fin => return Err(protocol("a fragmented control frame")),
        OP_CLOSE | OP_PING | OP_PONG if len > 125 => return Err(protocol("a control frame over 125 bytes")),
        OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(protocol(format!("unknown opcode {other:#x}"))),
    }
    match (server, masked) {
        (true, false) => return Err(protocol("an unmasked frame from a client")),
        (false, true) => return Err(protocol("a masked frame from a server")),
        _ => {}
    }
    if len > max_frame as u64 {
        return Err(Broken::TooBig(format!(
            "a frame of {len} bytes, over the limit of {max_frame}"
        )));
    }
    let mask = match masked {
        true => match bytes.get(at..at + 4) {
            Some(m) => {
                at += 4;
                Some(m.try_into().expect("4 bytes"))
            }
            None => return Ok(None),
        },
        false => None,
    };
    let len = len as usize; // at most `max_frame`
    Ok(Some((
        Header {
            fin,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// XORs `bytes` with the 4-byte `mask`, eight bytes at a time (masking and unmasking are the
/// same).
pub(crate) fn unmask(bytes: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = bytes.chunks_exact_mut(8);
    for word in &mut words {
        let v = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ wide;
        word.copy_from_slice(&v.to_ne_bytes());
    }
    // The rest starts at a multiple of 8, so at the mask's first byte.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

fn data(kind: FrameType, payload: BytesMut) -> Result<Incoming, Broken> {
    if kind == FrameType::Text && std::str::from_utf8(&payload).is_err() {
        return Err(Broken::Protocol(
            INVALID_DATA,
            "a text message that is not UTF-8".into(),
        ));
    }
    Ok(Incoming::Data(kind, payload.freeze()))
}

/// A close frame's code and reason (RFC 6455 §5.5.1, §7.4).
fn close_of(payload: &[u8]) -> Result<Option<(u16, String)>, Broken> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol("a close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // 1004–1006 and 1015 are reserved, or only for reporting; below 1000, 1016–2999 and
            // from 5000 on are not codes.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(protocol(format!("close code {code} is not one a peer may send")));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| Broken::Protocol(INVALID_DATA, "a close reason that is not UTF-8".into()))?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// The stream ended inside a frame.
fn ended() -> Broken {
    Broken::Lost("connection lost: the stream ended inside a frame".into())
}

fn lost(e: std::io::Error) -> Broken {
    Broken::Lost(format!("connection lost: {e}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A frame as a peer writes it: masked with `mask` if given.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n @ 126..=0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    /// Everything a server reads from `bytes`, written to it `step` bytes at a time, until it
    /// breaks or the stream ends.
    async fn read_all(bytes: Vec<u8>, step: usize, max: usize) -> (Vec<Incoming>, Broken) {
        let (near, mut far) = tokio::io::duplex(1 << 22);
        tokio::spawn(async move {
            for piece in bytes.chunks(step.max(1)) {
                far.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut io = Io::new(near);
        let mut reader = FrameReader::new(true, max, max);
        let mut got = Vec::new();
        loop {
            match std::future::poll_fn(|cx| reader.poll_next(&mut io, cx)).await {
                Ok(m) => got.push(m),
                Err(b) => return (got, b),
            }
        }
    }

    fn binary(b: &[u8]) -> Incoming {
        Incoming::Data(FrameType::Binary, Bytes::copy_from_slice(b))
    }

    #[tokio::test]
    async fn frames_of_every_size_and_kind_read_whole_however_the_bytes_arrive() {
        let large: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut bytes = Vec::new();
        bytes.extend(frame(true, OP_BINARY, b"", KEY));
        bytes.extend(frame(true, OP_TEXT, "héllo".as_bytes(), KEY));
        bytes.extend(frame(true, OP_BINARY, &large[..125], KEY));
        bytes.extend(frame(true, OP_BINARY, &large[..126], KEY));
        bytes.extend(frame(true, OP_BINARY, &large[..70_000], KEY));
        // A fragmented message with a ping between its fragments.
        bytes.extend(frame(false, OP_TEXT, b"frag", KEY));
        bytes.extend(frame(true, OP_PING, b"are you there", KEY));
        bytes.extend(frame(false, OP_CONTINUATION, b"men", KEY));
        bytes.extend(frame(true, OP_CONTINUATION, b"ted", KEY));
        bytes.extend(frame(true, OP_BINARY, &large, KEY));
        bytes.extend(frame(true, OP_PONG, b"", KEY));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        bytes.extend(frame(true, OP_CLOSE, &close, KEY));
        let want = vec![
            binary(b""),
            Incoming::Data(FrameType::Text, Bytes::from("héllo")),
            binary(&large[..125]),
            binary(&large[..126]),
            binary(&large[..70_000]),
            Incoming::Ping(Bytes::from_static(b"are you there")),
            Incoming::Data(FrameType::Text, Bytes::from_static(b"fragmented")),
            binary(&large),
            Incoming::Pong(Bytes::new()),
            Incoming::Close(Some((1000, "bye".into()))),
        ];
        for step in [1, 3, 7, 1000, 65_536, usize::MAX] {
            let (got, end) = read_all(bytes.clone(), step, 1 << 20).await;
            assert_eq!(got, want, "{step} bytes at a time");
            assert_eq!(end, Broken::Lost("connection closed".into()), "{step}");
        }
    }

    #[tokio::test]
    async fn a_client_reads_unmasked_frames_and_refuses_masked_ones() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        far.write_all(&frame(true, OP_BINARY, b"plain", None))
            .await
            .unwrap();
        far.write_all(&frame(true, OP_BINARY, b"masked", KEY))
            .await
            .unwrap();
        let mut io = Io::new(near);
        let mut reader = FrameReader::new(false, 1 << 20, 1 << 20);
        let first = std::future::poll_fn(|cx| reader.poll_next(&mut io, cx)).await;
        assert_eq!(first, Ok(binary(b"plain")));
        let second = std::future::poll_fn(|cx| reader.poll_next(&mut io, cx)).await;
        assert_eq!(second, Err(protocol("a masked frame from a server")));
    }

    #[tokio::test]
    async fn frames_that_break_the_protocol_or_the_limits_are_refused() {
        let mut reserved = frame(true, OP_BINARY, b"x", KEY);
        reserved[0] |= 0x40;
        let bad_close = |code: u16| frame(true, OP_CLOSE, &code.to_be_bytes(), KEY);
        let cases: Vec<(Vec<u8>, Broken)> = vec![
            (
                frame(true, OP_BINARY, b"x", None),
                protocol("an unmasked frame from a client"),
            ),
            (
                reserved,
                protocol("reserved bits set in a frame header (no extension was negotiated)"),
            ),
            (frame(true, 0x3, b"x", KEY), protocol("unknown opcode 0x3")),
            (
                frame(false, OP_PING, b"x", KEY),
                protocol("a fragmented control frame"),
            ),
            (
                frame(true, OP_PING, &[0; 126], KEY),
                protocol("a control frame over 125 bytes"),
            ),
            (
                frame(true, OP_CONTINUATION, b"x", KEY),
                protocol("a continuation frame with no message to continue"),
            ),
            (
                [
                    frame(false, OP_BINARY, b"x", KEY),
                    frame(true, OP_BINARY, b"y", KEY),
                ]
                .concat(),
                protocol("a message began inside a fragmented one"),
            ),
            (
                frame(true, OP_TEXT, b"\xff\xfe", KEY),
                Broken::Protocol(INVALID_DATA, "a text message that is not UTF-8".into()),
            ),
            (
                [
                    frame(false, OP_TEXT, b"\xe2\x82", KEY),
                    frame(true, OP_CONTINUATION, b"", KEY),
                ]
                .concat(),
                Broken::Protocol(INVALID_DATA, "a text message that is not UTF-8".into()),
            ),
            (
                frame(true, OP_CLOSE, b"x", KEY),
                protocol("a close frame with a 1-byte payload"),
            ),
            (
                bad_close(1005),
                protocol("close code 1005 is not one a peer may send"),
            ),
            (
                bad_close(999),
                protocol("close code 999 is not one a peer may send"),
            ),
            (
                bad_close(2000),
                protocol("close code 2000 is not one a peer may send"),
            ),
            (
                frame(true, OP_CLOSE, b"\x03\xe8\xff", KEY),
                Broken::Protocol(INVALID_DATA, "a close reason that is not UTF-8".into()),
            ),
            (
                frame(true, OP_BINARY, &[0; 1025], KEY),
                Broken::TooBig("a frame of 1025 bytes, over the limit of 1024".into()),
            ),
            (
                [
                    frame(false, OP_BINARY, &[0; 1000], KEY),
                    frame(true, OP_CONTINUATION, &[0; 25], KEY),
                ]
                .concat(),
                Broken::TooBig("a fragmented message over 1024 bytes".into()),
            ),
            (
                frame(true, OP_BINARY, &[0; 500], KEY)[..300].to_vec(),
                Broken::Lost("connection lost: the stream ended inside a frame".into()),
            ),
        ];
        for (bytes, want) in cases {
            for step in [1, usize::MAX] {
                let (_, got) = read_all(bytes.clone(), step, 1024).await;
                assert_eq!(got, want, "{bytes:x?}");
            }
        }
        // A large frame cut short (read straight into its own buffer), and one larger than
        // that buffer's first allocation, read whole.
        let large = frame(true, OP_BINARY, &[5; 5000], KEY);
        let (_, got) = read_all(large[..3000].to_vec(), usize::MAX, 1 << 22).await;
        assert_eq!(
            got,
            Broken::Lost("connection lost: the stream ended inside a frame".into())
        );
        let huge: Vec<u8> = (0..GROW_BY * 3 / 2).map(|i| (i % 253) as u8).collect();
        for step in [65_536, usize::MAX] {
            let (got, _) = read_all(frame(true, OP_BINARY, &huge, KEY), step, 1 << 22).await;
            assert_eq!(got, [binary(&huge)], "{step}");
        }
        // A frame announcing more than the limit is refused from its header, before its
        // payload (here never sent) or even its mask key.
        let mut header = vec![0x82u8, 0xff];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let (_, got) = read_all(header, usize::MAX, 1024).await;
        assert!(matches!(got, Broken::TooBig(_)), "{got:?}");
    }

    #[test]
    fn unmasking_matches_the_byte_by_byte_definition_at_every_length() {
        let key = [1, 2, 0x80, 0xff];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut bytes: Vec<u8> = plain.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            unmask(&mut bytes, key);
            assert_eq!(bytes, plain, "{len}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever bytes a peer sends, in whatever pieces, reading ends in a defined way
        /// (frames, then a refusal or the end of the stream) and never panics or hangs.
        #[test]
        fn any_bytes_end_in_frames_or_a_defined_refusal(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3_000),
            header in proptest::option::of((0u8..16, proptest::bool::ANY, 0usize..300)),
            step in 1usize..600,
            server: bool,
        ) {
            // Random bytes rarely make a frame: half the cases start with a plausible header.
            let mut input = Vec::new();
            if let Some((opcode, fin, len)) = header {
                let mask = server.then_some([9, 8, 7, 6]);
                input = frame(fin, opcode, &bytes[..len.min(bytes.len())], mask);
            }
            input.extend_from_slice(&bytes);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (near, mut far) = tokio::io::duplex(1 << 16);
            let (_, end) = rt.block_on(async move {
                tokio::spawn(async move {
                    for piece in input.chunks(step) {
                        far.write_all(piece).await.unwrap();
                    }
                });
                let mut io = Io::new(near);
                let mut reader = FrameReader::new(server, 1024, 2048);
                let mut got = Vec::new();
                let read = async {
                    loop {
                        match std::future::poll_fn(|cx| reader.poll_next(&mut io, cx)).await {
                            Ok(m) => got.push(m),
                            Err(b) => return b,
                        }
                    }
                };
                let end = tokio::time::timeout(std::time::Duration::from_secs(10), read)
                    .await
                    .expect("reading ends with the stream");
                (got, end)
            });
            let defined = match &end {
                Broken::Protocol(code, _) => [super::super::close::PROTOCOL, INVALID_DATA].contains(code),
                Broken::TooBig(_) | Broken::Lost(_) => true,
            };
            proptest::prop_assert!(defined, "{end:?}");
        }
    }
}
