//! Serves the inventory contract until Ctrl-C, then shuts down gracefully.
//!
//! ```text
//! cargo run -p inventory-server -- 127.0.0.1:4269
//! ```
//!
//! The routes come from `.routes(inventory_contract::routes())`: one line for the whole
//! contract, and `build` fails if the contract was compiled without its server half. Their store
//! is server state (`.state(..)`): a route that takes a state the server was not given also
//! fails `build`, naming the route and the type. Logs go through `tracing`; `RUST_LOG=debug`
//! shows every connection and call.
#![allow(clippy::print_stdout)]

use inventory_contract::store::Store;

#[tokio::main]
async fn main() -> Result<(), webmesh::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4269".into());
    let server = webmesh::Server::builder()
        .bind(addr)
        .routes(inventory_contract::routes())
        .state(Store::new(2))
        .build()
        .await?;
    println!(
        "inventory on ws://{} serving {:?}",
        server.local_addr(),
        server.paths()
    );
    // Ctrl-C: stop accepting, let calls in flight finish, close every connection with 1001.
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown().await;
    });
    server.run().await
}
