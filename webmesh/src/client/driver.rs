//! The task that drives one client connection: writes calls, reads answers, routes them to the
//! waiting callers and pushes to their handlers; keeps the connection alive, and reconnects it
//! when asked to.
//!
//! It runs the connection core's loop ([`Socket::poll_run`]) with [`Calling`] as its role. The
//! role owns the table of calls in flight (no lock around it: callers hand their call over
//! through a channel).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use webmesh_codec::{code, decode_frame, Frame, FrameEncoder, FrameType, Kind};

use super::builder::{Dialer, Reconnect};
use super::legacy::{LegacyPaths, Reply};
use super::subscriptions::Local;
use super::{ConnectionState, Shared};
use crate::conn::{self, Deadlines, Io, Keepalive, Outbox, OwnIdMap, Role, Socket};
use crate::error::{CloseKind, Error, Result};

/// Where a call's answer goes.
pub(super) type Waiter = oneshot::Sender<Result<Frame>>;

/// What callers ask of the driver.
pub(super) enum Command {
    /// Send a v1 CALL and route the answer with this id to `waiter`; past `deadline`, the
    /// call times out (the waiter gets [`timed_out`], the server a CANCEL).
    Call {
        id: u64,
        msg: Message,
        waiter: Waiter,
        deadline: Option<Instant>,
    },
    /// Send a legacy request and route the next answer on `path` to `waiter`.
    LegacyCall {
        id: u64,
        path: String,
        msg: Message,
        waiter: Waiter,
    },
    /// Send a legacy emit on `path` (in order with the path's calls: 0.1.2 may answer it).
    LegacyEmit { path: String, msg: Message },
    /// Send a message that expects no answer (v1 emit, CANCEL).
    Send(Message),
    /// Send a `Subscribe` (`msg`) for subscription `id`; its answer goes to `waiter`, and its
    /// messages to `local`'s buffer from then on.
    Subscribe {
        id: u64,
        local: Local,
        msg: Message,
        waiter: Waiter,
    },
    /// End subscription `id`.
    Unsubscribe { id: u64 },
    /// The caller gave up on this call (timeout, dropped future): a v1 call (no `path`) still
    /// waiting to be written is not sent; one already written gets a CANCEL.
    Forget { id: u64, path: Option<String> },
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// The reason of a close the client asked for.
pub(super) const CLIENT_CLOSED: &str = "client closed";

/// Queued messages past which the driver stops taking new commands from callers.
const OUT_HIGH: usize = 256;
/// Every this many new calls, waiters whose caller is gone are swept out.
const SWEEP_EVERY: u32 = 1024;

/// How a connection ended.
enum End {
    /// We closed it (on request, or because every handle is gone).
    Closed(String),
    /// It dropped: the peer closed (`Remote`) or it was lost (`Lost`).
    Dropped(CloseKind, String),
}

pub(super) struct Driver {
    socket: Socket,
    calling: Calling,
    dialer: Dialer,
    keepalive: Option<Keepalive>,
    reconnect: Option<Reconnect>,
}

/// The client's role in the connection core: calls handed over by callers, and the answers
/// they wait for.
struct Calling {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    by_id: OwnIdMap<Waiter>,
    /// When the v1 calls in `by_id` time out.
    deadlines: Deadlines,
    /// What callers handed over while the outbox was full (the socket not taking what it
    /// sends), in order, waiting for room: taken from the channel all the same, so that their
    /// deadlines run. At most the channel's capacity plus one: then the driver stops taking,
    /// and callers keep timers of their own (`Shared::congested`).
    held: VecDeque<Message>,
    legacy: LegacyPaths,
    /// Subscriptions, by id.
    subs: HashMap<u64, Local>,
    /// The server's epoch, from its last answer to a `Subscribe`.
    epoch: Option<u64>,
    since_sweep: u32,
    /// Set once we asked to close: wait for the server's close answer.
    closing: bool,
    /// Answers were handed to callers in this batch: they may be about to make new calls.
    answered: usize,
    /// Commands taken from the channel in one go (empty between polls; kept for its buffer).
    batch: Vec<Command>,
    /// The command channel answered `Pending` during the current poll of the task (see
    /// `poll_work`). Meaningful within one poll only: the first turn of every poll passes
    /// `again == false`, which clears it before the channel is asked.
    rx_waits: bool,
}

impl Driver {
    pub(super) fn new(
        io: Io,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        dialer: Dialer,
        keepalive: Option<Keepalive>,
        reconnect: Option<Reconnect>,
    ) -> Self {
        Driver {
            socket: Socket::new(io, false, shared.limits.max_frame_size, keepalive, None),
            calling: Calling {
                shared,
                rx,
                by_id: OwnIdMap::default(),
                deadlines: Deadlines::default(),
                held: VecDeque::new(),
                legacy: LegacyPaths::default(),
                subs: HashMap::new(),
                epoch: None,
                since_sweep: 0,
                closing: false,
                answered: 0,
                batch: Vec::new(),
                rx_waits: false,
            },
            dialer,
            keepalive,
            reconnect,
        }
    }

