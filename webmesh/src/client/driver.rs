//! The task that drives one client connection: writes calls, reads answers, routes them to the
//! waiting callers and pushes to their handlers; keeps the connection alive, and reconnects it
//! when asked to.
//!
//! One task owns the socket (no split halves, no lock between reader and writer) and the table of
//! calls in flight (no lock around it either: callers hand their call over through a channel).
//! Everything that became readable or sendable is processed before one flush.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webmesh_codec::{code, decode_frame, Frame, Kind};

use super::builder::{Dialer, Reconnect};
use super::legacy::{LegacyPaths, Reply};
use super::{ConnectionState, Shared};
use crate::error::{CloseKind, Error, Result};
use crate::transport::{self, Keepalive, Liveness, Timers};

/// Where a call's answer goes.
pub(super) type Waiter = oneshot::Sender<Result<Frame>>;

/// What callers ask of the driver.
pub(super) enum Command {
    /// Send a v1 CALL and route the answer with this id to `waiter`.
    Call { id: u64, msg: Message, waiter: Waiter },
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
    /// The caller gave up on this call (timeout, dropped future).
    Forget { id: u64, path: Option<String> },
    /// Close the connection with this code and reason.
    Close(u16, String),
}

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
    ws: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    dialer: Dialer,
    keepalive: Option<Keepalive>,
    reconnect: Option<Reconnect>,
    timers: Timers,
    by_id: HashMap<u64, Waiter>,
    legacy: LegacyPaths,
    outbox: transport::Outbox,
    since_sweep: u32,
    /// Set once we asked to close: wait for the server's close answer.
    closing: bool,
}

impl Driver {
    pub(super) fn new(
        ws: WebSocketStream<TcpStream>,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        dialer: Dialer,
        keepalive: Option<Keepalive>,
        reconnect: Option<Reconnect>,
    ) -> Self {
        Driver {
            ws,
            shared,
            rx,
            dialer,
            keepalive,
            reconnect,
            timers: Timers::new(keepalive, None),
            by_id: HashMap::new(),
            legacy: LegacyPaths::default(),
            outbox: transport::Outbox::default(),
            since_sweep: 0,
            closing: false,
        }
    }

