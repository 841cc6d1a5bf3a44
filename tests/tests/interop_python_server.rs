//! A Rust client against the real Python webmesh 0.1.2 `WebMeshServer`: the client detects the
//! 0.1.2 server at the handshake and speaks legacy framing; call, emit, both codecs.

use std::time::Duration;

use webmesh::codec::AnyCodec;
use webmesh::{Client, Error, Framing, Protocol, Value};
use webmesh_tests::PyServer;

async fn against_python(codec_name: &str, codec: AnyCodec) {
    let py = PyServer::start(codec_name);
    let c = Client::builder()
        .codec(codec)
        .timeout(Some(Duration::from_secs(10)))
        .connect(&py.url())
        .await
        .unwrap();
    assert_eq!(
        c.framing(),
        Framing::Legacy,
        "a 0.1.2 server is detected at the handshake"
    );

    let cases: Vec<Value> = vec![
        Value::from("hello ✓"),
        Value::from(0),
        Value::from(i64::MIN),
        Value::from(1.25),
        Value::from(false),
        Value::Array(vec![Value::from(1), Value::Nil, Value::from("x")]),
        Value::Map(vec![(Value::from("k"), Value::from(vec![Value::from(2)]))]),
        Value::from("y".repeat(100_000)),
    ];
    for v in &cases {
        assert_eq!(&c.call_path::<Value>("/echo", v).await.unwrap(), v);
    }
    if codec_name == "msgpack" {
        let bin = Value::Binary(vec![0, 1, 255]);
        assert_eq!(c.call_path::<Value>("/echo", &bin).await.unwrap(), bin);
        assert_eq!(c.call_path::<u64>("/echo", &u64::MAX).await.unwrap(), u64::MAX);
    }
    // Typed calls through a struct: a dict on the Python side.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }
    let p = Point { x: 3, y: -4 };
    assert_eq!(c.call_path::<Point>("/echo", &p).await.unwrap(), p);

    // Calls on different paths in flight together (the Python server runs 5 at a time).
    let (slow, fast) = tokio::join!(
        c.call_path::<f64>("/sleep", &0.3),
        c.call_path::<String>("/echo", &"fast")
    );
    assert_eq!((slow.unwrap(), fast.unwrap().as_str()), (0.3, "fast"));

    // emit, then read back what the server recorded.
    for i in 0..3 {
        c.emit_path("/record", &i).await.unwrap();
    }
    // The 0.1.2 server runs requests on a pool of 5 threads: wait (bounded) until all three ran.
    let mut recorded: Vec<i64> = Vec::new();
    for _ in 0..200 {
        recorded = c.call_path("/recorded", &()).await.unwrap();
        if recorded.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorded.sort_unstable();
    assert_eq!(recorded, vec![0, 1, 2]);

    // Unknown path: 0.1.2 answers "Path not found".
    assert!(c.call_path::<u8>("/nope", &1).await.unwrap_err().is_not_found());
    // A handler that raises gets no reply in 0.1.2: the call ends at its timeout, not never.
    let short = c.with_timeout(Some(Duration::from_millis(300)));
    assert!(matches!(
        short.call_path::<u8>("/error", &1).await,
        Err(Error::CallTimeout { .. })
    ));
    assert_eq!(
        c.call_path::<String>("/echo", &"still fine").await.unwrap(),
        "still fine"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_to_python_server_msgpack() {
    against_python("msgpack", AnyCodec::MSGPACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_to_python_server_json() {
    against_python("json", AnyCodec::JSON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_only_client_refuses_a_python_server() {
    let py = PyServer::start("msgpack");
    let err = Client::builder()
        .protocol(Protocol::V1)
        .connect(&py.url())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Handshake { ref reason, .. } if reason.contains("v1")),
        "{err}"
    );
}

#[test]
fn blocking_client_to_python_server() {
    let py = PyServer::start("msgpack");
    let c = webmesh::BlockingClient::connect(&py.url()).unwrap();
    assert_eq!(c.call_path::<String>("/echo", &"blocking").unwrap(), "blocking");
    let (tx, rx) = std::sync::mpsc::channel();
    c.call_path_async("/echo", 7, move |r: Result<i64, Error>| {
        tx.send(r.unwrap()).unwrap()
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 7);
    c.close();
}

/// Calls `path` with `value` until the path is no longer blocked by an owed reply (bounded).
async fn call_when_free(c: &Client, path: &str, value: &Value) -> Value {
    for _ in 0..500 {
        match c.call_path::<Value>(path, value).await {
            Err(Error::StaleReplyPending { path: p }) => {
                assert_eq!(p, path);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other.unwrap(),
        }
    }
    panic!("{path} stayed blocked");
}

/// Issue 9, point 4: replies of a 0.1.2 server carry no id. The late reply of a timed-out call
/// must not be handed to the next call on that path (before the fix, that call got it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_late_reply_is_never_handed_to_another_call() {
    let py = PyServer::start("msgpack");
    let c = Client::connect(&py.url()).await.unwrap();
    let short = c.with_timeout(Some(Duration::from_millis(200)));
    match short.call_path::<f64>("/sleep", &0.8).await {
        Err(Error::CallTimeout { path, .. }) => assert_eq!(path, "/sleep"),
        other => panic!("expected the call to time out: {other:?}"),
    }
    // The reply to the timed-out call is still owed: a new call on the path fails at once,
    // with an error that says why, instead of receiving 0.8.
    match c.call_path::<f64>("/sleep", &0.01).await {
        Err(e @ Error::StaleReplyPending { .. }) => {
            assert!(e.to_string().contains("/sleep"), "{e}")
        }
        other => panic!("expected the path to be blocked: {other:?}"),
    }
    // Other paths are not affected.
    assert_eq!(c.call_path::<String>("/echo", &"other").await.unwrap(), "other");
    // Once the late reply has arrived (and been dropped), the path serves calls again, each
    // with its own answer.
    let got = call_when_free(&c, "/sleep", &Value::from(0.01)).await;
    assert_eq!(got, Value::from(0.01));
    assert_eq!(c.call_path::<f64>("/sleep", &0.02).await.unwrap(), 0.02);

    // An emit is answered by 0.1.2 when its callback returns a value: that answer is owed too,
    // and never reaches the next call.
    c.emit_path("/echo", &"emitted").await.unwrap();
    let got = call_when_free(&c, "/echo", &Value::from("called")).await;
    assert_eq!(got, Value::from("called"));
    c.close().await;
}
