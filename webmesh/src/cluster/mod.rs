//! Scale-out over NATS: several servers, one mesh.
//!
//! A server built with [`ServerBuilder::nats`](crate::ServerBuilder::nats) joins a cluster
//! through a NATS server (`async-nats`; `nats-server` runs the broker). Then:
//!
//! - **Calls** to a path this server has no route for are forwarded to a node that serves it
//!   (NATS request/reply; the nodes serving a path form a queue group, so calls are spread over
//!   them). The caller gets the typed reply or error, as if the route were local. No node serves
//!   it: `not_found`. The broker is down: `unavailable` (the call did not run). A node dies with
//!   calls in flight: they end at their deadline with `deadline_exceeded`; later calls go to
//!   the nodes left.
//! - **Topics**: every publish on a node (a handler, a task, a client through the server) also
//!   reaches the subscribers on every other node. Each node numbers the messages it delivers
//!   itself, so order per publisher, lag notices and gaps hold per node as documented for
//!   topics. Across nodes, delivery is NATS core's: at most once. A node that loses its broker
//!   connection misses what other nodes publish meanwhile, and nothing tells its subscribers
//!   (see `docs/CLUSTER.md`). Group and "everyone but" pushes stay on their node (groups are
//!   sets of that node's connections).
//! - **Introspection**: the introspection route lists every node that answers, with its routes
//!   and topics ([`Description::cluster`](crate::Description::cluster)).
//!
//! The subjects and messages on NATS are specified in `docs/CLUSTER.md`, so that a service in
//! another language can join.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use webmesh_codec::{
    code, AnyCodec, Compression, Frame, FrameEncoder, FrameType, Framing, Kind, Limits, WireMessage,
};

use crate::cancel::Cancel;
use crate::connection::{Accepted, Connection};
use crate::error::Error;
use crate::server::handler::{Dispatch, Erased, Gather, ReplyTo};
use crate::server::Shared;
use crate::{NodeDescription, Value};

/// The default first token of every subject ([`Nats::prefix`]).
pub const DEFAULT_PREFIX: &str = "webmesh";
/// How long a forwarded call waits when it has no deadline of its own.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the introspection route waits for the other nodes to answer.
pub const DESCRIBE_WAIT: Duration = Duration::from_millis(300);
/// Publishes waiting to go to the other nodes; past it, a publish reaches this node only (and
/// a warning is logged).
pub const BRIDGE_QUEUE: usize = 65_536;

/// Header: the codec of a payload (`msgpack` or `json`).
pub const HEADER_CODEC: &str = "Webmesh-Codec";
/// Header: `notify` for a call that wants no answer.
pub const HEADER_KIND: &str = "Webmesh-Kind";
/// Header: the caller's remaining time budget in milliseconds.
pub const HEADER_DEADLINE: &str = "Webmesh-Deadline-Ms";
/// Header: the caller's identity, as JSON ([`Nats::forward_identity`]).
pub const HEADER_IDENTITY: &str = "Webmesh-Identity";
/// Header: the id of the node that sent the message.
pub const HEADER_ORIGIN: &str = "Webmesh-Origin";
/// Header on answers: `ok` or `error`.
pub const HEADER_STATUS: &str = "Webmesh-Status";

