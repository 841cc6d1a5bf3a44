//! Handlers: typed functions and closures behind one erased call shape.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use webmesh_codec::{code, Frame, FrameEncoder, WireMessage};

use crate::cancel::Cancel;
use crate::connection::{CallContext, Connection};
use crate::describe::{Description, RouteDescription, DESCRIBE_PATH};
use crate::error::Error;
use crate::registry::{RouteEntry, Routes};
use crate::route::{FromCall, NoError, Serve, ServeNow};
use crate::state::{StateKey, States};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a request is to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    /// A v1 CALL: always a REPLY or an ERROR with this id.
    Call(u64),
    /// A 0.1.2 request: a `{"path", "data"}` reply unless the value is null; nothing on error.
    Legacy,
    /// A v1 NOTIFY: nothing, ever.
    Nothing,
}

/// One request on its way to a handler: the frame (payload still encoded), the connection, and
/// how to answer.
#[derive(Clone)]
pub(crate) struct Dispatch {
    pub(crate) frame: Frame,
    pub(crate) conn: Connection,
    pub(crate) reply: ReplyTo,
    /// How long the call may take: its caller's budget, or the server's default. Its deadline
    /// is counted from when its handler starts (see [`Dispatch::context`]); a handler that
    /// answers at once and takes no context never reads the clock.
    pub(crate) budget: Option<Duration>,
}

/// What an erased handler made of one request.
pub(crate) enum Started {
    /// It answered at once (a handler that is not `async`, or a payload that does not decode):
    /// the answer, if any.
    Answered(Option<WireMessage>),
    /// It runs: poll it until it answers.
    Running(Run),
}

/// A handler that is running: its future, what cancels it, and its deadline.
pub(crate) struct Run {
    pub(crate) fut: BoxFuture<Option<WireMessage>>,
    pub(crate) cancel: Arc<Cancel>,
    pub(crate) deadline: Option<tokio::time::Instant>,
}

impl Dispatch {
    /// When the call's time is up, counted from now.
    pub(crate) fn deadline_from_now(&self) -> Option<tokio::time::Instant> {
        self.budget.map(|b| tokio::time::Instant::now() + b)
    }

    /// The context of the call, for its handler: its deadline counted from now, and a
    /// cancellation of its own.
    pub(crate) fn context(&self) -> CallContext {
        CallContext::new(
            self.frame.clone(),
            self.conn.clone(),
            self.deadline_from_now().map(tokio::time::Instant::into_std),
            Arc::default(),
        )
    }

    /// The encoder for the answer: the connection's, in the codec the request came in, and for a
    /// 0.1.2 peer compressed as the request was (`MessagePackSerializer(compressor=None)` peers
    /// cannot read zlib).
    pub(crate) fn encoder(&self) -> FrameEncoder {
        reply_encoder(self.conn.encoder(), &self.frame)
    }

    /// The answer for an error that is not the handler's: `code` and `message` for v1 calls,
    /// nothing otherwise (logged).
    pub(crate) fn fail(&self, code: &str, message: &str) -> Option<WireMessage> {
        match self.reply {
            ReplyTo::Call(id) => self.encoder().error_plain(id, code, message).ok().flatten(),
            ReplyTo::Legacy | ReplyTo::Nothing => {
                tracing::warn!(path = self.frame.path(), peer = ?self.conn.peer_addr(), code, "{message}");
                None
            }
        }
    }

    fn answer<R: Serialize, E: Serialize>(&self, outcome: Result<R, E>) -> Option<WireMessage> {
        let path = self.frame.path();
        let encoded = match (self.reply, &outcome) {
            (ReplyTo::Nothing, Ok(_)) => return None,
            (ReplyTo::Nothing | ReplyTo::Legacy, Err(_)) => {
                tracing::warn!(path, peer = ?self.conn.peer_addr(), "handler returned an error (no reply in this mode)");
                return None;
            }
            (ReplyTo::Call(id), Ok(v)) => self.encoder().reply(id, path, v),
            (ReplyTo::Legacy, Ok(v)) => self.encoder().reply(0, path, v),
            (ReplyTo::Call(id), Err(e)) => self.encoder().error(
                id,
                code::HANDLER,
                &format!("handler for {path} returned an error"),
                Some(e),
            ),
        };
        match encoded {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(path, error = %e, "cannot encode the handler's value");
                self.fail(code::INTERNAL, &format!("cannot encode the reply: {e}"))
            }
        }
    }
}

