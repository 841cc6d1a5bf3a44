//! The client: calls routes on a webmesh-rs server (v1) or a Python webmesh 0.1.2 server
//! (legacy).

mod blocking;
mod builder;
mod driver;
mod handshake;
mod legacy;
mod subscriptions;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use webmesh_codec::{code, Frame, FrameEncoder, Framing, Kind, Limits, WireMessage};

pub use blocking::{BlockingClient, BlockingSubscription, CallHandle};
pub use builder::{ClientBuilder, Protocol, Reconnect, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT};
pub use subscriptions::{SubscribeOptions, Subscription, DEFAULT_SUBSCRIPTION_BUFFER};

use crate::conn::{self, close};
use crate::error::{CallError, CloseKind, Error, Result};
use crate::route::Route;
use crate::topics::Topic;
use builder::PushHandler;
use driver::Command;

/// Where a client's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected: calls go out.
    Connected,
    /// The connection dropped and the client is reconnecting (only with [`Reconnect`]); calls
    /// fail at once meanwhile, except [`Client::call_idempotent`], which waits.
    Reconnecting {
        /// The attempt under way, from 1.
        attempt: u32,
        /// Why the connection dropped.
        reason: String,
    },
    /// Closed for good.
    Closed {
        /// Who closed it, or how it was lost.
        kind: CloseKind,
        /// Why.
        reason: String,
    },
}

impl ConnectionState {
    /// True when connected.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }

    /// True when closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(self, ConnectionState::Closed { .. })
    }
}

/// Observes a client's [`ConnectionState`]; see [`Client::watch_state`].
#[derive(Debug, Clone)]
pub struct StateWatcher {
    rx: watch::Receiver<ConnectionState>,
}

impl StateWatcher {
    /// The state now.
    pub fn current(&self) -> ConnectionState {
        self.rx.borrow().clone()
    }

    /// Waits for the next change and returns the new state; `None` once the client is gone
    /// (after its final [`ConnectionState::Closed`] was seen).
    pub async fn changed(&mut self) -> Option<ConnectionState> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

/// What a client's handles and its driver task share.
struct Shared {
    encoder: FrameEncoder,
    limits: Limits,
    next_id: AtomicU64,
    state: watch::Receiver<ConnectionState>,
    push: HashMap<String, PushHandler>,
    url: String,
    reconnects: bool,
    /// The driver holds calls back (the socket is not taking what it sends): a call handed
    /// over now keeps a timer of its own, as the driver may not take it before its deadline.
    /// While this is false, the driver takes every call already handed over (see
    /// `driver::Calling::held`), deadlines included.
    congested: AtomicBool,
}

impl Shared {
    /// The error a call gets now, if the connection is not up.
    fn closed_error(&self) -> Option<Error> {
        // Connected since the start: one atomic load (`borrow` takes the state's lock, which
        // every call on every worker would share).
        if matches!(self.state.has_changed(), Ok(false)) {
            return None;
        }
        match &*self.state.borrow() {
            ConnectionState::Connected => None,
            ConnectionState::Reconnecting { attempt, reason } => Some(Error::closed(
                CloseKind::Reconnecting { attempt: *attempt },
                format!("disconnected ({reason}); reconnecting, attempt {attempt}"),
            )),
            ConnectionState::Closed { kind, reason } => Some(Error::closed(*kind, reason.clone())),
        }
    }
}

/// The user-facing half. The driver task ends (closing the connection) once the last clone, and
/// with it the command channel, is gone.
pub(crate) struct Handle {
    cmd: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// A connection to a webmesh server. Cheap to clone: clones share the connection, and many calls
/// may be in flight at once (v1), each matched to its own reply by id.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = webmesh::Client::connect("ws://127.0.0.1:4269").await?;
/// let echoed: String = client.call_path("/echo", &"hello").await?;
/// client.emit_path("/log", &"fire and forget").await?;
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
    timeout: Option<Duration>,
    /// The call this client makes its calls for (`child_of`): its deadline and cancellation.
    parent: Option<Arc<Parent>>,
}

/// What a client made with [`Client::child_of`] inherits from the call it serves.
struct Parent {
    deadline: Option<std::time::Instant>,
    cancel: Arc<crate::cancel::Cancel>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.shared.url)
            .field("framing", &self.framing())
            .field("codec", &self.inner.shared.encoder.codec().name())
            .finish()
    }
}

