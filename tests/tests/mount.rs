//! Mounting a contract crate (issue 9, point 3): its `routes()` links it, and the server serves
//! exactly those routes. In its own test binary: the contract's routes take server state, which
//! every server of a binary that links them must then be given.

use webmesh::{CallError, Client, Server};

/// Issue 9, point 3: a contract crate's routes are mounted explicitly through its `routes()`,
/// which links the crate; with registration off, nothing else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_contract_is_mounted_through_its_routes_fn() {
    use inventory_contract::{add, stock, store::Store, take, Line, StockError};
    let routes = inventory_contract::routes();
    assert_eq!(routes.crate_name(), "inventory_contract");
    let paths = ["/stock/add", "/stock/get", "/stock/report", "/stock/take"];
    assert_eq!(routes.paths(), paths);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .registered_routes(false)
        .routes(routes)
        .state(Store::new(0))
        .build()
        .await
        .unwrap();
    assert_eq!(server.paths(), paths);
    let url = format!("ws://{}", server.local_addr());
    let handle = server.spawn();
    let c = Client::connect(&url).await.unwrap();
    assert_eq!(add::call(&c, Line::new("bolt", 3)).await.unwrap(), 3);
    assert_eq!(take::call(&c, Line::new("bolt", 1)).await.unwrap(), 2);
    assert_eq!(stock::call(&c, "bolt".into()).await.unwrap(), 2);
    assert!(matches!(
        take::call(&c, Line::new("bolt", 5)).await,
        Err(CallError::Handler(StockError::Short { left: 2, .. }))
    ));
    handle.shutdown().await;
}

/// A mounted crate whose routes are also registered (the default) is served once, not refused
/// as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_and_registered_routes_are_served_once() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .routes(inventory_contract::routes())
        .routes(inventory_contract::routes())
        .state(inventory_contract::store::Store::new(0))
        .build()
        .await
        .unwrap();
    let paths = server.paths();
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/stock/")).count(),
        4,
        "{paths:?}"
    );
}
