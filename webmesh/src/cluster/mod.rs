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
//!   connection misses what other nodes publish meanwhile; when it is back, each of its
//!   subscriptions gets a gap notice (no path, no count), so the loss is never silent (see
//!   `docs/CLUSTER.md`). Group and "everyone but" pushes stay on their node (groups are sets of
//!   that node's connections).
//! - **Introspection**: the introspection route lists every node that answers, with its routes
//!   and topics ([`Description::cluster`](crate::Description::cluster)).
//!
//! The subjects and messages on NATS are specified in `docs/CLUSTER.md`, so that a service in
//! another language can join.
//!
//! The NATS connection runs on a thread of its own (`webmesh-nats`), which also serves the
//! calls other nodes forward here: a handler that finishes at its first poll (most do) runs
//! there, in the server runtime's context (what it spawns and its timers belong to the
//! server's runtime); one that waits goes on as a task of the server's runtime. As on a socket
//! connection's driver, a handler that blocks holds up the calls behind it, and here the node's
//! NATS traffic too: put blocking work in `tokio::task::spawn_blocking`
//! (`block_in_place` is not available on that thread: such a call is answered `internal`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use webmesh_codec::{
    code, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits, WireMessage,
};

use crate::cancel::Cancel;
use crate::connection::{Accepted, Connection};
use crate::error::Error;
use crate::server::handler::{BoxFuture, Dispatch, Erased, Gather, ReplyTo, Run, Started};
use crate::server::Shared;
use crate::{NodeDescription, Value};

use self::link::{LinkThread, Replies};

mod link;

/// The default first token of every subject ([`Nats::prefix`]).
pub const DEFAULT_PREFIX: &str = "webmesh";
/// How long a forwarded call waits when it has no deadline of its own.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the introspection route waits for the other nodes to answer.
pub const DESCRIBE_WAIT: Duration = Duration::from_millis(300);
/// Publishes waiting to go to the other nodes; past it, a publish reaches this node only (and
/// a warning is logged).
pub const BRIDGE_QUEUE: usize = 65_536;

/// Header: the codec of a call's frame or a topic message, `json`; absent means `msgpack`.
pub const HEADER_CODEC: &str = "Webmesh-Codec";
/// Header: the caller's identity, as JSON ([`Nats::forward_identity`]).
pub const HEADER_IDENTITY: &str = "Webmesh-Identity";
/// Header on a topic message: how many publishes its node could not send to the cluster just
/// before it (its bridge queue was full). Receivers tell their subscribers of a gap.
pub const HEADER_DROPPED: &str = "Webmesh-Dropped";
/// Header: the id of the node that sent the message.
pub const HEADER_ORIGIN: &str = "Webmesh-Origin";

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
    /// prefixes share a NATS server without seeing each other. It may hold several tokens
    /// (`acme.prod`); building the server fails if it is not a valid subject (empty, an empty
    /// token, whitespace, `*` or `>`).
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
    subject(prefix, ".call.", path)
}

/// The subject of messages published at `path`: `<prefix>.topic.<path as tokens>`.
pub fn topic_subject(prefix: &str, path: &str) -> String {
    subject(prefix, ".topic.", path)
}

fn subject(prefix: &str, kind: &str, path: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + kind.len() + path.len() + 8);
    out.push_str(prefix);
    out.push_str(kind);
    push_tokens(&mut out, path);
    out
}

