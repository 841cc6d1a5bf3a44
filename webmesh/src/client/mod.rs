//! The client: calls routes on a webmesh-rs server (v1) or a Python webmesh 0.1.2 server
//! (legacy).

mod blocking;
mod driver;
mod handshake;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webmesh_codec::{
    code, parse_subprotocol, subprotocol, AnyCodec, Compression, Frame, FrameEncoder, Framing, Kind, Limits,
    WireMessage,
};

pub use blocking::{BlockingClient, CallHandle};

use crate::error::{CallError, Error, Result};
use crate::route::Route;
use crate::transport::{self, close};
use driver::Command;

/// Default [`ClientBuilder::timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which framing a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Offer v1; speak legacy if the server does not take it (a 0.1.2 server). The default.
    #[default]
    Auto,
    /// Offer v1 and fail the connection if the server does not take it.
    V1,
    /// Offer nothing and speak 0.1.2's legacy framing.
    Legacy,
}

type PushHandler = Arc<dyn Fn(&Frame) + Send + Sync>;

/// Configures and connects a [`Client`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use webmesh::{codec::AnyCodec, Client};
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// let client = Client::builder()
///     .codec(AnyCodec::JSON)
///     .timeout(Some(Duration::from_secs(5)))
///     .on_push("/news", |headline: String| println!("news: {headline}"))
///     .connect("ws://127.0.0.1:4269")
///     .await?;
/// let answer: String = client.call_path("/echo", &"hello").await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `connect`"]
#[derive(Clone)]
pub struct ClientBuilder {
    codec: AnyCodec,
    protocol: Protocol,
    compression: Compression,
    limits: Limits,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    outbound_queue: usize,
    headers: Vec<(String, String)>,
    push: HashMap<String, PushHandler>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            codec: AnyCodec::MSGPACK,
            protocol: Protocol::Auto,
            compression: Compression::default(),
            limits: Limits::default(),
            timeout: Some(DEFAULT_CALL_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            outbound_queue: transport::DEFAULT_OUTBOUND_QUEUE,
            headers: Vec::new(),
            push: HashMap::new(),
        }
    }
}

impl ClientBuilder {
    /// The codec. Default msgpack. With a 0.1.2 server it must be the server's serializer
    /// (`AnyCodec::MSGPACK` for `MessagePackSerializer`, `AnyCodec::JSON` for
    /// `StandardJsonSerializer`).
    pub fn codec(mut self, codec: AnyCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Which framing to speak. Default [`Protocol::Auto`].
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// When to compress outgoing v1 frames. Default [`Compression::default`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Frame and inflated-size limits for what the server sends. Default [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a call waits for its reply; `None` waits forever. Default
    /// [`DEFAULT_CALL_TIMEOUT`]. Override per call with [`Client::call_timeout`].
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting (TCP and WebSocket upgrade) may take. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Messages queued for the writer before `call` and `emit` wait. Default 1024.
    pub fn outbound_queue(mut self, n: usize) -> Self {
        self.outbound_queue = n.max(1);
        self
    }

    /// Adds a header to the WebSocket upgrade request (for example `Authorization`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Runs `handler` for each message the server pushes on `path`, with the payload decoded as
    /// `T`. It runs on the connection's reader task, in order: keep it short (hand heavy work to a
    /// channel). A payload that does not decode as `T` is logged and dropped.
    pub fn on_push<T, F>(mut self, path: impl Into<String>, handler: F) -> Self
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        let path = path.into();
        let name = path.clone();
        self.push.insert(
            path,
            Arc::new(move |frame: &Frame| match frame.decode::<T>() {
                Ok(v) => handler(v),
                Err(e) => tracing::warn!(path = %name, error = %e, "pushed payload does not decode"),
            }),
        );
        self
    }

