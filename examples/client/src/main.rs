//! Calls the example contract's routes through their typed stubs.
//!
//! ```text
//! cargo run -p example-server &                       # in one terminal
//! cargo run -p example-client -- ws://127.0.0.1:4269  # in another
//! ```
//!
//! Built on its own (`cargo build -p example-client`), this binary compiles none of the handler
//! bodies and does not link `example-store`: the contract's `server` feature is off.
#![allow(clippy::print_stdout)]

use example_contract::{clear, get, len, put, Put, StoreError};
use webmesh::{CallError, Client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:4269".into());
    let client = Client::builder()
        .on_push("/kv/changed", |key: String| println!("  push: {key} changed"))
        .connect(&url)
        .await?;
    println!("connected to {url} ({:?} framing)", client.framing());

    clear::call(&client).await?;
    let put_req = |k: &str, v: &str| Put {
        key: k.into(),
        value: v.into(),
    };
    println!(
        "put lang=rust -> {:?}",
        put::call(&client, put_req("lang", "rust")).await?
    );
    println!(
        "put lang=python -> {:?}",
        put::call(&client, put_req("lang", "python")).await?
    );
    println!("get lang -> {:?}", get::call(&client, "lang".into()).await?);
    println!("len -> {}", len::call(&client).await?);
    match get::call(&client, "missing".into()).await {
        Err(CallError::Handler(StoreError::NotFound(k))) => {
            println!("get missing -> typed error: not found {k:?}")
        }
        other => println!("get missing -> unexpected {other:?}"),
    }
    match put::call(&client, put_req("", "x")).await {
        Err(CallError::Handler(e)) => println!("put with an empty key -> typed error: {e}"),
        other => println!("put with an empty key -> unexpected {other:?}"),
    }
    client.close().await;
    Ok(())
}