/// A prefix every subject can start with: dot-separated tokens, none empty, without whitespace
/// or wildcards.
fn valid_prefix(prefix: &str) -> bool {
    prefix
        .split('.')
        .all(|t| !t.is_empty() && !t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>'))
}

/// A path as subject tokens: one per segment, each byte outside `[A-Za-z0-9_~-]` written
/// `%XX`, an empty segment written `%`: `/prices/EUR.USD` is `prices.EUR%2EUSD`.
pub fn tokens(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    push_tokens(&mut out, path);
    out
}

fn push_tokens(out: &mut String, path: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let path = path.strip_prefix('/').unwrap_or(path);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if segment.is_empty() {
            out.push('%');
        }
        if segment.bytes().all(plain) {
            out.push_str(segment);
            continue;
        }
        for b in segment.bytes() {
            if plain(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
}

/// A byte that stands for itself in a token.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
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
    /// Frame encoders for calls on NATS: msgpack, JSON.
    encoders: [FrameEncoder; 2],
    /// The shared connections of forwarded calls without an identity: msgpack, JSON.
    conns: [OnceLock<Connection>; 2],
    /// The topics of this node (set once it is built), for the gap notices of an outage.
    hub: Arc<OnceLock<Arc<crate::topics::hub::Hub>>>,
    /// What this node serves, for the other nodes' introspection.
    local: OnceLock<NodeDescription>,
    /// Publishes that did not fit in the bridge queue.
    dropped: AtomicU64,
    /// The forwarded calls waiting for their answer.
    replies: Arc<Replies>,
    /// The subjects of the paths forwarded from here.
    subjects: Subjects,
}

/// A call on its way to NATS ([`Link::outgoing`]).
struct Outgoing {
    subject: Subject,
    frame: Bytes,
    headers: Option<HeaderMap>,
    /// The caller's own frame (its id, its budget): the answer goes back as it comes.
    as_sent: bool,
}

/// The call subjects of the paths forwarded so far: a forwarded call clones its subject (a
/// reference count) instead of writing it and copying it. Bounded: paths past
/// [`SUBJECTS_CACHED`] of them, or longer than [`SUBJECT_PATH_CACHED`] bytes, get their
/// subject written each time (whatever paths clients send, the cache stays small).
#[derive(Default)]
struct Subjects(std::sync::RwLock<HashMap<Box<str>, Subject>>);

/// How many paths' subjects [`Subjects`] keeps.
const SUBJECTS_CACHED: usize = 1024;
/// The longest path whose subject [`Subjects`] keeps.
const SUBJECT_PATH_CACHED: usize = 128;

impl Subjects {
    /// The call subject of `path` ([`call_subject`]).
    fn call(&self, prefix: &str, path: &str) -> Subject {
        let full = {
            let map = self.read();
            if let Some(subject) = map.get(path) {
                return subject.clone();
            }
            map.len() >= SUBJECTS_CACHED
        };
        let subject = Subject::from(call_subject(prefix, path));
        if !full && path.len() <= SUBJECT_PATH_CACHED {
            let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
            if map.len() < SUBJECTS_CACHED {
                map.insert(path.into(), subject.clone());
            }
        }
        subject
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Subject>> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A node's place in the cluster, as `connect` leaves it for [`start`]: the link, and the
/// thread its NATS connection runs on (kept by `start` until the server has stopped).
pub(crate) struct Joined {
    pub(crate) link: Arc<Link>,
    thread: LinkThread,
}

/// Connects to NATS.
pub(crate) async fn connect(cfg: &Nats, limits: Limits, compression: Compression) -> Result<Joined, Error> {
    if !valid_prefix(&cfg.prefix) {
        return Err(Error::Cluster {
            url: cfg.url.clone(),
            reason: format!(
                "the subject prefix {:?} is not a valid NATS subject (no empty token, whitespace, `*` or `>`)",
                cfg.prefix
            ),
        });
    }
    let node = format!("{:016x}", crate::topics::hub::new_epoch());
    let hub: Arc<OnceLock<Arc<crate::topics::hub::Hub>>> = Arc::default();
    let was_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = (hub.clone(), was_down);
    let options = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let (hub, was_down) = events.clone();
            async move { link_event(&event, &hub, &was_down) }
        })
        .name(format!("webmesh node {node}"))
        .connection_timeout(cfg.connect_timeout)
        .max_reconnects(None)
        // Every subject is this node's own making: the checked prefix, then escaped tokens.
        .skip_subject_validation(true)
        .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(1000)));
    let (client, replies, thread) =
        LinkThread::connect(options, cfg.url.clone())
            .await
            .map_err(|e| Error::Cluster {
                url: cfg.url.clone(),
                reason: e,
            })?;
    tracing::info!(url = cfg.url, node, "joined the cluster");
    let link = Arc::new(Link {
        client,
        prefix: cfg.prefix.clone(),
        node,
        identity: cfg.identity,
        limits,
        encoders: [
            FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, compression),
            FrameEncoder::new(Framing::V1, AnyCodec::JSON, compression),
        ],
        conns: [OnceLock::new(), OnceLock::new()],
        hub,
        local: OnceLock::new(),
        dropped: AtomicU64::new(0),
        replies,
        subjects: Subjects::default(),
    });
    Ok(Joined { link, thread })
}

