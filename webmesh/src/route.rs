//! The typed contract of a route, shared by server and client, and the server half that
//! `#[webmesh::route]` implements for it.

use std::fmt;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connection::{CallContext, Connection};
use crate::state::{State, StateKey};

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

/// A message a server pushes to its clients on a path, declared once in the contract crate with
/// [`#[webmesh::push("/path")]`](crate::push) so that both ends agree on its type at compile
/// time.
///
/// The server sends it with [`Connection::push_message`]; a client handles it with
/// `ClientBuilder::on_push_message`, whose handler's argument type picks the path. Sending or
/// handling a type that is not declared does not compile. It can also be implemented by hand (a
/// push from a server in another language).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a declared push message",
    label = "not a push message",
    note = "declare it in the contract next to the routes: `#[webmesh::push(\"/path\")] pub struct Msg {{ .. }}`"
)]
pub trait Push: Serialize + DeserializeOwned + Send + 'static {
    /// The path it is pushed on.
    const PATH: &'static str;
}

/// The server half of a route: how `#[webmesh::route]` runs the function it annotates.
///
/// Implemented by the generated code; implement it by hand to serve a [`Route`] without the
/// macro, then register it with `ServerBuilder::route`. It does not depend on webmesh's `server`
/// feature: whether a route's server half is compiled is the choice of the crate that defines it
/// (see the attribute's `server_feature` key).
pub trait Serve: Route {
    /// Runs the handler for one call.
    fn serve(
        request: Self::Request,
        call: CallContext,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send;

    /// The server state the handler takes, for the check at `ServerBuilder::build`. Generated
    /// by `#[webmesh::route]`; a hand-written impl that reads state through
    /// [`CallContext::state`] may list it here to get the same check.
    #[doc(hidden)]
    fn required_state(_out: &mut Vec<StateKey>) {}
}

/// A handler argument that comes from the call rather than from its payload: `&Connection`,
/// `Connection`, `&CallContext`, `CallContext`, `&State<T>`, `State<T>`. Not a public API: the
/// code `#[webmesh::route]` generates names it, so that the compiler checks every argument taken
/// as context.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not one of webmesh's context arguments",
    label = "taken as a context argument because of its name",
    note = "`#[webmesh::route]` takes an argument whose type is named `Connection`, `CallContext` or `State` as webmesh's; any other argument is the payload",
    note = "if this is your payload type, import it under another name, like `use my_types::Connection as DbConnection;`"
)]
pub trait FromCall<'a>: Sized {
    /// The argument, for this call.
    fn from_call(call: &'a CallContext) -> Self;

    /// The server state it needs, if any.
    fn require(_out: &mut Vec<StateKey>) {}
}

impl<'a, T: Send + Sync + 'static> FromCall<'a> for &'a State<T> {
    fn from_call(call: &'a CallContext) -> Self {
        // `build` checked that every state a route takes is there; a hand-made `Serve` impl
        // that skips `required_state` fails here, in a handler, where a panic is an `internal`
        // answer for that call alone.
        call.state::<T>().unwrap_or_else(|| missing::<T>())
    }

    fn require(out: &mut Vec<StateKey>) {
        out.push(StateKey::of::<T>());
    }
}

impl<T: Send + Sync + 'static> FromCall<'_> for State<T> {
    fn from_call(call: &CallContext) -> Self {
        call.state::<T>().cloned().unwrap_or_else(|| missing::<T>())
    }

    fn require(out: &mut Vec<StateKey>) {
        out.push(StateKey::of::<T>());
    }
}

#[cold]
fn missing<T>() -> ! {
    panic!(
        "no server state of type `{}`: register it with `ServerBuilder::state`",
        std::any::type_name::<T>()
    )
}

impl<'a> FromCall<'a> for &'a Connection {
    fn from_call(call: &'a CallContext) -> Self {
        call.connection()
    }
}

impl FromCall<'_> for Connection {
    fn from_call(call: &CallContext) -> Self {
        call.connection().clone()
    }
}

impl<'a> FromCall<'a> for &'a CallContext {
    fn from_call(call: &'a CallContext) -> Self {
        call
    }
}

impl FromCall<'_> for CallContext {
    fn from_call(call: &CallContext) -> Self {
        call.clone()
    }
}
