//! A tiny live dashboard: a webmesh-rs server, and a web page that calls its `/add` route and
//! shows the stats it pushes every second, through the TypeScript client
//! (`clients/typescript`). One command (it builds the client with npm the first time):
//!
//! ```text
//! cargo run -p browser        # then open the URL it prints
//! ```
//!
//! The page is served by a few lines of plain HTTP here; in an application, any static file
//! server (or a bundler) serves the client.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server pushes to every page every second.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::push("/stats")]
pub struct Stats {
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// Calls to `/add` so far.
    pub calls: u64,
}

/// Two numbers.
#[derive(Debug, Deserialize)]
pub struct Add {
    /// The first.
    pub a: f64,
    /// The second.
    pub b: f64,
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>webmesh dashboard</title>
<script type="importmap">{"imports": {"@msgpack/msgpack": "/msgpack/index.mjs"}}</script>
<style>body{font:16px system-ui;margin:2em}input{width:5em}#stats{font-size:1.4em}</style>
</head><body>
<h1>webmesh dashboard</h1>
<p id="stats">waiting for the first push…</p>
<p><input id="a" value="2"> + <input id="b" value="40"> <button id="add">call /add</button> = <b id="sum">?</b></p>
<pre id="log"></pre>
<script type="module">
import { Client, route } from "/dist/index.js";
const add = route("/add");
const client = await Client.connect(`ws://${location.hostname}:WS_PORT`, { reconnect: true });
client.onPush("/stats", (s) => {
  document.getElementById("stats").textContent = `up ${s.uptime_s} s, ${s.calls} calls`;
});
document.getElementById("add").onclick = async () => {
  const a = Number(document.getElementById("a").value), b = Number(document.getElementById("b").value);
  try { document.getElementById("sum").textContent = await client.call(add, { a, b }); }
  catch (e) { document.getElementById("log").textContent += `${e.code}: ${e.message}\n`; }
};
</script></body></html>"#;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/typescript")
}

/// Builds the TypeScript client if it is not built yet.
fn build_client() -> Result<(), String> {
    let dir = package();
    if dir.join("dist/index.js").exists() {
        return Ok(());
    }
    for args in [&["ci", "--no-audit", "--no-fund"][..], &["run", "build"][..]] {
        if args[0] == "ci" && dir.join("node_modules/typescript").exists() {
            continue;
        }
        println!("npm {} (in clients/typescript)", args.join(" "));
        let ok = std::process::Command::new("npm")
            .args(args)
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm is needed to build the client: {e}"))?
            .success();
        if !ok {
            return Err(format!("npm {} failed", args.join(" ")));
        }
    }
    Ok(())
}

fn asset(path: &str, page: &str) -> Option<(&'static str, Vec<u8>)> {
    if path.contains("..") {
        return None;
    }
    let dir = package();
    if path == "/" {
        return Some(("text/html", page.as_bytes().to_vec()));
    }
    let file = if let Some(rest) = path.strip_prefix("/dist/") {
        dir.join("dist").join(rest)
    } else {
        dir.join("node_modules/@msgpack/msgpack/dist.esm")
            .join(path.strip_prefix("/msgpack/")?)
    };
    std::fs::read(file).ok().map(|b| ("text/javascript", b))
}

async fn serve_page(listener: TcpListener, page: Arc<String>) {
    while let Ok((mut sock, _)) = listener.accept().await {
        let page = page.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, kind, body) = match asset(&path, &page) {
                Some((kind, body)) => ("200 OK", kind, body),
                None => ("404 Not Found", "text/plain", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_client()?;
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let server = webmesh::Server::builder()
        .registered_routes(false)
        .on("/add", move |m: Add| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move { m.a + m.b }
        })
        .bind("127.0.0.1:0")
        .build()
        .await?;
    let ws_port = server.local_addr().port();
    let topics = server.topics();
    let handle = server.spawn();
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let stats = Stats {
                uptime_s: started.elapsed().as_secs(),
                calls: calls.load(Ordering::Relaxed),
            };
            let _ = topics.broadcast(&stats);
        }
    });
    let http = TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "dashboard: http://{}/  (webmesh on ws://127.0.0.1:{ws_port}; Ctrl-C stops)",
        http.local_addr()?
    );
    let page = Arc::new(PAGE.replace("WS_PORT", &ws_port.to_string()));
    tokio::select! {
        _ = serve_page(http, page) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    handle.shutdown().await;
    Ok(())
}
