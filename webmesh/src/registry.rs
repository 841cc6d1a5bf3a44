//! Routes registered by `#[webmesh::route]` through `inventory`, and the set of one crate's
//! routes that a server mounts explicitly.

use std::fmt;

use crate::route::Serve;

/// A route registered by `#[webmesh::route]`. Not a public API.
#[doc(hidden)]
pub struct RouteEntry {
    pub(crate) path: &'static str,
    pub(crate) name: &'static str,
    pub(crate) module: &'static str,
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) doc: &'static str,
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) schemas: fn() -> crate::describe::RouteSchemas,
    #[cfg(feature = "server")]
    pub(crate) make: fn() -> crate::server::Erased,
    #[cfg(feature = "server")]
    pub(crate) requires: fn(&mut Vec<crate::state::StateKey>),
}

impl RouteEntry {
    /// The entry for route `R`, defined by fn `name` in `module`, with its doc comment and
    /// the schemas of its request, response and error (where they derive `JsonSchema`).
    pub const fn new<R: Serve>(
        name: &'static str,
        module: &'static str,
        doc: &'static str,
        schemas: fn() -> [Option<serde_json::Value>; 3],
    ) -> Self {
        RouteEntry {
            path: R::PATH,
            name,
            module,
            doc,
            schemas,
            #[cfg(feature = "server")]
            make: crate::server::erase_route::<R>,
            #[cfg(feature = "server")]
            requires: R::required_state,
        }
    }

    /// The crate that defines the route: the first segment of its module path.
    pub(crate) fn crate_name(&self) -> &'static str {
        crate_of(self.module)
    }

    /// `module::fn`, for messages.
    #[cfg(feature = "server")]
    pub(crate) fn qualified_name(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

inventory::collect!(RouteEntry);

fn crate_of(module_path: &str) -> &str {
    module_path.split("::").next().unwrap_or(module_path)
}

/// Every `#[webmesh::route]` of one crate whose server half is compiled: what a contract crate
/// hands to servers, through the function [`routes!`](crate::routes!) defines.
///
/// Mounting it with `ServerBuilder::routes` is the reliable way to serve a contract crate. Calling
/// the crate's `routes()` references the crate, so the linker keeps its routes (a crate that
/// nothing references is not linked, and its routes would be missing without a word), and the
/// server's `build` fails if the set is empty, which is what a contract built without its server
/// half yields.
///
/// # Examples
///
/// ```no_run
/// // In the contract crate, once, at its root:
/// webmesh::routes!();
///
/// # async fn run() -> Result<(), webmesh::Error> {
/// // In the server binary:
/// let server = webmesh::Server::builder().routes(routes()).build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Routes {
    krate: &'static str,
    entries: Vec<&'static RouteEntry>,
}

impl Routes {
    /// The routes of the crate whose module path is `module_path`. Use [`routes!`](crate::routes!).
    #[doc(hidden)]
    pub fn __of_crate(module_path: &'static str) -> Self {
        let krate = crate_of(module_path);
        let mut entries: Vec<&'static RouteEntry> = inventory::iter::<RouteEntry>
            .into_iter()
            .filter(|e| e.crate_name() == krate)
            .collect();
        entries.sort_by_key(|e| (e.path, e.module, e.name));
        Routes { krate, entries }
    }

    /// The name of the crate (as in paths: `my_contract`).
    pub fn crate_name(&self) -> &'static str {
        self.krate
    }

    /// The paths of the routes, sorted.
    pub fn paths(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.path).collect()
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the crate has no route with a server half.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn entries(&self) -> &[&'static RouteEntry] {
        &self.entries
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("crate", &self.krate)
            .field("paths", &self.paths())
            .finish()
    }
}

/// Defines `pub fn routes() -> webmesh::Routes` in a crate: every `#[webmesh::route]` of that
/// crate, for a server to mount with `ServerBuilder::routes`.
///
/// Invoke it once in a contract crate, at its root. `webmesh::routes!(pub(crate) fn name)`
/// chooses another visibility or name.
///
/// # Examples
///
/// ```
/// #[webmesh::route("/ping")]
/// pub fn ping() -> String {
///     "pong".into()
/// }
///
/// webmesh::routes!();
///
/// assert_eq!(routes().paths(), ["/ping"]);
/// ```
#[macro_export]
macro_rules! routes {
    () => {
        $crate::routes!(pub fn routes);
    };
    ($vis:vis fn $name:ident) => {
        /// Every `#[webmesh::route]` of this crate whose server half is compiled, for a server to
        /// mount with `ServerBuilder::routes`.
        $vis fn $name() -> $crate::Routes {
            $crate::Routes::__of_crate(::core::module_path!())
        }
    };
}
