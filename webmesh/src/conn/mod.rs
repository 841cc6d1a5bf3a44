//! The one connection core that the server and the client share: the socket half of a
//! connection (outbox, keepalive and stall timers, reading, close), generic over the byte stream
//! (TCP, TLS, in-memory), and one poll loop that a [`Role`] (server or client) plugs its work
//! into. Everything above the frames (dispatch, calls in flight) is the role's.

mod deadlines;
mod frames;
mod io;
mod outbox;
mod own_ids;
mod socket;
#[cfg(all(test, feature = "server"))]
mod tests;
mod timers;

pub(crate) use deadlines::Deadlines;
pub(crate) use frames::FrameReader;
pub(crate) use io::Io;
pub(crate) use outbox::Outbox;
pub(crate) use own_ids::OwnIdMap;
#[cfg_attr(not(feature = "server"), allow(unused_imports))] // the server drains with it
pub(crate) use socket::Read;
pub(crate) use socket::{End, Role, Socket};
pub use timers::{Keepalive, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT};
pub(crate) use timers::{Liveness, Timers};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use webmesh_codec::WireMessage;

/// Close codes webmesh sends (RFC 6455 §7.4.1).
#[cfg_attr(not(feature = "server"), allow(dead_code))] // clients send only NORMAL
pub(crate) mod close {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// Going away: the server shuts down.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// Protocol error: a frame header that cannot be read.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// Unsupported data: a TEXT frame on a v1 connection, BINARY on a legacy one.
    pub(crate) const UNSUPPORTED: u16 = 1003;
    /// Policy violation: the peer broke a limit (stopped reading its messages).
    pub(crate) const POLICY: u16 = 1008;
    /// Message too big: over the frame size limit.
    pub(crate) const TOO_BIG: u16 = 1009;
}

/// Default length of a connection's outbound queue, in messages.
pub(crate) const DEFAULT_OUTBOUND_QUEUE: usize = 1024;

pub(crate) fn to_message(m: WireMessage) -> Message {
    match m {
        WireMessage::Text(s) => Message::Text(s.into()),
        WireMessage::Binary(b) => Message::Binary(Bytes::from(b)),
    }
}

/// The settings tungstenite's server handshake builds its WebSocket with. Only the handshake is
/// tungstenite's (the frames are read by the [`FrameReader`] and written from the [`Outbox`]), so
/// the WebSocket it returns is taken apart at once and gets no read buffer.
#[cfg(feature = "server")]
pub(crate) fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(0)
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
