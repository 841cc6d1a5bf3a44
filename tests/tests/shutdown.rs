//! Graceful shutdown (issue 9, point 1): `ServerHandle::shutdown` returns whatever state the
//! server is in, and every connection gets close 1001 with its reason within one deadline.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webmesh::codec::{
    self, decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits,
};
use webmesh::{Client, CloseKind, Error, Server};

type Ws = WebSocketStream<TcpStream>;

const V1: &str = "webmesh.v1.msgpack";

/// A bound far above any legitimate wait: the tests fail instead of hanging.
const HANG: Duration = Duration::from_secs(20);

fn builder() -> webmesh::ServerBuilder {
    Server::builder()
        .bind("127.0.0.1:0")
        .on("/forever", |_: ()| async move {
            std::future::pending::<()>().await;
            0u8
        })
        .on("/sleep", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .on("/add", |(a, b): (i64, i64)| async move { a + b })
        .on("/closing", |ms: u64, conn: webmesh::Connection| async move {
            let before = conn.is_closed();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (before, conn.is_closed())
        })
}

async fn shutdown_within(handle: &webmesh::ServerHandle) -> Duration {
    let t = Instant::now();
    tokio::time::timeout(HANG, handle.shutdown())
        .await
        .expect("shutdown returns");
    t.elapsed()
}

fn v1_call(id: u64, path: &str, value: &impl serde::Serialize) -> Message {
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    match enc.call(id, path, value).unwrap() {
        codec::WireMessage::Binary(b) => Message::Binary(b.into()),
        codec::WireMessage::Text(_) => unreachable!("v1 frames are binary"),
    }
}

/// Reads until the close frame; returns the ids of the v1 answers seen on the way (with their
/// kind) and the close code and reason.
async fn read_to_close(ws: &mut Ws) -> (Vec<(Kind, u64, Option<String>)>, Option<(u16, String)>) {
    let mut answers = Vec::new();
    loop {
        let next = tokio::time::timeout(HANG, ws.next())
            .await
            .expect("the server closes");
        match next {
            Some(Ok(Message::Binary(b))) => {
                let frame = decode_frame(
                    Framing::V1,
                    &AnyCodec::MSGPACK,
                    &Limits::default(),
                    FrameType::Binary,
                    b,
                )
                .unwrap();
                let code = (frame.kind() == Kind::Error).then(|| {
                    frame
                        .decode_error::<webmesh::Value>()
                        .unwrap()
                        .0
                        .code
                        .into_owned()
                });
                answers.push((frame.kind(), frame.id(), code));
            }
            Some(Ok(Message::Close(f))) => {
                return (answers, f.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
            None => return (answers, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_shutdown_returns_after_the_run_future_was_dropped() {
    let server = builder().build().await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let handle = server.handle();
    // The pattern from the issue: `run` loses a select (to ctrl_c in a real program), here
    // after a peer connected.
    let mut ws = tokio::select! {
        _ = server.run() => panic!("run ended by itself"),
        ws = async {
            let ws = webmesh_tests::raw_ws(&url, Some(V1)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            ws
        } => ws,
    };
    shutdown_within(&handle).await;
    assert!(handle.is_stopped());
    let (_, close) = read_to_close(&mut ws).await;
    assert_eq!(close, Some((1001, "server shutting down".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_shutdown_returns_for_a_server_dropped_or_never_started() {
    // Dropped without running.
    let server = builder().build().await.unwrap();
    let handle = server.handle();
    drop(server);
    shutdown_within(&handle).await;
    assert!(handle.is_stopped());

    // Built and kept, never started: shutdown returns, and a later `run` returns at once.
    let server = builder().build().await.unwrap();
    let handle = server.handle();
    shutdown_within(&handle).await;
    tokio::time::timeout(HANG, server.run())
        .await
        .expect("run after shutdown returns at once")
        .unwrap();
    assert!(handle.is_stopped());

    // Already stopped: a second shutdown returns too.
    shutdown_within(&handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_every_connection_gets_1001_within_one_deadline() {
    let timeout = Duration::from_millis(400);
    let server = builder().shutdown_timeout(timeout).build().await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let handle = server.spawn();

    // Idle v1 and legacy peers, a peer with a call that outlives the deadline, one with a call
    // that finishes within it, and a webmesh client.
    let mut idle = webmesh_tests::raw_ws(&url, Some(V1)).await;
    let mut legacy = webmesh_tests::raw_ws(&url, None).await;
    let mut stuck = webmesh_tests::raw_ws(&url, Some(V1)).await;
    stuck.send(v1_call(1, "/forever", &())).await.unwrap();
    let mut slow = webmesh_tests::raw_ws(&url, Some(V1)).await;
    slow.send(v1_call(7, "/sleep", &200u64)).await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(client.call_path::<i64>("/add", &(1, 2)).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let shutdown = tokio::spawn({
        let handle = handle.clone();
        async move { shutdown_within(&handle).await }
    });
    // A call made while the server drains did not run: it gets `shutting_down`, not silence.
    tokio::time::sleep(Duration::from_millis(50)).await;
    slow.send(v1_call(8, "/add", &(1, 1))).await.unwrap();

    let took = shutdown.await.unwrap();
    let expected = Some((1001, "server shutting down".to_owned()));
    let (answers, close) = read_to_close(&mut slow).await;
    assert_eq!(close, expected, "slow");
    assert!(
        answers.contains(&(Kind::Reply, 7, None)),
        "the call in flight was answered before the close: {answers:?}"
    );
    assert!(
        answers.contains(&(Kind::Error, 8, Some("shutting_down".to_owned()))),
        "the call made while draining was refused: {answers:?}"
    );
    let (answers, close) = read_to_close(&mut stuck).await;
    assert_eq!(close, expected, "stuck");
    assert!(
        answers.is_empty(),
        "the call past the deadline has no answer: {answers:?}"
    );
    for (name, ws) in [("idle", &mut idle), ("legacy", &mut legacy)] {
        assert_eq!(read_to_close(ws).await.1, expected, "{name}");
    }
    match client.call_path::<i64>("/add", &(1, 2)).await {
        Err(Error::Closed {
            kind: CloseKind::Remote { code: Some(1001) },
            reason,
        }) => assert!(reason.contains("server shutting down"), "{reason}"),
        other => panic!("the client sees the server's close: {other:?}"),
    }
    // One deadline: the stuck handler did not hold the shutdown past it (plus the close grace
    // and slack; the bound is loose on purpose, the machines are shared).
    assert!(
        took < timeout + Duration::from_secs(5),
        "shutdown took {took:?} for a {timeout:?} deadline"
    );
    assert!(handle.is_stopped());
}

/// Issue 9, point 6: a connection that drains is closing: `is_closed` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_draining_connection_is_closed() {
    let (handle, url) = webmesh_tests::start(builder()).await;
    let c = Client::connect(&url).await.unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.call_path::<(bool, bool)>("/closing", &300u64).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown_within(&handle).await;
    assert_eq!(
        call.await.unwrap().unwrap(),
        (false, true),
        "open before the shutdown, closing during the drain"
    );
}