/// The encoder that answers `frame` in kind: same codec, and for legacy msgpack the same choice
/// of zlib.
pub(crate) fn reply_encoder(enc: &FrameEncoder, frame: &Frame) -> FrameEncoder {
    let mut enc = if enc.codec() == frame.codec() {
        enc.clone()
    } else {
        enc.with_codec(frame.codec().clone())
    };
    if frame.kind() == webmesh_codec::Kind::Legacy && !frame.codec().is_text() {
        let zlib = frame.was_compressed();
        if enc.compression().legacy_zlib != zlib {
            enc = enc.with_compression(enc.compression().legacy_zlib(zlib));
        }
    }
    enc
}

/// A handler with its types erased: decodes the request, then answers it at once or starts a
/// future that will. The caller keeps the [`Dispatch`], to answer for the handler if it
/// panics or runs out of time.
pub(crate) type Erased = Arc<dyn Fn(&Dispatch) -> Started + Send + Sync>;

/// The request of `d`, decoded; `Err` holds the `bad_request` answer.
fn request<T: DeserializeOwned>(d: &Dispatch) -> Result<T, Option<WireMessage>> {
    d.frame.decode::<T>().map_err(|e| {
        d.fail(
            code::BAD_REQUEST,
            &format!("bad payload for {}: {e}", d.frame.path()),
        )
    })
}

/// A span per call when debug logging is on; next to nothing when it is off.
fn call_span(d: &Dispatch) -> tracing::Span {
    tracing::debug_span!("call", path = d.frame.path(), id = d.frame.id())
}

/// An `async` handler, erased.
fn erase<T, R, E, F, Fut>(f: F) -> Erased
where
    F: Fn(T, CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    Arc::new(move |d: &Dispatch| {
        // Its deadline counts from before the payload is decoded (a large one takes a while).
        let ctx = d.context();
        let request = match request::<T>(d) {
            Ok(request) => request,
            Err(answer) => return Started::Answered(answer),
        };
        let span = call_span(d);
        let (cancel, deadline) = (
            ctx.cancel_handle().clone(),
            ctx.deadline().map(tokio::time::Instant::from_std),
        );
        let fut = if span.is_disabled() {
            f(request, ctx)
        } else {
            span.in_scope(|| f(request, ctx))
        };
        let d = d.clone();
        Started::Running(Run {
            fut: Box::pin(crate::in_span(async move { d.answer(fut.await) }, span)),
            cancel,
            deadline,
        })
    })
}

/// A handler that is not `async`, erased: it answers while the request is dispatched, with
/// no future to box and poll. Its context, if it takes one, is made when it asks.
fn erase_now<T, R, E>(f: ServeNow<T, R, E>) -> Erased
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    Arc::new(move |d: &Dispatch| {
        let request = match request::<T>(d) {
            Ok(request) => request,
            Err(answer) => return Started::Answered(answer),
        };
        let span = call_span(d);
        let context = || d.context();
        let outcome = if span.is_disabled() {
            f(request, &context)
        } else {
            span.in_scope(|| f(request, &context))
        };
        Started::Answered(d.answer(outcome))
    })
}

pub(crate) fn erase_route<R: Serve>() -> Erased {
    match R::serve_now() {
        Some(now) => erase_now(now),
        None => erase(|request: R::Request, call: CallContext| R::serve(request, call)),
    }
}

/// Route `R` with the state it takes, for `ServerBuilder::route`.
pub(crate) fn erase_serve<R: Serve>() -> ErasedHandler {
    let mut requires = Vec::new();
    R::required_state(&mut requires);
    ErasedHandler {
        handler: erase_route::<R>(),
        requires,
    }
}