/// Tells the driver to forget a call whose future is dropped before its answer (timeout or
/// cancellation): a v1 call is then withdrawn (not sent if still queued, else CANCELled).
struct ForgetGuard<'a> {
    handle: &'a Handle,
    id: u64,
    path: Option<&'a str>,
    armed: bool,
}

impl Drop for ForgetGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The driver sends the call's CANCEL if the call was written (v1), or drops it unsent.
        let _ = self.handle.cmd.try_send(Command::Forget {
            id: self.id,
            path: self.path.map(str::to_owned),
        });
    }
}

impl Client {
    /// A builder with every default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to `url` with every default; see [`ClientBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Client> {
        ClientBuilder::default().connect(url).await
    }

    /// The framing agreed with the server: [`Framing::V1`] with webmesh-rs, [`Framing::Legacy`]
    /// with a 0.1.2 server.
    pub fn framing(&self) -> Framing {
        self.inner.shared.encoder.framing()
    }

    /// The same client with another default call timeout.
    #[must_use]
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
            parent: self.parent.clone(),
        }
    }

    /// The same client, making its calls on behalf of the call `parent` that a handler serves:
    /// each call gets at most the time `parent` has left (and sends that budget to the server it
    /// calls), and is cancelled, with a CANCEL to that server, when `parent` is cancelled or its
    /// deadline passes. That is how a deadline propagates across services: A calls B, B calls C
    /// with `client_c.child_of(&call)`, and when A gives up, C's handler stops too.
    ///
    /// ```no_run
    /// # fn client_to_c() -> webmesh::Client { unimplemented!() }
    /// # async fn run() -> Result<(), webmesh::Error> {
    /// let to_c = client_to_c();
    /// let server = webmesh::Server::builder()
    ///     .on_fallible("/b", move |n: u64, call: webmesh::CallContext| {
    ///         let c = to_c.child_of(&call);
    ///         async move { c.call_path::<u64>("/c", &n).await.map_err(|e| e.to_string()) }
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn child_of(&self, parent: &crate::CallContext) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout: self.timeout,
            parent: Some(Arc::new(Parent {
                deadline: parent.deadline(),
                cancel: parent.cancel_handle().clone(),
            })),
        }
    }

    /// The budget of a call made now with `timeout`: the smaller of it and what the parent call
    /// has left.
    fn budget(&self, timeout: Option<Duration>) -> Option<Duration> {
        let left = self
            .parent
            .as_ref()
            .and_then(|p| p.deadline)
            .map(|d| d.saturating_duration_since(std::time::Instant::now()));
        match (timeout, left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True once the connection is closed for good.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.state.borrow().is_closed()
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.inner.shared.state.borrow().clone()
    }

    /// A watcher of connection state changes (connected, reconnecting, closed).
    pub fn watch_state(&self) -> StateWatcher {
        StateWatcher {
            rx: self.inner.shared.state.clone(),
        }
    }

    /// Calls route `R` like [`call`](Self::call), and if the connection drops before the answer
    /// (or is down), waits for the client to reconnect and calls again, until the answer or the
    /// client's timeout. Only for calls that are safe to repeat: a dropped call may have run.
    /// Without [`Reconnect`] it is [`call`](Self::call).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call); [`Error::CallTimeout`] when the timeout passes while
    /// reconnecting.
    pub async fn call_idempotent<R: Route>(
        &self,
        request: R::Request,
    ) -> Result<R::Response, CallError<R::Error>>
    where
        R::Request: Clone,
    {
        let deadline = self
            .timeout
            .and_then(|t| Some((tokio::time::Instant::now().checked_add(t)?, t)));
        loop {
            let remaining = deadline.map(|(d, _)| d.saturating_duration_since(tokio::time::Instant::now()));
            let out = self.call_timeout::<R>(request.clone(), remaining).await;
            let retry = matches!(out, Err(CallError::Rpc(Error::Closed { .. })))
                && self.inner.shared.reconnects
                && !self.is_closed();
            if !retry {
                return out;
            }
            let mut watcher = self.watch_state();
            let up = async {
                while !watcher.current().is_connected() {
                    if watcher.changed().await.is_none() || watcher.current().is_closed() {
                        return;
                    }
                }
            };
            match deadline {
                Some((d, total)) => {
                    if tokio::time::timeout_at(d, up).await.is_err() {
                        return Err(CallError::Rpc(Error::CallTimeout {
                            path: R::PATH.to_owned(),
                            after: total,
                        }));
                    }
                }
                None => up.await,
            }
        }
    }

    /// Calls route `R` and waits for its typed reply, up to the client's timeout.
    ///
    /// # Errors
    ///
    /// [`CallError::Handler`] with the handler's own error; otherwise [`CallError::Rpc`]:
    /// [`Error::Remote`] (unknown path, bad payload...), [`Error::CallTimeout`], [`Error::Closed`],
    /// [`Error::StaleReplyPending`] (a 0.1.2 server only),
    /// [`Error::Codec`] when the reply does not decode as `R::Response`.
    pub async fn call<R: Route>(&self, request: R::Request) -> Result<R::Response, CallError<R::Error>> {
        self.call_timeout::<R>(request, self.timeout).await
    }

    /// [`call`](Self::call) with its own timeout (`None`: wait forever).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn call_timeout<R: Route>(
        &self,
        request: R::Request,
        timeout: Option<Duration>,
    ) -> Result<R::Response, CallError<R::Error>> {
        let budget = self.budget(timeout);
        let sent = self.start_call(Cow::Borrowed(R::PATH), &request, budget);
        drop(request);
        let Started { id, path, msg } = sent?;
        let frame = self.finish_call(id, &path, msg, budget).await?;
        decode_reply::<R::Response, R::Error>(&frame)
    }

    /// Sends `request` to route `R` without waiting for anything (fire and forget).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection is gone, [`Error::Codec`] when `request` does not
    /// encode.
    pub async fn emit<R: Route>(&self, request: R::Request) -> Result<()> {
        let msg = self.start_emit(R::PATH, &request);
        drop(request);
        self.send(R::PATH, msg?).await
    }

    /// Calls `path` with an untyped request: the Python `call(target, data)`. The request is
    /// encoded before the first await, so the future does not borrow it.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call); a handler's error arrives as [`Error::Remote`] with code `handler`.
    pub fn call_path<Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &(impl Serialize + ?Sized),
    ) -> impl std::future::Future<Output = Result<Resp>> + Send + 'static {
        let budget = self.budget(self.timeout);
        let sent = self.start_call(Cow::Owned(path.to_owned()), request, budget);
        let client = self.clone();
        async move {
            let Started { id, path, msg } = sent?;
            let frame = client.finish_call(id, &path, msg, budget).await?;
            decode_reply::<Resp, crate::Value>(&frame).map_err(|e| match e {
                CallError::Handler(v) => Error::Remote {
                    code: code::HANDLER.into(),
                    message: format!("handler for {path} returned an error: {v}"),
                },
                CallError::Rpc(e) => e,
            })
        }
    }

    /// Calls `path` with an untyped request and reads the reply as `Resp` and a handler's
    /// error as `E`: [`call_path`](Self::call_path) with the error kept as a value (for tools
    /// that pass errors on, like the `webmesh` CLI), under its own timeout (`None`: wait
    /// forever).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub fn call_path_as<Resp: DeserializeOwned, E: DeserializeOwned>(
        &self,
        path: &str,
        request: &(impl Serialize + ?Sized),
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<Resp, CallError<E>>> + Send + 'static {
        let budget = self.budget(timeout);
        let sent = self.start_call(Cow::Owned(path.to_owned()), request, budget);
        let client = self.clone();
        async move {
            let Started { id, path, msg } = sent?;
            let frame = client.finish_call(id, &path, msg, budget).await?;
            decode_reply::<Resp, E>(&frame)
        }
    }

    /// What the server serves: its routes with their doc comments and JSON Schemas, and the
    /// topics it knows (the introspection route [`DESCRIBE_PATH`](crate::DESCRIBE_PATH)).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] with code `not_found` when the server has introspection off (or is
    /// older); a 0.1.2 server does not answer, so the call times out; otherwise as
    /// [`call`](Self::call).
    pub async fn describe(&self) -> Result<crate::Description> {
        self.call_path(crate::DESCRIBE_PATH, &()).await
    }

    /// Sends to `path` without waiting: the Python `emit(target, data)`.
    ///
    /// # Errors
    ///
    /// As [`emit`](Self::emit).
    pub fn emit_path(
        &self,
        path: &str,
        request: &(impl Serialize + ?Sized),
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let msg = self.start_emit(path, request);
        let client = self.clone();
        let path = path.to_owned();
        async move { client.send(&path, msg?).await }
    }

    /// Closes the connection and waits (briefly) for the server's close answer. Calls still in
    /// flight fail with [`Error::Closed`].
    pub async fn close(&self) {
        let h = &self.inner;
        let _ = h
            .cmd
            .send(Command::Close(close::NORMAL, driver::CLIENT_CLOSED.into()))
            .await;
        let mut state = h.shared.state.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(3), state.wait_for(ConnectionState::is_closed)).await;
    }

    /// Subscribes to topic `T`: a [`Stream`](futures_util::Stream) of its [`Event`]s, from the
    /// messages published after the server answers. Dropping it unsubscribes.
    ///
    /// With [`Reconnect`] on, the subscription survives a reconnection: the client
    /// resubscribes by itself with the last sequence numbers it saw and gets what it missed
    /// (from the server's history), or an [`Event::Gap`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// #[webmesh::topic("/orders/created")]
    /// pub struct OrderCreated { pub id: u64 }
    ///
    /// # async fn run(client: webmesh::Client) -> Result<(), webmesh::Error> {
    /// let mut orders = client.subscribe::<OrderCreated>().await?;
    /// while let Some(event) = orders.next().await {
    ///     match event {
    ///         webmesh::Event::Message { value, .. } => println!("order {}", value.id),
    ///         other => println!("{other:?}"), // lagged, gap, closed
    ///     }
    /// }
    /// # Ok(()) }
    /// # impl std::fmt::Debug for OrderCreated {
    /// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("order") }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the server refuses (`forbidden` by an
    /// [`authorize`](crate::ServerBuilder::authorize) rule, say); [`Error::Config`] on a 0.1.2
    /// server, which has no topics; otherwise as [`call`](Self::call).
    ///
    /// [`Event`]: crate::Event
    /// [`Event::Gap`]: crate::Event::Gap
    pub async fn subscribe<T: Topic>(&self) -> Result<Subscription<T>> {
        self.subscribe_with(SubscribeOptions::default()).await
    }

    /// Like [`subscribe`](Self::subscribe), with options: a concrete path of a pattern topic, the
    /// buffer size, the lag policy.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe); [`Error::Config`] when the path is not one of the
    /// topic's.
    pub async fn subscribe_with<T: Topic>(&self, options: SubscribeOptions) -> Result<Subscription<T>> {
        let path = options.path.clone().unwrap_or_else(|| T::PATH.to_owned());
        if !crate::topics::matches(T::PATH, &path) {
            return Err(Error::Config(format!(
                "{path:?} is not a path of the topic {:?}",
                T::PATH
            )));
        }
        self.subscribe_at(path, options).await
    }

    /// Subscribes to the topic at `path` (a path, or a pattern with `*` segments) without a
    /// Rust type for it: its messages arrive as [`Value`](crate::Value)s. For tools and
    /// gateways; typed code uses [`subscribe`](Self::subscribe). `options.path` is ignored.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_untyped(
        &self,
        path: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription<crate::Value>> {
        self.subscribe_at(path.to_owned(), options).await
    }

    async fn subscribe_at<T>(&self, path: String, options: SubscribeOptions) -> Result<Subscription<T>> {
        let h = &self.inner;
        let shared = &h.shared;
        let id = self.topic_frame_id("subscribing")?;
        let buffer = subscriptions::Buffer::new(options.buffer, options.on_lag);
        let local = subscriptions::Local::new(path.clone(), options.on_lag, buffer.clone());
        let msg = conn::to_message(
            shared
                .encoder
                .v1_frame(Kind::Subscribe, id, &path, &local.body(None))?,
        );
        let subscription = Subscription {
            id,
            path,
            buffer,
            handle: h.clone(),
            _topic: std::marker::PhantomData,
        };
        let (waiter, rx) = oneshot::channel();
        h.cmd
            .send(Command::Subscribe {
                id,
                local,
                msg,
                waiter,
            })
            .await
            .map_err(|_| closed(shared))?;
        // On any failure from here, dropping `subscription` unsubscribes.
        let answer = async { rx.await.unwrap_or_else(|_| Err(closed(shared))) };
        let frame = match self.timeout {
            Some(after) => tokio::time::timeout(after, answer)
                .await
                .map_err(|_| Error::CallTimeout {
                    path: subscription.path.clone(),
                    after,
                })??,
            None => answer.await?,
        };
        decode_reply::<serde::de::IgnoredAny, crate::NoError>(&frame).map_err(Error::from)?;
        Ok(subscription)
    }

    /// Publishes `message` on topic `T` through the server, which passes it on to the topic's
    /// subscribers if a [`client_publish`](crate::ServerBuilder::client_publish) rule lets this
    /// connection; how many connections took it.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] with code `forbidden` when no rule allows it; [`Error::Config`] when the
    /// topic is a pattern (use [`publish_at`](Self::publish_at)); otherwise as
    /// [`call`](Self::call).
    pub async fn publish<T: Topic>(&self, message: &T) -> Result<usize> {
        self.publish_at(T::PATH, message).await
    }

    /// Publishes `message` at `path`, a concrete path of its topic's pattern.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish); [`Error::Config`] when `path` is not a concrete path of
    /// the topic.
    pub async fn publish_at<T: Topic>(&self, path: &str, message: &T) -> Result<usize> {
        if !crate::topics::matches(T::PATH, path) || crate::topics::is_pattern(path) {
            return Err(Error::Config(format!(
                "{path:?} is not a concrete path of the topic {:?}",
                T::PATH
            )));
        }
        let shared = &self.inner.shared;
        let id = self.topic_frame_id("publishing")?;
        let msg = conn::to_message(shared.encoder.v1_frame(Kind::Publish, id, path, message)?);
        let frame = self.finish_call(id, path, msg, self.timeout).await?;
        decode_reply::<usize, crate::NoError>(&frame).map_err(Error::from)
    }

    /// The id of a new topic frame, if the connection can carry one (`doing`: what for).
    fn topic_frame_id(&self, doing: &str) -> Result<u64> {
        let shared = &self.inner.shared;
        if shared.encoder.framing() == Framing::Legacy {
            return Err(Error::Config(format!(
                "a webmesh 0.1.2 server has no topics: {doing} needs a v1 server"
            )));
        }
        if let Some(e) = shared.closed_error() {
            return Err(e);
        }
        Ok(shared.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn start_emit(&self, path: &str, request: &(impl Serialize + ?Sized)) -> Result<WireMessage> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.closed_error() {
            return Err(e);
        }
        Ok(shared.encoder.notify(path, request)?)
    }

    /// Hands an emit to the driver. A legacy emit goes in order with its path's calls: a 0.1.2
    /// server answers it if its callback returns a value.
    async fn send(&self, path: &str, msg: WireMessage) -> Result<()> {
        let h = &self.inner;
        let msg = conn::to_message(msg);
        let cmd = match h.shared.encoder.framing() {
            Framing::V1 => Command::Send(msg),
            Framing::Legacy => Command::LegacyEmit {
                path: path.to_owned(),
                msg,
            },
        };
        h.cmd.send(cmd).await.map_err(|_| closed(&h.shared))
    }

    /// Encodes a call (synchronously: the caller's value is not held across an await).
    fn start_call(
        &self,
        path: Cow<'static, str>,
        request: &(impl Serialize + ?Sized),
        budget: Option<Duration>,
    ) -> Result<Started> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.closed_error() {
            return Err(e);
        }
        if self.parent.as_ref().is_some_and(|p| p.cancel.is_cancelled()) {
            return Err(Error::Cancelled {
                path: path.into_owned(),
            });
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // The server learns how long the answer is awaited (a v1 deadline).
        let msg = match budget {
            Some(b) => shared.encoder.call_within(id, &path, request, b)?,
            None => shared.encoder.call(id, &path, request)?,
        };
        Ok(Started {
            id,
            path,
            msg: conn::to_message(msg),
        })
    }

    /// Hands an encoded call to the driver and waits for the frame that answers it, all within
    /// `timeout`, and no longer than the parent call (if any) is wanted.
    async fn finish_call(
        &self,
        id: u64,
        path: &str,
        msg: Message,
        timeout: Option<Duration>,
    ) -> Result<Frame> {
        let span = tracing::debug_span!("call", path = %path, id);
        let timeout_error = |path: &str| Error::CallTimeout {
            path: path.to_owned(),
            after: timeout.unwrap_or_default(),
        };
        if timeout == Some(Duration::ZERO) {
            // No time at all (a parent's budget that is spent, say): the call is not sent.
            return Err(timeout_error(path));
        }
        // A v1 call's deadline is kept by the driver (one timer for all the calls in flight); a
        // legacy call keeps a timer of its own, and no deadline.
        // (No deadline past the clock's range: such a timeout never ends.)
        let legacy = self.inner.shared.encoder.framing() == Framing::Legacy;
        let deadline = timeout
            .filter(|_| !legacy)
            .and_then(|after| tokio::time::Instant::now().checked_add(after));
        let exchange = crate::in_span(self.exchange(id, path, msg, deadline), span);
        let legacy_timeout = timeout.filter(|_| legacy);
        let frame = match (&self.parent, legacy_timeout) {
            (None, None) => exchange.await,
            // A legacy call's timer, a parent's cancellation: boxed, so that the future of
            // every call does not carry room for them.
            (parent, legacy_timeout) => {
                Box::pin(async {
                    let exchange = async {
                        match legacy_timeout {
                            Some(after) => tokio::time::timeout(after, exchange)
                                .await
                                .map_err(|_| timeout_error(path))?,
                            None => exchange.await,
                        }
                    };
                    match parent {
                        // Dropping the exchange on the parent's cancellation sends this call's
                        // CANCEL.
                        Some(parent) => tokio::select! {
                            biased;
                            () = parent.cancel.cancelled() => Err(Error::Cancelled { path: path.to_owned() }),
                            frame = exchange => frame,
                        },
                        None => exchange.await,
                    }
                })
                .await
            }
        };
        let frame = match frame {
            // The driver's deadline: it carries no path.
            Err(Error::CallTimeout { .. }) => return Err(timeout_error(path)),
            other => other?,
        };
        // The server stopped the handler at the deadline this call sent: a timeout, as the
        // caller's own timer would have said a moment later.
        if frame.kind() == Kind::Error {
            if let Ok((body, _)) = frame.decode_error::<serde::de::IgnoredAny>() {
                if body.code == code::DEADLINE_EXCEEDED {
                    return Err(timeout_error(path));
                }
            }
        }
        Ok(frame)
    }

    /// Hands the call to the driver and waits for its answer, which times out at `deadline`
    /// (the driver's timer, or here when the driver may not take it in time; `None` for a
    /// legacy call, whose caller keeps a timer).
    async fn exchange(
        &self,
        id: u64,
        path: &str,
        msg: Message,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Frame> {
        let h = &*self.inner;
        let (waiter, rx) = oneshot::channel();
        // Legacy: no ids; the driver sends one call per path at a time (see `legacy`).
        let (cmd, forget_path) = match h.shared.encoder.framing() {
            Framing::V1 => (
                Command::Call {
                    id,
                    msg,
                    waiter,
                    deadline,
                },
                None,
            ),
            Framing::Legacy => {
                let cmd = Command::LegacyCall {
                    id,
                    path: path.to_owned(),
                    msg,
                    waiter,
                };
                (cmd, Some(path))
            }
        };
        // A v1 call with a deadline keeps a timer of its own only when the driver may not take
        // it in time: it holds calls back (`Shared::congested`), or its channel was full.
        let own_timer = match h.cmd.try_send(cmd) {
            Ok(()) => h.shared.congested.load(Ordering::Acquire),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(closed(&h.shared)),
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                // Rare: boxed, so that every call's future does not carry room for this wait
                // and its timer.
                Box::pin(async {
                    let send = h.cmd.send(cmd);
                    let sent = match deadline {
                        Some(at) => tokio::time::timeout_at(at, send)
                            .await
                            .map_err(|_| driver::timed_out())?,
                        None => send.await,
                    };
                    sent.map_err(|_| closed(&h.shared))
                })
                .await?;
                true
            }
        };
        // From here, a dropped future (timeout, cancellation) tells the driver to forget the call.
        let mut guard = ForgetGuard {
            handle: h,
            id,
            path: forget_path,
            armed: true,
        };
        let answer = match deadline.filter(|_| own_timer) {
            // Timed out: the guard, still armed, sends the call's CANCEL. (Boxed, as above.)
            Some(at) => Box::pin(tokio::time::timeout_at(at, rx))
                .await
                .map_err(|_| driver::timed_out())?,
            None => rx.await,
        };
        guard.armed = false;
        answer.unwrap_or_else(|_| Err(closed(&h.shared)))
    }
}

