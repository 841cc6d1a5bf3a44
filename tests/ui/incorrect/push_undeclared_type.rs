// Issue 17: pushes are part of the typed contract. Pushing, or handling, a type that no
// `#[webmesh::push]` declares does not compile.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NotDeclared(pub String);

async fn server_side(conn: &webmesh::Connection) {
    let _ = conn.push_message(&NotDeclared("x".into())).await;
}

fn client_side() -> webmesh::ClientBuilder {
    webmesh::Client::builder().on_push_message(|_: NotDeclared| {})
}

fn main() {
    let _ = (server_side, client_side);
}