/// An async closure that can serve a path: `|payload: T| async { .. }`, or with up to two
/// context arguments after the payload, each a [`Connection`](crate::Connection), a
/// [`CallContext`] or a [`State<S>`](crate::State): `|payload: T, conn: Connection| async { .. }`,
/// `|payload: T, db: State<Db>, call: CallContext| async { .. }`; or `|| async { .. }` for no
/// payload. Its value is any `Serialize` type.
///
/// `Args` only tells the shapes apart; it is inferred.
#[diagnostic::on_unimplemented(
    message = "this is not a webmesh handler",
    note = "a handler is an async closure `|payload: T| async move {{ .. }}` (or `|| async move {{ .. }}` for no payload), optionally taking up to two of `webmesh::Connection`, `webmesh::CallContext` and `webmesh::State<S>` after the payload, with `T: DeserializeOwned` and a `Serialize` value; for `Result` values use `on_fallible`"
)]
pub trait Handler<Args>: Send + Sync + 'static {
    #[doc(hidden)]
    fn into_erased(self) -> ErasedHandler;
}

/// A handler with its types erased, and the server state it takes. Not a public API.
#[doc(hidden)]
pub struct ErasedHandler {
    pub(crate) handler: Erased,
    pub(crate) requires: Vec<StateKey>,
}

/// An async closure returning `Result<R, E>`: `Err(e)` reaches a v1 caller as a typed error
/// (code `handler`, data `e`). Shapes as for [`Handler`].
#[diagnostic::on_unimplemented(
    message = "this is not a fallible webmesh handler",
    note = "a fallible handler is an async closure `|payload: T| async move {{ .. }}` or `|| async move {{ .. }}` (optionally also taking up to two of `webmesh::Connection`, `webmesh::CallContext` and `webmesh::State<S>`) returning `Result<R, E>` with `R: Serialize` and `E: Serialize`"
)]
pub trait FallibleHandler<Args>: Send + Sync + 'static {
    #[doc(hidden)]
    fn into_erased(self) -> ErasedHandler;
}

