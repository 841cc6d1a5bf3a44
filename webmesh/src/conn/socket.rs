//! The socket half of a connection and the one poll loop both drivers run.
//!
//! One task owns the socket: no split halves and no lock between a reader and a writer. Each
//! turn of the loop checks the liveness timers, moves queued messages into the socket, lets the
//! role move its own work (finished handlers, calls from callers), and reads the peer's next
//! frame. Everything that became readable or sendable is processed before one flush, so a burst
//! costs one write (a long one, one per [`FLUSH_EVERY`] frames read).

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;
use webmesh_codec::FrameType;

use super::frames::{Broken, Incoming};
use super::{close, close_frame, FrameReader, Io, Keepalive, Liveness, Outbox, Timers};

/// How serving a connection ended, as the core sees it.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed with a close frame: its code and reason, if it gave them.
    PeerClosed(Option<(u16, String)>),
    /// The connection was lost without a close frame (reset, end of stream, I/O error).
    Lost(String),
    /// The peer stopped answering keepalive pings.
    Dead,
    /// The peer stopped reading: nothing more can be written to it.
    Stalled,
    /// This side closes, with this code and reason (a protocol violation, a shutdown, a request).
    Close(u16, String),
}

/// Within a long burst, what is ready goes out after every this many frames read, not only at
/// the burst's end: the peer starts on the first answers (or calls) while this side reads the
/// rest, instead of the two sides taking turns with whole batches. 1 × 64 small calls on 2 cores,
/// three interleaved rounds: 179–189k → 214–234k calls/s, CPU per call unchanged (7.3–8.3 µs);
/// 16 × 16 and 64 KiB unchanged. Since the server answers a plain `fn` handler as it reads its
/// request (stop 30), its turns are quick enough that every 8 frames made it write ~1.35× as
/// often per call, and the client slower per call. Every 32 frames instead, 1 × 64: 520–548k →
/// 573–613k calls/s (every 16: 512–575k; 64: 486–527k; never: 502–573k); 64 KiB unchanged.
/// See BENCHMARKS.md, stop 30.
const FLUSH_EVERY: usize = 32;

/// What a driver (server or client) plugs into the loop.
pub(crate) trait Role {
    /// Moves the role's own work: queues what it has to send (answers of finished handlers,
    /// pushes, calls) into `out`. True if anything moved.
    ///
    /// `again`: a later turn of the same poll of the task. A source that answered `Pending`
    /// in an earlier turn holds this task's waker, so the role may skip it: what reaches it
    /// meanwhile wakes the task for another poll.
    fn poll_work(&mut self, cx: &mut Context<'_>, out: &mut Outbox, again: bool) -> bool;

    /// Whether the loop may read the peer's next frame now (false is backpressure: too much
    /// queued, or too many calls running).
    fn may_read(&self, out: &Outbox) -> bool;

    /// One data frame from the peer; `Some` ends the connection.
    fn on_data(
        &mut self,
        frame_type: FrameType,
        bytes: Bytes,
        out: &mut Outbox,
        cx: &mut Context<'_>,
    ) -> Option<End>;

    /// The loop is about to return: a batch of frames ended. The client wakes the subscription
    /// readers it fed here, once per batch rather than once per message.
    fn idle(&mut self) {}

    /// Nothing more to do: how many tasks this batch woke that may have more to send at once
    /// (the client: callers it handed answers to, which may make new calls). Then the flush
    /// waits one turn of the scheduler (with one task, only when something waits to be sent),
    /// so that what they send goes out with this batch's in one write instead of in a write of
    /// their own.
    fn before_flush(&mut self) -> usize {
        0
    }
}

/// A WebSocket over any stream, past its handshake: the peer's frames read by a [`FrameReader`],
/// this side's written from the [`Outbox`], and the liveness timers.
pub(crate) struct Socket {
    io: Io,
    reader: FrameReader,
    pub(crate) outbox: Outbox,
    timers: Timers,
    write_failed: Option<String>,
    /// Writing stopped on purpose ([`abandon_writes`](Self::abandon_writes)), not on an error:
    /// a close frame may still follow what was encoded.
    abandoned: bool,
    /// The peer's close frame was read: the stream has nothing more.
    peer_closed: bool,
}

impl Socket {
    /// `server`: this side is the server (the peer's frames are masked, its own are not).
    /// `max_size`: the largest frame, and message, read from the peer.
    pub(crate) fn new(
        io: Io,
        server: bool,
        max_size: usize,
        keepalive: Option<Keepalive>,
        stall_after: Option<Duration>,
    ) -> Self {
        Socket {
            io,
            reader: FrameReader::new(server, max_size, max_size),
            outbox: Outbox::new(!server),
            timers: Timers::new(keepalive, stall_after),
            write_failed: None,
            abandoned: false,
            peer_closed: false,
        }
    }