/// How a server joins a cluster: the NATS URL and options. `ServerBuilder::nats("nats://..")`
/// takes a URL directly.
///
/// # Examples
///
/// ```no_run
/// use webmesh::cluster::Nats;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User { name: String }
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// let server = webmesh::Server::builder()
///     .nats(Nats::new("nats://127.0.0.1:4222").forward_identity::<User>())
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Nats {
    url: String,
    prefix: String,
    connect_timeout: Duration,
    identity: Option<IdentityCodec>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("forwards_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl Nats {
    /// Joins through the NATS server at `url` (`nats://host:port`; several, comma-separated,
    /// for a NATS cluster).
    pub fn new(url: impl Into<String>) -> Self {
        Nats {
            url: url.into(),
            prefix: DEFAULT_PREFIX.into(),
            connect_timeout: Duration::from_secs(5),
            identity: None,
        }
    }

    /// The first token of every subject (default [`DEFAULT_PREFIX`]): meshes with different
    /// prefixes share a NATS server without seeing each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long the first connection may take (default 5 s). Later outages are retried forever.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Forwards the identity the auth hook stored on a connection (of type `I`) with the calls
    /// it makes to other nodes: there, `Connection::identity::<I>()` returns it. It travels as
    /// JSON in a header.
    pub fn forward_identity<I: Serialize + DeserializeOwned + Send + Sync + 'static>(mut self) -> Self {
        self.identity = Some(IdentityCodec {
            encode: |any| serde_json::to_string(any.downcast_ref::<I>()?).ok(),
            decode: |text| {
                let i: I = serde_json::from_str(text).ok()?;
                Some(Arc::new(i))
            },
        });
        self
    }
}

impl From<&str> for Nats {
    fn from(url: &str) -> Self {
        Nats::new(url)
    }
}

impl From<String> for Nats {
    fn from(url: String) -> Self {
        Nats::new(url)
    }
}

type AnyIdentity = Arc<dyn std::any::Any + Send + Sync>;

#[derive(Clone, Copy)]
struct IdentityCodec {
    encode: fn(&(dyn std::any::Any + Send + Sync)) -> Option<String>,
    decode: fn(&str) -> Option<AnyIdentity>,
}

/// The subject of calls to `path`: `<prefix>.call.<path as tokens>`.
pub fn call_subject(prefix: &str, path: &str) -> String {
    format!("{prefix}.call.{}", tokens(path))
}

/// The subject of messages published at `path`: `<prefix>.topic.<path as tokens>`.
pub fn topic_subject(prefix: &str, path: &str) -> String {
    format!("{prefix}.topic.{}", tokens(path))
}

