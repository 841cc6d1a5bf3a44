//! The client side of topics: each subscription's bounded buffer and its stream of events, and
//! the driver's bookkeeping (sequence numbers per path, resubscribing after a reconnection).

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;
use webmesh_codec::Frame;

use super::driver::Command;
use super::Handle;
use crate::topics::{matches, Event, LagPolicy, NoticeBody, Since, SubscribeBody, Topic};

/// Default [`SubscribeOptions::buffer`].
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 1024;

/// How to subscribe; see [`Client::subscribe_with`](crate::Client::subscribe_with).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The path or pattern to subscribe to: the topic's own by default; a concrete path of a
    /// pattern topic (`/prices/acme` for `/prices/*`) narrows it.
    pub path: Option<String>,
    /// Events kept for a reader that is behind; past it [`on_lag`](Self::on_lag) applies.
    /// Default [`DEFAULT_SUBSCRIPTION_BUFFER`].
    pub buffer: usize,
    /// What happens when the subscriber falls behind, here or at the server. Default
    /// [`LagPolicy::DropOldest`].
    pub on_lag: LagPolicy,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            path: None,
            buffer: DEFAULT_SUBSCRIPTION_BUFFER,
            on_lag: LagPolicy::DropOldest,
        }
    }
}

impl SubscribeOptions {
    /// Sets [`path`](Self::path).
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets [`buffer`](Self::buffer) (at least 1).
    #[must_use]
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// Sets [`on_lag`](Self::on_lag).
    #[must_use]
    pub fn on_lag(mut self, policy: LagPolicy) -> Self {
        self.on_lag = policy;
        self
    }
}

/// An event before it is typed (the message still a frame): what the driver hands a
/// subscription.
pub(crate) type RawEvent = Event<Frame>;

/// A subscription's buffer, shared by the driver (writer) and the stream (reader).
pub(crate) struct Buffer {
    state: Mutex<BufferState>,
    waker: AtomicWaker,
}

struct BufferState {
    events: VecDeque<RawEvent>,
    capacity: usize,
    policy: LagPolicy,
    /// Messages dropped from this buffer, per path, not yet reported.
    dropped: BTreeMap<String, u64>,
    /// Ended: nothing more comes after the events left.
    ended: bool,
}

