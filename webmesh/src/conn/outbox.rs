//! Messages waiting for the socket, and the frames they become (RFC 6455 §5.2).
//!
//! Frames are written here, not by tungstenite: tungstenite copies every payload into a write
//! buffer of its own (and a client's again to mask it), through a compatibility layer that
//! registers wakers on every call. Here headers and small payloads are gathered in one buffer,
//! a large payload is written from its own bytes (masked in place on the client), and what is
//! ready goes out in one vectored write.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;
use tokio_tungstenite::tungstenite::Message;

use super::Io;

/// A payload of at least this many bytes is written from its own buffer, not copied.
const OWN_PIECE_FROM: usize = 4 * 1024;

/// Encoded bytes past which messages wait in the queue instead (and what is encoded is
/// written before more is taken): the write-side bound on a connection's memory, with the
/// queue's length.
const ENCODED_HIGH: usize = 128 * 1024;

/// Pieces given to one vectored write.
const PIECES_PER_WRITE: usize = 64;

/// A gathering buffer kept per thread between bursts: the next connection that writes here takes
/// it, and a connection that waits holds none.
const SPARE_KEEP: usize = 256 * 1024;

thread_local! {
    static SPARE: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
}

/// Messages waiting for a WebSocket, the frames encoded from them and not yet written, and
/// whether what was written still awaits a flush: the write half that the server and client
/// drivers share.
pub(crate) struct Outbox {
    pub(crate) queue: VecDeque<Message>,
    /// This side is the client: its frames are masked.
    client: bool,
    /// Encoded frames, in order: gathered headers and small payloads, and large payloads.
    pieces: VecDeque<Piece>,
    /// Bytes of the first piece already written.
    written: usize,
    /// Bytes in `pieces` not written yet.
    encoded: usize,
    /// Written and not flushed (TLS keeps records until a flush).
    unflushed: bool,
    /// A close frame was encoded: nothing follows it (what is queued after it is dropped).
    pub(crate) close_sent: bool,
    /// The answer to the peer's last ping, written before the queue (RFC 6455 §5.5.3: only
    /// the last ping needs one, so a peer that pings and does not read grows nothing).
    pong: Option<Bytes>,
}

enum Piece {
    Gathered(Vec<u8>),
    Own(Bytes),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Gathered(v) => v,
            Piece::Own(b) => b,
        }
    }
}

impl Outbox {
    /// `client`: this side is the client (its frames are masked).
    pub(crate) fn new(client: bool) -> Self {
        Outbox {
            queue: VecDeque::new(),
            client,
            pieces: VecDeque::new(),
            written: 0,
            encoded: 0,
            unflushed: false,
            close_sent: false,
            pong: None,
        }
    }

    /// Answers the peer's ping (the pong replaces any still unsent; none after a close frame).
    pub(crate) fn pong(&mut self, payload: Bytes) {
        if !self.close_sent {
            self.pong = Some(payload);
        }
    }

    /// True when something was taken from the queue and is not written and flushed yet.
    pub(crate) fn unflushed(&self) -> bool {
        self.encoded > 0 || self.unflushed || self.pong.is_some()
    }

    /// Encodes queued messages while fewer than [`ENCODED_HIGH`] bytes wait, writing them
    /// out when that many do; true if any message was taken from the queue.
    pub(crate) fn poll_write(&mut self, io: &mut Io, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut took = false;
        self.encode_pong()?;
        while let Some(next) = self.queue.front() {
            // (A close frame is taken whatever waits: it is small, and the last.)
            let close = matches!(next, Message::Close(_));
            if self.encoded >= ENCODED_HIGH && !close && self.poll_write_out(io, cx)?.is_pending() {
                break;
            }
            let Some(msg) = self.queue.pop_front() else { break };
            self.encode(msg)?;
            took = true;
        }
        Ok(took)
    }