/// The closure shapes: the payload, then up to two context arguments (`Connection`,
/// `CallContext`, `State<T>`), each taken from the call through `FromCall`.
macro_rules! shapes {
    ($($ctx:ident),*) => {
        impl<F, Fut, T, $($ctx),*> Handler<(T, $($ctx,)*)> for F
        where
            F: Fn(T, $($ctx),*) -> Fut + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: Serialize + Send + 'static,
            T: DeserializeOwned + Send + 'static,
            $($ctx: for<'a> FromCall<'a> + Send + 'static,)*
        {
            fn into_erased(self) -> ErasedHandler {
                #[allow(unused_mut)]
                let mut requires = Vec::new();
                $(<$ctx as FromCall<'static>>::require(&mut requires);)*
                let handler = erase(move |t: T, call: CallContext| {
                    let _ = &call;
                    let fut = self(t, $(<$ctx as FromCall<'_>>::from_call(&call)),*);
                    async move { Ok::<_, NoError>(fut.await) }
                });
                ErasedHandler { handler, requires }
            }
        }

        impl<F, Fut, T, R, E, $($ctx),*> FallibleHandler<(T, $($ctx,)*)> for F
        where
            F: Fn(T, $($ctx),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>> + Send + 'static,
            T: DeserializeOwned + Send + 'static,
            R: Serialize + Send + 'static,
            E: Serialize + Send + 'static,
            $($ctx: for<'a> FromCall<'a> + Send + 'static,)*
        {
            fn into_erased(self) -> ErasedHandler {
                #[allow(unused_mut)]
                let mut requires = Vec::new();
                $(<$ctx as FromCall<'static>>::require(&mut requires);)*
                let handler = erase(move |t: T, call: CallContext| {
                    let _ = &call;
                    self(t, $(<$ctx as FromCall<'_>>::from_call(&call)),*)
                });
                ErasedHandler { handler, requires }
            }
        }
    };
}

/// A closure with no argument at all: its route takes no payload (the request is `()`).
impl<F, Fut> Handler<()> for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Serialize + Send + 'static,
{
    fn into_erased(self) -> ErasedHandler {
        let handler = erase(move |(): (), _: CallContext| {
            let fut = self();
            async move { Ok::<_, NoError>(fut.await) }
        });
        ErasedHandler {
            handler,
            requires: Vec::new(),
        }
    }
}

impl<F, Fut, R, E> FallibleHandler<()> for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    fn into_erased(self) -> ErasedHandler {
        ErasedHandler {
            handler: erase(move |(): (), _: CallContext| self()),
            requires: Vec::new(),
        }
    }
}

shapes!();
shapes!(A);
shapes!(A, B);

/// Gathers what the other nodes of a cluster serve.
pub(crate) type Gather = Arc<dyn Fn() -> BoxFuture<Vec<crate::NodeDescription>> + Send + Sync>;

/// One registered path.
struct Slot {
    handler: Erased,
    name: String,
    /// Where a `#[webmesh::route]` fn's doc comment and schemas are.
    entry: Option<&'static RouteEntry>,
    /// The server state its handler takes.
    requires: Vec<StateKey>,
    counters: Counters,
}

/// What a route counts: the calls stopped before their handler finished.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) cancelled: std::sync::atomic::AtomicU64,
    pub(crate) deadline_exceeded: std::sync::atomic::AtomicU64,
}

/// Path to handler.
#[derive(Default)]
pub(crate) struct Router {
    routes: HashMap<Box<str>, Slot>,
    /// The registered entries added so far (by address: each is a static).
    entries: Vec<usize>,
    /// What answers paths with no route (`ServerBuilder::fallback`).
    fallback: Option<Erased>,
    /// What forwards calls to paths with no route here to the cluster.
    forwarder: Option<Erased>,
    /// The introspection route, kept out of `paths`.
    describe: Option<Erased>,
}

impl Router {
    pub(crate) fn add(&mut self, path: &str, name: String, handler: ErasedHandler) -> Result<(), Error> {
        self.add_slot(path, name, handler, None)
    }

    fn add_slot(
        &mut self,
        path: &str,
        name: String,
        handler: ErasedHandler,
        entry: Option<&'static RouteEntry>,
    ) -> Result<(), Error> {
        if let Some(first) = self.routes.get(path) {
            return Err(Error::DuplicateRoute {
                path: path.to_owned(),
                first: first.name.clone(),
                second: name,
            });
        }
        let ErasedHandler { handler, requires } = handler;
        self.routes.insert(
            path.into(),
            Slot {
                handler,
                name,
                entry,
                requires,
                counters: Counters::default(),
            },
        );
        Ok(())
    }

    /// Every route's state is there.
    ///
    /// # Errors
    ///
    /// [`Error::MissingState`] naming the first route (by path) that takes a state the server
    /// was not given, and the type.
    pub(crate) fn check_state(&self, states: &States) -> Result<(), Error> {
        let mut paths: Vec<&Box<str>> = self.routes.keys().collect();
        paths.sort();
        for path in paths {
            let slot = &self.routes[path];
            if let Some(key) = slot.requires.iter().find(|k| !states.contains(k)) {
                return Err(Error::MissingState {
                    route: slot.name.clone(),
                    path: path.to_string(),
                    type_name: key.name,
                });
            }
        }
        Ok(())
    }

    /// Every route registered through `#[webmesh::route]` in the linked crates.
    pub(crate) fn add_registered(&mut self) -> Result<(), Error> {
        let mut entries: Vec<&'static RouteEntry> = inventory::iter::<RouteEntry>.into_iter().collect();
        // Link order is not meaningful: report duplicates in a stable order.
        entries.sort_by_key(|e| (e.path, e.module, e.name));
        for e in entries {
            self.add_entry(e)?;
        }
        Ok(())
    }

    /// The routes of one crate, mounted explicitly.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the set is empty: the crate's routes have no server half.
    pub(crate) fn mount(&mut self, routes: &Routes) -> Result<(), Error> {
        if routes.is_empty() {
            return Err(Error::Config(format!(
                "`{krate}::routes()` has no route to serve: its `#[webmesh::route]` fns were compiled \
                 without their server half. Enable the feature their `server_feature` names on \
                 `{krate}` in this binary's Cargo.toml (for example \
                 `features = [\"server\"]`)",
                krate = routes.crate_name()
            )));
        }
        for e in routes.entries() {
            self.add_entry(e)?;
        }
        Ok(())
    }

    /// Adds a registered route; the same entry twice (registered and mounted) is one route.
    fn add_entry(&mut self, e: &'static RouteEntry) -> Result<(), Error> {
        let address = e as *const RouteEntry as usize;
        if self.entries.contains(&address) {
            return Ok(());
        }
        self.entries.push(address);
        let mut requires = Vec::new();
        (e.requires)(&mut requires);
        let handler = ErasedHandler {
            handler: (e.make)(),
            requires,
        };
        self.add_slot(e.path, e.qualified_name(), handler, Some(e))
    }

    /// What answers paths with no route.
    pub(crate) fn set_fallback(&mut self, handler: ErasedHandler) {
        self.fallback = Some(handler.handler);
    }

    /// Forwards what has no route here (before any fallback).
    #[cfg(feature = "nats")]
    pub(crate) fn set_forwarder(&mut self, forwarder: Erased) {
        self.forwarder = Some(forwarder);
    }

    /// Serves the introspection route at [`DESCRIBE_PATH`], answering what the router holds
    /// now (call it last), and with `cluster`, what the other nodes answer.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateRoute`] when a route of the server's own has that path.
    pub(crate) fn serve_description(&mut self, cluster: Option<Gather>) -> Result<(), Error> {
        if let Some(first) = self.routes.get(DESCRIBE_PATH) {
            return Err(Error::DuplicateRoute {
                path: DESCRIBE_PATH.to_owned(),
                first: first.name.clone(),
                second: "webmesh's introspection route (turn it off with `introspection(false)`)".into(),
            });
        }
        let description = std::sync::Arc::new(self.describe());
        let handler = move |_: serde::de::IgnoredAny| {
            let d = description.clone();
            let cluster = cluster.clone();
            async move {
                let mut d = (*d).clone();
                if let Some(gather) = cluster {
                    d.cluster = gather().await;
                }
                d
            }
        };
        self.describe = Some(handler.into_erased().handler);
        Ok(())
    }

    /// Every route and every registered topic, with docs and schemas.
    fn describe(&self) -> Description {
        let mut routes: Vec<RouteDescription> = self
            .routes
            .iter()
            .map(|(path, slot)| {
                let [request, response, error] = slot.entry.map(|e| (e.schemas)()).unwrap_or_default();
                RouteDescription {
                    path: path.to_string(),
                    name: slot.name.clone(),
                    doc: slot.entry.and_then(|e| crate::describe::doc(e.doc)),
                    request,
                    response,
                    error,
                }
            })
            .collect();
        routes.sort_by(|a, b| a.path.cmp(&b.path));
        Description {
            routes,
            topics: crate::describe::topics(),
            cluster: Vec::new(),
        }
    }

    pub(crate) fn get(&self, path: &str) -> Option<&Erased> {
        match self.get_local(path) {
            Some(h) => Some(h),
            None => self.forwarder.as_ref().or(self.fallback.as_ref()),
        }
    }

    /// The handler of `path` on this server (its routes and the introspection route), never a
    /// forwarder or a fallback.
    pub(crate) fn get_local(&self, path: &str) -> Option<&Erased> {
        match self.routes.get(path) {
            Some(s) => Some(&s.handler),
            None if path == DESCRIBE_PATH => self.describe.as_ref(),
            None => None,
        }
    }

    /// The counters of the route at `path`.
    pub(crate) fn counters(&self, path: &str) -> Option<&Counters> {
        self.routes.get(path).map(|s| &s.counters)
    }

    /// Every route's counters, by path.
    pub(crate) fn all_counters(&self) -> impl Iterator<Item = (&str, &Counters)> {
        self.routes.iter().map(|(p, s)| (&**p, &s.counters))
    }

    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(|k| &**k)
    }
}
