//! The `#[webmesh::route]` attribute. Use it through the `webmesh` crate, which documents it and
//! re-exports it; this crate only parses, validates and expands.

mod expand;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Registers a handler function as a typed route and generates its client stub.
///
/// See the `webmesh` crate's documentation of `route` for the rules and the expansion.
#[proc_macro_attribute]
pub fn route(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::route(attr.into(), item.into()).into()
}
