//! Errors of the runtime.

use std::fmt;
use std::time::Duration;

use crate::route::NoError;

/// Everything that can go wrong in webmesh outside a handler's own error type.
///
/// Each variant is one kind of failure, so a caller can tell them apart by matching: a call that
/// timed out ([`CallTimeout`](Self::CallTimeout)) from a connection that never came up
/// ([`ConnectTimeout`](Self::ConnectTimeout), [`Connect`](Self::Connect)), a closed connection
/// and why ([`Closed`](Self::Closed) with its [`CloseKind`]). Messages say what they concern: the
/// address, the URL, the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, as given to `ServerBuilder::bind`.
        addr: String,
        /// Why (address in use, permission denied...).
        #[source]
        source: std::io::Error,
    },
    /// The client could not reach the server (TCP connect, or the connection failed during the
    /// upgrade).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL connected to.
        url: String,
        /// Why (refused, unreachable, reset...).
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure (starting a runtime or a thread).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The URL is not a `ws://host[:port][/path]` URL.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The WebSocket upgrade failed: the peer is not a WebSocket server, or answered with a
    /// subprotocol that was not offered (with [`Protocol::V1`](crate::Protocol::V1): a 0.1.2
    /// server).
    #[error("websocket handshake with {url} failed: {reason}")]
    Handshake {
        /// The URL connected to.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the upgrade with an HTTP status (for example 503 when it is full).
    #[error("{url} refused the connection: HTTP {status}: {body}")]
    Refused {
        /// The URL connected to.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The response body (the reason, as the server gave it).
        body: String,
    },
    /// Connecting (TCP and the WebSocket upgrade) took longer than the connect timeout.
    #[error("connecting to {url} timed out after {after:?}")]
    ConnectTimeout {
        /// The URL connected to.
        url: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// Encoding a value or decoding a frame or payload failed.
    #[error(transparent)]
    Codec(#[from] webmesh_codec::Error),
    /// The peer answered the call with an error (`not_found`, `bad_request`, `internal`,
    /// `shutting_down`...). A handler's own error arrives as [`CallError::Handler`] instead.
    #[error("remote error {code}: {message}")]
    Remote {
        /// The error code; see [`codec::code`](crate::codec::code).
        code: String,
        /// The message.
        message: String,
    },
    /// No reply within the call's timeout.
    #[error("call to {path} timed out after {after:?}")]
    CallTimeout {
        /// The path called.
        path: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The call was made on behalf of another call (`Client::child_of`), which was cancelled or
    /// whose deadline passed: this one was cancelled with it (and its server told so).
    #[error("call to {path} cancelled: the call it was made for was cancelled or ran out of time")]
    Cancelled {
        /// The path called.
        path: String,
    },
    /// The connection is closed, or closed while the call was in flight.
    #[error("connection closed: {reason}")]
    Closed {
        /// Who closed it, or how it was lost.
        kind: CloseKind,
        /// Why, in words.
        reason: String,
    },
    /// A call to a 0.1.2 (legacy) server on a path where an earlier call timed out and its late
    /// reply has not arrived yet. Legacy replies carry no id: the next reply on that path may be
    /// the stale one, so rather than risk handing a call another call's answer, calls on the path
    /// fail until the stale reply arrives or the connection is renewed.
    #[error(
        "path {path} is blocked on this connection: an earlier call to it timed out and the 0.1.2 \
         server's late reply (replies carry no id) has not arrived; calls to it fail until it \
         arrives or the client reconnects"
    )]
    StaleReplyPending {
        /// The blocked path.
        path: String,
    },
    /// The outbound queue of the connection is full (the peer does not read fast enough).
    #[error("outbound queue is full")]
    Backpressure,
    /// Two routes were registered on one path.
    #[error("two routes on path {path:?}: {first} and {second}")]
    DuplicateRoute {
        /// The path.
        path: String,
        /// The route registered first.
        first: String,
        /// The route registered second.
        second: String,
    },
    /// A route takes server state (a `State<T>` argument) that the server was not given with
    /// `ServerBuilder::state`.
    #[error("route {route} ({path}) takes `State<{type_name}>`, and the server has no such state: add it with `ServerBuilder::state`")]
    MissingState {
        /// The route's handler.
        route: String,
        /// Its path.
        path: String,
        /// The state type it takes.
        type_name: &'static str,
    },
    /// A TLS certificate, key or CA could not be loaded or used; the message says which and why.
    #[error("tls configuration: {0}")]
    TlsConfig(String),
    /// The server or client is not configured correctly.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server could not join its cluster (`ServerBuilder::nats`): the NATS server at the
    /// URL did not accept the connection.
    #[error("cannot join the cluster at {url}: {reason}")]
    Cluster {
        /// The NATS URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// Who closed a connection, or how it was lost; see [`Error::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseKind {
    /// This side closed it: `Client::close`, every handle dropped, or the server closing its
    /// connection.
    Local,
    /// The peer closed it with a close frame.
    Remote {
        /// The close code it sent (1000 normal, 1001 going away, 1008 policy...), if any.
        code: Option<u16>,
    },
    /// It was lost without a close frame: reset, end of stream, I/O error, or no answer to
    /// keepalive pings.
    Lost,
    /// The client is reconnecting; the call may succeed once it is back.
    Reconnecting {
        /// The attempt under way, from 1.
        attempt: u32,
    },
    /// The client gave up reconnecting.
    GaveUp,
}

impl Error {
    /// A [`Closed`](Self::Closed) error.
    pub(crate) fn closed(kind: CloseKind, reason: impl Into<String>) -> Self {
        Error::Closed {
            kind,
            reason: reason.into(),
        }
    }

    /// The remote error code, when this is an error answer of the peer.
    pub fn remote_code(&self) -> Option<&str> {
        match self {
            Error::Remote { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True for [`Error::Remote`] with code `not_found`.
    pub fn is_not_found(&self) -> bool {
        self.remote_code() == Some(webmesh_codec::code::NOT_FOUND)
    }

    /// True for [`Error::Remote`] with code `unavailable`: a route served on another node of a
    /// cluster could not be reached (its broker is down). The call did not run.
    pub fn is_unavailable(&self) -> bool {
        self.remote_code() == Some(webmesh_codec::code::UNAVAILABLE)
    }

    /// True for [`Error::Remote`] with code `forbidden` (an authorization rule of the server).
    pub fn is_forbidden(&self) -> bool {
        self.remote_code() == Some(webmesh_codec::code::FORBIDDEN)
    }

    /// True for a call that timed out or a connection attempt that did.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::CallTimeout { .. } | Error::ConnectTimeout { .. })
    }

    /// How the connection closed, for [`Error::Closed`].
    pub fn close_kind(&self) -> Option<CloseKind> {
        match self {
            Error::Closed { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The error of a typed call: the route's own error, or anything else.
///
/// `E` is the route's [`Route::Error`](crate::Route::Error): what the handler returned as `Err`.
/// For routes that cannot fail (`E` is [`NoError`]) it converts into [`Error`] with `?`.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The handler returned `Err(e)`.
    Handler(E),
    /// Anything else: timeout, lost connection, unknown route, undecodable reply...
    Rpc(Error),
}

impl<E> CallError<E> {
    /// The handler's error, if that is what this is.
    pub fn handler(&self) -> Option<&E> {
        match self {
            CallError::Handler(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The runtime error, if that is what this is.
    pub fn rpc(&self) -> Option<&Error> {
        match self {
            CallError::Handler(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

impl<E> From<Error> for CallError<E> {
    fn from(e: Error) -> Self {
        CallError::Rpc(e)
    }
}

impl<E> From<webmesh_codec::Error> for CallError<E> {
    fn from(e: webmesh_codec::Error) -> Self {
        CallError::Rpc(Error::Codec(e))
    }
}

/// A route that cannot fail has no handler error: its call errors are all runtime errors.
impl From<CallError<NoError>> for Error {
    fn from(e: CallError<NoError>) -> Self {
        match e {
            CallError::Handler(never) => match never {},
            CallError::Rpc(e) => e,
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Handler(e) => write!(f, "handler error: {e}"),
            CallError::Rpc(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Handler(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
