//! The task that drives one server connection: reads frames, runs handlers, writes answers.
//!
//! One task owns the socket: no split halves and no lock between a reader and a writer. A request
//! is dispatched inline and its handler polled once at once; most handlers finish there and their
//! answer is written without any task switch. A handler that has to wait stays in a set polled by
//! this same task, so slow handlers do not hold up the others on the connection. Everything that
//! became readable is processed before one flush, so a burst of calls costs one write.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use webmesh_codec::{
    code, decode_frame, peek_v1_header, Error as CodecError, Frame, FrameType, Framing, Kind, WireMessage,
};

use super::handler::{reply_encoder, BoxFuture, Dispatch, ReplyTo};
use super::lifecycle::{self, CLOSE_GRACE};
use super::Shared;
use crate::connection::Connection;
use crate::transport::{self, close};

/// Why serving stopped.
pub(super) enum Stop {
    /// The peer closed or vanished.
    PeerGone,
    /// The peer stopped answering keepalive pings.
    Dead,
    /// The peer stopped reading: nothing more can be written to it.
    Stalled,
    /// We close, with this code and reason.
    Close(u16, String),
}

/// A handler that did not finish at its first poll, with what is needed to answer if it panics.
struct Running {
    fut: BoxFuture<Option<WireMessage>>,
    fallback: Dispatch,
}

impl Future for Running {
    type Output = Option<WireMessage>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        poll_guarded(&mut this.fut, &this.fallback, cx)
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
        Err(_) => {
            let path = fallback.frame.path();
            tracing::error!(path, "handler panicked");
            Poll::Ready(fallback.fail(code::INTERNAL, &format!("handler for {path} panicked")))
        }
    }
}

pub(super) struct Driver {
    ws: WebSocketStream<TcpStream>,
    conn: Connection,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Message>,
    handlers: FuturesUnordered<Running>,
    outbox: transport::Outbox,
    write_failed: bool,
    /// Closing: new calls get `shutting_down` instead of a handler.
    refusing: bool,
    /// The peer's half is done (it closed, or reading failed): read no more.
    read_done: bool,
    timers: transport::Timers,
}

impl Driver {
    pub(super) fn new(
        ws: WebSocketStream<TcpStream>,
        conn: Connection,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Message>,
    ) -> Self {
        let timers = transport::Timers::new(shared.keepalive, shared.stalled_peer_timeout);
        Driver {
            timers,
            ws,
            conn,
            shared,
            rx,
            handlers: FuturesUnordered::new(),
            outbox: transport::Outbox::default(),
            write_failed: false,
            refusing: false,
            read_done: false,
        }
    }

