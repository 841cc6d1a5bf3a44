//! webmesh in one process: a server with typed routes, and clients calling them.
//!
//! ```text
//! cargo run -p quickstart
//! ```
//!
//! Shows a `#[webmesh::route]` handler and its typed stub, a typed error, a closure route (the
//! Python `@server.on`), `emit`, a server push, many calls in flight on one connection, and a
//! client speaking the 0.1.2 wire format, as a Python `WebMeshClient` does.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use webmesh::{CallError, Client, Connection, Protocol, Server};

/// What `/greet` takes.
#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    name: String,
}

/// What `/greet` can fail with; the caller gets it typed.
#[derive(Debug, Serialize, Deserialize)]
enum GreetError {
    EmptyName,
}

impl std::fmt::Display for GreetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreetError::EmptyName => f.write_str("the name is empty"),
        }
    }
}

impl std::error::Error for GreetError {}

/// Greets by name, and pushes a note to the caller.
#[webmesh::route("/greet")]
async fn greet(msg: Greeting, conn: &Connection) -> Result<String, GreetError> {
    if msg.name.is_empty() {
        return Err(GreetError::EmptyName);
    }
    let _ = conn.push("/note", &format!("someone greeted {}", msg.name)).await;
    Ok(format!("hello, {}!", msg.name))
}

/// Squares a number slowly: to show calls completing out of order.
#[webmesh::route("/square")]
async fn square(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(10 * (10 - n % 10))).await;
    n * n
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A server on a free port: routes annotated with #[webmesh::route] are served by linking
    // them; closures are added like the Python `@server.on(path)`.
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .on("/log", |line: String| async move {
            println!("  server: /log got {line:?}");
        })
        .build()
        .await?;
    let url = format!("ws://{}", server.local_addr());
    println!("server listening on {url}, routes {:?}", server.paths());
    let handle = server.spawn();

    // A Rust client: negotiates the v1 protocol (ids, typed errors, push).
    let client = Client::builder()
        .on_push("/note", |note: String| println!("  client: push /note {note:?}"))
        .connect(&url)
        .await?;
    println!("client connected, framing {:?}", client.framing());

    let answer = greet::call(&client, Greeting { name: "Ada".into() }).await?;
    println!("greet(Ada) -> {answer:?}");

    match greet::call(&client, Greeting { name: String::new() }).await {
        Err(CallError::Handler(e)) => println!("greet(\"\") -> typed error {e:?}"),
        other => println!("greet(\"\") -> {other:?}"),
    }

    client.emit_path("/log", "fire and forget").await?;

    // Ten calls in flight on one connection; each reply finds its own call.
    let calls: Vec<_> = (0..10)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { square::call(&client, n).await })
        })
        .collect();
    let mut squares = Vec::new();
    for call in calls {
        squares.push(call.await??);
    }
    println!("10 calls in flight -> {squares:?}");

    match client.call_path::<String>("/nope", &1).await {
        Err(e) => println!("/nope -> {e}"),
        Ok(v) => println!("/nope -> {v:?}"),
    }

    // A client speaking the 0.1.2 format, as a Python WebMeshClient does: same routes, no ids.
    let legacy = Client::builder().protocol(Protocol::Legacy).connect(&url).await?;
    let answer = greet::call(
        &legacy,
        Greeting {
            name: "Python".into(),
        },
    )
    .await?;
    println!(
        "0.1.2-style client: greet(Python) -> {answer:?} (framing {:?})",
        legacy.framing()
    );

    legacy.close().await;
    client.close().await;
    handle.shutdown().await;
    println!("server shut down");
    Ok(())
}
