//! Server state: values the server owns (a database pool, a cache, a configuration) and hands to
//! every handler that asks for them by type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A value the server owns, taken by a handler as an argument: `db: &State<Db>` in a
/// `#[webmesh::route]` function, or `db: State<Db>` in a closure.
///
/// Register it with `ServerBuilder::state`; a route that takes a `State<T>` the server was not
/// given makes `build` fail, naming the route and the type. That holds for every route the
/// server serves, registered ones included: a binary that links a contract gives its servers
/// the contract's state (or turns off `ServerBuilder::registered_routes`). Cheap to clone (an `Arc`), and
/// dereferences to `T`. For state that changes, put the synchronization inside `T` (a pool, a
/// `Mutex`, an `RwLock`): handlers of many connections share it.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::RwLock;
/// use webmesh::State;
///
/// /// Stands for a connection pool.
/// pub struct Db { rows: RwLock<HashMap<String, u32>> }
///
/// /// Reads a row.
/// #[webmesh::route("/stock")]
/// pub fn stock(sku: String, db: &State<Db>) -> Option<u32> {
///     db.rows.read().unwrap().get(&sku).copied()
/// }
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// let db = Db { rows: RwLock::new(HashMap::from([("a-1".to_owned(), 3)])) };
/// let server = webmesh::Server::builder()
///     .state(db)
///     // Closures take it too, as an argument after the payload.
///     .on("/count", |_: (), db: State<Db>| async move { db.rows.read().unwrap().len() })
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct State<T: ?Sized>(Arc<T>);

impl<T> State<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        State(Arc::new(value))
    }
}

impl<T: ?Sized> State<T> {
    /// The shared value.
    pub fn arc(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        State(self.0.clone())
    }
}

impl<T: ?Sized> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&&*self.0).finish()
    }
}

/// A state type a handler needs, for the check at `build`. Not a public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateKey {
    pub(crate) id: TypeId,
    pub(crate) name: &'static str,
}

impl StateKey {
    /// The key of `State<T>`.
    pub fn of<T: 'static>() -> Self {
        StateKey {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }
}

/// Every state value of a server, by type.
#[derive(Default)]
pub(crate) struct States {
    map: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl States {
    /// Stores `state`, replacing a value of the same type.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, state: State<T>) {
        self.map.insert(TypeId::of::<T>(), Box::new(state));
    }

    pub(crate) fn get<T: 'static>(&self) -> Option<&State<T>> {
        self.map.get(&TypeId::of::<T>())?.downcast_ref()
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn contains(&self, key: &StateKey) -> bool {
        self.map.contains_key(&key.id)
    }
}

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("States").field("len", &self.map.len()).finish()
    }
}
