//! The expansion names only absolute paths: it works without the prelude.
#![no_implicit_prelude]

#[::webmesh::route("/np/echo")]
pub async fn echo(s: ::std::string::String) -> ::std::string::String {
    s
}

#[::webmesh::route("/np/maybe")]
pub fn maybe(n: u8) -> ::std::result::Result<u8, ::std::string::String> {
    ::std::result::Result::Ok(n)
}

fn main() {
    let _ = echo::PATH;
}