/// The link to NATS went down or came back. Coming back, every subscription of this node gets
/// a gap notice: what other nodes published meanwhile did not reach it (NATS core keeps
/// nothing for a subscriber that is away), and that must not be a silent hole.
fn link_event(
    event: &async_nats::Event,
    hub: &OnceLock<Arc<crate::topics::hub::Hub>>,
    was_down: &std::sync::atomic::AtomicBool,
) {
    match event {
        async_nats::Event::Disconnected => {
            tracing::warn!("the cluster link (NATS) is down: calls to other nodes fail with unavailable");
            was_down.store(true, Ordering::SeqCst);
        }
        async_nats::Event::SlowConsumer(_) => {
            tracing::warn!("this node fell behind the cluster: NATS dropped messages for it");
            if let Some(hub) = hub.get() {
                hub.gap_everywhere(
                    "this node fell behind the cluster: messages from other nodes were dropped",
                );
            }
        }
        async_nats::Event::Connected if was_down.swap(false, Ordering::SeqCst) => {
            tracing::info!("the cluster link (NATS) is back");
            if let Some(hub) = hub.get() {
                hub.gap_everywhere(
                    "the link to the cluster was down: messages published on other nodes meanwhile are lost",
                );
            }
        }
        _ => {}
    }
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
            && !self.replies.is_closed()
    }

    /// The handler that forwards what has no route here.
    pub(crate) fn forwarder(self: &Arc<Self>) -> Erased {
        let link = self.clone();
        Arc::new(move |d: &Dispatch| {
            Started::Running(Run {
                fut: Box::pin(link.clone().forward(d.clone())),
                cancel: Arc::default(),
                deadline: d.deadline_from_now(),
            })
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

    /// The encoder for frames on NATS in `codec`.
    fn encoder(&self, codec: &AnyCodec) -> &FrameEncoder {
        if codec.is_text() {
            &self.encoders[1]
        } else {
            &self.encoders[0]
        }
    }

    /// What goes to NATS for a call this node has no route for: its subject, frame and
    /// headers (`Err`: the caller's answer, the call cannot go).
    fn outgoing(&self, d: &Dispatch, notify: bool, wait: Duration) -> Result<Outgoing, Option<WireMessage>> {
        let path = d.frame.path();
        let codec = d.frame.codec();
        // The call goes on as a v1 frame: a v1 client's own frame as it came (its id, its
        // budget), else one made with the payload as it came and this server's budget.
        let original = d
            .frame
            .v1_bytes()
            .filter(|_| matches!(d.frame.kind(), Kind::Call | Kind::Notify));
        let (frame, as_sent) = match original {
            Some(bytes) => (bytes.clone(), true),
            None => {
                let (kind, id) = if notify {
                    (Kind::Notify, 0)
                } else {
                    (Kind::Call, 1)
                };
                let payload = d.frame.payload_bytes().unwrap_or_else(|| codec.nil());
                let budget = d.budget.map(|_| wait).filter(|_| !notify);
                match self.encoder(codec).v1_raw_within(kind, id, path, payload, budget) {
                    Ok(WireMessage::Binary(b)) => (Bytes::from(b), false),
                    Ok(WireMessage::Text(_)) | Err(_) => {
                        return Err(d.fail(code::INTERNAL, &format!("cannot forward the call to {path}")));
                    }
                }
            }
        };
        let mut headers = HeaderMap::new();
        if codec.is_text() {
            headers.insert(HEADER_CODEC, codec.name());
        }
        if let (Some(identity), Some(ids)) = (d.conn.identity_any(), &self.identity) {
            if let Some(json) = (ids.encode)(identity) {
                headers.insert(HEADER_IDENTITY, json.as_str());
            }
        }
        Ok(Outgoing {
            subject: self.subjects.call(&self.prefix, path),
            frame,
            headers: (!headers.is_empty()).then_some(headers),
            as_sent,
        })
    }

    /// A call this node has no route for, sent to the node that serves it; the caller's
    /// answer. (An `async` block, not an `async fn`: an `async fn` keeps its arguments twice
    /// in its future, and a `Dispatch` is 200 bytes.)
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn forward(
        self: Arc<Self>,
        d: Dispatch,
    ) -> impl std::future::Future<Output = Option<WireMessage>> + Send {
        async move {
            let path = d.frame.path();
            if !self.connected() {
                return d.fail(
                    code::UNAVAILABLE,
                    &format!("no route at {path} here, and the cluster (NATS) is unreachable"),
                );
            }
            let notify = d.reply == ReplyTo::Nothing;
            let wait = d.budget.unwrap_or(DEFAULT_FORWARD_TIMEOUT);
            let Outgoing {
                subject,
                frame,
                headers,
                as_sent,
            } = match self.outgoing(&d, notify, wait) {
                Ok(out) => out,
                Err(answer) => return answer,
            };
            if notify {
                if let Err(e) = self.send(subject, None, headers, frame).await {
                    tracing::warn!(path, error = %e, "cannot forward a notify to the cluster");
                }
                return None;
            }
            // The answer comes on this node's reply subscription, under the call's own token.
            let Some((reply, waiting)) = self.replies.wait() else {
                return d.fail(
                    code::UNAVAILABLE,
                    &format!("no route at {path} here, and this node's cluster link has stopped"),
                );
            };
            if let Err(e) = self.send(subject, Some(reply), headers, frame).await {
                return match e.kind() {
                    async_nats::client::PublishErrorKind::MaxPayloadExceeded => d.fail(
                        code::BAD_REQUEST,
                        &format!("the call to {path} is larger than the cluster's NATS max_payload: {e}"),
                    ),
                    _ => d.fail(
                        code::UNAVAILABLE,
                        &format!("cannot reach the node serving {path}: {e}"),
                    ),
                };
            }
            // With a deadline, the server's driver ends the call when it passes (its deadlines
            // share one timer); without one, this waits at most the default (its timer boxed:
            // a call's future stays small, as most calls have a deadline).
            let answer = if d.budget.is_some() {
                Ok(waiting.await)
            } else {
                Box::pin(tokio::time::timeout(wait, waiting)).await
            };
            match answer {
                Ok(Ok(link::Answer {
                    no_responders: true, ..
                })) => match d.reply {
                    ReplyTo::Call(_) => d.fail(code::NOT_FOUND, &format!("no route at {path} on any node")),
                    // As a 0.1.2 server answers.
                    _ => d.encoder().reply(0, path, "Path not found").ok().flatten(),
                },
                Ok(Ok(link::Answer { payload, .. })) => self.answer(&d, path, payload, as_sent),
                Ok(Err(_)) => d.fail(
                    code::UNAVAILABLE,
                    &format!("the cluster link stopped before the node serving {path} answered"),
                ),
                Err(_) => d.fail(
                    code::DEADLINE_EXCEEDED,
                    &format!("the node serving {path} did not answer within {wait:?}"),
                ),
            }
        }
    }

    /// Hands a message to the NATS connection: at once when its queue has room, as it almost
    /// always has; else it waits for room in a box. (async-nats' publish futures take 570–680
    /// bytes: held in a forwarded call's future, they made it 1.5 KB, past the allocator's
    /// fast sizes.)
    fn send(
        &self,
        subject: Subject,
        reply: Option<Subject>,
        headers: Option<HeaderMap>,
        frame: Bytes,
    ) -> impl std::future::Future<Output = Result<(), async_nats::PublishError>> + Send + '_ {
        // Reference counts (and the rare headers): for the second try, if the first must wait.
        let again = (subject.clone(), reply.clone(), headers.clone(), frame.clone());
        let first = self.publish(subject, reply, headers, frame).now_or_never();
        async move {
            match first {
                Some(sent) => sent,
                None => {
                    let (subject, reply, headers, frame) = again;
                    Box::pin(self.publish(subject, reply, headers, frame)).await
                }
            }
        }
    }

    async fn publish(
        &self,
        subject: Subject,
        reply: Option<Subject>,
        headers: Option<HeaderMap>,
        frame: Bytes,
    ) -> Result<(), async_nats::PublishError> {
        let client = &self.client;
        match (reply, headers) {
            (None, None) => client.publish(subject, frame).await,
            (None, Some(h)) => client.publish_with_headers(subject, h, frame).await,
            (Some(r), None) => client.publish_with_reply(subject, r, frame).await,
            (Some(r), Some(h)) => client.publish_with_reply_and_headers(subject, r, h, frame).await,
        }
    }

    /// The caller's answer, from a node's answer (a v1 REPLY or ERROR frame).
    fn answer(&self, d: &Dispatch, path: &str, answer: Bytes, as_sent: bool) -> Option<WireMessage> {
        if answer.len() > self.limits.max_frame_size {
            return d.fail(
                code::INTERNAL,
                &format!("the answer from {path}'s node exceeds the frame limit"),
            );
        }
        match d.reply {
            // The same frame, with the caller's id.
            // The caller's frame went as it was: the answer has its id already.
            ReplyTo::Call(_) if as_sent => Some(WireMessage::Binary(answer.to_vec())),
            ReplyTo::Call(id) => match webmesh_codec::with_id(&answer, id) {
                Ok(bytes) => Some(WireMessage::Binary(bytes)),
                Err(e) => d.fail(
                    code::INTERNAL,
                    &format!("an answer from {path}'s node is not a frame: {e}"),
                ),
            },
            // 0.1.2: the value as a reply; nothing for an error, nor for null.
            ReplyTo::Legacy => {
                let frame = webmesh_codec::decode_frame(
                    Framing::V1,
                    d.frame.codec(),
                    &self.limits,
                    FrameType::Binary,
                    answer,
                )
                .ok()?;
                if frame.kind() != Kind::Reply {
                    return None;
                }
                let value: Value = frame.decode().ok()?;
                d.encoder().reply(0, path, &value).ok().flatten()
            }
            ReplyTo::Nothing => None,
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
                // Publishes this node could not send since the last one: the receivers' subscribers
                // are told of a gap.
                let dropped = link.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    headers.insert(HEADER_DROPPED, dropped.to_string().as_str());
                }
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
                link.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path, "the cluster bridge is full: a publish stays on this node");
            }
        })
    }
}

