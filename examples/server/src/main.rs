//! Serves every route of the example contract, plus an untyped `/echo` for Python clients.
//!
//! ```text
//! cargo run -p example-server -- 127.0.0.1:4269
//! ```
//!
//! The contract's routes are mounted with `.routes(example_contract::routes())`: one line for the
//! whole crate, no list to keep in sync, and `build` fails if the contract was compiled without
//! its server half. Stop with Ctrl-C: calls in flight finish first.
#![allow(clippy::print_stdout)]

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
        .routes(example_contract::routes())
        .on("/echo", |v: webmesh::Value| async move { v })
        .build()
        .await?;
    println!("serving {:?} on ws://{}", server.paths(), server.local_addr());
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown().await;
    });
    server.run().await
}
