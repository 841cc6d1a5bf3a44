//! Configuring and opening a client connection.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use webmesh_codec::{
    parse_subprotocol, subprotocol, AnyCodec, Compression, Frame, FrameEncoder, Framing, Limits,
};

use super::{driver, handshake, BlockingClient, Client, ConnectionState, Handle, Shared};
use crate::conn::{self, Io, Keepalive};
use crate::error::{Error, Result};

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

/// A push handler, with the payload type erased.
pub(super) type PushHandler = Arc<dyn Fn(&Frame) + Send + Sync>;

type TokenFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<String, String>> + Send>>;

/// Where a client's bearer token comes from.
#[derive(Clone)]
enum Token {
    Fixed(String),
    /// Asked again before every connection and reconnection, so tokens can be refreshed.
    Provider(Arc<dyn Fn() -> TokenFuture + Send + Sync>),
}

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
    keepalive: Option<Keepalive>,
    reconnect: Option<Reconnect>,
    token: Option<Token>,
    #[cfg(feature = "tls")]
    tls: crate::tls::ClientTls,
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
            outbound_queue: conn::DEFAULT_OUTBOUND_QUEUE,
            headers: Vec::new(),
            push: HashMap::new(),
            keepalive: Some(Keepalive::default()),
            reconnect: None,
            token: None,
            #[cfg(feature = "tls")]
            tls: crate::tls::ClientTls::default(),
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

    /// Ping/pong keepalive, to notice a server that vanished without closing: its calls in
    /// flight then fail at once instead of at their timeouts. `None` turns it off. Default
    /// [`Keepalive::default`].
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Reconnect automatically when the connection drops; see [`Reconnect`]. Default off.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// For `wss://` URLs: trusts the CA certificates in this PEM text (one or more) instead of
    /// the default roots (Mozilla's, from `webpki-roots`): the way to reach a service whose
    /// certificate a private CA signed. Read a file with `std::fs::read`.
    #[cfg(feature = "tls")]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// For `wss://` URLs: presents this certificate chain (PEM, leaf first) and private key
    /// (PEM) to a server that asks for one (mutual TLS).
    #[cfg(feature = "tls")]
    pub fn tls_client_cert_pem(mut self, cert_chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.identity = Some((cert_chain.into(), key.into()));
        self
    }

    /// For `wss://` URLs: this rustls configuration, whole, instead of one built from
    /// [`tls_ca_pem`](Self::tls_ca_pem) and [`tls_client_cert_pem`](Self::tls_client_cert_pem).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.config = Some(Arc::new(config));
        self
    }

    /// Sends `token` as `Authorization: Bearer <token>` with the upgrade request, on every
    /// connection and reconnection. For a token that expires, use
    /// [`token_provider`](Self::token_provider).
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token::Fixed(token.into()));
        self
    }

    /// Asks `provider` for the bearer token before every connection and reconnection, and sends
    /// it as `Authorization: Bearer <token>`: a refreshed token reaches the server the next time
    /// the client connects. An `Err` fails that attempt (a reconnecting client tries again with
    /// backoff).
    ///
    /// ```no_run
    /// # async fn fetch_token() -> Result<String, String> { Ok("t".into()) }
    /// # async fn run() -> Result<(), webmesh::Error> {
    /// let client = webmesh::Client::builder()
    ///     .token_provider(|| async { fetch_token().await })
    ///     .reconnect(webmesh::Reconnect::default())
    ///     .connect("wss://mesh.internal:4269")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<String, String>> + Send + 'static,
    {
        self.token = Some(Token::Provider(Arc::new(move || Box::pin(provider()))));
        self
    }

    /// Adds a header to the WebSocket upgrade request (for example `Authorization`); it is sent
    /// again on every reconnection.
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

    /// Runs `handler` for each declared push message of type `P` (see [`Push`](crate::Push)):
    /// the typed form of [`on_push`](Self::on_push), on the path `P` declares, so that a handler
    /// of the wrong type does not compile. Same rules as `on_push`: it runs on the connection's
    /// task, in order; keep it short.
    ///
    /// ```no_run
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// #[webmesh::push("/stock/low")]
    /// pub struct LowStock { pub sku: String, pub left: u32 }
    ///
    /// # async fn run() -> Result<(), webmesh::Error> {
    /// let client = webmesh::Client::builder()
    ///     .on_push_message(|low: LowStock| println!("{} is low: {} left", low.sku, low.left))
    ///     .connect("ws://127.0.0.1:4269")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_push_message<P, F>(self, handler: F) -> Self
    where
        P: crate::Push,
        F: Fn(P) + Send + Sync + 'static,
    {
        self.on_push(P::PATH, handler)
    }

    /// Connects to `url` (`ws://host[:port][/path]`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`], [`Error::Connect`] when the TCP connection fails, [`Error::Refused`]
    /// when the server answers the upgrade with an HTTP error (503: full), [`Error::Handshake`] for
    /// other upgrade failures (with [`Protocol::V1`]: a server that does not speak v1),
    /// [`Error::ConnectTimeout`] past the connect timeout. Each names the URL.
    pub async fn connect(self, url: &str) -> Result<Client> {
        let after = self.connect_timeout;
        tokio::time::timeout(after, self.connect_inner(url, None))
            .await
            .map_err(|_| Error::ConnectTimeout {
                url: url.to_owned(),
                after,
            })?
    }

    /// Connects over a stream that is already open (a Unix socket, a stream from another
    /// transport, an in-memory pipe): runs the WebSocket upgrade on it for `url` (its host and
    /// path go into the request) and speaks webmesh over it. Nothing is dialed, so
    /// [`reconnect`](Self::reconnect) is not available here.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with `reconnect` set; otherwise as [`connect`](Self::connect).
    pub async fn connect_stream<S>(self, stream: S, url: &str) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.reconnect.is_some() {
            return Err(Error::Config(
                "reconnect needs a URL to dial again: it is not available with connect_stream".into(),
            ));
        }
        let after = self.connect_timeout;
        tokio::time::timeout(after, self.connect_inner(url, Some(Io::new(stream))))
            .await
            .map_err(|_| Error::ConnectTimeout {
                url: url.to_owned(),
                after,
            })?
    }

    async fn connect_inner(self, url: &str, stream: Option<Io>) -> Result<Client> {
        let parsed = handshake::WsUrl::parse(url)?;
        #[cfg(feature = "tls")]
        let tls = if parsed.tls { Some(self.tls.build()?) } else { None };
        let dialer = Dialer {
            url: url.to_owned(),
            parsed,
            #[cfg(feature = "tls")]
            tls,
            codec: self.codec.clone(),
            protocol: self.protocol,
            headers: self.headers,
            token: self.token,
            connect_timeout: self.connect_timeout,
        };
        let (io, framing) = match stream {
            Some(io) => dialer.upgrade(io).await?,
            None => dialer.dial().await?,
        };
        let (cmd, rx) = mpsc::channel(self.outbound_queue);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected);
        let shared = Arc::new(Shared {
            encoder: FrameEncoder::new(framing, self.codec, self.compression),
            limits: self.limits,
            next_id: AtomicU64::new(1),
            state: state_rx,
            push: self.push,
            url: url.to_owned(),
            reconnects: self.reconnect.is_some(),
            congested: std::sync::atomic::AtomicBool::new(false),
        });
        let driver = driver::Driver::new(io, shared.clone(), rx, dialer, self.keepalive, self.reconnect);
        tokio::spawn(driver.run(state_tx));
        tracing::debug!(
            url,
            framing = framing.name(),
            codec = shared.encoder.codec().name(),
            "connected"
        );
        Ok(Client {
            inner: Arc::new(Handle { cmd, shared }),
            timeout: self.timeout,
            parent: None,
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

/// Automatic reconnection: exponential backoff with jitter, a maximum delay, and a reset after a
/// healthy period.
///
/// Off by default, on purpose. A reconnection is a new connection: the server's per-connection
/// state and any pushes sent meanwhile are gone, and a 0.1.2 server cannot tell the two apart.
/// A client that hid that would surprise; so turning it on is a decision in the code. Either way,
/// calls in flight when the connection drops fail at once with [`Error::Closed`], and calls made
/// while it is down fail at once too; [`Client::call_idempotent`] waits for the reconnection and
/// retries, within the call's timeout, for calls that are safe to repeat.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use webmesh::{Client, Reconnect};
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// let client = Client::builder()
///     .reconnect(Reconnect::default().max_delay(Duration::from_secs(5)))
///     .header("authorization", "Bearer t0ken") // sent again on each reconnection
///     .connect("ws://127.0.0.1:4269")
///     .await?;
/// let mut states = client.watch_state();
/// tokio::spawn(async move {
///     while let Some(state) = states.changed().await {
///         println!("connection: {state:?}");
///     }
/// });
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Reconnect {
    /// Delay before the first attempt. Default 100 ms.
    pub initial_delay: Duration,
    /// Upper bound of the delay. Default 10 s.
    pub max_delay: Duration,
    /// Factor between consecutive delays. Default 2.
    pub multiplier: f64,
    /// Random spread of each delay, as a fraction (0.2: ±20 %), so that many clients of a
    /// restarted server do not reconnect in lockstep. Default 0.2.
    pub jitter: f64,
    /// A connection that lived this long resets the backoff to `initial_delay`. Default 10 s.
    pub healthy_after: Duration,
    /// Give up (the client closes for good) after this many failed attempts in a row; `None`
    /// tries forever. Default `None`.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            healthy_after: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// Sets [`initial_delay`](Self::initial_delay).
    #[must_use]
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets [`multiplier`](Self::multiplier) (at least 1).
    #[must_use]
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m.max(1.0);
        self
    }

    /// Sets [`jitter`](Self::jitter) (0 to 1).
    #[must_use]
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j.clamp(0.0, 1.0);
        self
    }

    /// Sets [`healthy_after`](Self::healthy_after).
    #[must_use]
    pub fn healthy_after(mut self, d: Duration) -> Self {
        self.healthy_after = d;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    #[must_use]
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }

    /// The delay before attempt `attempt` (1-based), `spread` in [-1, 1] choosing the jitter.
    pub(crate) fn delay(&self, attempt: u32, spread: f64) -> Duration {
        let exp = self.multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial_delay.as_secs_f64() * exp;
        let capped = base.min(self.max_delay.as_secs_f64());
        let jittered = capped * (1.0 + self.jitter * spread.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.max_delay.as_secs_f64()))
    }
}

