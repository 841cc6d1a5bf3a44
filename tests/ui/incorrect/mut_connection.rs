use webmesh::Connection;

#[webmesh::route("/id")]
fn id(conn: &mut Connection) -> u64 {
    conn.id()
}

fn main() {}