/// A path as subject tokens: one per segment, each byte outside `[A-Za-z0-9_~-]` written
/// `%XX`, an empty segment written `%`: `/prices/EUR.USD` is `prices.EUR%2EUSD`.
pub fn tokens(path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut out = String::with_capacity(path.len() + 8);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if segment.is_empty() {
            out.push('%');
        }
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The path that subject tokens stand for (the inverse of [`tokens`]).
pub fn path_of(tokens: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(tokens.len() + 1);
    for token in tokens.split('.') {
        bytes.push(b'/');
        if token == "%" {
            continue;
        }
        let mut it = token.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let hex = [it.next()?, it.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            } else {
                bytes.push(b);
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// This node's end of the cluster.
pub(crate) struct Link {
    client: async_nats::Client,
    prefix: String,
    node: String,
    identity: Option<IdentityCodec>,
    limits: Limits,
    /// What this node serves, for the other nodes' introspection.
    local: OnceLock<NodeDescription>,
    /// Publishes that did not fit in the bridge queue.
    dropped: AtomicU64,
}

/// Connects to NATS.
pub(crate) async fn connect(cfg: &Nats, limits: Limits) -> Result<Arc<Link>, Error> {
    let node = format!("{:016x}", crate::topics::hub::new_epoch());
    let client = async_nats::ConnectOptions::new()
        .name(format!("webmesh node {node}"))
        .connection_timeout(cfg.connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(1000)))
        .connect(cfg.url.as_str())
        .await
        .map_err(|e| Error::Cluster {
            url: cfg.url.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(url = cfg.url, node, "joined the cluster");
    Ok(Arc::new(Link {
        client,
        prefix: cfg.prefix.clone(),
        node,
        identity: cfg.identity,
        limits,
        local: OnceLock::new(),
        dropped: AtomicU64::new(0),
    }))
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn codec_named(name: Option<&str>) -> Option<AnyCodec> {
    match name {
        None | Some("msgpack") => Some(AnyCodec::MSGPACK),
        Some("json") => Some(AnyCodec::JSON),
        Some(_) => None,
    }
}

impl Link {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The handler that forwards what has no route here.
    pub(crate) fn forwarder(self: &Arc<Self>) -> Erased {
        let link = self.clone();
        Arc::new(move |d: Dispatch| {
            let link = link.clone();
            Box::pin(async move { link.forward(d).await })
        })
    }

    /// What the introspection route asks the other nodes.
    pub(crate) fn gatherer(self: &Arc<Self>) -> Gather {
        let link = self.clone();
        Arc::new(move || {
            let link = link.clone();
            Box::pin(async move { link.gather().await })
        })
    }

    async fn forward(&self, d: Dispatch) -> Option<WireMessage> {
        let path = d.frame.path().to_owned();
        if !self.connected() {
            return d.fail(
                code::UNAVAILABLE,
                &format!("no route at {path} here, and the cluster (NATS) is unreachable"),
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_CODEC, d.frame.codec().name());
        headers.insert(HEADER_ORIGIN, self.node.as_str());
        if let (Some(identity), Some(codec)) = (d.conn.identity_any(), &self.identity) {
            if let Some(json) = (codec.encode)(identity) {
                headers.insert(HEADER_IDENTITY, json.as_str());
            }
        }
        let payload =
            Bytes::copy_from_slice(d.frame.payload_bytes().unwrap_or_else(|| d.frame.codec().nil()));
        let subject = call_subject(&self.prefix, &path);
        if d.reply == ReplyTo::Nothing {
            headers.insert(HEADER_KIND, "notify");
            if let Err(e) = self.client.publish_with_headers(subject, headers, payload).await {
                tracing::warn!(path, error = %e, "cannot forward a notify to the cluster");
            }
            return None;
        }
        let wait = match d.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                headers.insert(HEADER_DEADLINE, left.as_millis().to_string().as_str());
                left
            }
            None => DEFAULT_FORWARD_TIMEOUT,
        };
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(wait));
        match self.client.send_request(subject, request).await {
            Ok(msg) => self.answer(&d, &path, &msg),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => match d.reply {
                    ReplyTo::Call(_) => d.fail(code::NOT_FOUND, &format!("no route at {path} on any node")),
                    // As a 0.1.2 server answers.
                    _ => d.encoder().reply(0, &path, "Path not found").ok().flatten(),
                },
                async_nats::RequestErrorKind::TimedOut => d.fail(
                    code::DEADLINE_EXCEEDED,
                    &format!("the node serving {path} did not answer within {wait:?}"),
                ),
                _ => d.fail(
                    code::UNAVAILABLE,
                    &format!("cannot reach the node serving {path}: {e}"),
                ),
            },
        }
    }

    /// The caller's answer, from a node's answer.
    fn answer(&self, d: &Dispatch, path: &str, msg: &Message) -> Option<WireMessage> {
        if msg.payload.len() > self.limits.max_frame_size {
            return d.fail(
                code::INTERNAL,
                &format!("the answer from {path}'s node exceeds the frame limit"),
            );
        }
        let ok = header(msg, HEADER_STATUS) != Some("error");
        match d.reply {
            ReplyTo::Call(id) => {
                let kind = if ok { Kind::Reply } else { Kind::Error };
                d.encoder().v1_raw(kind, id, path, &msg.payload).ok()
            }
            // 0.1.2: no reply for an error, nor for null.
            ReplyTo::Legacy if ok => {
                let value: Value = d.frame.codec().decode(&msg.payload).ok()?;
                d.encoder().reply(0, path, &value).ok().flatten()
            }
            ReplyTo::Legacy | ReplyTo::Nothing => None,
        }
    }

    async fn gather(&self) -> Vec<NodeDescription> {
        let mut nodes: Vec<NodeDescription> = self.local.get().cloned().into_iter().collect();
        if !self.connected() {
            return nodes;
        }
        let inbox = self.client.new_inbox();
        let Ok(mut answers) = self.client.subscribe(inbox.clone()).await else {
            return nodes;
        };
        let subject = format!("{}.describe", self.prefix);
        if self
            .client
            .publish_with_reply(subject, inbox, Bytes::new())
            .await
            .is_err()
        {
            return nodes;
        }
        let until = tokio::time::Instant::now() + DESCRIBE_WAIT;
        let mut others = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, answers.next()).await {
            match serde_json::from_slice::<NodeDescription>(&msg.payload) {
                Ok(n) if n.node != self.node => others.push(n),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "an undecodable node description"),
            }
        }
        others.sort_by(|a, b| a.node.cmp(&b.node));
        nodes.extend(others);
        nodes
    }

    /// The queue of this node's publishes to the other nodes, and the task that sends them in
    /// order.
    pub(crate) fn bridge(self: &Arc<Self>) -> crate::topics::hub::Bridge {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(BRIDGE_QUEUE);
        let link = self.clone();
        tokio::spawn(async move {
            while let Some((path, msgpack)) = rx.recv().await {
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_ORIGIN, link.node.as_str());
                headers.insert(HEADER_CODEC, "msgpack");
                let subject = topic_subject(&link.prefix, &path);
                if let Err(e) = link
                    .client
                    .publish_with_headers(subject, headers, msgpack.into())
                    .await
                {
                    tracing::warn!(path, error = %e, "a publish did not reach the cluster");
                }
            }
        });
        let link = self.clone();
        Box::new(move |path: &str, msgpack: Vec<u8>| {
            if tx.try_send((path.to_owned(), msgpack)).is_err() {
                let n = link.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    path,
                    dropped = n,
                    "the cluster bridge is full: a publish stays on this node"
                );
            }
        })
    }
}

