//! The TypeScript client in a real headless Chromium (Debian's `chromium`, driven over the
//! DevTools protocol from here): a page loads the built client, calls a live webmesh-rs server's
//! routes, gets a typed error, receives a push, and keeps working after the server restarts on
//! the same port. The screenshot goes to `target/browser-e2e.png`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use webmesh::{Connection, Server, ServerHandle};
use webmesh_tests::typescript::{build, package};

/// Two numbers to divide.
#[derive(Debug, serde::Deserialize)]
struct Div {
    a: i64,
    b: i64,
}

async fn webmesh_server(addr: &str) -> ServerHandle {
    Server::builder()
        .registered_routes(false)
        .on("/echo", |v: webmesh::Value| async move { v })
        .on_fallible("/div", |d: Div| async move {
            d.a.checked_div(d.b).ok_or_else(|| "DivByZero".to_owned())
        })
        .on("/poke", |n: u32, conn: Connection| async move {
            let _ = conn.push("/poked", &n).await;
        })
        .bind(addr)
        .build()
        .await
        .expect("the webmesh server starts")
        .spawn()
}

/// The test page: the client from `/dist`, msgpack from `/msgpack` (an import map), a scenario
/// whose outcome lands in `window.__phase1`, `window.__connects()` (how many times the client
/// connected), and `window.__phase2()` for after the restart.
fn page(ws_url: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>webmesh e2e</title>
<script type="importmap">{{"imports": {{"@msgpack/msgpack": "/msgpack/index.mjs"}}}}</script>
</head><body><h1>webmesh-client in Chromium</h1><pre id="log"></pre>
<script type="module">
import {{ Client, route, WebmeshError }} from "/dist/index.js";
const log = (s) => (document.getElementById("log").textContent += s + "\n");
const client = await Client.connect("{ws_url}", {{ reconnect: {{ initialDelayMs: 50, maxDelayMs: 200 }}, timeoutMs: 5000 }});
const out = {{ framing: client.framing }};
out.echo = await client.call(route("/echo"), {{ hello: "browser", n: [1, 2, 3] }});
log("echo: " + JSON.stringify(out.echo));
out.quotient = await client.call(route("/div"), {{ a: 84, b: 2 }});
try {{ await client.call(route("/div"), {{ a: 1, b: 0 }}); }}
catch (e) {{ out.error = {{ code: e.code, data: e.data, typed: e instanceof WebmeshError }}; }}
log("typed error: " + JSON.stringify(out.error));
const pushed = new Promise((resolve) => client.onPush("/poked", resolve));
await client.call(route("/poke"), 7);
out.push = await pushed;
log("push: " + out.push);
window.__phase1 = out;
window.__connects = () => client.connects;
window.__phase2 = async () => {{
  const again = await client.call(route("/echo"), "after the restart");
  log("after restart: " + again + " (connections: " + client.connects + ")");
  return {{ again, connects: client.connects }};
}};
</script></body></html>"#
    )
}

/// A minimal static HTTP/1.0 server: `/` is the page, `/dist/*` the built client, `/msgpack/*`
/// the msgpack package's ESM build.
async fn static_server(page: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dist = package().join("dist");
    let msgpack = package().join("node_modules/@msgpack/msgpack/dist.esm");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (page, dist, msgpack) = (page.clone(), dist.clone(), msgpack.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, kind, body) = answer(&path, &page, &dist, &msgpack);
                let head = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}/")
}

fn answer(path: &str, page: &str, dist: &Path, msgpack: &Path) -> (&'static str, &'static str, Vec<u8>) {
    let file = |root: &Path, rest: &str| -> Option<Vec<u8>> {
        if rest.contains("..") {
            return None;
        }
        std::fs::read(root.join(rest)).ok()
    };
    let found = match path {
        "/" => Some((page.as_bytes().to_vec(), "text/html")),
        p => p
            .strip_prefix("/dist/")
            .and_then(|r| file(dist, r))
            .or_else(|| p.strip_prefix("/msgpack/").and_then(|r| file(msgpack, r)))
            .map(|b| (b, "text/javascript")),
    };
    match found {
        Some((body, kind)) => ("200 OK", kind, body),
        None => ("404 Not Found", "text/plain", b"not found".to_vec()),
    }
}

/// Headless Chromium, killed when dropped.
struct Chromium {
    child: std::process::Child,
    _profile: TempDir,
    port: u16,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Chromium {
    fn start() -> Chromium {
        let profile = std::env::temp_dir().join(format!("webmesh-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=900,600",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromium (Debian's package `chromium`; .ci/run installs it)");
        // Chromium writes the port it took into the profile.
        let port_file = profile.join("DevToolsActivePort");
        for _ in 0..3000 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                    return Chromium {
                        child,
                        _profile: TempDir(profile),
                        port,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not open its DevTools port within 30 s");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools protocol over the page's WebSocket: one command at a time.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next: u64,
}

impl Cdp {
    async fn page(port: u16) -> Cdp {
        let list = http_get(port, "/json/list").await;
        let targets: Json = serde_json::from_str(&list).unwrap_or_else(|e| panic!("{e}: {list}"));
        let ws_url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {list}"))
            .to_owned();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await.unwrap();
        Cdp { ws, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Json) -> Json {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("the DevTools socket is open")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Json = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise), returning its value.
    async fn eval(&mut self, expr: &str) -> Json {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // Read the head, then as many bytes as Content-Length says (bounded in time).
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                });
                if n == 0 || len.is_some_and(|len| body.len() >= len) {
                    return body.to_owned();
                }
            } else if n == 0 {
                return String::new();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no answer to GET {path} within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // where the screenshot is, in the test's output
async fn the_client_works_in_headless_chromium_and_survives_a_server_restart() {
    tokio::task::block_in_place(build);
    let server = webmesh_server("127.0.0.1:0").await;
    let addr = server.local_addr();
    let site = static_server(page(&format!("ws://{addr}"))).await;
    let chromium = tokio::task::block_in_place(Chromium::start);
    let mut cdp = Cdp::page(chromium.port).await;
    cdp.call("Page.enable", json!({})).await;
    cdp.call("Page.navigate", json!({"url": site})).await;

    let mut phase1 = Json::Null;
    for _ in 0..300 {
        phase1 = cdp.eval("window.__phase1 ?? null").await;
        if !phase1.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(phase1["framing"], "v1", "the page ran: {phase1}");
    assert_eq!(phase1["echo"], json!({"hello": "browser", "n": [1, 2, 3]}));
    assert_eq!(phase1["quotient"], 42);
    assert_eq!(
        phase1["error"],
        json!({"code": "handler", "data": "DivByZero", "typed": true})
    );
    assert_eq!(phase1["push"], 7);

    // The server restarts on the same port; the page's client reconnects by itself.
    server.shutdown().await;
    let restarted = webmesh_server(&addr.to_string()).await;
    // Until the page's client has reconnected: a call made before it noticed the old
    // connection's end fails `closed`, as it should (calls are not retried on their own).
    let reconnected = std::time::Instant::now();
    while cdp.eval("window.__connects()").await != json!(2) {
        assert!(
            reconnected.elapsed() < Duration::from_secs(20),
            "the page's client did not reconnect within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let phase2 = cdp.eval("window.__phase2()").await;
    assert_eq!(phase2["again"], "after the restart");
    assert_eq!(phase2["connects"], 2);

    let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"})).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap_or_default())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = webmesh_tests::repo_root().join("target/browser-e2e.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());
    restarted.shutdown().await;
}
