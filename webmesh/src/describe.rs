//! Introspection: what a server serves, as data.
//!
//! A server answers the reserved route [`DESCRIBE_PATH`] (on by default,
//! `ServerBuilder::introspection(false)` turns it off) with a [`Description`]: every route with
//! its path, doc comment and the JSON Schemas of its request, response and error types, and
//! every topic declared in the linked crates with the schema of its message. `Client::describe`
//! and `webmesh routes URL` read it.
//!
//! Schemas come from [`schemars`]: a type that derives `schemars::JsonSchema` beside its serde
//! derives has one, a type that does not is described without (`null`). Nothing else is needed:
//! `#[webmesh::route]` and `#[webmesh::topic]` pick the schema up when the derive is there.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

mod typescript;

/// The reserved path of the introspection route.
pub const DESCRIBE_PATH: &str = "/_webmesh/describe";

/// What a server serves: the answer of [`DESCRIBE_PATH`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Description {
    /// Every route, sorted by path (the introspection route itself is not listed).
    pub routes: Vec<RouteDescription>,
    /// Every topic declared with `#[webmesh::topic]` in the server's linked crates, by path.
    #[serde(default)]
    pub topics: Vec<TopicDescription>,
    /// The nodes of the server's cluster that answered, this one first (empty without a
    /// cluster: see `ServerBuilder::nats`).
    #[serde(default)]
    pub cluster: Vec<NodeDescription>,
}

/// One node of a cluster, in a [`Description`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeDescription {
    /// The node's id (random, new for each run of a server).
    pub node: String,
    /// The paths of the routes it serves.
    pub routes: Vec<String>,
    /// The topics its program declares.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// One route of a [`Description`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouteDescription {
    /// The path.
    pub path: String,
    /// The handler: `module::fn` for a `#[webmesh::route]`, a description for a closure.
    pub name: String,
    /// The handler's doc comment, if it has one.
    #[serde(default)]
    pub doc: Option<String>,
    /// JSON Schema (2020-12) of the request, when the type derives `JsonSchema`.
    #[serde(default)]
    pub request: Option<serde_json::Value>,
    /// JSON Schema of the response.
    #[serde(default)]
    pub response: Option<serde_json::Value>,
    /// JSON Schema of the handler's error (`{"not": {}}`, no value, for a handler that cannot
    /// fail).
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// One topic of a [`Description`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TopicDescription {
    /// The path or pattern (`*` segments).
    pub path: String,
    /// The message type's Rust path.
    pub name: String,
    /// The message type's doc comment, if it has one.
    #[serde(default)]
    pub doc: Option<String>,
    /// JSON Schema of the message, when the type derives `JsonSchema`.
    #[serde(default)]
    pub message: Option<serde_json::Value>,
}

/// The schemas of a route's request, response and error.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) type RouteSchemas = [Option<serde_json::Value>; 3];

/// A topic declared with `#[webmesh::topic]`. Not a public API.
#[doc(hidden)]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub struct TopicEntry {
    pub(crate) path: &'static str,
    pub(crate) name: &'static str,
    pub(crate) doc: &'static str,
    pub(crate) schema: fn() -> Option<serde_json::Value>,
}

impl TopicEntry {
    /// The entry of the topic at `path`, whose type is `name`.
    pub const fn new(
        path: &'static str,
        name: &'static str,
        doc: &'static str,
        schema: fn() -> Option<serde_json::Value>,
    ) -> Self {
        TopicEntry {
            path,
            name,
            doc,
            schema,
        }
    }
}

inventory::collect!(TopicEntry);

/// Every topic registered in the linked crates, sorted by path.
#[cfg(feature = "server")]
pub(crate) fn topics() -> Vec<TopicDescription> {
    let mut out: Vec<TopicDescription> = inventory::iter::<TopicEntry>
        .into_iter()
        .map(|t| TopicDescription {
            path: t.path.to_owned(),
            name: t.name.to_owned(),
            doc: doc(t.doc),
            message: (t.schema)(),
        })
        .collect();
    out.sort_by(|a, b| (&a.path, &a.name).cmp(&(&b.path, &b.name)));
    out.dedup_by(|a, b| a.path == b.path && a.name == b.name);
    out
}

/// A doc comment as the macros collect it, or `None` when empty.
#[cfg(feature = "server")]
pub(crate) fn doc(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// How the macros find a type's schema without requiring one: a method call on `&Probe<T>`
/// resolves to [`Derived`] when `T: JsonSchema` and falls back to [`NotDerived`] (one more
/// auto-reference) otherwise. Not a public API.
#[doc(hidden)]
pub struct Probe<T: ?Sized>(PhantomData<fn() -> PhantomData<T>>);

impl<T: ?Sized> Probe<T> {
    /// The probe for `T`.
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The schema of a type that derives `JsonSchema`. Not a public API.
#[doc(hidden)]
pub trait Derived {
    /// The root schema.
    fn schema(&self) -> Option<serde_json::Value>;
}

impl<T: schemars::JsonSchema + ?Sized> Derived for Probe<T> {
    fn schema(&self) -> Option<serde_json::Value> {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
        Some(schema.to_value())
    }
}

/// No schema, for a type that does not derive `JsonSchema`. Not a public API.
#[doc(hidden)]
pub trait NotDerived {
    /// `None`.
    fn schema(&self) -> Option<serde_json::Value>;
}

impl<T: ?Sized> NotDerived for &Probe<T> {
    fn schema(&self) -> Option<serde_json::Value> {
        None
    }
}

impl schemars::JsonSchema for crate::NoError {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NoError".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // No value is valid: the handler cannot fail.
        false.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct WithSchema {
        a: u32,
    }

    #[allow(dead_code)]
    struct Without;

    #[test]
    #[allow(clippy::needless_borrow)] // The borrow is how the probe picks its trait.
    fn the_probe_finds_a_derived_schema_and_falls_back_without_one() {
        let with = (&Probe::<WithSchema>::new()).schema().expect("derived");
        assert_eq!(with["properties"]["a"]["type"], "integer");
        assert_eq!((&Probe::<Without>::new()).schema(), None);
        // A root schema is an object: `false` becomes `{"not": {}}`.
        let never = (&Probe::<crate::NoError>::new())
            .schema()
            .expect("NoError has one");
        assert_eq!(never["not"], serde_json::json!({}));
    }
}
