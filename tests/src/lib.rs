//! Support for the end-to-end tests: servers on loopback ports, and the Python reference
//! (webmesh 0.1.2 in a venv).
//!
//! [`python`] finds the interpreter of the interop venv and creates the venv on first use (under
//! a file lock, so parallel test binaries wait for one another): `cargo test --workspace` works on
//! a fresh machine with python3 and PyPI. `.ci/run` creates it up front. Point
//! `WEBMESH_PYTHON` at another interpreter that has `webmesh==0.1.2` to use that instead.

pub mod pki;
pub mod topics;

/// The TypeScript client package: build it and run its tools.
pub mod typescript {
    use std::path::PathBuf;
    use std::process::Command;

    use crate::repo_root;

    /// The TypeScript package.
    pub fn package() -> PathBuf {
        repo_root().join("clients/typescript")
    }

    /// Runs `program args` in the package, with `env`, and panics with its output unless it
    /// succeeds.
    pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(package())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} (Node.js 20+ and npm are needed): {e}"));
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
        text
    }

    /// `npm ci` if the dependencies are not installed (`.ci/run` installs them), then `tsc`: once
    /// per test binary (tests in parallel would write `dist/` at once).
    pub fn build() {
        static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        BUILT.get_or_init(|| {
            if !package().join("node_modules/typescript").exists() {
                run("npm", &["ci", "--no-audit", "--no-fund"], &[]);
            }
            run("npm", &["run", "build"], &[]);
        });
    }
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The Python interpreter with webmesh 0.1.2, creating the venv if needed.
///
/// # Panics
///
/// When no interpreter can be found or made: the interop tests cannot run without one, and a
/// skipped interop test would hide a broken interop.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(find_or_make_python).clone()
}

fn find_or_make_python() -> PathBuf {
    if let Some(p) = std::env::var_os("WEBMESH_PYTHON") {
        return p.into();
    }
    let root = repo_root();
    let lock_path = root.join("target").join("python-env.lock");
    let _ = std::fs::create_dir_all(root.join("target"));
    let lock = std::fs::File::create(&lock_path).expect("create python-env lock file");
    lock.lock().expect("lock python-env");
    let status = Command::new(root.join("scripts/python-env.sh"))
        .status()
        .expect("run scripts/python-env.sh (needs /bin/sh and python3)");
    assert!(
        status.success(),
        "scripts/python-env.sh failed: the interop tests need python3 with venv and PyPI access"
    );
    root.join(".venv/bin/python")
}

/// A running `tests/python/serve.py`; stops when dropped (stdin closes).
pub struct PyServer {
    child: std::process::Child,
    port: u16,
}

impl PyServer {
    /// Starts `tests/python/serve.py CODEC` (`msgpack`, `msgpack-plain` or `json`) and waits
    /// until it listens.
    pub fn start(codec: &str) -> Self {
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/python/serve.py"))
            .arg(codec)
            .current_dir(repo_root().join("tests/python"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the python server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("python server said {line:?}"));
        PyServer { child, port }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script (source text) with `args`, feeding `stdin`, and returns its output.
/// The script runs from the repository's `tests/python` directory, so it can import helpers there.
pub fn run_python(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(repo_root().join("tests/python"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for python");
    let _ = writer.join();
    out
}

/// Panics with Python's stderr unless the run succeeded; returns stdout as text.
pub fn expect_success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "python failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds `builder` on `127.0.0.1:0`, runs it on the current runtime, and returns its handle and
/// `ws://` URL.
pub async fn start(builder: webmesh::ServerBuilder) -> (webmesh::ServerHandle, String) {
    let server = builder.bind("127.0.0.1:0").build().await.expect("server builds");
    let url = format!("ws://{}", server.local_addr());
    (server.spawn(), url)
}

/// Polls `cond` every 5 ms until it holds, for at most 10 s (bounded: a broken test fails
/// instead of hanging).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Plays a v1 msgpack server by hand: completes the WebSocket upgrade on `tcp`, answering with
/// the subprotocol `webmesh.v1.msgpack`.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
pub async fn accept_v1(
    tcp: tokio::net::TcpStream,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let callback = |_: &Request, mut resp: Response| {
        resp.headers_mut()
            .insert("sec-websocket-protocol", "webmesh.v1.msgpack".parse().unwrap());
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async(tcp, callback)
        .await
        .expect("upgrade")
}

/// A v1 server on a free port that completes one upgrade, then reads and answers nothing for
/// `hold`: its URL, and the task holding the socket (abort it to close).
pub async fn mute_v1_server(hold: std::time::Duration) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = accept_v1(tcp).await;
        tokio::time::sleep(hold).await;
        drop(ws);
    });
    (url, held)
}

/// A raw WebSocket client (no webmesh on top), offering `protocol` (`None`: a 0.1.2 peer).
pub async fn raw_ws(
    url: &str,
    protocol: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("a ws:// url");
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("a header value"));
    }
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .expect("connect");
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        protocol,
        "the server takes the offered protocol"
    );
    ws
}

