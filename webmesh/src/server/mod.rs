//! The server: serves routes to webmesh-rs and Python webmesh 0.1.2 peers.

mod auth;
mod conn;
mod driver;
pub(crate) mod handler;
pub(crate) mod lifecycle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use webmesh_codec::{AnyCodec, Compression, Limits};

use crate::conn::Keepalive;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::registry::Routes;
use crate::route::Serve;
use crate::state::{State, States};

pub use auth::{Reject, UpgradeRequest, BEARER_QUERY_PARAMETER, BEARER_SUBPROTOCOL_PREFIX};
pub(crate) use handler::{erase_route, Erased, Router};
pub use handler::{FallibleHandler, Handler};
use lifecycle::{Lifecycle, ShutdownOnDrop};

/// Default bind address: every interface, port 4269, as 0.1.2.
pub const DEFAULT_ADDR: &str = "0.0.0.0:4269";
/// Default [`ServerBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`ServerBuilder::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default [`ServerBuilder::outbound_queue`].
pub const DEFAULT_OUTBOUND_QUEUE: usize = crate::conn::DEFAULT_OUTBOUND_QUEUE;
/// Default [`ServerBuilder::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServerBuilder::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ServerBuilder::stalled_peer_timeout`].
pub const DEFAULT_STALLED_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerBuilder::default_deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// Default [`ServerBuilder::max_subscriptions`].
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;

type ConnHook = Arc<dyn Fn(&Connection) + Send + Sync>;
type NotFoundHook = Arc<dyn Fn(&str, &Connection) -> Option<String> + Send + Sync>;

/// Everything every connection of a server shares.
pub(crate) struct Shared {
    pub(crate) router: Router,
    /// Codecs a v1 client may pick, in the server's order; the first is also the legacy default.
    pub(crate) codecs: Vec<AnyCodec>,
    pub(crate) compression: Compression,
    pub(crate) limits: Limits,
    pub(crate) max_connections: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) default_deadline: Option<Duration>,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) stalled_peer_timeout: Option<Duration>,
    pub(crate) on_connect: Option<ConnHook>,
    pub(crate) on_disconnect: Option<ConnHook>,
    pub(crate) on_not_found: Option<NotFoundHook>,
    pub(crate) next_id: AtomicU64,
    pub(crate) live: AtomicUsize,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) states: Arc<States>,
    pub(crate) auth: Option<auth::AuthHook>,
    pub(crate) rules: Vec<auth::Rule>,
    pub(crate) hub: Arc<crate::topics::hub::Hub>,
    pub(crate) client_publish: Vec<PublishRule>,
    pub(crate) max_subscriptions: usize,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Topics clients may publish on through the server, and how.
