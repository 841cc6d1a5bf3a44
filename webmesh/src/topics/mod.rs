//! Topics: typed publish/subscribe, declared in the contract next to the routes.
//!
//! A topic is a path (or a pattern of paths) and the type of its messages, declared once with
//! [`#[webmesh::topic("/path")]`](crate::topic). The server publishes from anywhere
//! ([`Topics::publish`]); clients subscribe with `Client::subscribe` and get a stream of
//! [`Event`]s. Every message carries a sequence number per path, and the server an epoch that
//! changes when it restarts: a client that reconnects resubscribes with the last numbers it saw
//! and gets the messages it missed from a bounded history, or an explicit [`Event::Gap`]. A
//! subscriber that falls behind gets [`Event::Lagged`], never a silent hole.

#[cfg(feature = "server")]
pub(crate) mod hub;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(feature = "server")]
pub use hub::{Topics, DEFAULT_TOPIC_HISTORY, DEFAULT_TOPIC_HISTORY_AGE};

/// A topic: the messages published on a path, or on every path of a pattern, typed.
///
/// Declare it with [`#[webmesh::topic("/orders/created")]`](crate::topic) on the message type. A
/// pattern has `*` segments, each matching one segment of a path: `#[webmesh::topic("/prices/*")]`
/// is published at concrete paths (`/prices/ACME`) and subscribed to at any of them or at the
/// pattern itself. Publishing or subscribing with another type does not compile.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a declared topic",
    label = "not a topic",
    note = "declare it in the contract next to the routes: `#[webmesh::topic(\"/path\")] pub struct Msg {{ .. }}`"
)]
pub trait Topic: Serialize + DeserializeOwned + Send + 'static {
    /// The topic's path, or its pattern (with `*` segments).
    const PATH: &'static str;
}

/// True when `path` is a pattern (has a `*` segment).
pub(crate) fn is_pattern(path: &str) -> bool {
    path.split('/').any(|s| s == "*")
}

/// True when the concrete `path` matches `pattern`, segment by segment; `*` matches any one
/// segment.
pub(crate) fn matches(pattern: &str, path: &str) -> bool {
    if pattern == path {
        return true;
    }
    let mut p = pattern.split('/');
    let mut c = path.split('/');
    loop {
        match (p.next(), c.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// What a subscriber gets: messages, and news of what it did not get.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<T> {
    /// A message, at `path` (the concrete path, for a pattern subscription), with its sequence
    /// number on that path.
    Message {
        /// Where it was published.
        path: String,
        /// Its sequence number on `path` (from 1, in publishing order).
        seq: u64,
        /// The message.
        value: T,
    },
    /// `missed` messages at `path` were lost because this subscriber fell behind (the server's
    /// queue for its connection, or its own buffer, was full).
    Lagged {
        /// Where.
        path: String,
        /// How many.
        missed: u64,
    },
    /// Messages the subscriber did not see and cannot get back: after a reconnection, the server
    /// restarted (`epoch_changed`) or no longer has them in its history.
    Gap {
        /// Where (`None`: every path of the subscription).
        path: Option<String>,
        /// How many, when the server knows.
        missed: Option<u64>,
        /// The server restarted: sequence numbers start again.
        epoch_changed: bool,
    },
    /// A message arrived that does not decode as `T` (a publisher out of step with the
    /// contract): skipped.
    Undecodable {
        /// Where.
        path: String,
        /// Why.
        error: String,
    },
    /// The server ended the subscription (it fell behind under the close policy, or the topic is
    /// no longer served); nothing more comes.
    Closed {
        /// Why.
        reason: String,
    },
}

/// What a subscriber does when it falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Drop the oldest messages and say how many with [`Event::Lagged`]. The default.
    #[default]
    DropOldest,
    /// End the subscription with [`Event::Closed`].
    Close,
}

// --- Wire bodies (PROTOCOL.md §9) ---------------------------------------------------------

/// The body of a `Subscribe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SubscribeBody {
    /// Resume after these sequence numbers, if the server's epoch is still `epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) since: Option<Since>,
    /// `"drop_oldest"` (default) or `"close"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) on_lag: Option<String>,
}

/// Where a resubscribing client left off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Since {
    pub(crate) epoch: u64,
    /// The last sequence number seen, per concrete path.
    pub(crate) last: BTreeMap<String, u64>,
}

/// The body of the `Reply` to a `Subscribe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Subscribed {
    pub(crate) epoch: u64,
    /// For a first subscription: the sequence number each matching path is at, so that a
    /// resubscription later knows where this one started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) at: BTreeMap<String, u64>,
}

/// The body of a `Notice`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct NoticeBody {
    /// `"lag"`, `"gap"` or `"closed"`.
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) missed: Option<u64>,
    /// For a lag: the sequence number of the last message missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upto: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) epoch_changed: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_one_segment_per_star() {
        assert!(matches("/orders/*", "/orders/created"));
        assert!(!matches("/orders/*", "/orders/created/late"));
        assert!(!matches("/orders/*", "/orders"));
        assert!(matches("/prices/*/eur", "/prices/acme/eur"));
        assert!(matches("/a", "/a"));
        assert!(!matches("/a", "/b"));
        assert!(is_pattern("/prices/*") && !is_pattern("/prices/acme"));
    }
}