/// Serves this node's routes, topics and description to the cluster until the server shuts
/// down.
pub(crate) fn start(link: Arc<Link>, shared: Arc<Shared>) {
    let mut routes: Vec<String> = shared.router.paths().map(str::to_owned).collect();
    routes.sort();
    let topics = crate::describe::topics().into_iter().map(|t| t.path).collect();
    let _ = link.local.set(NodeDescription {
        node: link.node.clone(),
        routes,
        topics,
    });
    tokio::spawn(async move {
        if let Err(e) = serve(link, shared).await {
            tracing::error!(error = %e, "the cluster link stopped: this node serves no forwarded calls");
        }
    });
}

async fn serve(link: Arc<Link>, shared: Arc<Shared>) -> Result<(), async_nats::SubscribeError> {
    let queue = format!("{}.nodes", link.prefix);
    let mut by_subject = HashMap::new();
    let mut calls = Vec::new();
    for path in link.local.get().map(|l| l.routes.clone()).unwrap_or_default() {
        let subject = call_subject(&link.prefix, &path);
        calls.push(
            link.client
                .queue_subscribe(subject.clone(), queue.clone())
                .await?,
        );
        by_subject.insert(subject, path);
    }
    let mut calls = futures_util::stream::select_all(calls);
    let mut topics = link.client.subscribe(format!("{}.topic.>", link.prefix)).await?;
    let mut describe = link.client.subscribe(format!("{}.describe", link.prefix)).await?;
    let topic_prefix = format!("{}.topic.", link.prefix);
    let mut stop = shared.lifecycle.subscribe();
    let by_subject = Arc::new(by_subject);
    loop {
        tokio::select! {
            Some(msg) = calls.next() => {
                let Some(path) = by_subject.get(msg.subject.as_str()).cloned() else { continue };
                tokio::spawn(serve_call(link.clone(), shared.clone(), path, msg));
            }
            Some(msg) = topics.next() => {
                if header(&msg, HEADER_ORIGIN) == Some(link.node.as_str()) {
                    continue;
                }
                let path = msg.subject.as_str().strip_prefix(&topic_prefix).and_then(path_of);
                receive_topic(&shared, path, &msg);
            }
            Some(msg) = describe.next() => {
                if let (Some(reply), Some(local)) = (msg.reply, link.local.get()) {
                    let body = serde_json::to_vec(local).unwrap_or_default();
                    let _ = link.client.publish(reply, body.into()).await;
                }
            }
            _ = crate::server::lifecycle::started(&mut stop) => break,
            else => break,
        }
    }
    // Unsubscribing first: no new forwarded call comes here while the node stops.
    drop((calls, topics, describe));
    let _ = link.client.flush().await;
    Ok(())
}

