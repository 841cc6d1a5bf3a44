//! The task that drives one server connection: reads frames, runs handlers, writes answers.
//!
//! It runs the connection core's loop ([`Socket::poll_run`]) with [`Serving`] as its role. A
//! request is dispatched inline: a plain `fn` handler answers right there, with no future; an
//! `async` one is polled once at once, and most finish there. Either way the answer is written
//! without any task switch. A handler that has to wait stays in a set
//! polled by this same task, so slow handlers do not hold up the others on the connection.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use webmesh_codec::{
    code, decode_frame, peek_v1_header, Error as CodecError, Frame, FrameType, Framing, Kind, WireMessage,
};

use super::handler::{reply_encoder, BoxFuture, Counters, Dispatch, ReplyTo, Run, Started};
use super::lifecycle::{self, CLOSE_GRACE};
use super::Shared;
use crate::cancel::Cancel;
use crate::conn::{self, close, Deadlines, End, Outbox, Role, Socket};
use crate::connection::Connection;

/// A handler that did not finish at its first poll, with what is needed to answer if it panics,
/// to stop it when its call is cancelled, and its deadline (the driver's [`Deadlines`] cancel
/// it when the deadline passes).
struct Running {
    fut: BoxFuture<Option<WireMessage>>,
    fallback: Dispatch,
    cancel: Arc<Cancel>,
    /// The deadline, and the handler's key among the driver's timed handlers.
    deadline: Option<(tokio::time::Instant, u64)>,
}

/// How a running handler ended.
enum Ended {
    /// It finished: its answer, if any.
    Done(Option<WireMessage>),
    /// Its caller cancelled it: dropped, no answer.
    Cancelled,
    /// Its deadline passed: dropped; the answer is the `deadline_exceeded` error, if any.
    DeadlineExceeded(Option<WireMessage>),
}

/// A running handler's end, with the call it served.
struct Finished {
    id: Option<u64>,
    path: Frame,
    ended: Ended,
    /// Its key among the driver's timed handlers.
    timed: Option<u64>,
}

impl Future for Running {
    type Output = Finished;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let this = &mut *self;
        // The driver cancels a handler whose deadline passed: the clock tells which it was.
        let ended = if this.cancel.is_cancelled() {
            if this.past_deadline() {
                this.deadline_passed()
            } else {
                Ended::Cancelled
            }
        } else {
            this.cancel.register(cx.waker());
            let answer = std::task::ready!(poll_guarded(&mut this.fut, &this.fallback, cx));
            // A handler that saw its deadline by the clock (`CallContext::is_cancelled`) before
            // the timer fired (it rounds up to the millisecond) answered too late: the caller's
            // budget is spent, so it gets `deadline_exceeded`, as when the timer stops it.
            if this.past_deadline() {
                this.deadline_passed()
            } else {
                Ended::Done(answer)
            }
        };
        Poll::Ready(Finished {
            id: match this.fallback.reply {
                ReplyTo::Call(id) => Some(id),
                ReplyTo::Legacy | ReplyTo::Nothing => None,
            },
            path: this.fallback.frame.clone(),
            ended,
            timed: this.deadline.map(|(_, key)| key),
        })
    }
}

impl Running {
    fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|(at, _)| at <= tokio::time::Instant::now())
    }

    /// Stops the handler: its answer is the `deadline_exceeded` error, if any.
    fn deadline_passed(&mut self) -> Ended {
        self.cancel.cancel();
        let path = self.fallback.frame.path();
        let answer = self.fallback.fail(
            code::DEADLINE_EXCEEDED,
            &format!("the deadline of the call to {path} passed: its handler was stopped"),
        );
        Ended::DeadlineExceeded(answer)
    }
}

/// Polls a handler future; a panic becomes an `internal` error answer.
fn poll_guarded(
    fut: &mut BoxFuture<Option<WireMessage>>,
    fallback: &Dispatch,
    cx: &mut Context<'_>,
) -> Poll<Option<WireMessage>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(p) => p,
        Err(_) => Poll::Ready(panicked(fallback)),
    }
}