    /// Serves until the role, the peer, the timers or the socket end it.
    pub(crate) fn poll_run(&mut self, role: &mut impl Role, cx: &mut Context<'_>) -> Poll<End> {
        let r = self.poll_turns(role, cx);
        role.idle();
        r
    }

    fn poll_turns(&mut self, role: &mut impl Role, cx: &mut Context<'_>) -> Poll<End> {
        let mut read_since_flush = 0;
        // Whether this is a turn after the first of this poll (see `Role::poll_work`), and
        // whether the peer's socket answered `Pending` in any turn of it: it holds this task's
        // waker then, and what arrives meanwhile wakes the task, so later turns do not ask it
        // again. A sequential call made the client's driver ask an empty socket four times and
        // the server's twice, a few hundred instructions each (callgrind).
        let mut again = false;
        let mut read_waits = false;
        loop {
            match self.timers.poll(cx) {
                Poll::Ready(Liveness::Ping) if !self.outbox.close_sent => {
                    self.outbox.queue.push_front(Message::Ping(Bytes::new()))
                }
                Poll::Ready(Liveness::Ping) => {}
                Poll::Ready(Liveness::Dead) => return Poll::Ready(End::Dead),
                Poll::Ready(Liveness::Stalled) => {
                    tracing::warn!(
                        queued = self.outbox.queue.len(),
                        "peer is not reading its messages: disconnecting"
                    );
                    return Poll::Ready(End::Stalled);
                }
                Poll::Pending => {}
            }
            let mut progress = self.poll_write(cx);
            progress |= role.poll_work(cx, &mut self.outbox, again);
            again = true;
            if let Some(e) = self.write_failed.take() {
                return Poll::Ready(End::Lost(e));
            }
            if !read_waits && role.may_read(&self.outbox) {
                match self.poll_read(cx) {
                    Poll::Ready(Read::Data(frame_type, bytes)) => {
                        progress = true;
                        if let Some(end) = role.on_data(frame_type, bytes, &mut self.outbox, cx) {
                            return Poll::Ready(end);
                        }
                        read_since_flush += 1;
                        if read_since_flush == FLUSH_EVERY {
                            read_since_flush = 0;
                            self.poll_write(cx);
                            self.poll_flush(cx);
                        }
                    }
                    Poll::Ready(Read::Other) => progress = true,
                    Poll::Ready(Read::End(end)) => return Poll::Ready(end),
                    Poll::Pending => read_waits = true,
                }
            }
            if !progress {
                let unsent = !self.outbox.queue.is_empty() || self.outbox.unflushed();
                match role.before_flush() {
                    0 => {}
                    // One task woken and nothing to send yet: what it sends wakes this task
                    // anyway, so no wake of our own (a deferred wake made tokio's worker look for
                    // work and, finding this task, wake the other worker: two futex calls and two
                    // context switches per sequential call).
                    1 if !unsent => {}
                    // One task woken, something to send: no other worker could help; wake this
                    // one after it, on this thread, so that both go out in one write.
                    1 => {
                        defer_wake(cx);
                        return Poll::Pending;
                    }
                    // Several: a yield, which also wakes a parked worker to run some of them
                    // in parallel (measured: 25 % more calls at 64 in flight than the
                    // deferred wake).
                    _ => {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                self.poll_flush(cx);
                if let Some(e) = self.write_failed.take() {
                    return Poll::Ready(End::Lost(e));
                }
                // Blocked with something to send: the stall timer runs until writing moves again.
                if !self.outbox.queue.is_empty() || self.outbox.unflushed() {
                    self.timers.blocked(cx);
                }
                return Poll::Pending;
            }
        }
    }

    /// The peer's next message: a data frame, anything else (control frames: a ping is
    /// answered), or the end of the connection (the peer's close frame is answered first,
    /// unless this side's went out before it).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        let incoming = match self.reader.poll_next(&mut self.io, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(broken)) => return Poll::Ready(Read::End(end_of(broken))),
            Poll::Ready(Ok(incoming)) => incoming,
        };
        self.timers.heard();
        Poll::Ready(match incoming {
            Incoming::Data(frame_type, bytes) => Read::Data(frame_type, bytes),
            Incoming::Ping(payload) => {
                self.outbox.pong(payload);
                Read::Other
            }
            Incoming::Pong(_) => Read::Other,
            Incoming::Close(frame) => {
                self.peer_closed = true;
                if !self.outbox.close_sent {
                    // The answer echoes the code (RFC 6455 §5.5.1); nothing goes after it.
                    let answer = frame.as_ref().map(|(code, _)| close_frame(*code, ""));
                    self.outbox.queue.clear();
                    self.outbox.queue.push_back(Message::Close(answer));
                    self.poll_write(cx);
                    self.poll_flush(cx);
                }
                Read::End(End::PeerClosed(frame))
            }
        })
    }

