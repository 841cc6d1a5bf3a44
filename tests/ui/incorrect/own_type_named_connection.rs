// Issue 9: an argument whose type is named like a context type is checked by the compiler: a
// user type called `Connection` is not silently taken for webmesh's.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Connection {
    pub host: String,
}

#[webmesh::route("/db/connect")]
pub fn connect(target: Connection) -> bool {
    !target.host.is_empty()
}

fn main() {}
