//! Connect services through WebSockets with typed routes.
//!
//! webmesh is the Rust successor of the Python package `webmesh` 0.1.2: a server registers
//! handlers on paths, clients `emit` to them, `call` them and wait for the reply. It speaks the
//! 0.1.2 wire format with Python peers (both directions), and between Rust peers a faster
//! protocol negotiated at the WebSocket handshake: correlation ids (many calls in flight on one
//! connection, answered in any order), typed errors, server push, per-message compression.
//! `docs/PROTOCOL.md` in the repository specifies both.
//!
//! # Examples
//!
//! A typed route, served and called in one program:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub struct Greeting { pub name: String }
//!
//! /// Greets whoever asks.
//! #[webmesh::route("/hello")]
//! pub async fn hello(msg: Greeting) -> String {
//!     format!("hello, {}", msg.name)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = webmesh::Server::builder().bind("127.0.0.1:0").build().await?;
//! let url = format!("ws://{}", server.local_addr());
//! let handle = server.spawn();
//!
//! let client = webmesh::Client::connect(&url).await?;
//! let answer = hello::call(&client, Greeting { name: "Ada".into() }).await?;
//! assert_eq!(answer, "hello, Ada");
//!
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `server` | yes | [`Server`], and the handler half of `#[route]` fns. A client-only crate turns it off, and then does not compile handler bodies. |
//! | `tls` | yes | `wss://` for servers and clients (rustls with *ring*). |
//! | `nats` | no | Scale-out over NATS: `ServerBuilder::nats`, the `cluster` module. Needs Rust 1.89. |
//!
//! # Crate map
//!
//! - [`Server`] / [`ServerBuilder`]: serve routes (from `#[route]` and closures), hooks, limits;
//!   async ([`Server::run`], [`Server::spawn`]) or on a thread ([`ServerBuilder::start_threaded`]).
//! - [`Client`] (async) and [`BlockingClient`]: `call`, `emit`, `call_async`, push handlers.
//! - [`Connection`]: a peer as a handler sees it: id, address, state, server push.
//! - [`State`]: values the server owns (a pool, a cache), taken by handlers as arguments.
//! - [`Route`]: the typed contract the macro generates and clients call through; [`Push`]: a
//!   message a server pushes, declared with [`push`](macro@push); [`routes!`]: a crate's routes,
//!   for a server to mount.
//! - [`Description`]: what a server serves (routes with docs and JSON Schemas, topics), from
//!   the reserved route [`DESCRIBE_PATH`], read with [`Client::describe`] or `webmesh routes`.
//! - [`codec`]: the wire format (re-export of `webmesh-codec`).
#![forbid(unsafe_code)]

mod cancel;
mod client;
#[cfg(feature = "nats")]
pub mod cluster;
mod conn;
mod connection;
mod describe;
mod error;
mod registry;
mod route;
#[cfg(feature = "server")]
mod server;
mod state;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topics;

pub use webmesh_codec as codec;

pub use client::{
    BlockingClient, BlockingSubscription, CallHandle, Client, ClientBuilder, ConnectionState, Protocol,
    Reconnect, StateWatcher, SubscribeOptions, Subscription, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SUBSCRIPTION_BUFFER,
};
pub use codec::Framing;
pub use conn::{Keepalive, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT};
pub use connection::{CallContext, Connection, Extensions};
pub use describe::{Description, NodeDescription, RouteDescription, TopicDescription, DESCRIBE_PATH};
pub use error::{CallError, CloseKind, Error, Result};
pub use registry::Routes;
pub use route::{NoError, Push, Route, Serve};
#[cfg(feature = "server")]
pub use server::{
    BlockingServer, FallibleHandler, Handler, Reject, RouteStats, Server, ServerBuilder, ServerHandle,
    ServerStats, UpgradeRequest, BEARER_QUERY_PARAMETER, BEARER_SUBPROTOCOL_PREFIX, DEFAULT_ADDR,
    DEFAULT_DEADLINE, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_OUTBOUND_QUEUE, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_STALLED_PEER_TIMEOUT,
};
pub use state::State;
#[cfg(feature = "server")]
pub use topics::Topics;
pub use topics::{Event, LagPolicy, Topic};
#[doc = include_str!("push.md")]
pub use webmesh_macros::push;
#[doc = include_str!("route.md")]
pub use webmesh_macros::route;
#[doc = include_str!("topic.md")]
pub use webmesh_macros::topic;

/// The JSON Schema generator behind [`Description`]'s schemas: derive `schemars::JsonSchema`
/// (this crate, with its `derive` feature, in your contract) beside serde's derives to have a
/// type described.
pub use schemars;

/// A dynamic value: any msgpack value (bin, 64-bit ints, floats, maps...), for payloads without
/// a Rust type, like the Python callbacks' `data`. It is `rmpv::Value`.
pub use rmpv::Value;

/// `fut` inside `span`, or `fut` alone when the span is disabled (no subscriber wants it): entering
/// and leaving even a disabled span costs a few hundred instructions per poll once any crate in
/// the build turns on tracing's `log` feature.
pub(crate) fn in_span<F: std::future::Future>(
    fut: F,
    span: tracing::Span,
) -> futures_util::future::Either<tracing::instrument::Instrumented<F>, F> {
    use futures_util::future::Either;
    if span.is_disabled() {
        Either::Right(fut)
    } else {
        Either::Left(tracing::Instrument::instrument(fut, span))
    }
}

/// What generated code uses. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde_json::Value as JsonValue;

    pub use crate::describe::{Derived, NotDerived, Probe, TopicEntry};
    pub use crate::registry::RouteEntry;
    pub use crate::route::{FromCall, ServeNow};
    pub use crate::state::StateKey;
}
