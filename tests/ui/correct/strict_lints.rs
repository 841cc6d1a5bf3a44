//! The expansion passes strict lints.
#![deny(warnings, missing_docs, unused, unreachable_pub, rust_2018_idioms, clippy::all)]
//! Crate docs.

/// A documented route.
pub mod api {
    /// Doubles.
    #[webmesh::route("/strict/double")]
    pub fn double(x: u32) -> u32 {
        x * 2
    }
}

fn main() {
    let _ = api::double(1);
}