pub(crate) struct PublishRule {
    pub(crate) pattern: String,
    /// Decodes the message as the topic's type, checks the predicate, publishes: how many
    /// connections took it, or an error code and message.
    #[allow(clippy::type_complexity)]
    pub(crate) publish: Arc<
        dyn Fn(&webmesh_codec::Frame, &Connection) -> std::result::Result<usize, (&'static str, String)>
            + Send
            + Sync,
    >,
}

/// Configures and builds a [`Server`].
///
/// # Examples
///
/// ```no_run
/// use webmesh::Server;
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// let server = Server::builder()
///     .bind("127.0.0.1:4269")
///     .on("/echo", |msg: String| async move { msg })
///     .build()
///     .await?;
/// server.run().await
/// # }
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct ServerBuilder {
    addr: String,
    listener: Option<TcpListener>,
    codec: AnyCodec,
    compression: Compression,
    limits: Limits,
    max_connections: usize,
    max_in_flight: usize,
    outbound_queue: usize,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    default_deadline: Option<Duration>,
    keepalive: Option<Keepalive>,
    stalled_peer_timeout: Option<Duration>,
    registered: bool,
    mounted: Vec<Routes>,
    auth: Option<auth::AuthHook>,
    rules: Vec<auth::Rule>,
    topic_history: (usize, Duration),
    client_publish: Vec<PublishRule>,
    max_subscriptions: usize,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    routes: Vec<(String, String, handler::ErasedHandler)>,
    states: States,
    on_connect: Option<ConnHook>,
    on_disconnect: Option<ConnHook>,
    on_not_found: Option<NotFoundHook>,
    #[cfg(feature = "nats")]
    nats: Option<crate::cluster::Nats>,
    fallback: Option<handler::ErasedHandler>,
    introspection: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            addr: DEFAULT_ADDR.to_owned(),
            listener: None,
            codec: AnyCodec::MSGPACK,
            compression: Compression::default(),
            limits: Limits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            default_deadline: Some(DEFAULT_DEADLINE),
            keepalive: Some(Keepalive::default()),
            stalled_peer_timeout: Some(DEFAULT_STALLED_PEER_TIMEOUT),
            registered: true,
            mounted: Vec::new(),
            auth: None,
            rules: Vec::new(),
            topic_history: (
                crate::topics::DEFAULT_TOPIC_HISTORY,
                crate::topics::DEFAULT_TOPIC_HISTORY_AGE,
            ),
            client_publish: Vec::new(),
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            #[cfg(feature = "tls")]
            tls: None,
            routes: Vec::new(),
            states: States::default(),
            on_connect: None,
            on_disconnect: None,
            on_not_found: None,
            fallback: None,
            #[cfg(feature = "nats")]
            nats: None,
            introspection: true,
        }
    }
}