/// Serves this node's routes, topics and description to the cluster until the server shuts
/// down.
pub(crate) fn start(joined: Joined, shared: Arc<Shared>) {
    let Joined { link, thread } = joined;
    let _ = link.hub.set(shared.hub.clone());
    let mut routes: Vec<String> = shared.router.paths().map(str::to_owned).collect();
    routes.sort();
    let topics = crate::describe::topics().into_iter().map(|t| t.path).collect();
    let _ = link.local.set(NodeDescription {
        node: link.node.clone(),
        routes,
        topics,
    });
    // The serving loop runs on the link's thread; handlers that wait go on in this runtime.
    let server_runtime = tokio::runtime::Handle::current();
    let serving = shared.clone();
    // Counted among what runs: a shutdown waits for the loop to stop taking calls and to flush
    // its answers (and for the handlers it moved to tasks, each counted too).
    let running = shared.lifecycle.track();
    thread.runtime().spawn(async move {
        if let Err(e) = serve(link, serving, server_runtime).await {
            tracing::error!(error = %e, "the cluster link stopped: this node serves no forwarded calls");
        }
        drop(running);
    });
    // The link lives until the server has stopped (connections that still drain may forward
    // calls), or until this runtime is gone (the task dropped with it).
    tokio::spawn(async move {
        let mut stop = shared.lifecycle.subscribe();
        crate::server::lifecycle::started(&mut stop).await;
        shared
            .lifecycle
            .wait_stopped(crate::server::lifecycle::CLOSE_GRACE)
            .await;
        drop(thread);
    });
}

