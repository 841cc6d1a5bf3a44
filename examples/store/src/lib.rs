//! A stand-in for a server-only dependency, such as a database client. The contract crate uses it
//! in its handler bodies, behind its `server` feature: the client binary never compiles or links
//! it (see `examples/client`).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// A process-wide in-memory key-value store.
pub fn global() -> &'static Mutex<BTreeMap<String, String>> {
    static STORE: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    STORE.get_or_init(Mutex::default)
}