impl ServerBuilder {
    /// The address to listen on, `host:port`. Default [`DEFAULT_ADDR`]; port 0 picks a free port
    /// ([`Server::local_addr`] tells which).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Serves over TLS (`wss://`) with this rustls configuration, for example from
    /// [`tls::server_config_from_files`](crate::tls::server_config_from_files) (which also does
    /// mutual TLS). The TLS handshake counts in [`handshake_timeout`](Self::handshake_timeout).
    /// A plaintext client on this server gets HTTP 400 saying to use `wss://`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.tls = Some(std::sync::Arc::new(config));
        self
    }

    /// Serves on a listener that is already bound (from a supervisor, socket activation, a test
    /// that picked the port), instead of binding [`bind`](Self::bind)'s address.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The preferred codec: offered first to v1 clients and used for 0.1.2 peers whose frames do
    /// not say (the built-in ones are recognized either way). Default msgpack. msgpack and JSON are
    /// always accepted; a third-party codec set here is accepted too.
    pub fn codec(mut self, codec: AnyCodec) -> Self {
        self.codec = codec;
        self
    }

    /// When to compress outgoing v1 frames. Default [`Compression::default`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Frame and inflated-size limits. Default [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Most connections at once; past it the WebSocket upgrade is refused with HTTP 503.
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Most requests of one connection running at once. Past it the server stops reading from
    /// that connection until one finishes (TCP backpressure), so a fast caller cannot queue
    /// unbounded work. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most messages (answers and pushes) waiting for one connection's socket. At the bound the
    /// server stops reading that peer's requests and [`Connection::push`] waits; a peer that stays
    /// there, not reading, for [`stalled_peer_timeout`](Self::stalled_peer_timeout) is
    /// disconnected. Memory per connection stays bounded either way. Default
    /// [`DEFAULT_OUTBOUND_QUEUE`].
    pub fn outbound_queue(mut self, n: usize) -> Self {
        self.outbound_queue = n.max(1);
        self
    }

    /// How long a peer may leave its messages unread (the socket accepting nothing while
    /// messages wait) before it is disconnected with close code 1008 and the reason "peer is not
    /// reading its messages". `None` waits forever (memory stays bounded by
    /// [`outbound_queue`](Self::outbound_queue)). Default [`DEFAULT_STALLED_PEER_TIMEOUT`].
    pub fn stalled_peer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stalled_peer_timeout = timeout;
        self
    }

    /// Ping/pong keepalive, to notice peers that vanished without closing; `None` turns it off.
    /// Default [`Keepalive::default`] (ping after 20 s of silence, give up 20 s later).
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// How long a client may take to complete the TLS handshake (if any) and the WebSocket
    /// upgrade, together. Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// How long a graceful shutdown lets handlers in flight run: one deadline for the whole
    /// server, counted from [`ServerHandle::shutdown`]. Then every connection gets its close
    /// frame, within a further second. Default [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// The deadline of a request whose caller sent none: a v1 call without a budget (a peer
    /// that predates deadlines, or whose client waits forever), an emit, a 0.1.2 request. When it
    /// passes, the handler is stopped (its future dropped) and a v1 caller gets
    /// `deadline_exceeded`. `None`: no deadline, handlers run to their end. A caller's own budget
    /// always wins, longer or shorter. Default [`DEFAULT_DEADLINE`].
    pub fn default_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.default_deadline = deadline;
        self
    }

    /// Whether to serve every route registered with `#[webmesh::route]` in the linked crates.
    /// Default `true`.
    ///
    /// A crate that nothing in the binary references is not linked, and its routes are then
    /// missing. Mount contract crates with [`routes`](Self::routes) to make that impossible.
    pub fn registered_routes(mut self, on: bool) -> Self {
        self.registered = on;
        self
    }

    /// Serves every route of a crate: the set its [`routes!`](crate::routes!) function returns,
    /// as in `.routes(my_contract::routes())`.
    ///
    /// This is how a server binary should take a contract crate's routes. Naming the crate's
    /// `routes()` links the crate (so its routes cannot silently be left out), and
    /// [`build`](Self::build) fails if the set is empty, which happens when the contract was
    /// compiled without its server half (its `server_feature` is off in this build). Routes that
    /// are also registered are served once.
    pub fn routes(mut self, routes: Routes) -> Self {
        self.mounted.push(routes);
        self
    }

    /// Serves `path` with an async closure (the Python `@server.on(path)`): it gets the decoded
    /// payload, and optionally the [`Connection`]; its value is the reply. A value that
    /// serializes as null (`()`, `None`) sends no reply to a 0.1.2 peer, as 0.1.2 does.
    ///
    /// ```no_run
    /// # use webmesh::{Connection, Server};
    /// let builder = Server::builder()
    ///     .on("/echo", |v: webmesh::Value| async move { v })
    ///     .on("/whoami", |_: (), conn: Connection| async move { format!("{:?}", conn.peer_addr()) });
    /// ```
    pub fn on<Args>(mut self, path: impl Into<String>, handler: impl Handler<Args>) -> Self {
        let name = format!("closure on {:?}", std::any::type_name_of_val(&handler));
        self.routes.push((path.into(), name, handler.into_erased()));
        self
    }

    /// Like [`on`](Self::on) for a closure returning `Result`: `Err(e)` reaches a v1 caller as
    /// [`CallError::Handler(e)`](crate::CallError::Handler); a 0.1.2 peer gets no reply.
    pub fn on_fallible<Args>(mut self, path: impl Into<String>, handler: impl FallibleHandler<Args>) -> Self {
        let name = format!("closure on {:?}", std::any::type_name_of_val(&handler));
        self.routes.push((path.into(), name, handler.into_erased()));
        self
    }

    /// Serves route `R` explicitly (a `#[webmesh::route]` fn's `Route` type, or your own
    /// [`Serve`] impl). Not needed for routes registered through the attribute unless
    /// [`registered_routes`](Self::registered_routes) is off.
    pub fn route<R: Serve>(mut self) -> Self {
        let name = std::any::type_name::<R>().to_owned();
        self.routes
            .push((R::PATH.to_owned(), name, handler::erase_serve::<R>()));
        self
    }

    /// Gives the server a value its handlers take by type: a `State<T>` argument (`&State<T>` in a
    /// `#[webmesh::route]` function, `State<T>` in a closure), for a database pool, a cache, a
    /// configuration. One value per type; a second one of the same type replaces the first.
    ///
    /// A route that takes a state the server was not given makes [`build`](Self::build) fail,
    /// naming the route and the type: it never fails at call time.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), webmesh::Error> {
    /// struct Config { greeting: String }
    ///
    /// let server = webmesh::Server::builder()
    ///     .state(Config { greeting: "hello".into() })
    ///     .on("/greet", |name: String, config: webmesh::State<Config>| async move {
    ///         format!("{} {name}", config.greeting)
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(State::new(value));
        self
    }

    /// Authenticates every connection at the upgrade, before the WebSocket exists: `hook` sees
    /// the [`UpgradeRequest`] (headers, query, offered subprotocols, peer address, TLS client
    /// certificate) and returns an identity, which handlers read with
    /// [`Connection::identity`], or a [`Reject`]: the client gets that HTTP status (401, 403...)
    /// and body instead of the upgrade. It counts in the
    /// [`handshake_timeout`](Self::handshake_timeout).
    ///
    /// ```no_run
    /// use webmesh::{Reject, Server, UpgradeRequest};
    ///
    /// struct User { name: String, admin: bool }
    ///
    /// let builder = Server::builder()
    ///     .auth(|req: &UpgradeRequest| match req.bearer_token().as_deref() {
    ///         None => Err(Reject::unauthorized("a bearer token is required")),
    ///         Some("s3cret-admin") => Ok(User { name: "ada".into(), admin: true }),
    ///         Some(_) => Err(Reject::forbidden("unknown token")),
    ///     })
    ///     .authorize("/admin/*", |user: Option<&User>| user.is_some_and(|u| u.admin));
    /// ```
    pub fn auth<I, F>(mut self, hook: F) -> Self
    where
        I: Send + Sync + 'static,
        F: Fn(&UpgradeRequest) -> Result<I, Reject> + Send + Sync + 'static,
    {
        self.auth = Some(auth::erase_sync(hook));
        self
    }

    /// Like [`auth`](Self::auth), for a hook that waits (a token introspection call, a database
    /// lookup).
    pub fn auth_async<I, F, Fut>(mut self, hook: F) -> Self
    where
        I: Send + Sync + 'static,
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<I, Reject>> + Send + 'static,
    {
        self.auth = Some(auth::erase_async(hook));
        self
    }

    /// Requires `allows` to hold for the identity of the connection (what the
    /// [`auth`](Self::auth) hook returned, if it is an `I`) on every request to `paths`: one
    /// path (`/orders/cancel`), or every path under a prefix (`/admin/*`). A v1 call that fails
    /// it gets the error `forbidden`; an emit is dropped, and a 0.1.2 peer gets no reply (both
    /// logged). Several rules that cover a path must all hold.
    pub fn authorize<I, F>(mut self, paths: &str, allows: F) -> Self
    where
        I: Send + Sync + 'static,
        F: Fn(Option<&I>) -> bool + Send + Sync + 'static,
    {
        self.rules.push(auth::Rule {
            paths: auth::PathPattern::parse(paths),
            allows: Arc::new(move |conn: &Connection| allows(conn.identity::<I>())),
        });
        self
    }

    /// How many messages each topic path keeps for clients that resubscribe after a
    /// reconnection, and for how long. A client that missed more, or older ones, gets a gap
    /// notice instead. Defaults [`DEFAULT_TOPIC_HISTORY`](crate::topics::DEFAULT_TOPIC_HISTORY)
    /// and [`DEFAULT_TOPIC_HISTORY_AGE`](crate::topics::DEFAULT_TOPIC_HISTORY_AGE); 0 keeps
    /// nothing.
    pub fn topic_history(mut self, messages: usize, age: Duration) -> Self {
        self.topic_history = (messages, age);
        self
    }

    /// How many subscriptions one connection may hold at once; past it a `Subscribe` gets the
    /// error `bad_request`. Default [`DEFAULT_MAX_SUBSCRIPTIONS`].
    pub fn max_subscriptions(mut self, n: usize) -> Self {
        self.max_subscriptions = n;
        self
    }

    /// Lets clients publish on topic `T` through the server (`Client::publish`), when `allows`
    /// holds for the identity of their connection (what the [`auth`](Self::auth) hook returned,
    /// if it is an `I`). The message must decode as `T`. Without such a rule, a client's publish
    /// gets the error `forbidden`.
    ///
    /// ```no_run
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// #[webmesh::topic("/chat/*")]
    /// pub struct Said { pub text: String }
    ///
    /// # struct User;
    /// let builder = webmesh::Server::builder()
    ///     .client_publish::<Said, User>(|user| user.is_some());
    /// ```
    pub fn client_publish<T, I>(mut self, allows: impl Fn(Option<&I>) -> bool + Send + Sync + 'static) -> Self
    where
        T: crate::Topic,
        I: Send + Sync + 'static,
    {
        let publish = move |frame: &webmesh_codec::Frame, conn: &Connection| {
            if !allows(conn.identity::<I>()) {
                return Err((
                    webmesh_codec::code::FORBIDDEN,
                    format!("not allowed to publish on {}", frame.path()),
                ));
            }
            let message: T = frame.decode().map_err(|e| {
                (
                    webmesh_codec::code::BAD_REQUEST,
                    format!("bad message for {}: {e}", frame.path()),
                )
            })?;
            conn.topics()
                .publish_at(frame.path(), &message)
                .map_err(|e| (webmesh_codec::code::BAD_REQUEST, e.to_string()))
        };
        self.client_publish.push(PublishRule {
            pattern: T::PATH.to_owned(),
            publish: Arc::new(publish),
        });
        self
    }

    /// Runs `hook` for each new connection, before its first request is read.
    pub fn on_connect(mut self, hook: impl Fn(&Connection) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` when a connection has ended, after its last request finished.
    pub fn on_disconnect(mut self, hook: impl Fn(&Connection) + Send + Sync + 'static) -> Self {
        self.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` for a request on a path with no route. What it returns is the answer: a 0.1.2
    /// peer gets it as the reply (`None`: no reply), a v1 caller gets it as the message of a
    /// `not_found` error. Without a hook, a 0.1.2 peer gets `"Path not found"` (as 0.1.2 sends)
    /// and a v1 caller `"no route at <path>"`.
    pub fn on_not_found(
        mut self,
        hook: impl Fn(&str, &Connection) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.on_not_found = Some(Arc::new(hook));
        self
    }

    /// Answers every path that has no route with `handler` (a closure as for [`on`](Self::on)),
    /// instead of `not_found`: a catch-all, for a proxy, a mock or an echo server.
    /// [`CallContext::path`](crate::CallContext::path) tells the handler which path was called.
    ///
    /// ```no_run
    /// # use webmesh::{CallContext, Server};
    /// // Echo whatever arrives, on any path.
    /// let builder = Server::builder().fallback(|v: webmesh::Value| async move { v });
    /// ```
    pub fn fallback<Args>(mut self, handler: impl Handler<Args>) -> Self {
        self.fallback = Some(handler.into_erased());
        self
    }

    /// Joins a cluster through NATS (feature `nats`): calls to paths this server has no route
    /// for go to the nodes that serve them, publishes reach the subscribers of every node. Takes
    /// a URL (`"nats://127.0.0.1:4222"`) or a [`Nats`](crate::cluster::Nats) with options. See
    /// [`cluster`](crate::cluster).
    ///
    /// [`build`](Self::build) connects, and fails with [`Error::Cluster`] when it cannot; later
    /// outages are retried forever, and calls that need another node meanwhile fail with
    /// `unavailable`.
    #[cfg(feature = "nats")]
    pub fn nats(mut self, nats: impl Into<crate::cluster::Nats>) -> Self {
        self.nats = Some(nats.into());
        self
    }

    /// Whether to answer the introspection route [`DESCRIBE_PATH`](crate::DESCRIBE_PATH) with
    /// a [`Description`](crate::Description) of every route and topic (paths, doc comments,
    /// JSON Schemas). Default `true`; turn it off to keep what a server serves to itself.
    pub fn introspection(mut self, on: bool) -> Self {
        self.introspection = on;
        self
    }

    /// Checks the routes and binds the listening socket.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateRoute`] naming both routes when two share a path; [`Error::Config`] when
    /// a set of [`routes`](Self::routes) is empty; [`Error::MissingState`] naming the route and the
    /// type when a route takes a [`state`](Self::state) the server was not given;
    /// [`Error::Bind`] naming the address when it cannot be bound.
    pub async fn build(self) -> Result<Server> {
        let mut router = Router::default();
        if self.registered {
            router.add_registered()?;
        }
        for routes in &self.mounted {
            router.mount(routes)?;
        }
        for (path, name, handler) in self.routes {
            router.add(&path, name, handler)?;
        }
        router.check_state(&self.states)?;
        #[cfg(feature = "nats")]
        let joined = match &self.nats {
            Some(_) if self.fallback.is_some() => {
                return Err(Error::Config(
                    "a fallback and a cluster both answer paths without a route: choose one".into(),
                ));
            }
            Some(cfg) => Some(crate::cluster::connect(cfg, self.limits, self.compression).await?),
            None => None,
        };
        #[cfg(not(feature = "nats"))]
        let gather = None;
        #[cfg(feature = "nats")]
        let gather = joined.as_ref().map(|j| j.link.gatherer());
        #[cfg(feature = "nats")]
        if let Some(joined) = &joined {
            router.set_forwarder(joined.link.forwarder());
        }
        if let Some(fallback) = self.fallback {
            router.set_fallback(fallback);
        }
        if self.introspection {
            router.serve_description(gather)?;
        }
        let bind_error = |source| Error::Bind {
            addr: self.addr.clone(),
            source,
        };
        let listener = match self.listener {
            Some(l) => l,
            None => TcpListener::bind(&self.addr).await.map_err(bind_error)?,
        };
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let mut codecs = vec![self.codec.clone()];
        for c in [AnyCodec::MSGPACK, AnyCodec::JSON] {
            if !codecs.contains(&c) {
                codecs.push(c);
            }
        }
        let lifecycle = Arc::new(Lifecycle::new(self.shutdown_timeout));
        let codecs_for_hub = codecs.clone();
        let states = Arc::new(self.states);
        let shared = Arc::new(Shared {
            router,
            codecs,
            compression: self.compression,
            limits: self.limits,
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            outbound_queue: self.outbound_queue,
            handshake_timeout: self.handshake_timeout,
            shutdown_timeout: self.shutdown_timeout,
            default_deadline: self.default_deadline,
            keepalive: self.keepalive,
            stalled_peer_timeout: self.stalled_peer_timeout,
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            on_not_found: self.on_not_found,
            next_id: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            lifecycle: lifecycle.clone(),
            states,
            auth: self.auth,
            rules: self.rules,
            hub: Arc::new(crate::topics::hub::Hub::new(
                &codecs_for_hub,
                self.compression,
                self.topic_history.0,
                self.topic_history.1,
            )),
            client_publish: self.client_publish,
            max_subscriptions: self.max_subscriptions,
            #[cfg(feature = "tls")]
            tls: self.tls.map(tokio_rustls::TlsAcceptor::from),
        });
        #[cfg(feature = "nats")]
        if let Some(joined) = joined {
            shared.hub.set_bridge(joined.link.bridge());
            crate::cluster::start(joined, shared.clone());
        }
        let routes = shared.router.paths().count();
        if routes == 0 {
            tracing::warn!(
                addr = %local_addr,
                "webmesh server has no routes: every call gets not_found. Mount contract crates \
                 with `ServerBuilder::routes(contract::routes())`"
            );
        }
        tracing::info!(addr = %local_addr, routes, "webmesh server listening");
        Ok(Server {
            listener,
            local_addr,
            shared: shared.clone(),
            handle: ServerHandle {
                local_addr,
                lifecycle: lifecycle.clone(),
                shared: shared.clone(),
            },
            stop_on_drop: ShutdownOnDrop(lifecycle),
        })
    }

    /// Builds the server and runs it on a thread of its own with its own runtime, for programs
    /// that are not async (the Python `start(threaded=True)` plus `await_started()`): returns
    /// once the socket is bound.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), or [`Error::Io`](crate::Error::Io) when the runtime or thread cannot be made.
    pub fn start_threaded(self) -> Result<BlockingServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("webmesh-server")
            .build()?;
        let server = runtime.block_on(self.build())?;
        let handle = server.handle();
        let thread = std::thread::Builder::new()
            .name("webmesh-server-main".into())
            .spawn(move || {
                if let Err(e) = runtime.block_on(server.run()) {
                    tracing::error!(error = %e, "webmesh server stopped with an error");
                }
                // Every connection has closed by now (`run` waits for them); nothing is cut short.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(BlockingServer {
            handle,
            thread: Some(thread),
        })
    }
}