    /// Connects to `url` (`ws://host[:port][/path]`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`], [`Error::Io`] when the TCP connection fails, [`Error::Refused`] when
    /// the server answers the upgrade with an HTTP error (503: full), [`Error::Handshake`] for
    /// other upgrade failures (with [`Protocol::V1`]: a server that does not speak v1),
    /// [`Error::Timeout`] past the connect timeout.
    pub async fn connect(self, url: &str) -> Result<Client> {
        let timeout = self.connect_timeout;
        tokio::time::timeout(timeout, self.connect_inner(url))
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    async fn connect_inner(self, url: &str) -> Result<Client> {
        let parsed = handshake::WsUrl::parse(url)?;
        let mut tcp = TcpStream::connect((parsed.host.as_str(), parsed.port)).await?;
        let _ = tcp.set_nodelay(true);
        let offered: Vec<String> = match self.protocol {
            Protocol::Legacy => Vec::new(),
            Protocol::Auto | Protocol::V1 => vec![subprotocol(&self.codec)],
        };
        let up = handshake::upgrade(&mut tcp, &parsed, &offered, &self.headers).await?;
        let framing = match (&up.protocol, self.protocol) {
            (Some(p), _) if parse_subprotocol(p) == Some(self.codec.name()) => Framing::V1,
            (Some(p), _) => return Err(Error::Handshake(format!("unexpected subprotocol {p:?}"))),
            (None, Protocol::V1) => {
                return Err(Error::Handshake(
                    "the server does not speak webmesh v1 (a 0.1.2 server?)".into(),
                ))
            }
            (None, _) => Framing::Legacy,
        };
        let config = transport::ws_config(&self.limits);
        let ws = WebSocketStream::from_partially_read(tcp, up.leftover, Role::Client, Some(config)).await;
        let (cmd, rx) = mpsc::channel(self.outbound_queue);
        let (closed_tx, closed_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            encoder: FrameEncoder::new(framing, self.codec, self.compression),
            limits: self.limits,
            legacy_locks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: closed_rx,
            push: self.push,
            url: url.to_owned(),
        });
        tokio::spawn(driver::Driver::new(ws, shared.clone(), rx).run(closed_tx));
        tracing::debug!(
            url,
            framing = framing.name(),
            codec = shared.encoder.codec().name(),
            "connected"
        );
        Ok(Client {
            inner: Arc::new(Handle { cmd, shared }),
            timeout: self.timeout,
        })
    }

    /// Connects a [`BlockingClient`], which owns a runtime thread, for code that is not async.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`Error::Io`] when the runtime cannot start.
    pub fn connect_blocking(self, url: &str) -> Result<BlockingClient> {
        BlockingClient::connect_with(self, url)
    }
}

/// What a client's handles and its driver task share.
struct Shared {
    encoder: FrameEncoder,
    limits: Limits,
    /// Legacy framing: one call per path at a time.
    legacy_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
    /// `Some(reason)` once the connection is over.
    closed: watch::Receiver<Option<String>>,
    push: HashMap<String, PushHandler>,
    url: String,
}

impl Shared {
    fn closed_error(&self) -> Option<Error> {
        self.closed.borrow().as_ref().map(|r| Error::Closed(r.clone()))
    }
}

