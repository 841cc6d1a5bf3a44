//! The contract of a small key-value service: the types that travel and the routes that serve
//! them, in one crate that both the server (`examples/server`) and the client (`examples/client`)
//! depend on. A client calling a route with the wrong payload type does not compile.
//!
//! The handler bodies use a server-only dependency (`example-store`); each route says
//! `server_feature = "server"`, so they are compiled only with this crate's own `server` feature.
//! Without it, `#[webmesh::route]` keeps only the typed stubs (`put::call`, `get::Route`, ...).
//! A server mounts the routes with `.routes(example_contract::routes())`.

use serde::{Deserialize, Serialize};

// `pub fn routes()`: every route below, for a server to mount.
webmesh::routes!();

/// Stores `value` under `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// What can go wrong in the store; reaches the caller typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreError {
    /// No value under this key.
    NotFound(String),
    /// Keys are 1 to 64 characters.
    BadKey(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound(k) => write!(f, "no value under {k:?}"),
            StoreError::BadKey(k) => write!(f, "bad key {k:?}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Stores a value; returns the value it replaces, if any.
#[webmesh::route("/kv/put", server_feature = "server")]
pub async fn put(req: Put, conn: &webmesh::Connection) -> Result<Option<String>, StoreError> {
    if req.key.is_empty() || req.key.len() > 64 {
        return Err(StoreError::BadKey(req.key));
    }
    let old = ::example_store::global()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(req.key.clone(), req.value);
    // Tell the caller (and only it) what changed: a server push.
    let _ = conn.push("/kv/changed", &req.key).await;
    Ok(old)
}

/// Reads a value.
#[webmesh::route("/kv/get", server_feature = "server")]
pub fn get(key: String) -> Result<String, StoreError> {
    ::example_store::global()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned()
        .ok_or(StoreError::NotFound(key))
}

/// How many keys are stored.
#[webmesh::route("/kv/len", server_feature = "server")]
pub fn len() -> usize {
    ::example_store::global()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
}

/// Removes every key. Nothing to answer: a 0.1.2 caller gets no reply.
#[webmesh::route("/kv/clear", server_feature = "server")]
pub async fn clear() {
    ::example_store::global()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}