/// An encoded call, not yet handed to the driver.
struct Started {
    id: u64,
    /// A typed route's path is borrowed: no allocation per call.
    path: Cow<'static, str>,
    msg: Message,
}

fn closed(shared: &Shared) -> Error {
    shared
        .closed_error()
        .unwrap_or_else(|| Error::closed(CloseKind::Local, "connection is closed"))
}

/// Turns an answer frame into the typed outcome.
fn decode_reply<T: DeserializeOwned, E: DeserializeOwned>(frame: &Frame) -> Result<T, CallError<E>> {
    match frame.kind() {
        Kind::Error => {
            let (body, mismatch) = frame.decode_error::<E>()?;
            match (body.code.as_ref(), body.data, mismatch) {
                (code::HANDLER, Some(e), _) => Err(CallError::Handler(e)),
                (code, _, Some(m)) => Err(CallError::Rpc(Error::Remote {
                    code: code.to_owned(),
                    message: format!("{} (error data did not decode: {m})", body.message),
                })),
                (code, _, None) => Err(CallError::Rpc(Error::Remote {
                    code: code.to_owned(),
                    message: body.message.into_owned(),
                })),
            }
        }
        _ => match frame.decode::<T>() {
            Ok(v) => Ok(v),
            // 0.1.2 answers an unknown path with this string.
            Err(_)
                if frame.kind() == Kind::Legacy
                    && frame.decode::<String>().is_ok_and(|s| s == "Path not found") =>
            {
                Err(CallError::Rpc(Error::Remote {
                    code: code::NOT_FOUND.into(),
                    message: format!("Path not found: {}", frame.path()),
                }))
            }
            Err(e) => Err(CallError::Rpc(Error::Codec(e))),
        },
    }
}