/// A message another node published: to this node's subscribers.
fn receive_topic(shared: &Shared, path: Option<String>, msg: &Message) {
    let Some(path) = path else {
        tracing::warn!(subject = %msg.subject, "a topic subject that is not a path");
        return;
    };
    if msg.payload.len() > shared.limits.max_frame_size {
        tracing::warn!(
            path,
            size = msg.payload.len(),
            "a topic message from the cluster exceeds the frame limit"
        );
        return;
    }
    match AnyCodec::MSGPACK.decode::<Value>(&msg.payload) {
        Ok(value) => {
            if let Err(e) = shared.hub.publish_remote(&path, &value) {
                tracing::warn!(path, error = %e, "a topic message from the cluster was refused");
            }
        }
        Err(e) => tracing::warn!(path, error = %e, "an undecodable topic message from the cluster"),
    }
}

/// Runs a call another node forwarded, and answers it.
async fn serve_call(link: Arc<Link>, shared: Arc<Shared>, path: String, msg: Message) {
    let reply_to = msg.reply.clone();
    let (status, payload) = match run_call(&link, &shared, &path, &msg).await {
        Some(Ok(payload)) => ("ok", payload),
        Some(Err(body)) => ("error", body),
        None => return,
    };
    let Some(reply_to) = reply_to else { return };
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_STATUS, status);
    headers.insert(HEADER_ORIGIN, link.node.as_str());
    if let Err(e) = link.client.publish_with_headers(reply_to, headers, payload).await {
        tracing::warn!(path, error = %e, "cannot answer a forwarded call");
    }
}

/// The call's outcome: the reply's payload, or an error body; `None` for a notify.
async fn run_call(
    link: &Link,
    shared: &Arc<Shared>,
    path: &str,
    msg: &Message,
) -> Option<Result<Bytes, Bytes>> {
    let notify = msg.reply.is_none() || header(msg, HEADER_KIND) == Some("notify");
    let Some(codec) = codec_named(header(msg, HEADER_CODEC)) else {
        return Some(Err(error_body(
            &AnyCodec::MSGPACK,
            code::BAD_REQUEST,
            "unknown Webmesh-Codec",
        )));
    };
    let fail = |code: &str, message: &str| Some(Err(error_body(&codec, code, message)));
    let frame = match call_frame(shared, &codec, path, &msg.payload, notify) {
        Ok(f) => f,
        Err(e) => return fail(code::BAD_REQUEST, &e.to_string()),
    };
    let Some(handler) = shared.router.get_local(path).cloned() else {
        return fail(code::NOT_FOUND, &format!("no route at {path} on this node"));
    };
    let identity = header(msg, HEADER_IDENTITY).and_then(|json| (link.identity?.decode)(json));
    let origin = header(msg, HEADER_ORIGIN).unwrap_or("?").to_owned();
    let conn = forwarded_connection(shared, &codec, identity, origin);
    let deadline = match header(msg, HEADER_DEADLINE).and_then(|ms| ms.parse::<u64>().ok()) {
        Some(ms) => Some(Duration::from_millis(ms)),
        None => shared.default_deadline,
    }
    .map(|left| Instant::now() + left);
    let cancel = Arc::new(Cancel::default());
    let dispatch = Dispatch {
        frame,
        conn,
        reply: if notify {
            ReplyTo::Nothing
        } else {
            ReplyTo::Call(1)
        },
        deadline,
        cancel: cancel.clone(),
    };
    let run = std::panic::AssertUnwindSafe(async move { handler(dispatch).await }).catch_unwind();
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout_at(d.into(), run).await {
            Ok(done) => done,
            Err(_) => {
                cancel.cancel();
                return (!notify).then(|| {
                    Err(error_body(
                        &codec,
                        code::DEADLINE_EXCEEDED,
                        &format!("the handler for {path} ran past the call's deadline"),
                    ))
                });
            }
        },
        None => run.await,
    };
    let answer = match outcome {
        Ok(answer) => answer,
        Err(_) => {
            tracing::error!(path, "handler panicked (forwarded call)");
            return (!notify).then(|| {
                Err(error_body(
                    &codec,
                    code::INTERNAL,
                    &format!("handler for {path} panicked"),
                ))
            });
        }
    };
    if notify {
        return None;
    }
    let Some(answer) = answer else {
        return fail(code::INTERNAL, "the handler gave no answer");
    };
    // The answer is a v1 REPLY or ERROR frame for id 1: its payload is what travels back.
    let bytes = Bytes::copy_from_slice(answer.as_bytes());
    let unbounded = Limits::default()
        .max_frame_size(usize::MAX)
        .max_inflated_size(usize::MAX);
    match webmesh_codec::decode_frame(Framing::V1, &codec, &unbounded, FrameType::Binary, bytes) {
        Ok(f) => {
            let payload = Bytes::copy_from_slice(f.payload_bytes().unwrap_or_else(|| codec.nil()));
            Some(if f.kind() == Kind::Error {
                Err(payload)
            } else {
                Ok(payload)
            })
        }
        Err(e) => fail(code::INTERNAL, &format!("cannot read the handler's answer: {e}")),
    }
}

