//! The server side of topics: sequence numbers, history, subscriptions and fan-out; and
//! broadcast and groups for pushes.
//!
//! One mutex guards the hub. A publish takes it to number the message, keep it in the history and
//! hand the same bytes to every subscribed connection's outbound queue without waiting: a
//! connection whose queue is full misses the message and is told (a lag notice), so one slow
//! subscriber never slows the publisher or the others, and memory stays bounded.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use webmesh_codec::{AnyCodec, Compression, FrameEncoder, Framing, WireMessage};

use super::{is_pattern, matches, NoticeBody, Since, SubscribeBody, Subscribed, Topic};
use crate::conn::to_message;
use crate::connection::{Connection, Enqueue};
use crate::error::{Error, Result};
use crate::route::Push;

/// Default number of messages each topic path keeps for resubscribing clients.
pub const DEFAULT_TOPIC_HISTORY: usize = 1024;
/// Default age past which a kept message is dropped from the history.
pub const DEFAULT_TOPIC_HISTORY_AGE: Duration = Duration::from_secs(60);

/// A message encoded once per codec the server speaks, in the order of `Hub::encoders`.
type Frames = Arc<Vec<Message>>;

/// The server's topics and connections: publish, broadcast, groups. Cheap to clone; get it from
/// `ServerHandle::topics`, `Server::topics` or, in a handler, `Connection::topics`.
///
/// # Examples
///
/// ```no_run
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[webmesh::topic("/orders/created")]
/// pub struct OrderCreated { pub id: u64 }
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// let server = webmesh::Server::builder().build().await?;
/// let topics = server.topics();
/// let handle = server.spawn();
/// // From anywhere: a handler, a background task, another thread.
/// let delivered = topics.publish(&OrderCreated { id: 7 })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Topics {
    pub(crate) hub: Arc<Hub>,
}

impl fmt::Debug for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topics")
            .field("epoch", &self.hub.epoch)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Hub {
    pub(crate) epoch: u64,
    history: usize,
    history_age: Duration,
    /// An encoder per codec the server speaks (v1 framing).
    encoders: Vec<FrameEncoder>,
    state: Mutex<State>,
    /// Where this server's publishes also go (the cluster), with the message in msgpack.
    #[cfg(feature = "nats")]
    bridge: std::sync::OnceLock<Bridge>,
}

/// Takes a publish for the other nodes: its path and the message in msgpack.
#[cfg(feature = "nats")]
pub(crate) type Bridge = Box<dyn Fn(&str, Vec<u8>) + Send + Sync>;

/// A subscription's key: its connection's id, then its id on that connection. Kept in ordered
/// maps, so one connection's subscriptions are next to each other and a publish reaches each
/// connection once without a set to remember which it reached.
type Key = (u64, u64);

#[derive(Default)]
struct State {
    logs: HashMap<String, Log>,
    /// Subscriptions to one path, by path.
    exact: HashMap<String, BTreeMap<Key, Sub>>,
    /// Subscriptions to a pattern.
    patterns: BTreeMap<Key, Sub>,
    /// Where each subscription is: its pattern (or path).
    subs: HashMap<Key, String>,
    /// Every v1 connection, and the index of its codec in `Hub::encoders`, for broadcast and
    /// groups.
    conns: HashMap<u64, (Connection, usize)>,
    groups: HashMap<String, HashSet<u64>>,
}

/// One topic path: its last sequence number and what it keeps.
#[derive(Default)]
struct Log {
    seq: u64,
    history: VecDeque<Kept>,
}

struct Kept {
    seq: u64,
    at: Instant,
    frames: Frames,
}

struct Sub {
    conn: Connection,
    /// Index of the connection's codec in `Hub::encoders`.
    codec: usize,
    pattern: String,
    close_on_lag: bool,
}

impl Hub {
    pub(crate) fn new(
        codecs: &[AnyCodec],
        compression: Compression,
        history: usize,
        history_age: Duration,
    ) -> Self {
        Hub {
            epoch: new_epoch(),
            history,
            history_age,
            encoders: codecs
                .iter()
                .map(|c| FrameEncoder::new(Framing::V1, c.clone(), compression))
                .collect(),
            state: Mutex::default(),
            #[cfg(feature = "nats")]
            bridge: std::sync::OnceLock::new(),
        }
    }

    /// Sends every publish of this server to the cluster too (once).
    #[cfg(feature = "nats")]
    pub(crate) fn set_bridge(&self, bridge: Bridge) {
        let _ = self.bridge.set(bridge);
    }