    /// Runs the connection, and its successors when reconnecting, to the end.
    pub(super) async fn run(mut self, state: watch::Sender<ConnectionState>) {
        let mut attempt = 0;
        loop {
            let connected_at = Instant::now();
            let end = {
                let Driver { socket, calling, .. } = &mut self;
                std::future::poll_fn(|cx| socket.poll_run(calling, cx)).await
            };
            let end = self.ended(end).await;
            let (kind, reason, final_) = match end {
                End::Closed(r) => (CloseKind::Local, r, true),
                End::Dropped(kind, r) => (kind, r, self.reconnect.is_none()),
            };
            if self.calling.closing {
                // Our close frame is out: give the server a moment to answer it.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    std::future::poll_fn(|cx| self.socket.poll_read_to_end(cx)),
                )
                .await;
            }
            tracing::debug!(url = %self.dialer.url, %reason, "disconnected");
            // The state changes before the calls in flight fail (at once, whatever comes next):
            // a caller that sees its call fail sees the new state too.
            let policy = match (final_, self.reconnect) {
                (false, Some(policy)) => policy,
                _ => {
                    state.send_replace(ConnectionState::Closed {
                        kind,
                        reason: reason.clone(),
                    });
                    self.fail_pending(kind, &reason);
                    self.finish(&state, kind, reason);
                    return;
                }
            };
            if connected_at.elapsed() >= policy.healthy_after {
                attempt = 0;
            }
            state.send_replace(ConnectionState::Reconnecting {
                attempt: attempt + 1,
                reason: reason.clone(),
            });
            self.fail_pending(kind, &reason);
            match self.reconnect_loop(&state, policy, &mut attempt, reason).await {
                Some(io) => {
                    let max = self.calling.shared.limits.max_frame_size;
                    self.socket = Socket::new(io, false, max, self.keepalive, None);
                    self.calling.resubscribe(&mut self.socket.outbox);
                    state.send_replace(ConnectionState::Connected);
                    tracing::info!(url = %self.dialer.url, "reconnected");
                }
                None => return,
            }
        }
    }

    /// Closed for good: tell the handles, and fail calls still arriving until they are all gone.
    fn finish(&mut self, state: &watch::Sender<ConnectionState>, kind: CloseKind, reason: String) {
        state.send_replace(ConnectionState::Closed {
            kind,
            reason: reason.clone(),
        });
        // Subscriptions live on through reconnections; they end with the connection.
        for (_, sub) in self.calling.subs.drain() {
            sub.buffer.close(&format!("connection closed: {reason}"));
        }
        self.calling.rx.close();
        while let Ok(cmd) = self.calling.rx.try_recv() {
            fail_command(cmd, kind, &reason);
        }
    }

