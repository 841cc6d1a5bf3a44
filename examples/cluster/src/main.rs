//! Scale-out over NATS, in one command: it starts a `nats-server` (Debian's package
//! `nats-server`; nothing is downloaded) on a free port, then three webmesh nodes that join
//! through it, and shows a client on node A calling a route that only node C serves, and a
//! message published on node B reaching subscribers on A and C.
//!
//! ```text
//! cargo run -p cluster
//! ```
//!
//! In a deployment, each node is its own process (or machine) with `ServerBuilder::nats(url)`;
//! here they share one process so that the example is one command.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use webmesh::{Client, Event, Server, ServerHandle};

/// The contract: in a real mesh it lives in the crate every node and client shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::topic("/orders/created")]
pub struct OrderCreated {
    /// The order's id.
    pub id: u64,
}

/// Two numbers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Add {
    /// The first.
    pub a: i64,
    /// The second.
    pub b: i64,
}

/// The NATS server, stopped when dropped.
struct Nats(std::process::Child, String);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats() -> Result<Nats, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start nats-server ({e}): install it with `apt-get install nats-server`")
        })?;
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Nats(child, format!("nats://127.0.0.1:{port}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("nats-server did not start".into())
}

async fn node(nats: &str, builder: webmesh::ServerBuilder) -> Result<(ServerHandle, String), webmesh::Error> {
    let server = builder
        .registered_routes(false)
        .nats(nats)
        .bind("127.0.0.1:0")
        .build()
        .await?;
    let url = format!("ws://{}", server.local_addr());
    Ok((server.spawn(), url))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nats = start_nats()?;
    println!("nats-server on {}", nats.1);

    let (a, url_a) = node(
        &nats.1,
        Server::builder().on("/a/ping", |_: ()| async { "pong from A" }),
    )
    .await?;
    let (b, _) = node(&nats.1, Server::builder()).await?;
    let (c, url_c) = node(
        &nats.1,
        Server::builder().on("/c/add", |m: Add| async move { m.a + m.b }),
    )
    .await?;
    println!("nodes: A {url_a} (serves /a/ping), B (serves nothing), C {url_c} (serves /c/add)");

    let on_a = Client::connect(&url_a).await?;
    // The nodes subscribe to NATS as they start: wait until A sees all three.
    let mut described = on_a.describe().await?;
    for _ in 0..100 {
        if described.cluster.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        described = on_a.describe().await?;
    }
    for n in &described.cluster {
        println!("node {} serves {:?}", n.node, n.routes);
    }

    let sum: i64 = on_a.call_path("/c/add", &Add { a: 2, b: 40 }).await?;
    println!("client on A called /c/add (served on C): 2 + 40 = {sum}");
    let missing = on_a.call_path::<i64>("/nowhere", &()).await.unwrap_err();
    println!("client on A called /nowhere: {missing}");

    let on_c = Client::connect(&url_c).await?;
    let mut sub_a = on_a.subscribe::<OrderCreated>().await?;
    let mut sub_c = on_c.subscribe::<OrderCreated>().await?;
    // Published on B, until the first one has crossed to A (the subscriptions are live).
    let topics = b.topics();
    let mut first = None;
    for id in 1..=100 {
        topics.publish(&OrderCreated { id })?;
        if let Ok(Some(Event::Message { value, .. })) =
            tokio::time::timeout(Duration::from_millis(50), sub_a.next()).await
        {
            first = Some(value.id);
            break;
        }
    }
    let first = first.ok_or("nothing published on B reached A")?;
    println!("published on B, received on A: order {first}");
    while let Ok(Some(Event::Message { value, .. })) =
        tokio::time::timeout(Duration::from_millis(300), sub_c.next()).await
    {
        if value.id == first {
            println!("published on B, received on C: order {}", value.id);
            break;
        }
    }

    for h in [a, b, c] {
        h.shutdown().await;
    }
    Ok(())
}
