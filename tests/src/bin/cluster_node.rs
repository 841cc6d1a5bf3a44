//! A webmesh node in a process of its own, for the cluster tests that kill one:
//! `cluster_node NATS_URL PATH DELAY_MS NAME` serves PATH (answering NAME after DELAY_MS) until
//! killed or until stdin closes.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, path, delay, name] = &args[..] else {
        eprintln!("usage: cluster_node NATS_URL PATH DELAY_MS NAME");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay.parse().expect("DELAY_MS"));
    let name = name.clone();
    let server = webmesh::Server::builder()
        .registered_routes(false)
        .nats(url.as_str())
        .on(path.clone(), move |_: webmesh::Value| {
            let name = name.clone();
            async move {
                tokio::time::sleep(delay).await;
                name
            }
        })
        .bind("127.0.0.1:0")
        .build()
        .await
        .expect("the node starts");
    let handle = server.spawn();
    println!("started");
    // Until stdin closes (the test ends) or the process is killed (the test's outage).
    let _ = tokio::task::spawn_blocking(|| std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1])).await;
    handle.shutdown().await;
}