    /// Waits and redials with backoff until connected (`Some`), or closed for good (`None`).
    async fn reconnect_loop(
        &mut self,
        state: &watch::Sender<ConnectionState>,
        policy: Reconnect,
        attempt: &mut u32,
        reason: String,
    ) -> Option<Io> {
        loop {
            *attempt += 1;
            if policy.max_attempts.is_some_and(|max| *attempt > max) {
                self.finish(
                    state,
                    CloseKind::GaveUp,
                    format!("gave up reconnecting after {} attempts ({reason})", *attempt - 1),
                );
                return None;
            }
            state.send_replace(ConnectionState::Reconnecting {
                attempt: *attempt,
                reason: reason.clone(),
            });
            let delay = policy.delay(*attempt, jitter_spread());
            tracing::info!(url = %self.dialer.url, attempt = *attempt, ?delay, %reason, "reconnecting");
            let failing = format!("disconnected ({reason}); reconnecting, attempt {}", *attempt);
            let down = CloseKind::Reconnecting { attempt: *attempt };
            // While down, calls fail at once; a close request ends it all.
            let waited = tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = fail_commands_until_close(&mut self.calling.rx, down, &failing) => false,
            };
            if !waited {
                self.finish(state, CloseKind::Local, CLIENT_CLOSED.into());
                return None;
            }
            let dialed = tokio::select! {
                d = self.dialer.dial() => Some(d),
                _ = fail_commands_until_close(&mut self.calling.rx, down, &failing) => None,
            };
            match dialed {
                None => {
                    self.finish(state, CloseKind::Local, CLIENT_CLOSED.into());
                    return None;
                }
                Some(Ok((io, framing))) if framing == self.calling.shared.encoder.framing() => {
                    return Some(io)
                }
                Some(Ok((_, framing))) => {
                    tracing::warn!(
                        framing = framing.name(),
                        "the server now speaks another framing; retrying"
                    )
                }
                Some(Err(e)) => tracing::debug!(error = %e, "reconnection attempt failed"),
            }
        }
    }

    fn fail_pending(&mut self, kind: CloseKind, reason: &str) {
        for (_, w) in self.calling.by_id.drain() {
            let _ = w.send(Err(Error::closed(kind, reason)));
        }
        self.calling.legacy.fail_all(|| Error::closed(kind, reason));
    }

    /// How the connection ended, from the core's account.
    async fn ended(&mut self, end: conn::End) -> End {
        let (kind, reason) = match end {
            conn::End::PeerClosed(frame) => {
                let code = frame.as_ref().map(|(c, _)| *c);
                let reason = match frame {
                    Some((_, r)) if !r.is_empty() => format!("closed by server: {r}"),
                    _ => "closed by server".to_owned(),
                };
                (CloseKind::Remote { code }, reason)
            }
            conn::End::Lost(reason) => (CloseKind::Lost, reason),
            conn::End::Dead => (
                CloseKind::Lost,
                "keepalive timeout: the server stopped answering pings".to_owned(),
            ),
            conn::End::Stalled => (CloseKind::Lost, "the server stopped reading".to_owned()),
            conn::End::Close(code, reason) => {
                // The server broke the protocol (a frame over the limit...): say so, briefly.
                self.socket
                    .try_close(code, &reason, Duration::from_millis(200))
                    .await;
                (CloseKind::Lost, format!("connection failed: {reason}"))
            }
        };
        if self.calling.closing {
            End::Closed(CLIENT_CLOSED.into())
        } else {
            End::Dropped(kind, reason)
        }
    }
}