    /// Writes and flushes what was encoded; true once nothing waits.
    pub(crate) fn poll_flush(&mut self, io: &mut Io, cx: &mut Context<'_>) -> io::Result<bool> {
        self.encode_pong()?;
        if self.poll_write_out(io, cx)?.is_pending() {
            return Ok(false);
        }
        if self.unflushed {
            match Pin::new(io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The pong waiting for the peer's last ping, encoded before anything else that waits.
    fn encode_pong(&mut self) -> io::Result<()> {
        match self.pong.take() {
            Some(payload) => self.encode(Message::Pong(payload)),
            None => Ok(()),
        }
    }

    /// One frame for `msg`, after those encoded before it.
    fn encode(&mut self, msg: Message) -> io::Result<()> {
        let (opcode, payload) = match msg {
            Message::Binary(b) => (0x2, b),
            Message::Text(t) => (0x1, Bytes::from(t)),
            Message::Ping(p) => (0x9, p),
            Message::Pong(p) => (0xa, p),
            Message::Close(frame) => {
                if self.close_sent {
                    return Ok(());
                }
                self.close_sent = true;
                let mut body = Vec::new();
                if let Some(f) = frame {
                    body.extend_from_slice(&u16::from(f.code).to_be_bytes());
                    body.extend_from_slice(f.reason.as_bytes());
                }
                (0x8, Bytes::from(body))
            }
            Message::Frame(_) => return Err(io::Error::other("a raw frame cannot be sent")),
        };
        if self.close_sent && opcode != 0x8 {
            // Nothing follows a close frame (RFC 6455 §5.5.1): answers of handlers still running,
            // a CANCEL, a keepalive ping are dropped.
            return Ok(());
        }
        let mask = self.client.then(rand::random::<[u8; 4]>);
        let len = payload.len();
        let mut head = [0u8; 14];
        head[0] = 0x80 | opcode;
        let mut at = 2;
        match len {
            0..=125 => head[1] = len as u8,
            126..=0xffff => {
                head[1] = 126;
                head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                at = 4;
            }
            _ => {
                head[1] = 127;
                head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                at = 10;
            }
        }
        if let Some(key) = mask {
            head[1] |= 0x80;
            head[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        self.encoded += at + len;
        self.gathering().extend_from_slice(&head[..at]);
        let payload = match (mask, len >= OWN_PIECE_FROM) {
            // Large: written from its own bytes, masked in place if nothing else holds them.
            (None, true) => payload,
            (Some(key), true) => match payload.try_into_mut() {
                Ok(mut own) => {
                    super::frames::unmask(&mut own, key);
                    own.freeze()
                }
                Err(shared) => {
                    self.gather_masked(&shared, key);
                    return Ok(());
                }
            },
            (Some(key), false) => {
                self.gather_masked(&payload, key);
                return Ok(());
            }
            (None, false) => {
                self.gathering().extend_from_slice(&payload);
                return Ok(());
            }
        };
        self.pieces.push_back(Piece::Own(payload));
        Ok(())
    }

    /// Appends `payload` masked with `key` to the gathering buffer.
    fn gather_masked(&mut self, payload: &[u8], key: [u8; 4]) {
        let gathered = self.gathering();
        let from = gathered.len();
        gathered.extend_from_slice(payload);
        super::frames::unmask(&mut gathered[from..], key);
    }

    /// The gathering buffer at the end of the pieces (a new one after a large payload).
    fn gathering(&mut self) -> &mut Vec<u8> {
        if !matches!(self.pieces.back(), Some(Piece::Gathered(_))) {
            let fresh = SPARE.with(Cell::take).unwrap_or_default();
            self.pieces.push_back(Piece::Gathered(fresh));
        }
        match self.pieces.back_mut() {
            Some(Piece::Gathered(v)) => v,
            _ => unreachable!("just pushed"),
        }
    }

    /// Writes what was encoded, as far as the stream takes it.
    fn poll_write_out(&mut self, io: &mut Io, cx: &mut Context<'_>) -> io::Result<Poll<()>> {
        while self.encoded > 0 {
            let mut slices = [IoSlice::new(&[]); PIECES_PER_WRITE];
            let mut n = 0;
            for (i, piece) in self.pieces.iter().take(PIECES_PER_WRITE).enumerate() {
                let from = if i == 0 { self.written } else { 0 };
                slices[i] = IoSlice::new(&piece.bytes()[from..]);
                n += 1;
            }
            let wrote = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(wrote)) => wrote,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(Poll::Pending),
            };
            self.unflushed = true;
            self.advance(wrote);
        }
        Ok(Poll::Ready(()))
    }

    /// Drops the first `n` unwritten bytes: pieces written whole go (a gathering buffer to
    /// this thread's spare).
    fn advance(&mut self, mut n: usize) {
        self.encoded -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let left = front.bytes().len() - self.written;
            if n < left {
                match front {
                    Piece::Own(b) => b.advance(n),
                    Piece::Gathered(_) => self.written += n,
                }
                return;
            }
            n -= left;
            self.written = 0;
            if let Some(Piece::Gathered(mut v)) = self.pieces.pop_front() {
                if v.capacity() <= SPARE_KEEP {
                    v.clear();
                    SPARE.with(|s| s.set(Some(v)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use webmesh_codec::FrameType;

    use super::super::frames::Incoming;
    use super::super::FrameReader;
    use super::*;

    /// Writes `messages` through an outbox (as the client, or the server) into a pipe of
    /// `pipe` bytes, and reads them back with the other side's frame reader.
    async fn round_trip(client: bool, pipe: usize, messages: Vec<Message>) -> Vec<Incoming> {
        let (near, far) = tokio::io::duplex(pipe);
        let count = messages.len();
        let writer = tokio::spawn(async move {
            let mut io = Io::new(near);
            let mut outbox = Outbox::new(client);
            outbox.queue.extend(messages);
            std::future::poll_fn(|cx| {
                outbox.poll_write(&mut io, cx).unwrap();
                match outbox.poll_flush(&mut io, cx).unwrap() {
                    true if outbox.queue.is_empty() => Poll::Ready(()),
                    _ => Poll::Pending,
                }
            })
            .await;
            io
        });
        let mut io = Io::new(far);
        let mut reader = FrameReader::new(client, 1 << 24, 1 << 24);
        let mut got = Vec::new();
        while got.len() < count {
            got.push(
                std::future::poll_fn(|cx| reader.poll_next(&mut io, cx))
                    .await
                    .unwrap(),
            );
        }
        writer.await.unwrap();
        got
    }

    #[tokio::test]
    async fn frames_of_every_size_written_by_either_side_read_back_whole() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let shared = Bytes::from(bytes[..70_000].to_vec());
        let messages = || {
            let mut m: Vec<Message> = [0, 1, 125, 126, 4095, 4096, 65_535, 65_536, 300_000]
                .into_iter()
                .map(|n| Message::Binary(Bytes::copy_from_slice(&bytes[..n])))
                .collect();
            // Held elsewhere too: masked in a copy, and the original left as it was.
            m.push(Message::Binary(shared.clone()));
            m.push(Message::Text("héllo".into()));
            m.push(Message::Ping(Bytes::from_static(b"ping")));
            m.push(Message::Pong(Bytes::from_static(b"pong")));
            m.push(Message::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            })));
            m
        };
        let mut want: Vec<Incoming> = [0, 1, 125, 126, 4095, 4096, 65_535, 65_536, 300_000]
            .into_iter()
            .map(|n| Incoming::Data(FrameType::Binary, Bytes::copy_from_slice(&bytes[..n])))
            .collect();
        want.push(Incoming::Data(FrameType::Binary, shared.clone()));
        want.push(Incoming::Data(FrameType::Text, Bytes::from("héllo")));
        want.push(Incoming::Ping(Bytes::from_static(b"ping")));
        want.push(Incoming::Pong(Bytes::from_static(b"pong")));
        want.push(Incoming::Close(Some((1001, "bye".into()))));
        for client in [true, false] {
            // A pipe that takes everything, and one that takes 1,000 bytes at a time.
            for pipe in [1 << 22, 1000] {
                let got = round_trip(client, pipe, messages()).await;
                assert_eq!(got, want, "client {client}, pipe {pipe}");
            }
        }
        assert_eq!(
            &shared[..],
            &bytes[..70_000],
            "a shared payload is not masked in place"
        );
    }

    #[tokio::test]
    async fn nothing_goes_after_a_close_frame_and_only_the_last_ping_is_answered() {
        let (near, far) = tokio::io::duplex(1 << 16);
        let mut io = Io::new(near);
        let mut outbox = Outbox::new(false);
        outbox.pong(Bytes::from_static(b"first"));
        outbox.pong(Bytes::from_static(b"second"));
        outbox
            .queue
            .push_back(Message::Binary(Bytes::from_static(b"early")));
        outbox.queue.push_back(Message::Close(None));
        outbox
            .queue
            .push_back(Message::Binary(Bytes::from_static(b"late")));
        outbox.queue.push_back(Message::Close(None));
        std::future::poll_fn(|cx| {
            outbox.poll_write(&mut io, cx).unwrap();
            assert!(outbox.poll_flush(&mut io, cx).unwrap());
            outbox.pong(Bytes::from_static(b"after the close"));
            assert!(outbox.poll_flush(&mut io, cx).unwrap());
            Poll::Ready(())
        })
        .await;
        assert!(outbox.queue.is_empty() && outbox.close_sent);
        drop(io);
        let mut far = Io::new(far);
        let mut reader = FrameReader::new(false, 1 << 20, 1 << 20);
        let mut got = Vec::new();
        let end = loop {
            match std::future::poll_fn(|cx| reader.poll_next(&mut far, cx)).await {
                Ok(m) => got.push(m),
                Err(e) => break e,
            }
        };
        assert_eq!(
            got,
            [
                Incoming::Pong(Bytes::from_static(b"second")),
                Incoming::Data(FrameType::Binary, Bytes::from_static(b"early")),
                Incoming::Close(None),
            ]
        );
        assert_eq!(
            end,
            super::super::frames::Broken::Lost("connection closed".into())
        );
    }

    /// One message of a generated sequence: its kind, length and a seed for its bytes.
    fn generated(kind: u8, len: usize, seed: u8) -> (Message, Incoming) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        match kind % 4 {
            0 | 1 => (
                Message::Binary(bytes.clone().into()),
                Incoming::Data(FrameType::Binary, bytes.into()),
            ),
            2 => {
                let text: String = bytes.iter().map(|b| char::from(b'a' + b % 26)).collect();
                (
                    Message::Text(text.clone().into()),
                    Incoming::Data(FrameType::Text, text.into()),
                )
            }
            _ => {
                let short = bytes[..len.min(125)].to_vec();
                (Message::Ping(short.clone().into()), Incoming::Ping(short.into()))
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Any sequence of messages, written by either side through a pipe of any size, reads
        /// back whole and in order on the other.
        #[test]
        fn any_messages_through_any_pipe_read_back_in_order(
            messages in proptest::collection::vec((0u8..4, 0usize..20_000, proptest::num::u8::ANY), 0..12),
            client: bool,
            pipe in 1usize..50_000,
        ) {
            let (send, want): (Vec<Message>, Vec<Incoming>) =
                messages.iter().map(|&(k, len, seed)| generated(k, len, seed)).unzip();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let got = rt.block_on(round_trip(client, pipe, send));
            proptest::prop_assert_eq!(got, want);
        }
    }
}
