//! The real Python webmesh 0.1.2 `WebMeshClient` against a Rust server: call, emit, call_async,
//! unknown path, every msgpack type, 100 KB strings, None and falsy semantics, both codecs; and
//! all of it while the server publishes on topics and broadcasts.

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

/// Published on while a Python client makes its calls.
#[derive(Debug, Serialize, Deserialize)]
#[webmesh::topic("/interop/ticks")]
struct Tick(u64);

/// Pushed to every connection while a Python client makes its calls.
#[derive(Debug, Serialize, Deserialize)]
#[webmesh::push("/interop/news")]
struct News(u64);

/// Runs the Python client's checks against a Rust server; with `busy`, the server meanwhile
/// publishes on a topic (to a Rust subscriber) and broadcasts pushes, as a live mesh would.
async fn run_python_client(codec: &str, busy: bool) {
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
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = busy.then(|| {
        let (topics, stop, url) = (server.topics(), stop.clone(), url.clone());
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let rust = webmesh::Client::connect(&url).await.unwrap();
            let mut ticks = rust.subscribe::<Tick>().await.unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                topics.publish(&Tick(n)).unwrap();
                topics.broadcast(&News(n)).unwrap();
                match ticks.next().await {
                    Some(webmesh::Event::Message { value: Tick(t), .. }) => assert_eq!(t, n),
                    other => panic!("the Rust subscriber got {other:?}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            n
        })
    });
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
    if let Some(publishing) = publishing {
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let published = publishing.await.unwrap();
        assert!(
            published > 10,
            "only {published} messages were published meanwhile"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_msgpack_zlib() {
    run_python_client("msgpack", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_plain_msgpack() {
    run_python_client("msgpack-plain", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_with_json() {
    run_python_client("json", false).await;
}

/// A 0.1.2 client cannot subscribe (it would take any frame it did not ask for as the reply to
/// its next call): a server publishing on topics and broadcasting pushes meanwhile sends it
/// nothing, and every one of its calls still gets its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_gets_its_replies_while_topics_are_published() {
    run_python_client("msgpack", true).await;
}