impl Role for Calling {
    fn poll_work(&mut self, cx: &mut Context<'_>, out: &mut Outbox, again: bool) -> bool {
        let mut progress = false;
        // Held messages go out first, as the outbox drains.
        while out.queue.len() < OUT_HIGH {
            let Some(msg) = self.held.pop_front() else {
                break;
            };
            out.queue.push_back(msg);
            progress = true;
        }
        if self.held.is_empty() {
            self.shared.congested.store(false, Ordering::Release);
        }
        // The channel answered `Pending` in an earlier turn of this poll: it holds this task's
        // waker, and no call was taken since, so no deadline either (only calls add one; the
        // timer's registration is the one made then).
        if again && self.rx_waits {
            return progress;
        }
        self.rx_waits = false;
        // `held` takes one more than the channel holds: when the driver starts holding, the
        // channel may be full again behind the command that started it. Commands come in
        // batches of at most what `held` could still take: a batch returns its room in the
        // channel at once (one lock of the channel's wait list, where one command at a time
        // took it for each).
        let mut batch = std::mem::take(&mut self.batch);
        while !self.closing && self.held.len() <= self.rx.max_capacity() {
            let room = self.rx.max_capacity() + 1 - self.held.len();
            match self.rx.poll_recv_many(cx, &mut batch, room) {
                Poll::Ready(0) => {
                    // Every handle is gone: close.
                    progress = true;
                    self.command(Command::Close(conn::close::NORMAL, CLIENT_CLOSED.into()), out);
                }
                Poll::Ready(_) => {
                    progress = true;
                    for cmd in batch.drain(..) {
                        if self.closing {
                            // Behind a close request: failed, as `Driver::finish` fails what
                            // is still in the channel.
                            fail_command(cmd, CloseKind::Local, CLIENT_CLOSED);
                        } else {
                            self.command(cmd, out);
                        }
                    }
                }
                Poll::Pending => {
                    self.rx_waits = true;
                    break;
                }
            }
        }
        self.batch = batch;
        // After the commands: a deadline just added sets the timer, which this registers.
        let (by_id, shared, held) = (&mut self.by_id, &self.shared, &mut self.held);
        progress |= self.deadlines.poll_due(cx, |id| {
            if let Some(waiter) = by_id.remove(&id) {
                let _ = waiter.send(Err(timed_out()));
                withdraw(id, &shared.encoder, &mut out.queue, held);
            }
        });
        progress
    }

    fn may_read(&self, _: &Outbox) -> bool {
        true
    }

    fn on_data(
        &mut self,
        frame_type: FrameType,
        bytes: Bytes,
        out: &mut Outbox,
        _: &mut Context<'_>,
    ) -> Option<conn::End> {
        self.on_message(frame_type, bytes, out);
        None
    }

    fn idle(&mut self) {
        for sub in self.subs.values_mut() {
            sub.wake();
        }
    }

    fn before_flush(&mut self) -> usize {
        std::mem::take(&mut self.answered)
    }
}

impl Calling {
    fn command(&mut self, cmd: Command, out: &mut Outbox) {
        if let Command::Forget { id, path: None } = cmd {
            // Not held back: it sends nothing that must follow what is held (a CANCEL goes
            // only for a call already written).
            if self.by_id.remove(&id).is_some() {
                withdraw(id, &self.shared.encoder, &mut out.queue, &mut self.held);
            }
            return;
        }
        // The outbox is full: what this command sends waits in `held` (and so does everything
        // after it, to keep the order); callers handing over calls from now on keep a timer.
        if out.queue.len() >= OUT_HIGH || !self.held.is_empty() {
            self.shared.congested.store(true, Ordering::Release);
            let mut held = std::mem::take(&mut self.held);
            self.take(cmd, &mut held);
            self.held = held;
        } else {
            self.take(cmd, &mut out.queue);
        }
    }

    fn take(&mut self, cmd: Command, queue: &mut VecDeque<Message>) {
        match cmd {
            Command::Call {
                id,
                msg,
                waiter,
                deadline,
            } => {
                self.sweep(queue);
                self.by_id.insert(id, waiter);
                if let Some(at) = deadline {
                    let by_id = &self.by_id;
                    self.deadlines
                        .insert(at, id, by_id.len(), |id| by_id.contains_key(&id));
                }
                queue.push_back(msg);
            }
            Command::LegacyCall {
                id,
                path,
                msg,
                waiter,
            } => {
                self.sweep(queue);
                self.legacy.call(id, path, msg, waiter, queue);
            }
            Command::LegacyEmit { path, msg } => self.legacy.emit(path, msg, queue),
            Command::Send(msg) => queue.push_back(msg),
            Command::Subscribe {
                id,
                local,
                msg,
                waiter,
            } => {
                self.subs.insert(id, local);
                self.by_id.insert(id, waiter);
                queue.push_back(msg);
            }
            Command::Unsubscribe { id } => {
                if self.subs.remove(&id).is_some() {
                    self.unsubscribe(id, queue);
                }
            }
            // A v1 call's is taken in `command`, which needs the outbox and `held` both.
            Command::Forget { path: None, .. } => {}
            Command::Forget { id, path: Some(path) } => {
                self.legacy.forget(id, &path, queue);
            }
            Command::Close(code, reason) => {
                queue.push_back(Message::Close(Some(conn::close_frame(code, &reason))));
                self.closing = true;
            }
        }
    }