/// The answer for a call whose handler panicked: `internal`.
fn panicked(d: &Dispatch) -> Option<WireMessage> {
    let path = d.frame.path();
    tracing::error!(path, "handler panicked");
    d.fail(code::INTERNAL, &format!("handler for {path} panicked"))
}

/// The handlers that did not finish when first polled. Most never do: the set is made when the
/// first one needs it, so a connection that never had one holds none.
#[derive(Default)]
struct Handlers(Option<FuturesUnordered<Running>>);

impl Handlers {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, running: Running) {
        self.0.get_or_insert_with(FuturesUnordered::new).push(running);
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Finished>> {
        match &mut self.0 {
            Some(set) => set.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

pub(super) struct Driver {
    socket: Socket,
    serving: Serving,
}

/// The server's role in the connection core: dispatch, handlers in flight, pushes from other
/// tasks.
struct Serving {
    conn: Connection,
    shared: Arc<Shared>,
    handlers: Handlers,
    /// The cancellation of each v1 call whose handler runs, by id: what a CANCEL reaches.
    cancels: HashMap<u64, Arc<Cancel>>,
    /// The running handlers that have a deadline, by key (the driver's own numbering): what
    /// their deadline cancels.
    timed: HashMap<u64, Arc<Cancel>>,
    /// The next key in `timed`.
    next_timed: u64,
    /// The deadlines of the handlers in `timed`, under one timer.
    deadlines: Deadlines,
    /// Closing: new calls get `shutting_down` instead of a handler.
    refusing: bool,
    /// This connection's subscriptions, by id (at most `max_subscriptions`).
    subscriptions: std::collections::HashSet<u64>,
    /// Topic messages taken from the connection, on their way to the outbox (kept empty between
    /// batches, for its capacity).
    topic_batch: std::collections::VecDeque<Message>,
}

impl Drop for Serving {
    /// However the driver ends (even by a panic), pushers stop waiting for it.
    fn drop(&mut self) {
        self.conn.stop_sending();
    }
}

impl Driver {
    pub(super) fn new(socket: Socket, conn: Connection, shared: Arc<Shared>) -> Self {
        Driver {
            socket,
            serving: Serving {
                conn,
                shared,
                handlers: Handlers::default(),
                cancels: HashMap::new(),
                timed: HashMap::new(),
                next_timed: 0,
                deadlines: Deadlines::default(),
                refusing: false,
                subscriptions: std::collections::HashSet::new(),
                topic_batch: std::collections::VecDeque::new(),
            },
        }
    }

    /// Serves until the peer goes, the connection is closed, or the server shuts down; then lets
    /// the handlers in flight finish (until the server's shutdown deadline, or the shutdown
    /// timeout from now) and closes, within a further [`CLOSE_GRACE`].
    pub(super) async fn run(&mut self) {
        let shared = self.serving.shared.clone();
        let mut shutdown_rx = shared.lifecycle.subscribe();
        let conn = self.serving.conn.clone();
        let (end, deadline) = {
            let mut shutdown = std::pin::pin!(lifecycle::started(&mut shutdown_rx));
            let mut closing = std::pin::pin!(conn.close_requested());
            let Driver { socket, serving } = &mut *self;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(deadline) = shutdown.as_mut().poll(cx) {
                    let end = End::Close(close::GOING_AWAY, "server shutting down".into());
                    return Poll::Ready((end, Some(deadline)));
                }
                if let Poll::Ready((code, reason)) = closing.as_mut().poll(cx) {
                    return Poll::Ready((End::Close(code, reason), None));
                }
                socket.poll_run(serving, cx).map(|end| (end, None))
            })
            .await
        };
        conn.mark_closing();
        // Boxed: the connection's task carries room for the serving state only, not for the
        // drain and close that happen once.
        Box::pin(self.finish(end, deadline, shutdown_rx)).await;
    }

    /// Drains (running handlers finish and are answered) until `deadline` or the server's
    /// shutdown deadline, then closes as `end` says.
    async fn finish(
        &mut self,
        end: End,
        deadline: Option<Instant>,
        mut shutdown_rx: tokio::sync::watch::Receiver<Option<Instant>>,
    ) {
        let shared = self.serving.shared.clone();
        // Drain: running handlers finish and are answered; new calls are refused with
        // `shutting_down` (a stalled or dead peer's answers are dropped: it reads nothing).
        let mut read_done = false;
        match end {
            End::Stalled | End::Dead => self.socket.abandon_writes(),
            End::Close(..) => self.serving.refusing = true,
            End::PeerClosed(_) | End::Lost(_) => read_done = true,
        }
        if !matches!(end, End::Close(..)) {
            // Nothing more reaches this peer: pushes fail from now on (a closing connection
            // still sends them, with the answers of the calls it drains).
            self.serving.conn.stop_sending();
        }
        let own = Instant::now() + shared.shutdown_timeout;
        let deadline = deadline.unwrap_or(own);
        let drained = {
            // A server shutdown that starts meanwhile brings the deadline forward.
            let mut shutdown = std::pin::pin!(futures_util::FutureExt::fuse(lifecycle::started(
                &mut shutdown_rx
            )));
            let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(d) = shutdown.as_mut().poll(cx) {
                    if d < timer.deadline() {
                        timer.as_mut().reset(d);
                    }
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                self.poll_drain(&mut read_done, cx).map(|()| true)
            })
            .await
        };
        if !drained {
            tracing::warn!(
                left = self.serving.handlers.len(),
                "handlers still running at the shutdown deadline: dropped"
            );
        }
        match end {
            End::Close(code, reason) => {
                tracing::debug!(code, %reason, "closing");
                self.socket.close(code, &reason, CLOSE_GRACE).await;
            }
            End::Dead => tracing::info!("peer stopped answering keepalive pings: dropped"),
            End::Stalled => {
                // Its socket is full: the close frame gets a brief chance, no more.
                let brief = std::time::Duration::from_millis(100);
                self.socket
                    .try_close(close::POLICY, "peer is not reading its messages", brief)
                    .await;
            }
            End::PeerClosed(_) | End::Lost(_) => {}
        }
    }