    /// Moves queued messages into the socket while it takes them; true if any moved.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.write_failed.is_some() {
            return false;
        }
        match self.outbox.poll_write(&mut self.io, cx) {
            Ok(true) => {
                self.timers.unblocked();
                true
            }
            Ok(false) => false,
            Err(e) => {
                self.fail_write(e);
                false
            }
        }
    }

    /// Flushes what was written, if anything.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) {
        if self.outbox.unflushed() && self.write_failed.is_none() {
            match self.outbox.poll_flush(&mut self.io, cx) {
                Ok(true) => self.timers.unblocked(),
                Ok(false) => {}
                Err(e) => self.fail_write(e),
            }
        }
    }

    fn fail_write(&mut self, e: std::io::Error) {
        self.outbox.queue.clear();
        self.write_failed = Some(format!("connection lost: {e}"));
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))] // server drain and close
    /// True once writing failed: nothing more can be sent.
    pub(crate) fn write_failed(&self) -> bool {
        self.write_failed.is_some()
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))] // server drain and close
    /// Drops what waits to be sent and sends nothing more (the peer reads nothing).
    pub(crate) fn abandon_writes(&mut self) {
        self.outbox.queue.clear();
        self.write_failed = Some("abandoned".into());
        self.abandoned = true;
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))] // server drain and close
    /// Sends a close frame and waits for the peer's answer (which ends the stream, so the peer
    /// sees a clean close), all within `grace`.
    pub(crate) async fn close(&mut self, code: u16, reason: &str, grace: Duration) {
        let exchange = async {
            if self.send_close(code, reason).await {
                std::future::poll_fn(|cx| self.poll_read_to_end(cx)).await;
            }
        };
        if tokio::time::timeout(grace, exchange).await.is_err() {
            tracing::debug!("no close answer from the peer within {grace:?}");
        }
    }

    /// Sends a close frame if the socket takes it within `grace`, and waits for nothing.
    pub(crate) async fn try_close(&mut self, code: u16, reason: &str, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.send_close(code, reason)).await;
    }

    /// Queues a close frame after what waits (after what was already encoded only, when writing
    /// was abandoned) and writes everything out: false if writing failed.
    async fn send_close(&mut self, code: u16, reason: &str) -> bool {
        match (&self.write_failed, self.abandoned) {
            (None, _) => {}
            (Some(_), true) => self.outbox.queue.clear(),
            (Some(_), false) => return false, // the stream failed: nothing more gets through
        }
        self.outbox
            .queue
            .push_back(Message::Close(Some(close_frame(code, reason))));
        let Socket { io, outbox, .. } = self;
        std::future::poll_fn(|cx| {
            let written = outbox.poll_write(io, cx).and_then(|_| outbox.poll_flush(io, cx));
            match written {
                Err(_) => Poll::Ready(false),
                Ok(true) if outbox.queue.is_empty() => Poll::Ready(true),
                Ok(_) => Poll::Pending,
            }
        })
        .await
    }

    /// After this side's close frame: reads (and drops) until the peer's close answer ends the
    /// stream.
    pub(crate) fn poll_read_to_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_flush(cx);
        if self.peer_closed {
            return Poll::Ready(());
        }
        loop {
            match self.reader.poll_next(&mut self.io, cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(Incoming::Close(_))) => {
                    self.peer_closed = true;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What [`Socket::poll_read`] read.
pub(crate) enum Read {
    Data(FrameType, Bytes),
    Other,
    End(End),
}

fn end_of(broken: Broken) -> End {
    match broken {
        Broken::TooBig(why) => {
            tracing::warn!(error = %why, "frame over the size limit");
            End::Close(close::TOO_BIG, format!("frame too big: {why}"))
        }
        Broken::Protocol(code, why) => {
            tracing::debug!(error = %why, "websocket protocol error");
            End::Close(code, why)
        }
        Broken::Lost(why) => {
            tracing::debug!(error = %why, "connection lost");
            End::Lost(why)
        }
    }
}

/// Wakes this task again once the tasks already woken on this thread have run: tokio's
/// `yield_now`, whose wake is deferred until the worker looks for more work. (A task that
/// wakes itself with `wake_by_ref` while it runs is scheduled as a yield, which also wakes a
/// parked worker to steal it: with one caller, two futex calls and two context switches per
/// sequential call for nothing.)
fn defer_wake(cx: &mut Context<'_>) {
    let mut yielding = std::pin::pin!(tokio::task::yield_now());
    // The first poll defers the wake and is pending; dropping the future keeps the wake.
    let _ = std::future::Future::poll(yielding.as_mut(), cx);
}
