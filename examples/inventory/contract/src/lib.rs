//! The contract of a small inventory service: the types that travel, the routes that serve them
//! and the message the server pushes, in one crate that the server and every client depend on.
//! A client calling a route with the wrong payload, or handling a push of the wrong type, does
//! not compile.
//!
//! The handler bodies and the store they use are compiled only with this crate's `server`
//! feature (`server_feature = "server"` on each route); without it, `#[webmesh::route]` keeps the
//! typed stubs (`take::call`, `stock::call_blocking`, ...). A server mounts the routes with
//! `.routes(inventory_contract::routes())` and gives them their store with `.state(..)`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// `pub fn routes()`: every route below, for the server to mount.
webmesh::routes!();

/// A quantity of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    /// The item's stock-keeping unit, like `"bolt-m6"`.
    pub sku: String,
    /// How many.
    pub qty: u32,
}

impl Line {
    /// `qty` of `sku`.
    pub fn new(sku: &str, qty: u32) -> Self {
        Line {
            sku: sku.to_owned(),
            qty,
        }
    }
}

/// What can go wrong; reaches the caller typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StockError {
    /// No such item.
    Unknown(String),
    /// Fewer left than asked for.
    Short {
        /// The item.
        sku: String,
        /// How many are left.
        left: u32,
    },
}

impl std::fmt::Display for StockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StockError::Unknown(sku) => write!(f, "no item {sku:?}"),
            StockError::Short { sku, left } => write!(f, "only {left} of {sku:?} left"),
        }
    }
}

impl std::error::Error for StockError {}

/// Pushed to the client that took the last items but a few.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[webmesh::push("/stock/low")]
pub struct LowStock {
    /// The item.
    pub sku: String,
    /// How many are left.
    pub left: u32,
}

/// The server's store: what a database pool would be in a real service. Only the server builds
/// it, with the `server` feature.
#[cfg(feature = "server")]
pub mod store {
    use std::collections::BTreeMap;

    use parking_lot::RwLock;

    /// Items and their quantities, shared by every connection's handlers.
    #[derive(Debug, Default)]
    pub struct Store {
        pub(crate) items: RwLock<BTreeMap<String, u32>>,
        /// At or below this, taking an item pushes [`LowStock`](crate::LowStock).
        pub low_mark: u32,
    }

    impl Store {
        /// An empty store that warns at `low_mark`.
        pub fn new(low_mark: u32) -> Self {
            Store {
                items: RwLock::default(),
                low_mark,
            }
        }
    }
}

#[cfg(feature = "server")]
use store::Store;

/// Adds to an item's stock; returns the new quantity.
#[webmesh::route("/stock/add", server_feature = "server")]
pub fn add(line: Line, store: &webmesh::State<Store>) -> u32 {
    let mut items = store.items.write();
    let qty = items.entry(line.sku).or_default();
    *qty = qty.saturating_add(line.qty);
    *qty
}

/// Takes from an item's stock; returns what is left, and pushes [`LowStock`] to the caller
/// when that is at the store's low mark or below.
#[webmesh::route("/stock/take", server_feature = "server")]
pub async fn take(
    line: Line,
    store: &webmesh::State<Store>,
    conn: &webmesh::Connection,
) -> Result<u32, StockError> {
    let left = {
        let mut items = store.items.write();
        let qty = items
            .get_mut(&line.sku)
            .ok_or_else(|| StockError::Unknown(line.sku.clone()))?;
        *qty = qty.checked_sub(line.qty).ok_or_else(|| StockError::Short {
            sku: line.sku.clone(),
            left: *qty,
        })?;
        *qty
    };
    if left <= store.low_mark {
        let low = LowStock { sku: line.sku, left };
        let _ = conn.push_message(&low).await;
    }
    Ok(left)
}

/// The quantity of one item.
#[webmesh::route("/stock/get", server_feature = "server")]
pub fn stock(sku: String, store: &webmesh::State<Store>) -> Result<u32, StockError> {
    store
        .items
        .read()
        .get(&sku)
        .copied()
        .ok_or(StockError::Unknown(sku))
}

/// Every item with its quantity, by SKU.
#[webmesh::route("/stock/report", server_feature = "server")]
pub fn report(store: &webmesh::State<Store>) -> Vec<Line> {
    let items = store.items.read();
    items.iter().map(|(sku, qty)| Line::new(sku, *qty)).collect()
}