/// The forwarded payload as a frame, within the server's limits.
fn call_frame(
    shared: &Shared,
    codec: &AnyCodec,
    path: &str,
    payload: &[u8],
    notify: bool,
) -> Result<Frame, Error> {
    let kind = if notify { Kind::Notify } else { Kind::Call };
    let id = u64::from(!notify);
    let wire =
        FrameEncoder::new(Framing::V1, codec.clone(), Compression::none()).v1_raw(kind, id, path, payload)?;
    let bytes = Bytes::copy_from_slice(wire.as_bytes());
    Ok(webmesh_codec::decode_frame(
        Framing::V1,
        codec,
        &shared.limits,
        FrameType::Binary,
        bytes,
    )?)
}

/// An ERROR body `{code, message}` in `codec`.
fn error_body(codec: &AnyCodec, code: &str, message: &str) -> Bytes {
    let mut out = Vec::new();
    let body = webmesh_codec::ErrorBody::<()> {
        code: code.into(),
        message: message.into(),
        data: None,
    };
    let _ = codec.encode(&body, &mut out);
    out.into()
}

/// The connection a forwarded call's handler sees: no socket (pushes to it fail), the
/// forwarded identity, the server's state.
fn forwarded_connection(
    shared: &Shared,
    codec: &AnyCodec,
    identity: Option<AnyIdentity>,
    origin: String,
) -> Connection {
    let (tx, _) = mpsc::channel(1);
    Connection::new(
        Accepted {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            peer: None,
            path: String::new(),
            headers: vec![("webmesh-origin".into(), origin)],
            encoder: FrameEncoder::new(Framing::V1, codec.clone(), shared.compression),
            server_state: shared.states.clone(),
            peer_certificates: None,
            identity,
            hub: shared.hub.clone(),
            topic_queue: 1,
        },
        tx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_subject_tokens_map_both_ways() {
        for (path, t) in [
            ("/stock/add", "stock.add"),
            ("/prices/EUR.USD", "prices.EUR%2EUSD"),
            ("/", "%"),
            ("/a//b", "a.%.b"),
            ("/x y/*/>", "x%20y.%2A.%3E"),
            ("/é", "%C3%A9"),
        ] {
            assert_eq!(tokens(path), t, "{path}");
            assert_eq!(path_of(t).as_deref(), Some(path), "{t}");
        }
        assert_eq!(call_subject("webmesh", "/add"), "webmesh.call.add");
        assert_eq!(path_of("a.%4"), None);
        assert_eq!(path_of("%FF"), None, "not UTF-8");
    }
}