    /// Tells every subscription of this server that messages may be missing, on no path in
    /// particular (the link to the cluster was down).
    #[cfg(feature = "nats")]
    pub(crate) fn gap_everywhere(&self, reason: &str) {
        let st = self.state();
        let subs = st.exact.values().flat_map(|m| m.iter()).chain(st.patterns.iter());
        for (key, sub) in subs {
            sub.conn.note_notice(
                key.1,
                NoticeBody {
                    kind: "gap".into(),
                    reason: reason.into(),
                    ..NoticeBody::default()
                },
            );
        }
    }

    /// Publishes a message that came from another node: here only.
    #[cfg(feature = "nats")]
    pub(crate) fn publish_remote(&self, path: &str, value: &crate::Value) -> Result<usize> {
        self.publish_inner(path, value, false)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes `f`'s frame with every codec.
    fn frames(&self, f: impl Fn(&FrameEncoder) -> webmesh_codec::Result<WireMessage>) -> Result<Frames> {
        let mut out = Vec::with_capacity(self.encoders.len());
        for enc in &self.encoders {
            out.push(to_message(f(enc)?));
        }
        Ok(Arc::new(out))
    }

    /// The index of `conn`'s codec in `encoders` (found by name once, not per message).
    fn codec_of(&self, conn: &Connection) -> usize {
        let name = conn.codec_name();
        self.encoders
            .iter()
            .position(|e| e.codec().name() == name)
            .unwrap_or(0)
    }

    pub(crate) fn add_connection(&self, conn: &Connection) {
        if conn.framing() == Framing::V1 {
            let codec = self.codec_of(conn);
            self.state().conns.insert(conn.id(), (conn.clone(), codec));
        }
    }

    /// Forgets a connection that ended: its subscriptions and group memberships.
    pub(crate) fn remove_connection(&self, id: u64) {
        let mut st = self.state();
        st.conns.remove(&id);
        let keys: Vec<Key> = st.subs.keys().filter(|(c, _)| *c == id).copied().collect();
        for key in keys {
            st.remove_sub(key);
        }
        st.groups.retain(|_, members| {
            members.remove(&id);
            !members.is_empty()
        });
    }

    /// Subscribes `conn` (subscription `id`) to `pattern`: the reply, and the frames to send
    /// right after it (notices of gaps, and the messages it missed, in order).
    pub(crate) fn subscribe(
        &self,
        conn: &Connection,
        id: u64,
        pattern: &str,
        body: SubscribeBody,
    ) -> (Subscribed, Vec<Message>) {
        let codec = self.codec_of(conn);
        let mut st = self.state();
        let mut then = Vec::new();
        let mut ack = Subscribed {
            epoch: self.epoch,
            at: BTreeMap::new(),
        };
        match &body.since {
            Some(since) => self.resume(&mut st, conn, id, pattern, since, codec, &mut then),
            None => {
                ack.at = st
                    .logs
                    .iter()
                    .filter(|(path, _)| matches(pattern, path))
                    .map(|(path, log)| (path.clone(), log.seq))
                    .collect();
            }
        }
        let key = (conn.id(), id);
        st.remove_sub(key);
        st.subs.insert(key, pattern.to_owned());
        let sub = Sub {
            conn: conn.clone(),
            codec,
            pattern: pattern.to_owned(),
            close_on_lag: body.on_lag.as_deref() == Some("close"),
        };
        if is_pattern(pattern) {
            st.patterns.insert(key, sub);
        } else {
            st.exact.entry(pattern.to_owned()).or_default().insert(key, sub);
        }
        (ack, then)
    }

    /// What a resubscribing client missed since `since`, in order: replayed from the history, with
    /// a gap notice first wherever the history no longer reaches back far enough. After a restart
    /// (another epoch) every kept message is new to it, after a gap notice for what the old server
    /// took with it.
    #[allow(clippy::too_many_arguments)]
    fn resume(
        &self,
        st: &mut State,
        conn: &Connection,
        id: u64,
        pattern: &str,
        since: &Since,
        codec: usize,
        then: &mut Vec<Message>,
    ) {
        let notice = |body: NoticeBody| notice_frame(conn, id, &body);
        let restarted = since.epoch != self.epoch;
        if restarted {
            then.extend(notice(NoticeBody {
                kind: "gap".into(),
                epoch_changed: true,
                reason: "the server restarted: sequence numbers start again".into(),
                ..NoticeBody::default()
            }));
        }
        self.trim(st);
        for (path, log) in st.logs.iter().filter(|(path, _)| matches(pattern, path)) {
            let last = if restarted {
                0
            } else {
                since.last.get(path).copied().unwrap_or(0)
            };
            if log.seq <= last {
                continue;
            }
            let first_kept = log.history.front().map_or(log.seq + 1, |k| k.seq);
            if first_kept > last + 1 {
                then.extend(notice(NoticeBody {
                    kind: "gap".into(),
                    path: Some(path.clone()),
                    missed: Some(first_kept - last - 1),
                    upto: Some(first_kept - 1),
                    reason: "no longer in the server's history".into(),
                    ..NoticeBody::default()
                }));
            }
            for kept in log.history.iter().filter(|k| k.seq > last) {
                then.extend(kept.frames.get(codec).cloned());
            }
        }
    }

    pub(crate) fn unsubscribe(&self, conn: u64, id: u64) {
        self.state().remove_sub((conn, id));
    }

    /// Publishes `value` at the concrete `path`: numbers it, keeps it, and hands it to every
    /// subscribed connection. Returns how many connections took it.
    fn publish_at<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<usize> {
        self.publish_inner(path, value, true)
    }

    #[cfg_attr(not(feature = "nats"), allow(unused_variables))]
    fn publish_inner<T: Serialize + ?Sized>(&self, path: &str, value: &T, bridged: bool) -> Result<usize> {
        if is_pattern(path) {
            return Err(Error::Config(format!(
                "cannot publish at the pattern {path:?}: publish at a concrete path"
            )));
        }
        let mut st = self.state();
        let seq = st.logs.get(path).map_or(0, |l| l.seq) + 1;
        let frames = self.frames(|enc| enc.topic_message(seq, path, value))?;
        // In the lock: the other nodes get this server's publishes in its order.
        #[cfg(feature = "nats")]
        if let Some(bridge) = self.bridge.get().filter(|_| bridged) {
            let mut msgpack = Vec::new();
            webmesh_codec::AnyCodec::MSGPACK.encode(value, &mut msgpack)?;
            bridge(path, msgpack);
        }
        if !st.logs.contains_key(path) {
            st.logs.insert(path.to_owned(), Log::default());
        }
        if let Some(log) = st.logs.get_mut(path) {
            log.seq = seq;
            if self.history > 0 {
                log.history.push_back(Kept {
                    seq,
                    at: Instant::now(),
                    frames: frames.clone(),
                });
                while log.history.len() > self.history {
                    log.history.pop_front();
                }
            }
        }
        // Each connection once, however many of its subscriptions match: subscriptions are in
        // key order, so one connection's are next to each other.
        let exact = st.exact.get(path).into_iter().flatten();
        let targets: Box<dyn Iterator<Item = (&Key, &Sub)>> =
            if st.patterns.values().any(|s| matches(&s.pattern, path)) {
                let mut all: Vec<(&Key, &Sub)> = exact
                    .chain(st.patterns.iter().filter(|(_, s)| matches(&s.pattern, path)))
                    .collect();
                all.sort_unstable_by_key(|(k, _)| **k);
                Box::new(all.into_iter())
            } else {
                Box::new(exact)
            };
        let mut delivered = 0;
        let mut gone = Vec::new();
        let mut last_conn = None;
        for (key, sub) in targets {
            if last_conn.replace(key.0) == Some(key.0) {
                continue;
            }
            let Some(frame) = frames.get(sub.codec) else {
                continue;
            };
            match sub.conn.offer_topic(frame, path, seq) {
                Enqueue::Sent => delivered += 1,
                Enqueue::Full => {
                    if sub.close_on_lag {
                        sub.conn.note_notice(
                            key.1,
                            NoticeBody {
                                kind: "closed".into(),
                                reason: "the subscriber fell behind (close policy)".into(),
                                ..NoticeBody::default()
                            },
                        );
                        gone.push(*key);
                    }
                }
                Enqueue::Closed => gone.push(*key),
            }
        }
        for key in gone {
            st.remove_sub(key);
        }
        Ok(delivered)
    }

    /// Drops kept messages past the history's age.
    fn trim(&self, st: &mut State) {
        let Some(oldest) = Instant::now().checked_sub(self.history_age) else {
            return;
        };
        for log in st.logs.values_mut() {
            while log.history.front().is_some_and(|k| k.at < oldest) {
                log.history.pop_front();
            }
        }
    }

    /// Pushes `message` on `path` to `targets` (connection ids), without waiting; how many took
    /// it.
    fn push_to(
        &self,
        targets: impl Fn(&State) -> Vec<u64>,
        path: &str,
        message: &impl Serialize,
    ) -> Result<usize> {
        let frames = self.frames(|enc| enc.notify(path, message))?;
        let st = self.state();
        let mut delivered = 0;
        for id in targets(&st) {
            let Some((conn, codec)) = st.conns.get(&id) else {
                continue;
            };
            let Some(frame) = frames.get(*codec) else { continue };
            if conn.enqueue(frame.clone()) == Enqueue::Sent {
                delivered += 1;
            } else {
                tracing::debug!(
                    connection = id,
                    path,
                    "push not delivered: the connection's queue is full or closed"
                );
            }
        }
        Ok(delivered)
    }

    pub(crate) fn join(&self, conn: &Connection, group: &str) {
        self.state()
            .groups
            .entry(group.to_owned())
            .or_default()
            .insert(conn.id());
    }

    pub(crate) fn leave(&self, conn: &Connection, group: &str) {
        let mut st = self.state();
        if let Some(members) = st.groups.get_mut(group) {
            members.remove(&conn.id());
            if members.is_empty() {
                st.groups.remove(group);
            }
        }
    }
}

impl State {
    fn remove_sub(&mut self, key: Key) {
        if let Some(pattern) = self.subs.remove(&key) {
            if is_pattern(&pattern) {
                self.patterns.remove(&key);
            } else if let Some(set) = self.exact.get_mut(&pattern) {
                set.remove(&key);
                if set.is_empty() {
                    self.exact.remove(&pattern);
                }
            }
        }
    }
}

/// A notice frame for subscription `id` of `conn`.
pub(crate) fn notice_frame(conn: &Connection, id: u64, body: &NoticeBody) -> Option<Message> {
    let enc = FrameEncoder::new(Framing::V1, conn.encoder().codec().clone(), Compression::none());
    enc.v1_frame(webmesh_codec::Kind::Notice, id, "", body)
        .ok()
        .map(to_message)
}

/// An epoch that differs between runs of a server: the clock and the process id, mixed.
pub(crate) fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    // Never 0: a client that never saw an epoch sends none rather than 0.
    h.finish().max(1)
}