    /// Drops waiters whose callers are gone (a `Forget` lost to a full channel).
    fn sweep(&mut self, queue: &mut VecDeque<Message>) {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.by_id.retain(|_, w| !w.is_closed());
            self.legacy.sweep(queue);
        }
    }

    fn on_message(&mut self, frame_type: FrameType, bytes: Bytes, out: &mut Outbox) {
        let encoder = &self.shared.encoder;
        let frame = match decode_frame(
            encoder.framing(),
            encoder.codec(),
            &self.shared.limits,
            frame_type,
            bytes,
        ) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the server");
                return;
            }
        };
        match frame.kind() {
            Kind::Reply | Kind::Error => {
                if self.subs.contains_key(&frame.id()) {
                    self.subscribed(&frame);
                }
                match self.by_id.remove(&frame.id()) {
                    Some(w) => {
                        self.answered += 1;
                        let _ = w.send(Ok(frame));
                    }
                    None => tracing::debug!(id = frame.id(), "answer to a call no longer waited for"),
                }
            }
            Kind::TopicMessage => {
                let (Some(seq), path) = (frame.seq(), frame.path()) else {
                    return;
                };
                let ended: Vec<u64> = self
                    .subs
                    .iter_mut()
                    .filter_map(|(id, sub)| (!sub.message(path, seq, &frame)).then_some(*id))
                    .collect();
                for id in ended {
                    self.subs.remove(&id);
                    self.unsubscribe(id, &mut out.queue);
                }
            }
            Kind::Notice => {
                let Ok(notice) = frame.decode::<crate::topics::NoticeBody>() else {
                    tracing::debug!("undecodable notice: dropped");
                    return;
                };
                let id = frame.id();
                let ended: Vec<u64> = self
                    .subs
                    .iter_mut()
                    .filter(|(sub_id, _)| id == 0 || **sub_id == id)
                    .filter_map(|(sub_id, sub)| (!sub.notice(&notice)).then_some(*sub_id))
                    .collect();
                for sub_id in ended {
                    self.subs.remove(&sub_id);
                    // Also after the server's own "closed": it frees the server's count.
                    self.unsubscribe(sub_id, &mut out.queue);
                }
            }
            Kind::Legacy => match self.legacy.reply(frame.path(), &mut out.queue) {
                Reply::Deliver(w) => {
                    self.answered += 1;
                    let _ = w.send(Ok(frame));
                }
                Reply::Owed => tracing::debug!(
                    path = frame.path(),
                    "late reply to a call no longer waited for (or to an emit): dropped"
                ),
                Reply::Unsolicited => self.push(&frame),
            },
            Kind::Notify => self.push(&frame),
            Kind::Call => {
                if let Ok(Some(m)) =
                    encoder.error_plain(frame.id(), code::NOT_FOUND, "this client serves no routes")
                {
                    out.queue.push_back(conn::to_message(m));
                }
            }
            Kind::Cancel => {}
            _ => {
                if frame.id() != 0 {
                    if let Ok(Some(m)) =
                        encoder.error_plain(frame.id(), code::UNSUPPORTED, "unsupported frame kind")
                    {
                        out.queue.push_back(conn::to_message(m));
                    }
                }
            }
        }
    }

    /// The server's answer to a `Subscribe`: note its epoch; a refusal ends the subscription.
    fn subscribed(&mut self, frame: &Frame) {
        let id = frame.id();
        if frame.kind() == Kind::Reply {
            if let Ok(ack) = frame.decode::<crate::topics::Subscribed>() {
                self.epoch = Some(ack.epoch);
                if let Some(sub) = self.subs.get_mut(&id) {
                    sub.acked(ack.at);
                }
            }
        } else if let Some(sub) = self.subs.remove(&id) {
            let reason = frame
                .decode_error::<serde::de::IgnoredAny>()
                .map(|(e, _)| format!("{}: {}", e.code, e.message))
                .unwrap_or_else(|_| "refused by the server".into());
            sub.buffer.close(&reason);
        }
    }

    /// Sends the `Unsubscribe` of subscription `id`.
    fn unsubscribe(&self, id: u64, queue: &mut VecDeque<Message>) {
        if let Ok(m) = self.shared.encoder.v1_frame(Kind::Unsubscribe, id, "", &()) {
            queue.push_back(conn::to_message(m));
        }
    }

    /// After a reconnection: subscribes again, from where each subscription left off.
    fn resubscribe(&mut self, out: &mut Outbox) {
        for (id, sub) in &self.subs {
            match self
                .shared
                .encoder
                .v1_frame(Kind::Subscribe, *id, &sub.pattern, &sub.body(self.epoch))
            {
                Ok(m) => out.queue.push_back(conn::to_message(m)),
                Err(e) => tracing::warn!(error = %e, "cannot resubscribe"),
            }
        }
    }

    fn push(&self, frame: &Frame) {
        match self.shared.push.get(frame.path()) {
            Some(handler) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(frame))).is_err() {
                    tracing::error!(path = frame.path(), "push handler panicked");
                }
            }
            None => tracing::debug!(
                path = frame.path(),
                "message with no waiting call and no push handler: dropped"
            ),
        }
    }
}

