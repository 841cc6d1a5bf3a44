// `#[webmesh::push]` needs a type of this crate to implement `Push` for.
#[webmesh::push("/names")]
pub type Names = Vec<String>;

fn main() {}