async fn serve(
    link: Arc<Link>,
    shared: Arc<Shared>,
    server_runtime: tokio::runtime::Handle,
) -> Result<(), async_nats::SubscribeError> {
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
        by_subject.insert(subject, Arc::<str>::from(path));
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
                // The calls already here go before the other branches are polled again (a
                // bounded number: topics, introspection and the stop signal still get their turn).
                let mut next = Some(msg);
                let mut served = 0;
                while let Some(msg) = next.take() {
                    if let Some(path) = by_subject.get(msg.subject.as_str()) {
                        serve_call(&link, &shared, &server_runtime, path.clone(), msg).await;
                    }
                    served += 1;
                    if served < SERVE_BATCH {
                        next = calls.next().now_or_never().flatten();
                    }
                }
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

/// How many forwarded calls the serving loop takes in a row, when they are already waiting.
const SERVE_BATCH: usize = 64;

/// A message another node published: to this node's subscribers.
fn receive_topic(shared: &Shared, path: Option<String>, msg: &Message) {
    if let Some(n) = header(msg, HEADER_DROPPED) {
        shared.hub.gap_everywhere(&format!(
            "another node could not send {n} of its publishes to the cluster (its queue was full)"
        ));
    }
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

/// Sends a forwarded call's answer back to the node that forwarded it.
async fn respond(
    link: &Link,
    reply_to: Option<async_nats::Subject>,
    answer: Option<WireMessage>,
    path: &str,
) {
    let (Some(reply_to), Some(answer)) = (reply_to, answer) else {
        return;
    };
    let bytes = match answer {
        WireMessage::Binary(b) => Bytes::from(b),
        WireMessage::Text(t) => Bytes::from(t),
    };
    if let Err(e) = link.client.publish(reply_to, bytes).await {
        tracing::warn!(path, error = %e, "cannot answer a forwarded call");
    }
}

/// Runs a call another node forwarded, and answers it. A handler that finishes at once (most
/// do) is run here, in the loop on the link's thread, as the driver of a socket does (within
/// the server's runtime context: what it spawns, and its timers, belong to the server's
/// runtime); one that waits goes on in a task of the server's runtime, under its deadline.
async fn serve_call(
    link: &Arc<Link>,
    shared: &Arc<Shared>,
    server_runtime: &tokio::runtime::Handle,
    path: Arc<str>,
    msg: Message,
) {
    let first = {
        let _server = server_runtime.enter();
        match prepare(link, shared, &path, &msg) {
            Err(answer) => Ok(answer),
            Ok(mut call) => match call.poll_once() {
                Some(answer) => Ok(call.outcome(answer)),
                None => Err(call),
            },
        }
    };
    match first {
        Ok(answer) => respond(link, msg.reply, answer, &path).await,
        Err(call) => {
            let link = link.clone();
            let running = shared.lifecycle.track();
            server_runtime.spawn(async move {
                let answer = call.finish().await;
                respond(&link, msg.reply, answer, &path).await;
                drop(running);
            });
        }
    }
}

/// A forwarded call on its way: the handler's future and how to answer.
struct Prepared {
    fut: BoxFuture<Option<WireMessage>>,
    path: Arc<str>,
    notify: bool,
    id: u64,
    enc: FrameEncoder,
    deadline: Option<Instant>,
    cancel: Arc<Cancel>,
}

impl Prepared {
    fn fail(&self, code: &str, message: &str) -> Option<WireMessage> {
        if self.notify {
            tracing::warn!(path = &*self.path, code, "forwarded notify failed: {message}");
            return None;
        }
        self.enc.error_plain(self.id, code, message).ok().flatten()
    }

    /// The answer, from what the handler gave (`Err`: it panicked).
    fn outcome(&self, answer: Result<Option<WireMessage>, ()>) -> Option<WireMessage> {
        match answer {
            Ok(_) if self.notify => None,
            Ok(Some(answer)) => Some(answer),
            Ok(None) => self.fail(code::INTERNAL, "the handler gave no answer"),
            Err(()) => {
                tracing::error!(path = &*self.path, "handler panicked (forwarded call)");
                self.fail(code::INTERNAL, &format!("handler for {} panicked", self.path))
            }
        }
    }

    /// Polls the handler once, here: its answer if it is done (`Err`: it panicked).
    fn poll_once(&mut self) -> Option<Result<Option<WireMessage>, ()>> {
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fut.as_mut().poll(&mut cx))) {
            Ok(std::task::Poll::Ready(answer)) => Some(Ok(answer)),
            Ok(std::task::Poll::Pending) => None,
            Err(_) => Some(Err(())),
        }
    }

    /// Runs the handler to its end, within the call's deadline (after a first poll: the task
    /// polls it again as it starts, so no wake-up is lost).
    async fn finish(mut self) -> Option<WireMessage> {
        let fut = std::mem::replace(&mut self.fut, Box::pin(async { None }));
        let run = std::panic::AssertUnwindSafe(fut).catch_unwind();
        let answer = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), run).await {
                Ok(done) => done,
                Err(_) => {
                    self.cancel.cancel();
                    let message = format!("the handler for {} ran past the call's deadline", self.path);
                    return self.fail(code::DEADLINE_EXCEEDED, &message);
                }
            },
            None => run.await,
        };
        self.outcome(answer.map_err(drop))
    }
}

