//! Keepalive and stalled-writer timers of one connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A runtime timer that is polled only when its registration may be out of date: the first
/// time, after a reset, once it has fired, or with another task's waker. A connection's loop
/// turns once per frame, and polling a pending `Sleep` again with the same waker only registers
/// that waker again (compare-and-swaps on the timer's state, and a unit of the task's budget),
/// for each of its timers on every turn.
pub(crate) struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// The waker it is registered with, while it is pending.
    waker: Option<Waker>,
}

impl Timer {
    pub(crate) fn at(deadline: Instant) -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            waker: None,
        }
    }

    pub(crate) fn after(duration: Duration) -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep(duration)),
            waker: None,
        }
    }

    /// Moves the deadline; the next poll registers it.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.waker = None;
    }

    /// Ready once the deadline has passed; otherwise `cx`'s waker is (or already was)
    /// registered for it.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waker) = &self.waker {
            if waker.will_wake(cx.waker()) && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.waker = None;
                Poll::Ready(())
            }
            Poll::Pending => {
                // Past the check above, the waker held is none or another task's: the `Sleep`
                // just registered `cx`'s.
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
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
    tick: Option<Timer>,
    heard: bool,
    ping_out: bool,
    stall_after: Option<Duration>,
    stall: Option<Timer>,
}

impl Timers {
    pub(crate) fn new(keepalive: Option<Keepalive>, stall_after: Option<Duration>) -> Self {
        Timers {
            keepalive,
            tick: keepalive.map(|k| Timer::after(k.interval)),
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
            let mut stall = Timer::after(after);
            let _ = stall.poll(cx);
            self.stall = Some(stall);
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Liveness> {
        if let Some(stall) = &mut self.stall {
            if stall.poll(cx).is_ready() {
                self.stall = None;
                return Poll::Ready(Liveness::Stalled);
            }
        }
        let (Some(k), Some(tick)) = (self.keepalive, &mut self.tick) else {
            return Poll::Pending;
        };
        if tick.poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        if std::mem::take(&mut self.heard) {
            self.ping_out = false;
            tick.reset(now + k.interval);
        } else if !self.ping_out {
            self.ping_out = true;
            tick.reset(now + k.timeout);
            // Poll once more so the reset deadline is registered with this task.
            let _ = tick.poll(cx);
            return Poll::Ready(Liveness::Ping);
        } else {
            return Poll::Ready(Liveness::Dead);
        }
        let _ = tick.poll(cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl futures_util::task::ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(count.clone());
        (count, waker)
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_polled_again_by_the_same_task_still_wakes_it_and_then_is_ready() {
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut timer = Timer::after(Duration::from_millis(50));
        for _ in 0..3 {
            assert!(timer.poll(&mut cx).is_pending());
        }
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once, at the deadline");
        assert!(timer.poll(&mut cx).is_ready());
        // Moved: pending again until the new deadline, which wakes it again.
        timer.reset(Instant::now() + Duration::from_millis(50));
        assert!(timer.poll(&mut cx).is_pending());
        assert!(timer.poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(timer.poll(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_polled_with_another_waker_wakes_that_one() {
        let (first, first_waker) = counting();
        let (second, second_waker) = counting();
        let mut timer = Timer::after(Duration::from_millis(50));
        assert!(timer.poll(&mut Context::from_waker(&first_waker)).is_pending());
        assert!(timer.poll(&mut Context::from_waker(&second_waker)).is_pending());
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