/// The user-facing half. The driver task ends (closing the connection) once the last clone, and
/// with it the command channel, is gone.
struct Handle {
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
/// cancellation), and a v1 server that it may stop (CANCEL).
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
        let h = self.handle;
        let _ = h.cmd.try_send(Command::Forget {
            id: self.id,
            path: self.path.map(str::to_owned),
        });
        if let Some(cancel) = h.shared.encoder.cancel(self.id) {
            let _ = h.cmd.try_send(Command::Send(transport::to_message(cancel)));
        }
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
        }
    }

    /// True once the connection is over.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.borrow().is_some()
    }

    /// Calls route `R` and waits for its typed reply, up to the client's timeout.
    ///
    /// # Errors
    ///
    /// [`CallError::Handler`] with the handler's own error; otherwise [`CallError::Rpc`]:
    /// [`Error::Remote`] (unknown path, bad payload...), [`Error::Timeout`], [`Error::Closed`],
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
        let sent = self.start_call(R::PATH, &request);
        drop(request);
        let frame = self.finish_call(sent?, timeout).await?;
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
        self.send(msg?).await
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
        let sent = self.start_call(path, request);
        let client = self.clone();
        let path = path.to_owned();
        async move {
            let frame = client.finish_call(sent?, client.timeout).await?;
            decode_reply::<Resp, crate::Value>(&frame).map_err(|e| match e {
                CallError::Handler(v) => Error::Remote {
                    code: code::HANDLER.into(),
                    message: format!("handler for {path} returned an error: {v}"),
                },
                CallError::Rpc(e) => e,
            })
        }
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
        async move { client.send(msg?).await }
    }

    /// Closes the connection and waits (briefly) for the server's close answer. Calls still in
    /// flight fail with [`Error::Closed`].
    pub async fn close(&self) {
        let h = &self.inner;
        let _ = h
            .cmd
            .send(Command::Close(close::NORMAL, "client closed".into()))
            .await;
        let mut closed = h.shared.closed.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), closed.wait_for(Option::is_some)).await;
    }

    fn start_emit(&self, path: &str, request: &(impl Serialize + ?Sized)) -> Result<WireMessage> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.closed_error() {
            return Err(e);
        }
        Ok(shared.encoder.notify(path, request)?)
    }

    async fn send(&self, msg: WireMessage) -> Result<()> {
        let h = &self.inner;
        h.cmd
            .send(Command::Send(transport::to_message(msg)))
            .await
            .map_err(|_| closed(&h.shared))
    }

    /// Encodes a call (synchronously: the caller's value is not held across an await).
    fn start_call(&self, path: &str, request: &(impl Serialize + ?Sized)) -> Result<Started> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.closed_error() {
            return Err(e);
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = shared.encoder.call(id, path, request)?;
        Ok(Started {
            id,
            path: path.to_owned(),
            msg: transport::to_message(msg),
        })
    }

    /// Hands an encoded call to the driver and waits for the frame that answers it.
    async fn finish_call(&self, started: Started, timeout: Option<Duration>) -> Result<Frame> {
        let h = &*self.inner;
        let Started { id, path, msg } = started;
        let (waiter, rx) = oneshot::channel();
        match h.shared.encoder.framing() {
            Framing::V1 => {
                h.cmd
                    .send(Command::Call { id, msg, waiter })
                    .await
                    .map_err(|_| closed(&h.shared))?;
                let mut guard = ForgetGuard {
                    handle: h,
                    id,
                    path: None,
                    armed: true,
                };
                let out = wait(rx, timeout, &h.shared).await;
                guard.armed = matches!(out, Err(Error::Timeout(_)));
                out
            }
            Framing::Legacy => {
                // No ids: one call per path at a time, answers matched by path in order.
                let lock = h
                    .shared
                    .legacy_locks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(path.clone())
                    .or_default()
                    .clone();
                let _turn = lock.lock().await;
                h.cmd
                    .send(Command::LegacyCall {
                        id,
                        path: path.clone(),
                        msg,
                        waiter,
                    })
                    .await
                    .map_err(|_| closed(&h.shared))?;
                let mut guard = ForgetGuard {
                    handle: h,
                    id,
                    path: Some(&path),
                    armed: true,
                };
                let out = wait(rx, timeout, &h.shared).await;
                guard.armed = matches!(out, Err(Error::Timeout(_)));
                out
            }
        }
    }
}

/// An encoded call, not yet handed to the driver.
struct Started {
    id: u64,
    path: String,
    msg: Message,
}

fn closed(shared: &Shared) -> Error {
    shared
        .closed_error()
        .unwrap_or_else(|| Error::Closed("connection is closed".into()))
}

async fn wait(
    rx: oneshot::Receiver<Result<Frame>>,
    timeout: Option<Duration>,
    shared: &Shared,
) -> Result<Frame> {
    let got = match timeout {
        Some(d) => tokio::time::timeout(d, rx).await.map_err(|_| Error::Timeout(d))?,
        None => rx.await,
    };
    got.unwrap_or_else(|_| Err(closed(shared)))
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