/// Reads a forwarded call and starts its handler; `Err` holds the answer when it cannot run.
fn prepare(
    link: &Link,
    shared: &Arc<Shared>,
    path: &Arc<str>,
    msg: &Message,
) -> Result<Prepared, Option<WireMessage>> {
    let shared_path = path;
    let path: &str = path;
    let answers = msg.reply.is_some();
    let Some(codec) = codec_named(header(msg, HEADER_CODEC)) else {
        let enc = &link.encoders[0];
        return Err(enc
            .error_plain(1, code::BAD_REQUEST, "unknown Webmesh-Codec")
            .ok()
            .flatten());
    };
    let enc = link.encoder(&codec).clone();
    let id = webmesh_codec::peek_v1_header(&msg.payload).map_or(1, |(_, id)| id.max(1));
    let fail = |code: &str, message: &str| {
        if answers {
            enc.error_plain(id, code, message).ok().flatten()
        } else {
            tracing::warn!(path, code, "forwarded notify failed: {message}");
            None
        }
    };
    let frame = webmesh_codec::decode_frame(
        Framing::V1,
        &codec,
        &shared.limits,
        FrameType::Binary,
        msg.payload.clone(),
    )
    .map_err(|e| fail(code::BAD_REQUEST, &e.to_string()))?;
    let notify = match frame.kind() {
        Kind::Call if frame.id() != 0 => !answers,
        Kind::Notify => true,
        other => {
            return Err(fail(
                code::BAD_REQUEST,
                &format!("a {other:?} frame is not a call"),
            ))
        }
    };
    if frame.path() != path {
        return Err(fail(code::BAD_REQUEST, "the frame's path is not the subject's"));
    }
    let Some(handler) = shared.router.get_local(path) else {
        return Err(fail(code::NOT_FOUND, &format!("no route at {path} on this node")));
    };
    let identity = header(msg, HEADER_IDENTITY).and_then(|json| (link.identity?.decode)(json));
    let conn = link.connection(shared, &codec, identity);
    let budget = frame.budget().or(shared.default_deadline);
    let dispatch = Dispatch {
        frame,
        conn,
        reply: if notify {
            ReplyTo::Nothing
        } else {
            ReplyTo::Call(id)
        },
        budget,
    };
    let started =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&dispatch))).map_err(|_| {
            tracing::error!(path, "handler panicked (forwarded call)");
            if notify {
                None
            } else {
                fail(code::INTERNAL, &format!("handler for {path} panicked"))
            }
        })?;
    let (fut, cancel, deadline) = match started {
        Started::Running(run) => (run.fut, run.cancel, run.deadline.map(Into::into)),
        // A handler that is not `async` answered already.
        Started::Answered(answer) => {
            let fut: BoxFuture<_> = Box::pin(std::future::ready(answer));
            (fut, Arc::default(), None)
        }
    };
    Ok(Prepared {
        fut,
        path: shared_path.clone(),
        notify,
        id,
        enc,
        deadline,
        cancel,
    })
}