/// A bound server, ready to run. Dropping it without running it releases the port.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
    stop_on_drop: ShutdownOnDrop,
}

impl Server {
    /// A builder with every default.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A server with every default on a listener that is already bound; see
    /// [`ServerBuilder::listener`].
    ///
    /// # Errors
    ///
    /// As [`ServerBuilder::build`].
    pub async fn from_listener(listener: TcpListener) -> Result<Server> {
        Server::builder().listener(listener).build().await
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to shut the server down once it runs.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The server's topics: publish, broadcast, push to groups, from anywhere.
    pub fn topics(&self) -> crate::Topics {
        self.handle.topics()
    }

    /// The paths served.
    pub fn paths(&self) -> Vec<String> {
        let mut p: Vec<String> = self.shared.router.paths().map(str::to_owned).collect();
        p.sort();
        p
    }

    /// Runs the server on a new task of the current runtime; returns its handle.
    pub fn spawn(self) -> ServerHandle {
        let handle = self.handle();
        let run = self.run();
        tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(error = %e, "webmesh server stopped with an error");
            }
        });
        handle
    }

    /// Accepts and serves connections until [`ServerHandle::shutdown`]; then stops accepting,
    /// lets requests in flight finish (up to the shutdown timeout), closes every connection with
    /// code 1001 and a reason, and returns once they are all closed.
    ///
    /// The server counts as running from the call to `run` (not its first poll). Dropping the
    /// future, for example when it loses a `tokio::select!` against `ctrl_c`, stops accepting
    /// and starts the same graceful shutdown: the connections then close on their own tasks,
    /// and [`ServerHandle::shutdown`] waits for them.
    ///
    /// # Errors
    ///
    /// None today: accept errors are logged and retried. The `Result` leaves room for fatal ones.
    pub fn run(self) -> impl Future<Output = Result<()>> + Send + 'static {
        let running = self.shared.lifecycle.track();
        async move {
            let Server {
                listener,
                shared,
                stop_on_drop,
                ..
            } = self;
            let mut shutdown = shared.lifecycle.subscribe();
            let mut backoff = Duration::from_millis(5);
            loop {
                tokio::select! {
                    biased;
                    _ = lifecycle::started(&mut shutdown) => break,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, peer)) => {
                            backoff = Duration::from_millis(5);
                            let _ = tcp.set_nodelay(true);
                            let tracked = shared.lifecycle.track();
                            tokio::spawn(conn::serve(crate::conn::Io::tcp(tcp), Some(peer), shared.clone(), tracked));
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: wait and retry, as axum does.
                            tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    },
                }
            }
            drop(listener);
            drop(stop_on_drop);
            drop(running);
            tracing::info!(
                connections = shared.lifecycle.running(),
                "webmesh server shutting down"
            );
            // Each connection closes by itself within the deadline and its close grace.
            if !shared.lifecycle.wait_stopped(lifecycle::CLOSE_GRACE).await {
                tracing::warn!(
                    left = shared.lifecycle.running(),
                    "connections still open past the shutdown deadline"
                );
            }
            Ok(())
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// Shuts down a server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts a graceful shutdown and waits for it: no new connections, requests in flight
    /// finish (up to the shutdown timeout, one deadline for all), every connection gets a close
    /// frame with code 1001 and the reason "server shutting down", then the server's `run`
    /// returns.
    ///
    /// It returns whatever state the server is in: running, already stopped, never started, or
    /// dropped (with its `run` future or without running). A server that has not started yet
    /// will not start: its `run` returns at once. It returns at the latest about two seconds
    /// after the shutdown timeout (the close grace, and slack for hooks), even if a hook blocks.
    pub async fn shutdown(&self) {
        self.lifecycle.start_shutdown();
        if !self.lifecycle.wait_stopped(lifecycle::CLOSE_GRACE).await {
            tracing::warn!(
                left = self.lifecycle.running(),
                "connections still open past the shutdown deadline (a hook that blocks?)"
            );
        }
    }

    /// Serves one stream that is already open, as if the server had accepted it: a Unix socket,
    /// a TCP stream from a listener of your own, an in-memory pipe. Runs the upgrade (and TLS, if
    /// the server has it), then the connection, to its end; it counts in the server's limits and
    /// its graceful shutdown. `peer` is what [`Connection::peer_addr`] will say.
    ///
    /// ```no_run
    /// # async fn run(server: webmesh::Server) -> std::io::Result<()> {
    /// let handle = server.spawn();
    /// let unix = tokio::net::UnixListener::bind("/tmp/mesh.sock")?;
    /// loop {
    ///     let (stream, _) = unix.accept().await?;
    ///     tokio::spawn(handle.serve_connection(stream, None));
    /// }
    /// # }
    /// ```
    pub fn serve_connection<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let running = self.lifecycle.track();
        conn::serve(crate::conn::Io::new(stream), peer, self.shared.clone(), running)
    }

    /// What the server counts: its connections, and per route the calls stopped before their
    /// handler finished (cancelled by their caller, or past their deadline).
    pub fn stats(&self) -> ServerStats {
        let mut routes: Vec<RouteStats> = self
            .shared
            .router
            .all_counters()
            .map(|(path, c)| RouteStats {
                path: path.to_owned(),
                cancelled: c.cancelled.load(std::sync::atomic::Ordering::Relaxed),
                deadline_exceeded: c.deadline_exceeded.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        routes.sort_by(|a, b| a.path.cmp(&b.path));
        ServerStats {
            connections: self.shared.live.load(std::sync::atomic::Ordering::Relaxed),
            routes,
        }
    }

    /// The server's topics: publish, broadcast, push to groups, from anywhere.
    pub fn topics(&self) -> crate::Topics {
        crate::Topics {
            hub: self.shared.hub.clone(),
        }
    }

    /// True once a shutdown has started (by [`shutdown`](Self::shutdown), or by the server or
    /// its `run` future being dropped) and nothing of the server runs any more.
    pub fn is_stopped(&self) -> bool {
        self.lifecycle.is_stopped()
    }
}

/// What a server counts; see [`ServerHandle::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now (upgrades in progress included).
    pub connections: usize,
    /// Each route, by path.
    pub routes: Vec<RouteStats>,
}

impl ServerStats {
    /// The counts of the route at `path`.
    pub fn route(&self, path: &str) -> Option<&RouteStats> {
        self.routes.iter().find(|r| r.path == path)
    }
}

/// What one route counts; see [`ServerHandle::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// The route's path.
    pub path: String,
    /// Calls whose caller cancelled them (timed out, or dropped the call) while the handler ran.
    pub cancelled: u64,
    /// Requests whose deadline passed before the handler finished.
    pub deadline_exceeded: u64,
}

/// A server running on its own thread; see [`ServerBuilder::start_threaded`]. Dropping it shuts
/// the server down.
#[derive(Debug)]
pub struct BlockingServer {
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlockingServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// A handle usable from async code.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Shuts the server down gracefully and waits for its thread (the Python `close()`).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.handle.lifecycle.start_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BlockingServer {
    fn drop(&mut self) {
        self.stop();
    }
}