    /// Runs the connection, and its successors when reconnecting, to the end.
    pub(super) async fn run(mut self, state: watch::Sender<ConnectionState>) {
        let mut attempt = 0;
        loop {
            let connected_at = Instant::now();
            let end = std::future::poll_fn(|cx| self.poll_run(cx)).await;
            let (kind, reason, final_) = match end {
                End::Closed(r) => (CloseKind::Local, r, true),
                End::Dropped(kind, r) => (kind, r, self.reconnect.is_none()),
            };
            if self.closing {
                // Our close frame is out: give the server a moment to answer it.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    std::future::poll_fn(|cx| self.poll_read_to_end(cx)),
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
                Some(ws) => {
                    self.ws = ws;
                    self.timers = Timers::new(self.keepalive, None);
                    self.outbox = transport::Outbox::default();
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
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
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
    ) -> Option<WebSocketStream<TcpStream>> {
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
                _ = fail_commands_until_close(&mut self.rx, down, &failing) => false,
            };
            if !waited {
                self.finish(state, CloseKind::Local, "client closed".into());
                return None;
            }
            let dialed = tokio::select! {
                d = self.dialer.dial() => Some(d),
                _ = fail_commands_until_close(&mut self.rx, down, &failing) => None,
            };
            match dialed {
                None => {
                    self.finish(state, CloseKind::Local, "client closed".into());
                    return None;
                }
                Some(Ok((ws, framing))) if framing == self.shared.encoder.framing() => return Some(ws),
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
        for (_, w) in self.by_id.drain() {
            let _ = w.send(Err(Error::closed(kind, reason)));
        }
        self.legacy.fail_all(|| Error::closed(kind, reason));
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            match self.timers.poll(cx) {
                Poll::Ready(Liveness::Ping) => self.outbox.queue.push_front(Message::Ping(Bytes::new())),
                Poll::Ready(Liveness::Dead) => {
                    return Poll::Ready(End::Dropped(
                        CloseKind::Lost,
                        "keepalive timeout: the server stopped answering pings".into(),
                    ))
                }
                Poll::Ready(Liveness::Stalled) | Poll::Pending => {}
            }
            let mut progress = match self.poll_write(cx) {
                Ok(p) => p,
                Err(reason) => return Poll::Ready(End::Dropped(CloseKind::Lost, reason)),
            };
            if !self.closing {
                while self.outbox.queue.len() < OUT_HIGH {
                    match self.rx.poll_recv(cx) {
                        Poll::Ready(Some(cmd)) => {
                            progress = true;
                            self.command(cmd);
                        }
                        Poll::Ready(None) => {
                            // Every handle is gone: close.
                            progress = true;
                            self.command(Command::Close(transport::close::NORMAL, "client closed".into()));
                        }
                        Poll::Pending => break,
                    }
                    if self.closing {
                        break;
                    }
                }
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(None) => {
                    return Poll::Ready(self.ended(CloseKind::Lost, "connection closed".into()))
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(self.ended(CloseKind::Lost, format!("connection lost: {e}")))
                }
                Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                    let code = frame.as_ref().map(|f| u16::from(f.code));
                    let reason = match frame {
                        Some(f) if !f.reason.is_empty() => format!("closed by server: {}", f.reason),
                        _ => "closed by server".to_owned(),
                    };
                    return Poll::Ready(self.ended(CloseKind::Remote { code }, reason));
                }
                Poll::Ready(Some(Ok(msg))) => {
                    progress = true;
                    self.timers.heard();
                    self.on_message(msg);
                }
                Poll::Pending => {}
            }
            if !progress {
                if let Err(reason) = self.poll_flush(cx) {
                    return Poll::Ready(End::Dropped(CloseKind::Lost, reason));
                }
                return Poll::Pending;
            }
        }
    }

    /// How the connection ended, given why the stream stopped.
    fn ended(&self, kind: CloseKind, reason: String) -> End {
        if self.closing {
            End::Closed("client closed".into())
        } else {
            End::Dropped(kind, reason)
        }
    }

    /// After our close frame: read (and drop) until the server's close answer ends the stream.
    fn poll_read_to_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = self.poll_flush(cx);
        loop {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(()),
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Call { id, msg, waiter } => {
                self.sweep();
                self.by_id.insert(id, waiter);
                self.outbox.queue.push_back(msg);
            }
            Command::LegacyCall {
                id,
                path,
                msg,
                waiter,
            } => {
                self.sweep();
                self.legacy.call(id, path, msg, waiter, &mut self.outbox.queue);
            }
            Command::LegacyEmit { path, msg } => self.legacy.emit(path, msg, &mut self.outbox.queue),
            Command::Send(msg) => self.outbox.queue.push_back(msg),
            Command::Forget { id, path: None } => {
                self.by_id.remove(&id);
            }
            Command::Forget { id, path: Some(path) } => {
                self.legacy.forget(id, &path, &mut self.outbox.queue);
            }
            Command::Close(code, reason) => {
                self.outbox
                    .queue
                    .push_back(Message::Close(Some(transport::close_frame(code, &reason))));
                self.closing = true;
            }
        }
    }

    /// Drops waiters whose callers are gone (a `Forget` lost to a full channel).
    fn sweep(&mut self) {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.by_id.retain(|_, w| !w.is_closed());
            self.legacy.sweep(&mut self.outbox.queue);
        }
    }

    fn on_message(&mut self, msg: Message) {
        let Some((frame_type, bytes)) = transport::data_of(msg) else {
            return; // ping, pong: tungstenite answers pings
        };
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
            Kind::Reply | Kind::Error => match self.by_id.remove(&frame.id()) {
                Some(w) => {
                    let _ = w.send(Ok(frame));
                }
                None => tracing::debug!(id = frame.id(), "answer to a call no longer waited for"),
            },
            Kind::Legacy => match self.legacy.reply(frame.path(), &mut self.outbox.queue) {
                Reply::Deliver(w) => {
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
                    self.outbox.queue.push_back(transport::to_message(m));
                }
            }
            Kind::Cancel => {}
            _ => {
                if frame.id() != 0 {
                    if let Ok(Some(m)) =
                        encoder.error_plain(frame.id(), code::UNSUPPORTED, "unsupported frame kind")
                    {
                        self.outbox.queue.push_back(transport::to_message(m));
                    }
                }
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

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, String> {
        self.outbox
            .poll_write(&mut self.ws, cx)
            .map_err(|e| format!("connection lost: {e}"))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        self.outbox
            .poll_flush(&mut self.ws, cx)
            .map(drop)
            .map_err(|e| format!("connection lost: {e}"))
    }
}

/// Fails a call handed over while the connection is down.
fn fail_command(cmd: Command, kind: CloseKind, reason: &str) {
    match cmd {
        Command::Call { waiter, .. } | Command::LegacyCall { waiter, .. } => {
            let _ = waiter.send(Err(Error::closed(kind, reason)));
        }
        Command::Send(_) | Command::LegacyEmit { .. } | Command::Forget { .. } | Command::Close(..) => {}
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
