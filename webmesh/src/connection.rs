//! One peer connected to a server: identity, state, and a way to send to it at any time.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;
use webmesh_codec::{FrameEncoder, Framing};

use crate::error::{CloseKind, Error, Result};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{close, to_message};
use crate::state::{State, States};

/// A connected peer, as a handler or hook sees it. Cheap to clone; every clone is the same
/// connection.
///
/// # Examples
///
/// Count calls per connection and push a message back:
///
/// ```no_run
/// use webmesh::{Connection, Server};
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// struct Calls(u32);
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .on_connect(|conn: &Connection| {
///         conn.state().insert(Calls(0));
///     })
///     .on("/ping", |_: (), conn: Connection| async move {
///         let n = conn.state().with(|c: &mut Calls| {
///             c.0 += 1;
///             c.0
///         });
///         let _ = conn.push("/stats", &n).await;
///         "pong"
///     })
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    peer: Option<SocketAddr>,
    path: String,
    headers: Headers,
    encoder: FrameEncoder,
    state: Extensions,
    /// The server's state, shared by all its connections.
    server_state: Arc<States>,
    /// The client's TLS certificate chain (DER, leaf first), when it presented one.
    peer_certificates: Option<Vec<Vec<u8>>>,
    /// What the server's auth hook returned for this connection.
    identity: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// Pushes, topic messages and news for the driver to send. Pushers and publishers add to it
    /// under its lock; the driver takes all of it at once. (Its queues allocate when first used:
    /// an idle connection holds none.)
    pending: Mutex<Pending>,
    /// How many pushes, and how many topic messages, `pending` holds at most: past that a push
    /// waits (or fails with `Backpressure`) and a publish is a lag.
    bound: usize,
    has_pending: AtomicBool,
    /// Wakes the connection's driver to send the pending news.
    pending_waker: futures_util::task::AtomicWaker,
    /// Wakes pushers waiting for room once the driver took the pushes.
    room: Notify,
    /// Nothing more is sent: the peer is gone, or the driver ended (see `stop_sending`). Set
    /// under `pending`'s lock, so no push or topic message is taken after it.
    gone: AtomicBool,
    #[cfg(feature = "server")]
    hub: Arc<crate::topics::hub::Hub>,
    closing: Notify,
    close_reason: Mutex<Option<(u16, String)>>,
    closed: AtomicBool,
}

/// The upgrade request's headers in one allocation, as `name:value` lines (a header name holds
/// no colon, and a value that is text holds no line break).
#[derive(Default)]
pub(crate) struct Headers(Box<str>);

impl Headers {
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn new<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        for (k, v) in pairs {
            text.push_str(k);
            text.push(':');
            text.push_str(v);
            text.push('\n');
        }
        Headers(text.into_boxed_str())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// What the server knew of a connection when it accepted it.
#[cfg(feature = "server")]
pub(crate) struct Accepted {
    pub(crate) id: u64,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) path: String,
    pub(crate) headers: Headers,
    pub(crate) encoder: FrameEncoder,
    pub(crate) server_state: Arc<States>,
    pub(crate) peer_certificates: Option<Vec<Vec<u8>>>,
    pub(crate) identity: Option<Arc<dyn std::any::Any + Send + Sync>>,
    pub(crate) hub: Arc<crate::topics::hub::Hub>,
    /// Capacity of the connection's push queue and of its topic message queue.
    pub(crate) queue: usize,
}

/// What [`Connection::enqueue`] or [`Connection::offer_topic`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "server"), allow(dead_code))] // a client has no driver to take them
pub(crate) enum Enqueue {
    Sent,
    /// The outbound queue is full: the peer is behind.
    Full,
    Closed,
}

/// Pushes, topic messages and news waiting for the connection's driver.
#[derive(Default)]
#[cfg_attr(not(feature = "server"), allow(dead_code))] // a client has no driver to take them
pub(crate) struct Pending {
    /// Pushes, in the order they were made.
    pub(crate) pushes: std::collections::VecDeque<Message>,
    /// Topic messages, in publish order.
    pub(crate) messages: std::collections::VecDeque<Message>,
    /// Messages missed per topic path: how many, and the last one's sequence number.
    #[cfg(feature = "server")]
    pub(crate) lag: std::collections::BTreeMap<String, (u64, u64)>,
    /// Notices for subscriptions, by subscription id.
    #[cfg(feature = "server")]
    pub(crate) notices: Vec<(u64, crate::topics::NoticeBody)>,
}

/// What the driver takes with the messages: what did not fit (lags) and what became of
/// subscriptions (notices), to go out after the messages.
#[cfg(feature = "server")]
pub(crate) struct News {
    /// Messages missed per topic path: how many, and the last one's sequence number.
    pub(crate) lag: std::collections::BTreeMap<String, (u64, u64)>,
    /// Notices for subscriptions, by subscription id.
    pub(crate) notices: Vec<(u64, crate::topics::NoticeBody)>,
}

impl Connection {
    #[cfg(feature = "server")]
    pub(crate) fn new(a: Accepted) -> Self {
        Connection {
            inner: Arc::new(Inner {
                id: a.id,
                peer: a.peer,
                path: a.path,
                headers: a.headers,
                encoder: a.encoder,
                state: Extensions::default(),
                server_state: a.server_state,
                peer_certificates: a.peer_certificates,
                identity: a.identity,
                pending: Mutex::default(),
                bound: a.queue.max(1),
                has_pending: AtomicBool::new(false),
                pending_waker: futures_util::task::AtomicWaker::new(),
                room: Notify::new(),
                gone: AtomicBool::new(false),
                hub: a.hub,
                closing: Notify::new(),
                close_reason: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A number unique to this connection within its server.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's address; `None` for a stream that has none (a Unix socket, an in-memory pipe:
    /// see `ServerHandle::serve_connection`).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// The identity the server's auth hook returned for this connection (see
    /// `ServerBuilder::auth`), if it is a `T`; `None` without a hook, or for another type.
    pub fn identity<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.identity.as_deref()?.downcast_ref()
    }

    /// The identity, type-erased (to forward it to another node).
    #[cfg(feature = "nats")]
    pub(crate) fn identity_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.inner.identity.as_deref()
    }

    /// The certificate chain the client presented over TLS (DER, its own certificate first), on a
    /// server with mutual TLS; `None` otherwise.
    pub fn peer_certificates(&self) -> Option<&[Vec<u8>]> {
        self.inner.peer_certificates.as_deref()
    }

    /// The request path of the WebSocket upgrade (usually `/`).
    pub fn request_path(&self) -> &str {
        &self.inner.path
    }

    /// A header of the WebSocket upgrade request (name case-insensitive), for example an
    /// `Authorization` header a hook checks.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers.get(name)
    }

    /// The framing the peer speaks: [`Framing::V1`] for webmesh-rs peers, [`Framing::Legacy`] for
    /// Python webmesh 0.1.2 peers.
    pub fn framing(&self) -> Framing {
        self.inner.encoder.framing()
    }

    /// The name of the connection's codec (`"msgpack"`, `"json"`, ...).
    pub fn codec_name(&self) -> &'static str {
        self.inner.encoder.codec().name()
    }

    /// Per-connection state: typed values the handlers and hooks of this connection share. (Values
    /// the server owns and shares with every connection are [`State`](crate::State).)
    pub fn state(&self) -> &Extensions {
        &self.inner.state
    }

    /// Sends a one-way message on `path` to the peer (server push), waiting while the
    /// connection's outbound queue is full.
    ///
    /// A webmesh-rs client hands it to the push handler registered for `path`. A 0.1.2 peer gets
    /// a `{"path", "data"}` map, which it reads as the reply to its next call: push only to peers
    /// that expect it.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection is gone, [`Error::Codec`] when `value` cannot be
    /// encoded.
    pub async fn push<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<()> {
        let mut msg = to_message(self.inner.encoder.notify(path, value)?);
        loop {
            // Listening before trying: room made between the try and the wait is not missed.
            let room = self.inner.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.offer_push(msg) {
                Ok(()) => return Ok(()),
                Err((Enqueue::Full, back)) => msg = back,
                Err(_) => return Err(Error::closed(CloseKind::Lost, "connection is closed")),
            }
            room.await;
        }
    }

    /// Like [`push`](Self::push), without waiting: fails with [`Error::Backpressure`] when the
    /// outbound queue is full.
    pub fn try_push<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<()> {
        let msg = self.inner.encoder.notify(path, value)?;
        self.offer_push(to_message(msg)).map_err(|(e, _)| match e {
            Enqueue::Full => Error::Backpressure,
            _ => Error::closed(CloseKind::Lost, "connection is closed"),
        })
    }

    /// Queues a push for the driver if there is room; gives it back otherwise.
    fn offer_push(&self, message: Message) -> std::result::Result<(), (Enqueue, Message)> {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.gone.load(Ordering::Acquire) {
            return Err((Enqueue::Closed, message));
        }
        if p.pushes.len() >= self.inner.bound {
            return Err((Enqueue::Full, message));
        }
        p.pushes.push_back(message);
        drop(p);
        self.signal_pending();
        Ok(())
    }

    /// Sends a declared push message to the peer: the typed form of [`push`](Self::push), on
    /// the path its type declares (see [`Push`](crate::Push)). Waits while the connection's
    /// outbound queue is full.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub async fn push_message<P: crate::Push>(&self, message: &P) -> Result<()> {
        self.push(P::PATH, message).await
    }

    /// Like [`push_message`](Self::push_message), without waiting: fails with
    /// [`Error::Backpressure`] when the outbound queue is full.
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push).
    pub fn try_push_message<P: crate::Push>(&self, message: &P) -> Result<()> {
        self.try_push(P::PATH, message)
    }

    /// Hands `message` to the outbound queue without waiting.
    #[cfg(feature = "server")]
    pub(crate) fn enqueue(&self, message: Message) -> Enqueue {
        match self.offer_push(message) {
            Ok(()) => Enqueue::Sent,
            Err((e, _)) => e,
        }
    }

    /// Hands topic message `seq` at `path` to the connection without waiting. When its topic
    /// queue is full the message is dropped and counted, for a lag notice.
    #[cfg(feature = "server")]
    pub(crate) fn offer_topic(&self, message: &Message, path: &str, seq: u64) -> Enqueue {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.gone.load(Ordering::Acquire) {
            return Enqueue::Closed;
        }
        let taken = if p.messages.len() < self.inner.bound {
            p.messages.push_back(message.clone());
            Enqueue::Sent
        } else {
            match p.lag.get_mut(path) {
                Some((missed, upto)) => {
                    *missed += 1;
                    *upto = seq;
                }
                None => {
                    p.lag.insert(path.to_owned(), (1, seq));
                }
            }
            Enqueue::Full
        };
        drop(p);
        self.signal_pending();
        taken
    }

    /// Queues a notice for subscription `id`, sent after the topic messages queued before it.
    #[cfg(feature = "server")]
    pub(crate) fn note_notice(&self, id: u64, body: crate::topics::NoticeBody) {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.notices.push((id, body));
        drop(p);
        self.signal_pending();
    }

    /// Tells the driver that `pending` has news: wakes it once per batch, not per message (the
    /// first signal after the driver took the last batch wakes it).
    fn signal_pending(&self) {
        if !self.inner.has_pending.swap(true, Ordering::AcqRel) {
            self.inner.pending_waker.wake();
        }
    }

    /// The pushes and topic news waiting, if any: the pushes, then the topic messages, are moved
    /// into `messages` (an empty queue the driver keeps, so neither side reallocates), the lags
    /// and notices returned, and pushers waiting for room woken. Otherwise `cx` is woken when
    /// some arrives.
    #[cfg(feature = "server")]
    pub(crate) fn take_pending(
        &self,
        cx: &std::task::Context<'_>,
        messages: &mut std::collections::VecDeque<Message>,
    ) -> Option<News> {
        self.inner.pending_waker.register(cx.waker());
        if !self.inner.has_pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        let pushed = !p.pushes.is_empty();
        if pushed {
            messages.extend(p.pushes.drain(..));
            messages.extend(p.messages.drain(..));
        } else {
            std::mem::swap(&mut p.messages, messages);
        }
        let taken = News {
            lag: std::mem::take(&mut p.lag),
            notices: std::mem::take(&mut p.notices),
        };
        drop(p);
        if pushed {
            self.inner.room.notify_waiters();
        }
        Some(taken)
    }

    /// The driver sends nothing more (it ended, its peer is gone, or there never was one):
    /// pushes and topic messages fail from now on, and pushers waiting for room are woken to
    /// fail.
    #[cfg(feature = "server")]
    pub(crate) fn stop_sending(&self) {
        let p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.gone.store(true, Ordering::Release);
        drop(p);
        self.inner.room.notify_waiters();
    }

    /// The server's topics, to publish from a handler, broadcast, or push to a group.
    #[cfg(feature = "server")]
    pub fn topics(&self) -> crate::Topics {
        crate::Topics {
            hub: self.hub().clone(),
        }
    }

    #[cfg(feature = "server")]
    pub(crate) fn hub(&self) -> &Arc<crate::topics::hub::Hub> {
        &self.inner.hub
    }

    /// Adds this connection to `group` (a room): `Topics::to_group` then reaches it. It leaves
    /// every group when it ends.
    #[cfg(feature = "server")]
    pub fn join(&self, group: &str) {
        self.hub().join(self, group);
    }

    /// Removes this connection from `group`.
    #[cfg(feature = "server")]
    pub fn leave(&self, group: &str) {
        self.hub().leave(self, group);
    }

    /// Closes the connection with a normal close frame carrying `reason`. Calls in flight still
    /// finish and are answered first.
    pub fn close(&self, reason: &str) {
        self.close_with(close::NORMAL, reason);
    }

    pub(crate) fn close_with(&self, code: u16, reason: &str) {
        let mut slot = self.inner.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
        drop(slot);
        self.inner.closing.notify_one();
    }

    /// True once the connection is closing or closed: the peer left, [`close`](Self::close) was
    /// called, or the server shuts down. While it closes, calls in flight still finish and are
    /// answered, and pushes are still sent; new calls are refused.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire) || self.inner.gone.load(Ordering::Acquire)
    }

    /// The connection stopped taking calls: it drains, then closes.
    #[cfg(feature = "server")]
    pub(crate) fn mark_closing(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    #[cfg(feature = "server")]
    pub(crate) async fn close_requested(&self) -> (u16, String) {
        loop {
            if let Some(r) = self
                .inner
                .close_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return r;
            }
            self.inner.closing.notified().await;
        }
    }

    #[cfg(feature = "server")]
    pub(crate) fn encoder(&self) -> &FrameEncoder {
        &self.inner.encoder
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .field("framing", &self.framing())
            .field("codec", &self.codec_name())
            .finish()
    }
}

