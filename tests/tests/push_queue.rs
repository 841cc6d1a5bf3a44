//! Server pushes to a peer that stops reading: once its bounded queue is full, `try_push` fails
//! with `Backpressure` and `push` waits; when the peer reads again the waiting push is sent and
//! every push arrives, in order. Once the connection is gone (here: dropped as stalled), a push
//! waiting for room is woken to fail with `Closed`, and later pushes fail at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use webmesh::{Connection, Error, Server, Value};
use webmesh_tests::{eventually, raw_ws, start};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A numbered push of 64 KiB of incompressible bytes (so the kernel's buffers fill fast).
fn numbered(n: u64) -> (u64, Value) {
    (n, Value::Binary(webmesh_tests::noise(64 * 1024, n)))
}

/// `push` of push number `n`, waiting in a task of its own.
fn push_later(conn: &Connection, n: u64) -> tokio::task::JoinHandle<webmesh::Result<()>> {
    let conn = conn.clone();
    tokio::spawn(async move { conn.push("/n", &numbered(n)).await })
}

/// Pushes until the queue has refused for 300 ms in a row (the peer's kernel buffers and the
/// server's queues are then full, not just busy): how many were taken.
async fn fill(conn: &Connection) -> u64 {
    let mut taken = 0;
    let mut refused_since = None;
    for _ in 0..100_000 {
        match conn.try_push("/n", &numbered(taken)) {
            Ok(()) => {
                taken += 1;
                refused_since = None;
            }
            Err(Error::Backpressure) => {
                let since = *refused_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > ms(300) {
                    return taken;
                }
                tokio::time::sleep(ms(20)).await;
            }
            Err(e) => panic!("unexpected push error: {e}"),
        }
    }
    panic!("the push queue never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_wait_for_room_arrive_in_order_and_fail_once_the_connection_is_gone() {
    let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let c = conns.clone();
    let (_server, url) = start(
        Server::builder()
            .keepalive(None)
            .outbound_queue(4)
            .stalled_peer_timeout(Some(ms(2_500)))
            .on_connect(move |conn: &Connection| c.lock().unwrap().push(conn.clone())),
    )
    .await;
    let connection = |i: usize| {
        let conns = conns.clone();
        move || conns.lock().unwrap().len() > i
    };

    // A peer that reads nothing, until told to.
    let mut ws = raw_ws(&url, Some("webmesh.v1.msgpack")).await;
    eventually("the first connection", connection(0)).await;
    let conn = conns.lock().unwrap()[0].clone();
    let taken = fill(&conn).await;
    let waiting = push_later(&conn, taken);
    tokio::time::sleep(ms(200)).await;
    assert!(!waiting.is_finished(), "a push waits while the queue is full");

    // The peer reads again: the waiting push goes out, and every push arrives, in order.
    let reader = tokio::spawn(async move {
        for expected in 0..=taken {
            let msg = ws.next().await.expect("a push").expect("a frame");
            let frame = webmesh_tests::v1_frame(msg);
            assert_eq!(frame.path(), "/n");
            let (n, _): (u64, Value) = frame.decode().expect("a numbered push");
            assert_eq!(n, expected, "pushes arrive in the order they were made");
        }
        ws
    });
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting push is sent once the peer reads")
        .unwrap()
        .expect("the push succeeds");
    let ws = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("every push arrives")
        .unwrap();
    assert!(taken > 4, "more than the queue's bound went through ({taken})");
    drop(ws);

    // A second peer that never reads: the server drops it as stalled, which wakes the waiting
    // push with an error instead of leaving it waiting forever.
    let _silent = raw_ws(&url, Some("webmesh.v1.msgpack")).await;
    eventually("the second connection", connection(1)).await;
    let conn = conns.lock().unwrap()[1].clone();
    let taken = fill(&conn).await;
    let waiting = push_later(&conn, taken);
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a waiting push ends when the connection does")
        .unwrap();
    assert!(matches!(ended, Err(Error::Closed { .. })), "{ended:?}");
    assert!(matches!(conn.try_push("/n", &1u8), Err(Error::Closed { .. })));
    assert!(matches!(conn.push("/n", &1u8).await, Err(Error::Closed { .. })));
    assert!(conn.is_closed());
}