    /// Serves until the peer goes, the connection is closed, or the server shuts down; then lets
    /// the handlers in flight finish (until the server's shutdown deadline, or the shutdown
    /// timeout from now) and closes, within a further [`CLOSE_GRACE`].
    pub(super) async fn run(mut self) {
        let mut shutdown_rx = self.shared.lifecycle.subscribe();
        let conn = self.conn.clone();
        let (stop, deadline) = {
            let mut shutdown = std::pin::pin!(lifecycle::started(&mut shutdown_rx));
            let mut closing = std::pin::pin!(conn.close_requested());
            std::future::poll_fn(|cx| {
                if let Poll::Ready(deadline) = shutdown.as_mut().poll(cx) {
                    let stop = Stop::Close(close::GOING_AWAY, "server shutting down".into());
                    return Poll::Ready((stop, Some(deadline)));
                }
                if let Poll::Ready((code, reason)) = closing.as_mut().poll(cx) {
                    return Poll::Ready((Stop::Close(code, reason), None));
                }
                self.poll_serve(cx).map(|stop| (stop, None))
            })
            .await
        };
        self.conn.mark_closing();
        // Drain: running handlers finish and are answered; new calls are refused with
        // `shutting_down` (a stalled or dead peer's answers are dropped: it reads nothing).
        match stop {
            Stop::Stalled | Stop::Dead => {
                self.write_failed = true;
                self.outbox.queue.clear();
            }
            Stop::Close(..) => self.refusing = true,
            Stop::PeerGone => self.read_done = true,
        }
        let own = Instant::now() + self.shared.shutdown_timeout;
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
                self.poll_drain(cx).map(|()| true)
            })
            .await
        };
        if !drained {
            tracing::warn!(
                left = self.handlers.len(),
                "handlers still running at the shutdown deadline: dropped"
            );
        }
        match stop {
            Stop::Close(code, reason) => {
                tracing::debug!(code, %reason, "closing");
                self.close(code, &reason).await;
            }
            Stop::Dead => tracing::info!("peer stopped answering keepalive pings: dropped"),
            Stop::Stalled => {
                // Its socket is full: the close frame gets a brief chance, no more.
                let frame = Message::Close(Some(transport::close_frame(
                    close::POLICY,
                    "peer is not reading its messages",
                )));
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(100),
                    futures_util::SinkExt::send(&mut self.ws, frame),
                )
                .await;
            }
            Stop::PeerGone => {}
        }
    }

    /// Sends the close frame and waits for the peer's answer, all within [`CLOSE_GRACE`].
    async fn close(&mut self, code: u16, reason: &str) {
        use futures_util::SinkExt;
        let frame = Message::Close(Some(transport::close_frame(code, reason)));
        let ws = &mut self.ws;
        let exchange = async move {
            if ws.send(frame).await.is_ok() {
                // The peer's close answer ends the stream: it then sees a clean close.
                while ws.next().await.is_some() {}
            }
        };
        if tokio::time::timeout(CLOSE_GRACE, exchange).await.is_err() {
            tracing::debug!("no close answer from the peer within the close grace");
        }
    }

    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        loop {
            match self.timers.poll(cx) {
                Poll::Ready(transport::Liveness::Ping) => {
                    self.outbox.queue.push_front(Message::Ping(Bytes::new()))
                }
                Poll::Ready(transport::Liveness::Dead) => return Poll::Ready(Stop::Dead),
                Poll::Ready(transport::Liveness::Stalled) => {
                    tracing::warn!(
                        queued = self.outbox.queue.len(),
                        "peer is not reading its messages: disconnecting"
                    );
                    return Poll::Ready(Stop::Stalled);
                }
                Poll::Pending => {}
            }
            let mut progress = self.poll_write(cx);
            self.poll_outbound(cx, &mut progress);
            self.poll_handlers(cx, &mut progress);
            if self.write_failed {
                return Poll::Ready(Stop::PeerGone);
            }
            if self.outbox.queue.len() < self.shared.outbound_queue
                && self.handlers.len() < self.shared.max_in_flight
            {
                match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Ready(None) => return Poll::Ready(Stop::PeerGone),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(read_error(e)),
                    Poll::Ready(Some(Ok(msg))) => {
                        progress = true;
                        self.timers.heard();
                        if let Some((frame_type, bytes)) = transport::data_of(msg) {
                            if let Some(stop) = self.on_data(frame_type, bytes, cx) {
                                return Poll::Ready(stop);
                            }
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if !progress {
                self.poll_flush(cx);
                if self.write_failed {
                    return Poll::Ready(Stop::PeerGone);
                }
                // Blocked with something to send: the stall timer runs until writing moves again.
                if !self.outbox.queue.is_empty() || self.outbox.unflushed() {
                    self.timers.blocked(cx);
                }
                return Poll::Pending;
            }
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = self.poll_write(cx);
            self.poll_outbound(cx, &mut progress);
            self.poll_handlers(cx, &mut progress);
            if self.refusing
                && !self.read_done
                && !self.write_failed
                && self.outbox.queue.len() < self.shared.outbound_queue
            {
                match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Ready(None | Some(Err(_))) => {
                        progress = true;
                        self.read_done = true;
                    }
                    Poll::Ready(Some(Ok(msg))) => {
                        progress = true;
                        if let Some((frame_type, bytes)) = transport::data_of(msg) {
                            self.refuse(frame_type, &bytes);
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if self.handlers.is_empty() && (self.outbox.queue.is_empty() || self.write_failed) {
                self.poll_flush(cx);
                return if self.outbox.unflushed() && !self.write_failed {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                };
            }
            if !progress {
                self.poll_flush(cx);
                return Poll::Pending;
            }
        }
    }

    /// A request that arrives while the connection closes: a v1 CALL gets `shutting_down` (it did
    /// not run, so it is safe to retry elsewhere); anything else is dropped.
    fn refuse(&mut self, frame_type: FrameType, bytes: &[u8]) {
        match (self.conn.framing(), frame_type, peek_v1_header(bytes)) {
            (Framing::V1, FrameType::Binary, Some((Kind::Call, id))) if id != 0 => {
                let answer = self.conn.encoder().error_plain(
                    id,
                    code::SHUTTING_DOWN,
                    "the connection is closing: the call did not run",
                );
                self.queue(answer);
            }
            _ => tracing::debug!("request while closing: dropped"),
        }
    }

    /// Moves queued messages into the socket while it takes them.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let wrote = !self.write_failed
            && match self.outbox.poll_write(&mut self.ws, cx) {
                Ok(wrote) => wrote,
                Err(_) => {
                    self.write_failed = true;
                    false
                }
            };
        if wrote {
            self.timers.unblocked();
        }
        if self.write_failed {
            self.outbox.queue.clear();
        }
        wrote
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) {
        if self.outbox.unflushed() && !self.write_failed {
            match self.outbox.poll_flush(&mut self.ws, cx) {
                Ok(true) => self.timers.unblocked(),
                Ok(false) => {}
                Err(_) => self.write_failed = true,
            }
        }
    }

    /// Takes pushes and close requests from other tasks.
    fn poll_outbound(&mut self, cx: &mut Context<'_>, progress: &mut bool) {
        while self.outbox.queue.len() < self.shared.outbound_queue {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => {
                    self.outbox.queue.push_back(m);
                    *progress = true;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
    }

    fn poll_handlers(&mut self, cx: &mut Context<'_>, progress: &mut bool) {
        while let Poll::Ready(Some(answer)) = self.handlers.poll_next_unpin(cx) {
            *progress = true;
            if let Some(m) = answer {
                self.outbox.queue.push_back(transport::to_message(m));
            }
        }
    }

    /// Dispatches one data message; `Some` when the connection must close.
    fn on_data(&mut self, frame_type: FrameType, bytes: Bytes, cx: &mut Context<'_>) -> Option<Stop> {
        let framing = self.conn.framing();
        let frame = match decode_frame(
            framing,
            self.conn.encoder().codec(),
            &self.shared.limits,
            frame_type,
            bytes.clone(),
        ) {
            Ok(f) => f,
            Err(e) => return self.bad_frame(framing, &e, &bytes),
        };
        let reply = match frame.kind() {
            Kind::Call if frame.id() != 0 => ReplyTo::Call(frame.id()),
            Kind::Call => return Some(Stop::Close(close::PROTOCOL, "CALL with id 0".into())),
            Kind::Notify => ReplyTo::Nothing,
            Kind::Legacy => ReplyTo::Legacy,
            Kind::Cancel | Kind::Reply | Kind::Error => {
                // This server makes no calls; a CANCEL may be ignored (PROTOCOL.md §4).
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
                    self.queue(answer);
                }
                return None;
            }
        };
        let Some(handler) = self.shared.router.get(frame.path()) else {
            self.not_found(&frame, reply);
            return None;
        };
        let fallback = Dispatch {
            frame: frame.clone(),
            conn: self.conn.clone(),
            reply,
        };
        let dispatch = Dispatch {
            frame,
            conn: self.conn.clone(),
            reply,
        };
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| handler(dispatch)));
        let mut fut = match made {
            Ok(fut) => fut,
            Err(_) => {
                let answer = fallback.fail(code::INTERNAL, "handler panicked");
                self.queue(Ok(answer));
                return None;
            }
        };
        match poll_guarded(&mut fut, &fallback, cx) {
            Poll::Ready(answer) => self.queue(Ok(answer)),
            Poll::Pending => self.handlers.push(Running { fut, fallback }),
        }
        None
    }

    fn queue(&mut self, answer: Result<Option<WireMessage>, CodecError>) {
        match answer {
            Ok(Some(m)) => self.outbox.queue.push_back(transport::to_message(m)),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot encode an answer"),
        }
    }

    fn not_found(&mut self, frame: &Frame, reply: ReplyTo) {
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
                self.queue(msg);
            }
            ReplyTo::Legacy => {
                if let Some(text) = answer {
                    let msg = reply_encoder(self.conn.encoder(), frame).reply(0, path, &text);
                    self.queue(msg);
                }
            }
            ReplyTo::Nothing => {}
        }
    }

    /// A frame that did not decode: PROTOCOL.md §5 says what each class gets.
    fn bad_frame(&mut self, framing: Framing, e: &CodecError, bytes: &[u8]) -> Option<Stop> {
        use CodecError::*;
        match (framing, e) {
            (_, WrongFrameType { .. }) => Some(Stop::Close(close::UNSUPPORTED, e.to_string())),
            (Framing::V1, TruncatedHeader(_) | ReservedFlags(_) | VarintOverflow | PathNotUtf8) => {
                Some(Stop::Close(close::PROTOCOL, e.to_string()))
            }
            (Framing::V1, _) => {
                match peek_v1_header(bytes) {
                    Some((Kind::Call, id)) if id != 0 => {
                        let msg = self
                            .conn
                            .encoder()
                            .error_plain(id, code::BAD_REQUEST, &e.to_string());
                        self.queue(msg);
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

fn read_error(e: tungstenite::Error) -> Stop {
    use tungstenite::Error as WsError;
    match e {
        WsError::Capacity(c) => {
            tracing::warn!(error = %c, "frame over the size limit");
            Stop::Close(close::TOO_BIG, format!("frame too big: {c}"))
        }
        WsError::Protocol(p) => {
            tracing::debug!(error = %p, "websocket protocol error");
            Stop::Close(close::PROTOCOL, p.to_string())
        }
        e => {
            tracing::debug!(error = %e, "connection lost");
            Stop::PeerGone
        }
    }
}