/// What a handler may want to know about the call it serves: the path it came on (a handler
/// registered on several paths can tell them apart, as the Python callbacks' `path` argument
/// does), its correlation id, the connection, and its deadline and cancellation.
///
/// A `#[webmesh::route]` function takes it as `&CallContext` or `CallContext`; a closure as its
/// second argument.
///
/// # Deadlines and cancellation
///
/// A call has a deadline: the time budget its caller sent, or the server's default. When it
/// passes, or the caller cancels (it timed out, or dropped the call), the server stops the
/// handler: its future is dropped, and nothing is sent for a cancelled call. A handler that must
/// clean up, or that hands work to `spawn_blocking` (which cannot be dropped), watches
/// [`is_cancelled`](Self::is_cancelled) or awaits [`cancelled`](Self::cancelled). Calls it
/// makes to other services with `Client::child_of(&call)` inherit the remaining deadline and
/// are cancelled with it.
#[derive(Clone)]
pub struct CallContext {
    frame: webmesh_codec::Frame,
    connection: Connection,
    deadline: Option<std::time::Instant>,
    cancel: Arc<crate::cancel::Cancel>,
}

impl CallContext {
    #[cfg(feature = "server")]
    pub(crate) fn new(
        frame: webmesh_codec::Frame,
        connection: Connection,
        deadline: Option<std::time::Instant>,
        cancel: Arc<crate::cancel::Cancel>,
    ) -> Self {
        CallContext {
            frame,
            connection,
            deadline,
            cancel,
        }
    }

