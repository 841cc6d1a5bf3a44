//! Errors of the runtime.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in webmesh outside a handler's own error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding, accepting or connecting failed.
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
    /// The WebSocket handshake failed (the peer is not a WebSocket server, refused the upgrade,
    /// or answered with a subprotocol that was not offered).
    #[error("websocket handshake failed: {0}")]
    Handshake(String),
    /// The peer refused the upgrade with an HTTP status (for example 503 when it is full).
    #[error("server refused the connection: HTTP {status}: {body}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The response body (the reason, as the server gave it).
        body: String,
    },
    /// The WebSocket layer failed (protocol violation, frame over the size limit...).
    #[error("websocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// Encoding a value or decoding a frame or payload failed.
    #[error(transparent)]
    Codec(#[from] webmesh_codec::Error),
    /// The peer answered the call with an error (`not_found`, `bad_request`, `internal`...). A
    /// handler's own error arrives as [`CallError::Handler`] instead.
    #[error("remote error {code}: {message}")]
    Remote {
        /// The error code; see [`codec::code`](crate::codec::code).
        code: String,
        /// The message.
        message: String,
    },
    /// No reply within the call's timeout.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The connection is closed, or closed while the call was in flight.
    #[error("connection closed: {0}")]
    Closed(String),
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
    /// The server is not configured correctly (no address, bad path...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
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
}

/// The error of a typed call: the route's own error, or anything else.
///
/// `E` is the route's [`Route::Error`](crate::Route::Error): what the handler returned as `Err`.
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

impl<E: fmt::Debug> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Handler(e) => write!(f, "handler error: {e:?}"),
            CallError::Rpc(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Handler(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