impl Buffer {
    pub(crate) fn new(capacity: usize, policy: LagPolicy) -> Arc<Self> {
        Arc::new(Buffer {
            state: Mutex::new(BufferState {
                events: VecDeque::new(),
                capacity: capacity.max(1),
                policy,
                dropped: BTreeMap::new(),
                ended: false,
            }),
            waker: AtomicWaker::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BufferState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the reader (after a batch of [`push`](Self::push)es).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Adds an event; false when the subscription must end (its reader is behind, under the
    /// close policy). The reader is woken at once only when it ends; otherwise by
    /// [`wake`](Self::wake), once the driver's batch of frames is done.
    pub(crate) fn push(&self, event: RawEvent) -> bool {
        let mut st = self.lock();
        if st.ended {
            return false;
        }
        let mut keep = true;
        if st.events.len() >= st.capacity {
            match st.policy {
                LagPolicy::DropOldest => {
                    // The oldest message goes, counted; news of losses and gaps stays.
                    let oldest = st.events.iter().position(|e| matches!(e, Event::Message { .. }));
                    match oldest.and_then(|i| st.events.remove(i)) {
                        Some(Event::Message { path, .. }) => *st.dropped.entry(path).or_default() += 1,
                        _ => {
                            if let Some(Event::Lagged { path, missed }) = st.events.pop_front() {
                                *st.dropped.entry(path).or_default() += missed;
                            }
                        }
                    }
                }
                LagPolicy::Close => {
                    st.events.push_back(Event::Closed {
                        reason: "the subscriber fell behind (close policy)".into(),
                    });
                    st.ended = true;
                    keep = false;
                }
            }
        }
        if keep {
            if matches!(event, Event::Closed { .. }) {
                st.ended = true;
            }
            st.events.push_back(event);
        }
        let ended = st.ended;
        drop(st);
        if ended {
            self.waker.wake();
        }
        keep
    }

    /// Ends the subscription with `reason` (the connection closed for good).
    pub(crate) fn close(&self, reason: &str) {
        let mut st = self.lock();
        if !st.ended {
            st.ended = true;
            st.events.push_back(Event::Closed {
                reason: reason.to_owned(),
            });
        }
        drop(st);
        self.waker.wake();
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<RawEvent>> {
        let mut st = self.lock();
        if let Some((path, missed)) = st.dropped.pop_first() {
            return Poll::Ready(Some(Event::Lagged { path, missed }));
        }
        if let Some(e) = st.events.pop_front() {
            return Poll::Ready(Some(e));
        }
        if st.ended {
            return Poll::Ready(None);
        }
        self.waker.register(cx.waker());
        Poll::Pending
    }
}

/// A subscription to a topic: a [`Stream`] of [`Event`]s, typed. Dropping it unsubscribes.
///
/// With reconnection on, it outlives the connection: the client resubscribes by itself and
/// the stream goes on, with the messages missed meanwhile (from the server's history) or an
/// [`Event::Gap`]. Without, it ends with [`Event::Closed`] when the connection does.
pub struct Subscription<T> {
    pub(crate) id: u64,
    pub(crate) path: String,
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) handle: Arc<Handle>,
    pub(crate) _topic: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T> Subscription<T> {
    /// The path or pattern subscribed to.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl<T: Topic> Stream for Subscription<T> {
    type Item = Event<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<T>>> {
        self.buffer.poll_next(cx).map(|e| e.map(typed))
    }
}

/// An untyped subscription ([`Client::subscribe_untyped`](crate::Client::subscribe_untyped)).
impl Stream for Subscription<crate::Value> {
    type Item = Event<crate::Value>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<crate::Value>>> {
        self.buffer.poll_next(cx).map(|e| e.map(typed))
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let _ = self.handle.cmd.try_send(Command::Unsubscribe { id: self.id });
    }
}

fn typed<T: serde::de::DeserializeOwned>(event: RawEvent) -> Event<T> {
    match event {
        Event::Message { path, seq, value } => match value.decode::<T>() {
            Ok(value) => Event::Message { path, seq, value },
            Err(e) => Event::Undecodable {
                path,
                error: e.to_string(),
            },
        },
        Event::Lagged { path, missed } => Event::Lagged { path, missed },
        Event::Gap {
            path,
            missed,
            epoch_changed,
        } => Event::Gap {
            path,
            missed,
            epoch_changed,
        },
        Event::Undecodable { path, error } => Event::Undecodable { path, error },
        Event::Closed { reason } => Event::Closed { reason },
    }
}

/// A subscription as the client driver keeps it.
pub(crate) struct Local {
    pub(crate) pattern: String,
    pub(crate) on_lag: LagPolicy,
    pub(crate) buffer: Arc<Buffer>,
    /// The last sequence number delivered, per concrete path.
    pub(crate) last: BTreeMap<String, u64>,
    /// Per path, the sequence number up to which losses were already reported by a lag
    /// notice (which can overtake messages queued before it).
    pub(crate) reported: BTreeMap<String, u64>,
    /// The server answered a `Subscribe` for it at least once.
    pub(crate) acked: bool,
    /// Events were added since the reader was last woken.
    unwoken: bool,
}

impl Local {
    pub(crate) fn new(pattern: String, on_lag: LagPolicy, buffer: Arc<Buffer>) -> Self {
        Local {
            pattern,
            on_lag,
            buffer,
            last: BTreeMap::new(),
            reported: BTreeMap::new(),
            acked: false,
            unwoken: false,
        }
    }

    /// Adds `event` to the buffer; the reader is woken by [`wake`](Self::wake).
    fn add(&mut self, event: RawEvent) -> bool {
        self.unwoken = true;
        self.buffer.push(event)
    }

    /// Wakes the reader if events were added since it was last woken.
    pub(crate) fn wake(&mut self) {
        if std::mem::take(&mut self.unwoken) {
            self.buffer.wake();
        }
    }

    /// The body of the `Subscribe` for it: with where it left off, after a reconnection.
    pub(crate) fn body(&self, epoch: Option<u64>) -> SubscribeBody {
        SubscribeBody {
            since: epoch.filter(|_| self.acked).map(|epoch| Since {
                epoch,
                last: self.last.clone(),
            }),
            on_lag: (self.on_lag == LagPolicy::Close).then(|| "close".to_owned()),
        }
    }

    /// The server's answer to its first `Subscribe`: where each path stood, so that what comes
    /// after is told apart from what came before.
    pub(crate) fn acked(&mut self, at: BTreeMap<String, u64>) {
        if !self.acked {
            self.acked = true;
            for (path, seq) in at {
                self.last.entry(path).or_insert(seq);
            }
        }
    }

    /// A message at `path` with `seq`: delivered, after a lag event if numbers were skipped
    /// (and not already reported); dropped if already seen (a replay). False when the
    /// subscription must end.
    pub(crate) fn message(&mut self, path: &str, seq: u64, frame: &Frame) -> bool {
        if !matches(&self.pattern, path) {
            return true;
        }
        let last = match self.last.get_mut(path) {
            Some(l) if seq <= *l => return true,
            Some(l) => Some(std::mem::replace(l, seq)),
            None => {
                self.last.insert(path.to_owned(), seq);
                None
            }
        };
        if let Some(l) = last {
            let from = l.max(self.reported.get(path).copied().unwrap_or(0));
            if seq > from + 1
                && !self.add(Event::Lagged {
                    path: path.to_owned(),
                    missed: seq - from - 1,
                })
            {
                return false;
            }
        }
        self.add(Event::Message {
            path: path.to_owned(),
            seq,
            value: frame.clone(),
        })
    }

    /// A notice for this subscription (or, for a lag, for its path). False when it must end.
    pub(crate) fn notice(&mut self, notice: &NoticeBody) -> bool {
        match notice.kind.as_str() {
            "lag" => {
                let (Some(path), Some(upto)) = (&notice.path, notice.upto) else {
                    return true;
                };
                if !matches(&self.pattern, path) {
                    return true;
                }
                // Losses already reported, from a skip in the numbers or an earlier notice.
                let known = self
                    .last
                    .get(path)
                    .copied()
                    .unwrap_or(0)
                    .max(self.reported.get(path).copied().unwrap_or(0));
                if upto <= known {
                    return true;
                }
                self.reported.insert(path.clone(), upto);
                let missed = notice.missed.unwrap_or(upto - known).min(upto - known);
                self.add(Event::Lagged {
                    path: path.clone(),
                    missed,
                })
            }
            "gap" => {
                if notice.epoch_changed {
                    self.last.clear();
                    self.reported.clear();
                }
                // The numbers it covers are accounted for: no lag event for them later.
                if let (Some(path), Some(upto)) = (&notice.path, notice.upto) {
                    let known = self.reported.entry(path.clone()).or_default();
                    *known = (*known).max(upto);
                }
                self.add(Event::Gap {
                    path: notice.path.clone(),
                    missed: notice.missed,
                    epoch_changed: notice.epoch_changed,
                })
            }
            "closed" => {
                self.add(Event::Closed {
                    reason: notice.reason.clone(),
                });
                false
            }
            _ => true,
        }
    }
}