/// Completes a WebSocket upgrade by hand, offering `protocol`, and returns the bare socket: for
/// tests that then send hand-made frames, or nothing at all.
pub async fn raw_upgrade(url: &str, protocol: Option<&str>) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .expect("connect");
    let offer = protocol.map_or(String::new(), |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("read the answer");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// This process's resident memory, in KiB (`VmRSS` of `/proc/self/status`).
///
/// # Panics
///
/// Where `/proc` is missing (these tests run on Linux).
pub fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line")
}

/// Decodes a v1 msgpack frame that a raw WebSocket client received.
///
/// # Panics
///
/// When the message is not a v1 msgpack frame (a test expectation).
pub fn v1_frame(message: tokio_tungstenite::tungstenite::Message) -> webmesh::codec::Frame {
    use webmesh::codec::{decode_frame, AnyCodec, FrameType, Framing, Limits};
    let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message else {
        panic!("expected a binary frame, got {message:?}")
    };
    decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        bytes,
    )
    .expect("a v1 frame")
}

/// `n` incompressible bytes (xorshift from `seed`): compression would shrink a payload of zeros
/// to nothing.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real `nats-server` (Debian's package) on a free loopback port; stopped when dropped.
pub struct NatsServer {
    child: Option<std::process::Child>,
    /// Its client port.
    pub port: u16,
    args: Vec<String>,
}

impl NatsServer {
    /// One server.
    ///
    /// # Panics
    ///
    /// When `nats-server` is missing (`.ci/run` installs it) or does not listen within 10 s.
    pub fn start() -> Self {
        Self::with_args(free_port(), Vec::new())
    }

    /// A cluster of `n` servers with routes between them (each knows the others).
    pub fn cluster(n: usize) -> Vec<NatsServer> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let servers: Vec<NatsServer> = cluster_ports
            .iter()
            .map(|&cp| {
                let others: Vec<&str> = routes
                    .iter()
                    .filter(|r| !r.ends_with(&format!(":{cp}")))
                    .map(String::as_str)
                    .collect();
                let args = vec![
                    "--cluster_name".into(),
                    "webmesh-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cp}"),
                    "--routes".into(),
                    others.join(","),
                ];
                Self::with_args(free_port(), args)
            })
            .collect();
        // Each server sees the other n - 1 (its /routez), or the test would race the mesh.
        for s in &servers {
            s.wait_for_routes(n - 1);
        }
        servers
    }

    fn with_args(port: u16, args: Vec<String>) -> Self {
        let mut s = NatsServer {
            child: None,
            port,
            args,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port().to_string()])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server (Debian package `nats-server`; .ci/run installs it)");
        self.child = Some(child);
        for _ in 0..1000 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("nats-server did not listen on port {} within 10 s", self.port);
    }

    /// The monitoring port: a fixed offset would collide, so one more free port, kept per
    /// client port.
    fn monitor_port(&self) -> u16 {
        static PORTS: std::sync::Mutex<Vec<(u16, u16)>> = std::sync::Mutex::new(Vec::new());
        let mut ports = PORTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = ports.iter().find(|(p, _)| *p == self.port) {
            return *m;
        }
        let m = free_port();
        ports.push((self.port, m));
        m
    }

    fn wait_for_routes(&self, n: usize) {
        for _ in 0..1000 {
            let body = http_get(self.monitor_port(), "/routez").unwrap_or_default();
            if body.matches("\"rid\"").count() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("nats-server on {} did not see {n} routes within 10 s", self.port);
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// How many clients it has connected now (its `/varz` monitoring endpoint), `None` when it
    /// does not answer.
    pub fn connections(&self) -> Option<usize> {
        let body = http_get(self.monitor_port(), "/varz")?;
        let (_, rest) = body.split_once("\"connections\":")?;
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// Kills it (an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP/1.0 GET on loopback (for nats-server's monitoring endpoints).
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
