//! A peer that stops reading its messages: past the outbound bound the server stops reading
//! from it, and after the stall timeout disconnects it with a reason; the server's memory (this
//! process's RSS) stays bounded meanwhile, and other clients are served.
//!
//! Alone in its test binary, so no other test's allocations blur the measurement.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use webmesh::codec::{AnyCodec, Compression, FrameEncoder, Framing};
use webmesh::{Client, Connection, Server, Value};
use webmesh_tests::{eventually, start};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_disconnected_and_memory_stays_bounded() {
    let gone = Arc::new(AtomicUsize::new(0));
    let g = gone.clone();
    let (server, url) = start(
        Server::builder()
            .keepalive(None)
            .outbound_queue(4)
            .stalled_peer_timeout(Some(ms(300)))
            .on("/big", |n: usize| async move {
                Value::Binary(webmesh_tests::noise(n, 0))
            })
            .on("/add", |(a, b): (i64, i64)| async move { a + b })
            .on_disconnect(move |_: &Connection| {
                g.fetch_add(1, Ordering::SeqCst);
            }),
    )
    .await;
    let before = webmesh_tests::rss_kib();
    // A peer that sends 400 calls for 256 KiB of incompressible answer each (100 MiB in all), and
    // reads none of it: the kernel buffers hold some 36 MiB here, the server must hold the rest.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "webmesh.v1.msgpack".parse().unwrap());
    let tcp = TcpStream::connect(url.trim_start_matches("ws://")).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::none());
    let writer = tokio::spawn(async move {
        for id in 1..=400u64 {
            let m = enc.call(id, "/big", &(256 * 1024usize)).unwrap();
            let webmesh::codec::WireMessage::Binary(b) = m else {
                unreachable!()
            };
            // This blocks once the server stops reading (its queue is full): that is the point.
            if ws
                .send(tokio_tungstenite::tungstenite::Message::Binary(b.into()))
                .await
                .is_err()
            {
                break;
            }
        }
        ws
    });
    eventually("the stalled peer is disconnected", || {
        gone.load(Ordering::SeqCst) == 1
    })
    .await;
    let grown_mib = webmesh_tests::rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "server memory grew by {grown_mib} MiB for a peer that reads nothing"
    );
    // Other clients are served throughout.
    let c = Client::connect(&url).await.unwrap();
    assert_eq!(c.call_path::<i64>("/add", &(2, 2)).await.unwrap(), 4);
    writer.abort();
    server.shutdown().await;
}
