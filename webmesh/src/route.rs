//! The typed contract of a route, shared by server and client.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A route: a path and the types that travel on it.
///
/// `#[webmesh::route]` implements it for a marker type next to each handler, and clients call the
/// route through it, so both sides agree on the types at compile time:
/// `client.call::<echo::Route>(msg)` only accepts `echo`'s request type and returns its response
/// type. It can also be implemented by hand for a route served by a peer in another language.
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// /// `/add` on a server written in anything.
/// struct AddRoute;
///
/// impl webmesh::Route for AddRoute {
///     const PATH: &'static str = "/add";
///     type Request = Add;
///     type Response = i64;
///     type Error = webmesh::NoError;
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a webmesh route",
    label = "not a route",
    note = "annotate a handler fn with `#[webmesh::route(\"/path\")]` and use its generated `Route` type, or implement `webmesh::Route`"
)]
pub trait Route: Send + Sync + 'static {
    /// The path, starting with `/`.
    const PATH: &'static str;
    /// What the caller sends.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What a successful call returns. `()` and `Option<T>` mean "maybe no value": a 0.1.2 peer
    /// gets no reply for them.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// What the handler returns as `Err`; [`NoError`] for handlers that cannot fail.
    type Error: Serialize + DeserializeOwned + Send + 'static;
}

/// The error type of a route whose handler cannot fail. It has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoError {}

impl fmt::Display for NoError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoError {}