/// Takes back v1 call `id`, whose caller stopped waiting: removed from the messages not yet
/// written if it is still there (the server never sees it), else its CANCEL is queued (the
/// server may stop its handler).
fn withdraw(id: u64, encoder: &FrameEncoder, queue: &mut VecDeque<Message>, held: &mut VecDeque<Message>) {
    if unqueue_call(queue, id) || unqueue_call(held, id) {
        return;
    }
    if let Some(cancel) = encoder.cancel(id) {
        queue.push_back(conn::to_message(cancel));
    }
}

/// Removes the v1 CALL with `id` from `queue` (messages not yet written); true if it was there.
fn unqueue_call(queue: &mut VecDeque<Message>, id: u64) -> bool {
    let at = queue.iter().position(|m| match m {
        Message::Binary(bytes) => webmesh_codec::peek_v1_header(bytes) == Some((Kind::Call, id)),
        _ => false,
    });
    at.and_then(|at| queue.remove(at)).is_some()
}

/// What the driver hands a call whose deadline passed: [`Error::CallTimeout`] without its path
/// and timeout, which the caller fills in (`Client::finish_call`).
pub(super) fn timed_out() -> Error {
    Error::CallTimeout {
        path: String::new(),
        after: Duration::ZERO,
    }
}

/// Fails a call handed over while the connection is down.
fn fail_command(cmd: Command, kind: CloseKind, reason: &str) {
    match cmd {
        Command::Call { waiter, .. } | Command::LegacyCall { waiter, .. } => {
            let _ = waiter.send(Err(Error::closed(kind, reason)));
        }
        Command::Subscribe { waiter, local, .. } => {
            local.buffer.close(reason);
            let _ = waiter.send(Err(Error::closed(kind, reason)));
        }
        Command::Send(_)
        | Command::LegacyEmit { .. }
        | Command::Unsubscribe { .. }
        | Command::Forget { .. }
        | Command::Close(..) => {}
    }
}

/// Fails every call handed over until a close request (or the last handle going) arrives.
async fn fail_commands_until_close(rx: &mut mpsc::Receiver<Command>, kind: CloseKind, reason: &str) {
    while let Some(cmd) = rx.recv().await {
        if let Command::Close(..) = cmd {
            return;
        }
        fail_command(cmd, kind, reason);
    }
}

/// A number in [-1, 1] for the backoff jitter; no need for a real random source here.
fn jitter_spread() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() % 2001) as f64 / 1000.0 - 1.0
}
