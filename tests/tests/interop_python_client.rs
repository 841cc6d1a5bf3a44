//! The real Python webmesh 0.1.2 `WebMeshClient` against a Rust server: call, emit, call_async,
//! unknown path, every msgpack type, 100 KB strings, None and falsy semantics, both codecs.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use webmesh::{Server, Value};
use webmesh_tests::{expect_success, python, repo_root, start};

#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    name: String,
    count: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Greeted {
    text: String,
    count: u32,
}

/// A typed route a Python client calls with a dict.
#[webmesh::route("/interop/greet")]
async fn greet(g: Greeting) -> Greeted {
    Greeted {
        text: format!("hello {}", g.name),
        count: g.count + 1,
    }
}

async fn run_python_client(codec: &str) {
    let recorded: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (r1, r2) = (recorded.clone(), recorded.clone());
    let (server, url) = start(
        Server::builder()
            .on("/echo", |v: Value| async move { v })
            .on("/record", move |v: Value| {
                r1.lock().unwrap().push(v);
                async {}
            })
            .on("/recorded", move |_: Value| {
                let all = r2.lock().unwrap().clone();
                async move { all }
            }),
    )
    .await;
    let port = url.rsplit(':').next().unwrap().to_owned();
    let script = repo_root().join("tests/python/client_calls_rust.py");
    let out = tokio::task::spawn_blocking({
        let codec = codec.to_owned();
        move || {
            std::process::Command::new(python())
                .arg(&script)
                .arg(&port)
                .arg(&codec)
                .current_dir(repo_root().join("tests/python"))
                .output()
                .expect("run python")
        }
    })
    .await
    .unwrap();
    let stdout = expect_success(&out);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("ok "), "python client ({codec}) said: {stdout}");
    let checks: usize = last[3..].trim().parse().unwrap();
    assert!(checks >= 30, "only {checks} checks ran");
    assert_eq!(recorded.lock().unwrap().len(), 5, "the server saw the 5 emits");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_msgpack_zlib() {
    run_python_client("msgpack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_plain_msgpack() {
    run_python_client("msgpack-plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_json() {
    run_python_client("json").await;
}
