// Issue 17: server state is shared by every connection's handlers, so it must be `Send + Sync`.
use std::cell::RefCell;

#[webmesh::route("/count")]
pub fn count(cache: &webmesh::State<RefCell<u32>>) -> u32 {
    *cache.borrow()
}

fn main() {}