    fn poll_drain(&mut self, read_done: &mut bool, cx: &mut Context<'_>) -> Poll<()> {
        let Driver { socket, serving } = self;
        loop {
            let mut progress = socket.poll_write(cx);
            progress |= serving.poll_work(cx, &mut socket.outbox, false);
            if serving.refusing
                && !*read_done
                && !socket.write_failed()
                && socket.outbox.queue.len() < serving.shared.outbound_queue
            {
                match socket.poll_read(cx) {
                    Poll::Ready(conn::Read::End(_)) => {
                        progress = true;
                        *read_done = true;
                    }
                    Poll::Ready(conn::Read::Data(frame_type, bytes)) => {
                        progress = true;
                        serving.refuse(frame_type, &bytes, &mut socket.outbox);
                    }
                    Poll::Ready(conn::Read::Other) => progress = true,
                    Poll::Pending => {}
                }
            }
            if serving.handlers.is_empty() && (socket.outbox.queue.is_empty() || socket.write_failed()) {
                socket.poll_flush(cx);
                return if socket.outbox.unflushed() && !socket.write_failed() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                };
            }
            if !progress {
                socket.poll_flush(cx);
                return Poll::Pending;
            }
        }
    }
}

impl Role for Serving {
    fn poll_work(&mut self, cx: &mut Context<'_>, out: &mut Outbox, _again: bool) -> bool {
        let mut progress = false;
        // Pushes from other tasks and topic messages, all that wait, then the news of what did
        // not fit (lags, closed subscriptions): it happened after them.
        if out.queue.len() < self.shared.outbound_queue {
            if let Some(pending) = self.conn.take_pending(cx, &mut self.topic_batch) {
                progress = true;
                out.queue.extend(self.topic_batch.drain(..));
                self.queue_pending(pending, out);
            }
        }
        // Handlers whose deadline passed are cancelled (and end in the loop below).
        let timed = &self.timed;
        self.deadlines.poll_due(cx, |key| {
            if let Some(cancel) = timed.get(&key) {
                cancel.cancel();
            }
        });
        // Handlers that finished, or were stopped.
        while let Poll::Ready(Some(finished)) = self.handlers.poll_next(cx) {
            progress = true;
            if let Some(id) = finished.id {
                self.cancels.remove(&id);
            }
            if let Some(key) = finished.timed {
                self.timed.remove(&key);
            }
            let answer = match finished.ended {
                Ended::Done(answer) => answer,
                Ended::Cancelled => {
                    tracing::debug!(path = finished.path.path(), id = ?finished.id, "call cancelled: handler stopped");
                    self.count(finished.path.path(), |c| &c.cancelled);
                    None
                }
                Ended::DeadlineExceeded(answer) => {
                    tracing::debug!(path = finished.path.path(), id = ?finished.id, "deadline passed: handler stopped");
                    self.count(finished.path.path(), |c| &c.deadline_exceeded);
                    answer
                }
            };
            if let Some(m) = answer {
                out.queue.push_back(conn::to_message(m));
            }
        }
        progress
    }

