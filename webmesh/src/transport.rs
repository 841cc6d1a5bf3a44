//! What server and client connections share: WebSocket settings, message conversion, the writer
//! task.

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use webmesh_codec::{FrameType, Limits, WireMessage};

/// Close codes webmesh sends (RFC 6455 §7.4.1).
pub(crate) mod close {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// Going away: the server shuts down.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// Protocol error: a frame header that cannot be read.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// Unsupported data: a TEXT frame on a v1 connection, BINARY on a legacy one.
    pub(crate) const UNSUPPORTED: u16 = 1003;
}

/// Default length of a connection's outbound queue, in messages.
pub(crate) const DEFAULT_OUTBOUND_QUEUE: usize = 1024;

/// Most messages the writer takes from its queue before it flushes the socket.
const WRITE_BATCH: usize = 64;

/// What a connection's writer task is asked to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Send this message.
    Message(Message),
    /// Send a close frame and stop.
    Close(u16, String),
}

impl From<WireMessage> for Outbound {
    fn from(m: WireMessage) -> Self {
        Outbound::Message(to_message(m))
    }
}

pub(crate) fn to_message(m: WireMessage) -> Message {
    match m {
        WireMessage::Text(s) => Message::Text(s.into()),
        WireMessage::Binary(b) => Message::Binary(Bytes::from(b)),
    }
}

/// The frame type and bytes of a data message; `None` for control messages.
pub(crate) fn data_of(m: Message) -> Option<(FrameType, Bytes)> {
    match m {
        Message::Text(t) => Some((FrameType::Text, Bytes::from(t))),
        Message::Binary(b) => Some((FrameType::Binary, b)),
        _ => None,
    }
}

/// The WebSocket settings for `limits`: tungstenite refuses a frame or message over
/// `max_frame_size` from its header, before buffering it.
pub(crate) fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_size))
        .max_frame_size(Some(limits.max_frame_size))
        // Bounded: a peer that stops reading fills this and then the outbound queue, and is then
        // disconnected, instead of growing memory.
        .max_write_buffer_size(limits.max_frame_size.saturating_mul(2).max(1 << 20))
}

pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    // A close reason is at most 123 bytes (the control frame limit minus the code).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].into(),
    }
}

/// Drains `rx` into `sink`, batching writes between flushes, until the queue closes or a close
/// is asked for. Returns the reason it stopped, for logs.
pub(crate) async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Outbound>,
) -> Result<(), tungstenite::Error>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        if rx.recv_many(&mut batch, WRITE_BATCH).await == 0 {
            // Every sender is gone: the connection is over.
            let _ = sink.close().await;
            return Ok(());
        }
        for item in batch.drain(..) {
            match item {
                Outbound::Message(m) => sink.feed(m).await?,
                Outbound::Close(code, reason) => {
                    let _ = sink.send(Message::Close(Some(close_frame(code, &reason)))).await;
                    let _ = sink.close().await;
                    return Ok(());
                }
            }
        }
        sink.flush().await?;
    }
}
