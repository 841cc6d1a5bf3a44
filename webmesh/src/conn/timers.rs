//! Keepalive and stalled-writer timers of one connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

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
    pub(crate) fn unblocked(&mut self) {
        self.stall = None;
    }

    /// Writing is blocked with messages waiting: starts the stall timer (if not running) and
    /// registers it with the current task.
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