    fn may_read(&self, out: &Outbox) -> bool {
        out.queue.len() < self.shared.outbound_queue && self.handlers.len() < self.shared.max_in_flight
    }

    fn on_data(
        &mut self,
        frame_type: FrameType,
        bytes: Bytes,
        out: &mut Outbox,
        cx: &mut Context<'_>,
    ) -> Option<End> {
        self.dispatch(frame_type, bytes, out, cx)
    }
}

impl Serving {
    /// A request that arrives while the connection closes: a v1 CALL gets `shutting_down` (it did
    /// not run, so it is safe to retry elsewhere); anything else is dropped.
    fn refuse(&mut self, frame_type: FrameType, bytes: &[u8], out: &mut Outbox) {
        match (self.conn.framing(), frame_type, peek_v1_header(bytes)) {
            (Framing::V1, FrameType::Binary, Some((Kind::Call, id))) if id != 0 => {
                let answer = self.conn.encoder().error_plain(
                    id,
                    code::SHUTTING_DOWN,
                    "the connection is closing: the call did not run",
                );
                queue(out, answer);
            }
            _ => tracing::debug!("request while closing: dropped"),
        }
    }

    /// Dispatches one data message; `Some` when the connection must close.
    fn dispatch(
        &mut self,
        frame_type: FrameType,
        bytes: Bytes,
        out: &mut Outbox,
        cx: &mut Context<'_>,
    ) -> Option<End> {
        let framing = self.conn.framing();
        // The header, for the answer to a frame that does not decode, read first: decoding takes
        // the bytes (a second owner would make them shared, an allocation per frame).
        let head = match framing {
            Framing::V1 => peek_v1_header(&bytes),
            Framing::Legacy => None,
        };
        let frame = match decode_frame(
            framing,
            self.conn.encoder().codec(),
            &self.shared.limits,
            frame_type,
            bytes,
        ) {
            Ok(f) => f,
            Err(e) => return self.bad_frame(framing, &e, head, out),
        };
        let reply = match frame.kind() {
            Kind::Call if frame.id() != 0 => ReplyTo::Call(frame.id()),
            Kind::Call => return Some(End::Close(close::PROTOCOL, "CALL with id 0".into())),
            Kind::Notify => ReplyTo::Nothing,
            Kind::Legacy => ReplyTo::Legacy,
            Kind::Subscribe | Kind::Unsubscribe | Kind::Publish => {
                self.topic_frame(&frame, out);
                return None;
            }
            Kind::Cancel => {
                // The caller stopped waiting: stop its handler (counted when it is dropped).
                if let Some(cancel) = self.cancels.remove(&frame.id()) {
                    cancel.cancel();
                }
                return None;
            }
            Kind::Reply | Kind::Error => {
                // This server makes no calls.
                tracing::trace!(kind = ?frame.kind(), id = frame.id(), "ignored");
                return None;
            }
            _ => {
                if frame.id() != 0 {
                    let msg = format!("unsupported frame kind {:?}", frame.kind());
                    let answer = self
                        .conn
                        .encoder()
                        .error_plain(frame.id(), code::UNSUPPORTED, &msg);
                    queue(out, answer);
                }
                return None;
            }
        };
        if !self.shared.rules.is_empty()
            && !super::auth::authorized(&self.shared.rules, frame.path(), &self.conn)
        {
            self.forbidden(&frame, reply, out);
            return None;
        }
        let Some(handler) = self.shared.router.get(frame.path()) else {
            self.not_found(&frame, reply, out);
            return None;
        };
        // The deadline: the caller's budget, or the server's default.
        let budget = frame.budget().or(self.shared.default_deadline);
        if budget == Some(std::time::Duration::ZERO) {
            let message = format!("the call to {} arrived with no time left", frame.path());
            if let ReplyTo::Call(id) = reply {
                queue(
                    out,
                    self.conn
                        .encoder()
                        .error_plain(id, code::DEADLINE_EXCEEDED, &message),
                );
            }
            self.count(frame.path(), |c| &c.deadline_exceeded);
            return None;
        }
        let dispatch = Dispatch {
            frame,
            conn: self.conn.clone(),
            reply,
            budget,
        };
        let Run {
            mut fut,
            cancel,
            deadline,
        } = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(&dispatch))) {
            Ok(Started::Running(run)) => run,
            Ok(Started::Answered(answer)) => {
                queue(out, Ok(answer));
                return None;
            }
            Err(_) => {
                queue(out, Ok(panicked(&dispatch)));
                return None;
            }
        };
        match poll_guarded(&mut fut, &dispatch, cx) {
            Poll::Ready(answer) => queue(out, Ok(answer)),
            Poll::Pending => {
                let deadline = deadline.map(|at| {
                    let key = self.next_timed;
                    self.next_timed += 1;
                    self.timed.insert(key, cancel.clone());
                    let timed = &self.timed;
                    self.deadlines
                        .insert(at, key, timed.len(), |key| timed.contains_key(&key));
                    (at, key)
                });
                if let ReplyTo::Call(id) = reply {
                    self.cancels.insert(id, cancel.clone());
                }
                self.handlers.push(Running {
                    fut,
                    fallback: dispatch,
                    cancel,
                    deadline,
                });
            }
        }
        None
    }

    /// A topic frame from the client: subscribe, unsubscribe, publish.
    fn topic_frame(&mut self, frame: &Frame, out: &mut Outbox) {
        let (id, path) = (frame.id(), frame.path());
        let answer = |out: &mut Outbox, code: &str, message: &str| {
            if id != 0 {
                queue(out, self.conn.encoder().error_plain(id, code, message));
            }
        };
        match frame.kind() {
            Kind::Subscribe => {
                if id == 0 || path.is_empty() {
                    return answer(out, code::BAD_REQUEST, "a subscription needs an id and a path");
                }
                if !super::auth::authorized(&self.shared.rules, path, &self.conn) {
                    return answer(
                        out,
                        code::FORBIDDEN,
                        &format!("not allowed to subscribe to {path}"),
                    );
                }
                let body = if frame.payload_is_nil() {
                    Ok(crate::topics::SubscribeBody::default())
                } else {
                    frame.decode::<crate::topics::SubscribeBody>()
                };
                let Ok(body) = body else {
                    return answer(out, code::BAD_REQUEST, "malformed subscription body");
                };
                if !self.subscriptions.contains(&id)
                    && self.subscriptions.len() >= self.shared.max_subscriptions
                {
                    let max = self.shared.max_subscriptions;
                    return answer(
                        out,
                        code::BAD_REQUEST,
                        &format!("too many subscriptions on this connection (at most {max})"),
                    );
                }
                self.subscriptions.insert(id);
                let (ack, then) = self.conn.hub().subscribe(&self.conn, id, path, body);
                queue(out, self.conn.encoder().reply(id, "", &ack));
                out.queue.extend(then);
            }
            Kind::Unsubscribe => {
                self.subscriptions.remove(&id);
                self.conn.hub().unsubscribe(self.conn.id(), id);
            }
            _ => {
                let outcome = match self
                    .shared
                    .client_publish
                    .iter()
                    .find(|r| crate::topics::matches(&r.pattern, path))
                {
                    None => Err((code::FORBIDDEN, format!("clients may not publish on {path}"))),
                    Some(rule) => (rule.publish)(frame, &self.conn),
                };
                match outcome {
                    Ok(delivered) if id != 0 => queue(out, self.conn.encoder().reply(id, "", &delivered)),
                    Ok(_) => {}
                    Err((code, message)) => {
                        tracing::debug!(path, code, "client publish refused: {message}");
                        answer(out, code, &message);
                    }
                }
            }
        }
    }

    /// Notices for news that waited: a lag notice per topic path, then per-subscription ones.
    fn queue_pending(&self, pending: crate::connection::News, out: &mut Outbox) {
        use crate::topics::{hub::notice_frame, NoticeBody};
        for (path, (missed, upto)) in pending.lag {
            let body = NoticeBody {
                kind: "lag".into(),
                path: Some(path),
                missed: Some(missed),
                upto: Some(upto),
                ..NoticeBody::default()
            };
            out.queue.extend(notice_frame(&self.conn, 0, &body));
        }
        for (id, body) in pending.notices {
            out.queue.extend(notice_frame(&self.conn, id, &body));
        }
    }

    /// Counts one stopped call of the route at `path`.
    fn count(&self, path: &str, which: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) {
        if let Some(c) = self.shared.router.counters(path) {
            which(c).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A request the connection's identity may not make: `forbidden` for a v1 call, a log line
    /// otherwise.
    fn forbidden(&mut self, frame: &Frame, reply: ReplyTo, out: &mut Outbox) {
        let path = frame.path();
        match reply {
            ReplyTo::Call(id) => {
                let message = format!("not allowed to call {path}");
                queue(
                    out,
                    self.conn.encoder().error_plain(id, code::FORBIDDEN, &message),
                );
            }
            ReplyTo::Legacy | ReplyTo::Nothing => {
                tracing::info!(
                    path,
                    "request refused by an authorization rule (no reply in this mode)"
                );
            }
        }
    }

    fn not_found(&mut self, frame: &Frame, reply: ReplyTo, out: &mut Outbox) {
        let path = frame.path();
        tracing::debug!(path, "no route");
        let answer = match &self.shared.on_not_found {
            Some(hook) => hook(path, &self.conn),
            None if reply == ReplyTo::Legacy => Some("Path not found".to_owned()),
            None => None,
        };
        match reply {
            ReplyTo::Call(id) => {
                let message = answer.unwrap_or_else(|| format!("no route at {path}"));
                let msg = self.conn.encoder().error_plain(id, code::NOT_FOUND, &message);
                queue(out, msg);
            }
            ReplyTo::Legacy => {
                if let Some(text) = answer {
                    let msg = reply_encoder(self.conn.encoder(), frame).reply(0, path, &text);
                    queue(out, msg);
                }
            }
            ReplyTo::Nothing => {}
        }
    }

    /// A frame that did not decode: PROTOCOL.md §5 says what each class gets. `head` is its v1
    /// header's kind and id, if those could be read.
    fn bad_frame(
        &mut self,
        framing: Framing,
        e: &CodecError,
        head: Option<(Kind, u64)>,
        out: &mut Outbox,
    ) -> Option<End> {
        use CodecError::*;
        match (framing, e) {
            (_, WrongFrameType { .. }) => Some(End::Close(close::UNSUPPORTED, e.to_string())),
            (Framing::V1, TruncatedHeader(_) | ReservedFlags(_) | VarintOverflow | PathNotUtf8) => {
                Some(End::Close(close::PROTOCOL, e.to_string()))
            }
            (Framing::V1, _) => {
                match head {
                    Some((Kind::Call, id)) if id != 0 => {
                        let msg = self
                            .conn
                            .encoder()
                            .error_plain(id, code::BAD_REQUEST, &e.to_string());
                        queue(out, msg);
                    }
                    _ => tracing::warn!(error = %e, "bad frame"),
                }
                None
            }
            (Framing::Legacy, _) => {
                // As 0.1.2: log, no reply, keep the connection.
                tracing::warn!(error = %e, "bad legacy frame");
                None
            }
        }
    }
}

fn queue(out: &mut Outbox, answer: Result<Option<WireMessage>, CodecError>) {
    match answer {
        Ok(Some(m)) => out.queue.push_back(conn::to_message(m)),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot encode an answer"),
    }
}
