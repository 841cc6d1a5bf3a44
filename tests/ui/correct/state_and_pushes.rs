//! Issue 17: a contract with server state and a declared push, split by its own feature. With
//! the feature off, the state type (a server-only dependency here) is never named, and the stubs,
//! blocking ones included, and the push type work.
#![allow(unexpected_cfgs)] // the fixture's feature is deliberately not declared: it is never on

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[webmesh::push("/orders/shipped")]
pub struct Shipped {
    pub order: u64,
}

#[webmesh::route("/orders/ship", server_feature = "fixture-server-half")]
pub async fn ship(
    order: u64,
    db: &webmesh::State<::server_only_database::Pool>,
    conn: &webmesh::Connection,
) -> Result<(), String> {
    db.ship(order).await?;
    let _ = conn.push_message(&Shipped { order }).await;
    Ok(())
}

fn client(blocking: &webmesh::BlockingClient) -> webmesh::ClientBuilder {
    let _: Result<(), webmesh::CallError<String>> = ship::call_blocking(blocking, 7);
    webmesh::Client::builder().on_push_message(|s: Shipped| drop(s.order))
}

fn main() {
    let _ = client;
    assert_eq!(<Shipped as webmesh::Push>::PATH, "/orders/shipped");
}
