//! The `#[webmesh::route]`, `#[webmesh::push]` and `#[webmesh::topic]` attributes. Use them through the `webmesh`
//! crate, which documents and re-exports them; this crate only parses, validates and expands.

mod expand;
mod parse;
mod push;
mod validate;

use proc_macro::TokenStream;

/// Registers a handler function as a typed route and generates its client stub.
///
/// See the `webmesh` crate's documentation of `route` for the rules and the expansion.
#[proc_macro_attribute]
pub fn route(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::route(attr.into(), item.into()).into()
}

/// Declares a type as the message a server pushes on a path.
///
/// See the `webmesh` crate's documentation of `push`.
#[proc_macro_attribute]
pub fn push(attr: TokenStream, item: TokenStream) -> TokenStream {
    push::push(attr.into(), item.into()).into()
}

/// Declares a struct or enum as the messages of a topic (a path, or a pattern with `*`
/// segments).
///
/// See the `webmesh` crate's documentation of `topic`.
#[proc_macro_attribute]
pub fn topic(attr: TokenStream, item: TokenStream) -> TokenStream {
    push::topic(attr.into(), item.into()).into()
}