impl Topics {
    /// The server's epoch: it changes when the server restarts.
    pub fn epoch(&self) -> u64 {
        self.hub.epoch
    }

    /// Publishes `message` on its topic's path; how many connections took it. Never waits: a
    /// subscriber whose queue is full misses it and gets a lag notice.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the topic is a pattern (use [`publish_at`](Self::publish_at));
    /// [`Error::Codec`] when `message` does not encode.
    pub fn publish<T: Topic>(&self, message: &T) -> Result<usize> {
        self.hub.publish_at(T::PATH, message)
    }

    /// Publishes `message` at `path`, a concrete path of its topic's pattern (`/prices/acme` for
    /// `/prices/*`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `path` does not match the topic's pattern; as
    /// [`publish`](Self::publish) otherwise.
    pub fn publish_at<T: Topic>(&self, path: &str, message: &T) -> Result<usize> {
        if !matches(T::PATH, path) {
            return Err(Error::Config(format!(
                "{path:?} is not a path of the topic {:?}",
                T::PATH
            )));
        }
        self.hub.publish_at(path, message)
    }

    /// Pushes `message` to every connection (v1 peers; a 0.1.2 peer would take it for the reply
    /// to its next call), without waiting; how many took it.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when `message` does not encode.
    pub fn broadcast<P: Push>(&self, message: &P) -> Result<usize> {
        self.hub
            .push_to(|st| st.conns.keys().copied().collect(), P::PATH, message)
    }

    /// Like [`broadcast`](Self::broadcast), to everyone but `except` (the sender, say).
    ///
    /// # Errors
    ///
    /// As [`broadcast`](Self::broadcast).
    pub fn broadcast_except<P: Push>(&self, message: &P, except: &Connection) -> Result<usize> {
        let skip = except.id();
        self.hub.push_to(
            |st| st.conns.keys().copied().filter(|&id| id != skip).collect(),
            P::PATH,
            message,
        )
    }

    /// Pushes `message` to the members of `group` (see [`Connection::join`]), optionally but
    /// `except`; how many took it.
    ///
    /// # Errors
    ///
    /// As [`broadcast`](Self::broadcast).
    pub fn to_group<P: Push>(&self, group: &str, message: &P, except: Option<&Connection>) -> Result<usize> {
        let skip = except.map(Connection::id);
        self.hub.push_to(
            |st| {
                st.groups
                    .get(group)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&id| Some(id) != skip)
                    .collect()
            },
            P::PATH,
            message,
        )
    }
}