/// Everything needed to open (and reopen) the connection.
pub(super) struct Dialer {
    pub(super) url: String,
    parsed: handshake::WsUrl,
    /// For `wss://`: the TLS configuration.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    codec: AnyCodec,
    protocol: Protocol,
    headers: Vec<(String, String)>,
    token: Option<Token>,
    connect_timeout: Duration,
}

impl Dialer {
    /// TCP connect and WebSocket upgrade, within the connect timeout.
    pub(super) async fn dial(&self) -> Result<(Io, Framing)> {
        let after = self.connect_timeout;
        tokio::time::timeout(after, self.dial_inner())
            .await
            .map_err(|_| Error::ConnectTimeout {
                url: self.url.clone(),
                after,
            })?
    }

    async fn dial_inner(&self) -> Result<(Io, Framing)> {
        let tcp = TcpStream::connect((self.parsed.host.as_str(), self.parsed.port))
            .await
            .map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(config) = &self.tls {
            let name = rustls::pki_types::ServerName::try_from(self.parsed.host.clone()).map_err(|_| {
                Error::InvalidUrl {
                    url: self.url.clone(),
                    reason: "the host is not a valid TLS server name",
                }
            })?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| Error::Handshake {
                    url: self.url.clone(),
                    reason: crate::tls::handshake_failure(&e),
                })?;
            return self.upgrade(Io::new(tls)).await;
        }
        self.upgrade(Io::tcp(tcp)).await
    }

    /// The WebSocket upgrade on an open stream, and the framing the server took.
    async fn upgrade(&self, mut io: Io) -> Result<(Io, Framing)> {
        let offered: Vec<String> = match self.protocol {
            Protocol::Legacy => Vec::new(),
            Protocol::Auto | Protocol::V1 => vec![subprotocol(&self.codec)],
        };
        let mut headers = self.headers.clone();
        let token = match &self.token {
            None => None,
            Some(Token::Fixed(t)) => Some(t.clone()),
            Some(Token::Provider(provider)) => Some(provider().await.map_err(|e| Error::Handshake {
                url: self.url.clone(),
                reason: format!("the token provider failed: {e}"),
            })?),
        };
        if let Some(t) = token {
            headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
        }
        let up = handshake::upgrade(&mut io, &self.parsed, &offered, &headers).await?;
        let failed = |reason: String| Error::Handshake {
            url: self.url.clone(),
            reason,
        };
        let framing = match (&up.protocol, self.protocol) {
            (Some(p), _) if parse_subprotocol(p) == Some(self.codec.name()) => Framing::V1,
            (Some(p), _) => return Err(failed(format!("unexpected subprotocol {p:?}"))),
            (None, Protocol::V1) => {
                return Err(failed(
                    "the server does not speak webmesh v1 (a 0.1.2 server?)".into(),
                ))
            }
            (None, _) => Framing::Legacy,
        };
        // What came after the server's answer is the start of its first frames: they are
        // read again, by the socket's frame reader.
        io.unread(&up.leftover);
        Ok((io, framing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let r = Reconnect::default();
        let ms = |a, s| r.delay(a, s).as_millis();
        assert_eq!(ms(1, 0.0), 100);
        assert_eq!(ms(2, 0.0), 200);
        assert_eq!(ms(4, 0.0), 800);
        assert_eq!(ms(30, 0.0), 10_000, "capped at max_delay");
        assert_eq!(ms(1000, 0.0), 10_000, "no overflow");
        assert_eq!(ms(1, 1.0), 120);
        assert_eq!(ms(1, -1.0), 80);
        assert_eq!(ms(30, 1.0), 10_000, "jitter never passes the cap");
    }
}
