//! Typed topics, in one process: a server that publishes prices from a background task,
//! subscribers on one path and on a pattern, a client that publishes through the server under a
//! rule, and a subscriber whose connection drops and that gets what it missed on its own. One
//! command:
//!
//! ```text
//! cargo run -p topics
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use webmesh::{Client, Connection, Event, Reconnect, Server, SubscribeOptions};

// The contract: in a real mesh these live in the crate that server and clients share, next to
// the routes.

/// The price of one symbol, published at `/prices/<symbol>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::topic("/prices/*")]
pub struct Price {
    /// In cents.
    pub cents: u64,
}

/// A chat line; clients publish these themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::topic("/chat")]
pub struct Line {
    /// What was said.
    pub text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kicked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Connection>::new()));
    let k = kicked.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        // Anyone may publish chat lines through the server (a real one checks the identity
        // from its auth hook here).
        .client_publish::<Line, ()>(|_| true)
        .on_connect(move |conn: &Connection| k.lock().unwrap().push(conn.clone()))
        .build()
        .await?;
    let url = format!("ws://{}", server.local_addr());
    let topics = server.topics();
    let handle = server.spawn();
    println!("serving {url}");

    let alice = Client::connect(&url).await?;
    let bob = Client::builder()
        .reconnect(Reconnect::default().initial_delay(Duration::from_millis(200)))
        .connect(&url)
        .await?;
    // Every symbol, and one symbol only.
    let mut all_prices = alice.subscribe::<Price>().await?;
    let mut acme = bob
        .subscribe_with::<Price>(SubscribeOptions::default().path("/prices/acme"))
        .await?;
    let mut chat = bob.subscribe::<Line>().await?;

    // The server publishes from a background task: no connection in hand.
    let publisher = topics.clone();
    let prices = tokio::spawn(async move {
        for i in 0..6u64 {
            for symbol in ["acme", "zeta"] {
                let path = format!("/prices/{symbol}");
                publisher
                    .publish_at(&path, &Price { cents: 1000 + i * 7 })
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for _ in 0..12 {
        if let Some(Event::Message { path, seq, value }) = all_prices.next().await {
            println!("alice sees {path} #{seq}: {} cents", value.cents);
        }
    }
    for _ in 0..6 {
        if let Some(Event::Message { path, seq, value }) = acme.next().await {
            println!("bob sees   {path} #{seq}: {} cents", value.cents);
        }
    }
    prices.await?;

    // A client publishes through the server; every subscriber gets it, typed.
    let reached = alice
        .publish(&Line {
            text: "hello, mesh".into(),
        })
        .await?;
    println!("alice's line reached {reached} connection(s)");
    if let Some(Event::Message { value, .. }) = chat.next().await {
        println!("bob reads: {}", value.text);
    }

    // Bob's connection drops; three lines go out while he is away. His client reconnects,
    // resubscribes with the last sequence number it saw, and the server replays the three.
    // (Alice's connection drops too: she has no reconnection, so she is done.)
    for conn in kicked.lock().unwrap().drain(..) {
        conn.close("demo: connection dropped");
    }
    let mut state = bob.watch_state();
    while state.current().is_connected() {
        state.changed().await;
    }
    println!("bob is {:?}", bob.state());
    for n in 1..=3 {
        topics.publish(&Line {
            text: format!("said while bob was away ({n})"),
        })?;
    }
    for _ in 0..3 {
        match chat.next().await {
            Some(Event::Message { seq, value, .. }) => println!("bob catches up #{seq}: {}", value.text),
            other => println!("bob: {other:?}"),
        }
    }
    println!("bob is {:?}", bob.state());
    handle.shutdown().await;
    Ok(())
}
