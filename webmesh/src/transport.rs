//! What server and client connections share: WebSocket settings, message conversion, close
//! codes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Sink;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use webmesh_codec::{FrameType, Limits, WireMessage};

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

/// The frame type and bytes of a data message; `None` for control messages.
pub(crate) fn data_of(m: Message) -> Option<(FrameType, Bytes)> {
    match m {
        Message::Text(t) => Some((FrameType::Text, Bytes::from(t))),
        Message::Binary(b) => Some((FrameType::Binary, b)),
        _ => None,
    }
}

/// Bytes tungstenite reads per system call.
pub(crate) const READ_BUFFER: usize = 4 * 1024;

/// The WebSocket settings for `limits`: tungstenite refuses a frame or message over
/// `max_frame_size` from its header, before buffering it.
pub(crate) fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite zero-fills its read buffer before each read: 128 KiB (its default) per read
        // and per idle connection. 4 KiB costs a few more reads for a large message (it grows to
        // fit a frame) and keeps idle connections small.
        .read_buffer_size(READ_BUFFER)
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

/// Default [`Keepalive::interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default [`Keepalive::timeout`].
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// WebSocket ping/pong keepalive: how a dead peer (crashed host, cut cable) is noticed.
///
/// After `interval` without hearing anything from the peer, a ping is sent; if nothing at all
/// (pong or any other frame) comes back within `timeout`, the peer is dead: the connection is
/// dropped, a server runs `on_disconnect`, a client fails its calls in flight. A live peer answers
/// pings by itself (every WebSocket library does, Python's `websockets` included).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let k = webmesh::Keepalive::new(Duration::from_secs(5), Duration::from_secs(10));
/// assert_eq!(webmesh::Keepalive::default().interval, webmesh::DEFAULT_KEEPALIVE_INTERVAL);
/// # let _ = k;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Silence after which a ping is sent. Default [`DEFAULT_KEEPALIVE_INTERVAL`].
    pub interval: Duration,
    /// How long to wait for any sign of life after a ping. Default [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub timeout: Duration,
}

impl Keepalive {
    /// Pings after `interval` of silence; gives up `timeout` after the ping.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive { interval, timeout }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive::new(DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT)
    }
}

/// What the liveness timers ask of a driver.
pub(crate) enum Liveness {
    /// Send a ping.
    Ping,
    /// The peer stopped answering: drop it.
    Dead,
    /// The peer stopped reading what we send: drop it.
    Stalled,
}

/// Keepalive and stalled-writer timers of one connection. Marking activity costs a store, not a
/// clock read: the timers look at it when they fire.
pub(crate) struct Timers {
    keepalive: Option<Keepalive>,
    tick: Option<Pin<Box<Sleep>>>,
    heard: bool,
    ping_out: bool,
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // a server-side check
    stall_after: Option<Duration>,
    stall: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    pub(crate) fn new(keepalive: Option<Keepalive>, stall_after: Option<Duration>) -> Self {
        Timers {
            keepalive,
            tick: keepalive.map(|k| Box::pin(tokio::time::sleep(k.interval))),
            heard: false,
            ping_out: false,
            stall_after,
            stall: None,
        }
    }

    /// Something arrived from the peer.
    pub(crate) fn heard(&mut self) {
        self.heard = true;
    }

    /// Writing moved: clears the stall timer.
    #[cfg(feature = "server")]
    pub(crate) fn unblocked(&mut self) {
        self.stall = None;
    }

    /// Writing is blocked with messages waiting: starts the stall timer (if not running) and
    /// registers it with the current task.
    #[cfg(feature = "server")]
    pub(crate) fn blocked(&mut self, cx: &mut Context<'_>) {
        if let (None, Some(after)) = (&self.stall, self.stall_after) {
            let mut sleep = Box::pin(tokio::time::sleep(after));
            let _ = sleep.as_mut().poll(cx);
            self.stall = Some(sleep);
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Liveness> {
        if let Some(stall) = &mut self.stall {
            if stall.as_mut().poll(cx).is_ready() {
                self.stall = None;
                return Poll::Ready(Liveness::Stalled);
            }
        }
        let (Some(k), Some(tick)) = (self.keepalive, &mut self.tick) else {
            return Poll::Pending;
        };
        if tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        if std::mem::take(&mut self.heard) {
            self.ping_out = false;
            tick.as_mut().reset(now + k.interval);
        } else if !self.ping_out {
            self.ping_out = true;
            tick.as_mut().reset(now + k.timeout);
            // Poll once more so the reset deadline is registered with this task.
            let _ = tick.as_mut().poll(cx);
            return Poll::Ready(Liveness::Ping);
        } else {
            return Poll::Ready(Liveness::Dead);
        }
        let _ = tick.as_mut().poll(cx);
        Poll::Pending
    }
}

/// Messages waiting for a WebSocket, and whether what was written still awaits a flush: the
/// write half that the server and client drivers share.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) queue: VecDeque<Message>,
    unflushed: bool,
}

impl Outbox {
    /// True when something was written and not flushed yet.
    #[cfg(feature = "server")]
    pub(crate) fn unflushed(&self) -> bool {
        self.unflushed
    }

    /// Moves queued messages into `ws` while it takes them; true if any moved.
    pub(crate) fn poll_write<S>(
        &mut self,
        ws: &mut S,
        cx: &mut Context<'_>,
    ) -> Result<bool, tungstenite::Error>
    where
        S: Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        let mut wrote = false;
        while !self.queue.is_empty() {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(msg) = self.queue.pop_front() else { break };
                    Pin::new(&mut *ws).start_send(msg)?;
                    self.unflushed = true;
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(wrote)
    }

    /// Flushes what was written, if anything; true once nothing awaits a flush.
    pub(crate) fn poll_flush<S>(
        &mut self,
        ws: &mut S,
        cx: &mut Context<'_>,
    ) -> Result<bool, tungstenite::Error>
    where
        S: Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        if self.unflushed {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(!self.unflushed)
    }
}