    /// When the call's time is up: its caller's budget, or the server's default deadline.
    /// `None` when it has neither.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    /// The time left before the deadline (zero once it passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()))
    }

    /// True once the call is cancelled or its deadline has passed: its answer is no longer
    /// wanted. For code that cannot be dropped, such as a loop in `spawn_blocking`.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.deadline.is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// Resolves once the call is cancelled or its deadline passes.
    pub async fn cancelled(&self) {
        match self.deadline {
            Some(d) => {
                tokio::select! {
                    () = self.cancel.cancelled() => {}
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(d)) => {}
                }
            }
            None => self.cancel.cancelled().await,
        }
    }

    pub(crate) fn cancel_handle(&self) -> &Arc<crate::cancel::Cancel> {
        &self.cancel
    }

    /// The path the call came on.
    pub fn path(&self) -> &str {
        self.frame.path()
    }

    /// The caller's correlation id; `None` for a call that expects no answer (an emit) and for
    /// 0.1.2 peers, which have no ids.
    pub fn id(&self) -> Option<u64> {
        (self.frame.kind() == webmesh_codec::Kind::Call).then(|| self.frame.id())
    }

    /// True when the caller waits for an answer (a v1 call, or any 0.1.2 request, which gets one
    /// unless the value is null).
    pub fn expects_answer(&self) -> bool {
        matches!(
            self.frame.kind(),
            webmesh_codec::Kind::Call | webmesh_codec::Kind::Legacy
        )
    }

    /// The connection the call came on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The server state of type `T` (registered with `ServerBuilder::state`), as handlers get it
    /// when they take a `State<T>` argument; `None` if the server has none.
    pub fn state<T: 'static>(&self) -> Option<&State<T>> {
        self.connection.inner.server_state.get::<T>()
    }
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("path", &self.path())
            .field("id", &self.id())
            .field("connection", &self.connection)
            .finish()
    }
}

/// A map from type to value: per-connection state.
///
/// Values live behind a mutex: reach them with [`with`](Self::with) (in place) or
/// [`get`](Self::get) (a clone); do not hold them across an `.await`.
#[derive(Default)]
pub struct Extensions {
    map: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
}

impl Extensions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TypeId, Box<dyn Any + Send>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `value`, returning the value of the same type it replaces.
    pub fn insert<T: Send + 'static>(&self, value: T) -> Option<T> {
        self.lock()
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// A clone of the stored `T`.
    pub fn get<T: Clone + Send + 'static>(&self) -> Option<T> {
        self.lock()
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    /// Runs `f` on the stored `T` in place; `None` when there is none.
    pub fn with<T: Send + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.lock()
            .get_mut(&TypeId::of::<T>())
            .and_then(|v| v.downcast_mut::<T>())
            .map(f)
    }

    /// Removes and returns the stored `T`.
    pub fn remove<T: Send + 'static>(&self) -> Option<T> {
        self.lock()
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.lock().len())
            .finish()
    }
}