/// The connection a forwarded call's handler sees: no socket (pushes to it fail), the
/// forwarded identity, the server's state.
fn forwarded_connection(shared: &Shared, codec: &AnyCodec, identity: Option<AnyIdentity>) -> Connection {
    let conn = Connection::new(Accepted {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        peer: None,
        path: String::new(),
        headers: Default::default(),
        encoder: FrameEncoder::new(Framing::V1, codec.clone(), shared.compression),
        server_state: shared.states.clone(),
        peer_certificates: None,
        identity,
        hub: shared.hub.clone(),
        queue: 1,
    });
    conn.stop_sending();
    conn
}

impl Link {
    /// A connection for a forwarded call: one per codec, shared, when the call carries no
    /// identity (most calls); a new one with its identity otherwise.
    fn connection(&self, shared: &Shared, codec: &AnyCodec, identity: Option<AnyIdentity>) -> Connection {
        if identity.is_some() {
            return forwarded_connection(shared, codec, identity);
        }
        let slot = &self.conns[usize::from(codec.is_text())];
        slot.get_or_init(|| forwarded_connection(shared, codec, None))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_subjects_are_the_call_subjects_and_the_cache_stays_bounded() {
        let subjects = Subjects::default();
        for path in ["/echo", "/a b/ç", "/echo"] {
            assert_eq!(subjects.call("wm", path).as_str(), call_subject("wm", path));
        }
        assert_eq!(subjects.read().len(), 2);
        let long = format!("/{}", "x".repeat(SUBJECT_PATH_CACHED));
        assert_eq!(subjects.call("wm", &long).as_str(), call_subject("wm", &long));
        assert_eq!(subjects.read().len(), 2, "a long path is not kept");
        for n in 0..2 * SUBJECTS_CACHED {
            let path = format!("/p/{n}");
            assert_eq!(subjects.call("wm", &path).as_str(), call_subject("wm", &path));
        }
        assert_eq!(subjects.read().len(), SUBJECTS_CACHED);
    }

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
        for ok in ["webmesh", "acme.prod", "a-b_c"] {
            assert!(valid_prefix(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\tb"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
        assert_eq!(path_of("%FF"), None, "not UTF-8");
    }
}
