//! The connection core and both drivers over `tokio::io::duplex`: no sockets carry these
//! connections, and with tokio's clock paused the keepalive and stall timers are exact.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webmesh_codec::{decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits};

use crate::{Client, Connection, Keepalive, Server, ServerHandle};

const V1: &str = "webmesh.v1.msgpack";

async fn server(builder: crate::ServerBuilder) -> ServerHandle {
    // The listener is never used: every connection below is an in-memory pipe.
    builder.bind("127.0.0.1:0").build().await.unwrap().spawn()
}

/// A pipe whose far end the server serves.
fn served(handle: &ServerHandle, buffer: usize) -> DuplexStream {
    let (near, far) = tokio::io::duplex(buffer);
    tokio::spawn(handle.serve_connection(far, None));
    near
}

/// A raw WebSocket peer over `io`, offering `protocol`.
async fn raw(io: DuplexStream, protocol: Option<&str>) -> WebSocketStream<DuplexStream> {
    let mut req = "ws://mem/".into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    tokio_tungstenite::client_async(req, io).await.unwrap().0
}

fn call(id: u64, path: &str, value: &impl serde::Serialize) -> Message {
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    Message::Binary(enc.call(id, path, value).unwrap().as_bytes().to_vec().into())
}

/// The next close frame's code, skipping data and control frames.
async fn close_code(ws: &mut WebSocketStream<DuplexStream>) -> Option<u16> {
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn calls_emits_and_pushes_over_an_in_memory_pipe() {
    let handle = server(
        Server::builder()
            .on("/add", |(a, b): (i64, i64)| async move { a + b })
            .on("/poke", |n: u32, conn: Connection| async move {
                let _ = conn.push("/poked", &n).await;
            }),
    )
    .await;
    let (tx, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    let client = Client::builder()
        .on_push("/poked", move |n: u32| {
            let _ = tx.send(n);
        })
        .connect_stream(served(&handle, 64 * 1024), "ws://mem/")
        .await
        .unwrap();
    assert_eq!(client.framing(), Framing::V1);
    assert_eq!(client.call_path::<i64>("/add", &(2, 40)).await.unwrap(), 42);
    client.emit_path("/poke", &7u32).await.unwrap();
    assert_eq!(pushed.recv().await, Some(7));
    client.close().await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let keepalive = Keepalive::new(Duration::from_secs(5), Duration::from_secs(5));
    let handle = server(Server::builder().keepalive(Some(keepalive))).await;
    // Upgrade, then never read again: pings go unanswered.
    let ws = raw(served(&handle, 64 * 1024), Some(V1)).await;
    let start = tokio::time::Instant::now();
    let mut ws = ws;
    // The server pings after 5 s of silence and gives up 5 s later: the stream then ends.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let end = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = ws.next().await {
            if !matches!(m, Message::Ping(_)) {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the server dropped the silent peer");
    assert!(start.elapsed() >= Duration::from_secs(10));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_closed_with_1008() {
    let handle = server(
        Server::builder()
            .keepalive(None)
            .outbound_queue(4)
            .stalled_peer_timeout(Some(Duration::from_secs(3)))
            .on("/flood", |_: (), conn: Connection| async move {
                for i in 0..10_000u32 {
                    if conn.push("/flood", &vec![i; 256]).await.is_err() {
                        break;
                    }
                }
            }),
    )
    .await;
    // A small pipe that this peer stops reading: the server's writes block.
    let mut ws = raw(served(&handle, 4096), Some(V1)).await;
    ws.send(call(1, "/flood", &())).await.unwrap();
    // The server gives up 3 s after its writes blocked; its close frame then has a brief chance
    // (100 ms) to get out, and the pushes still waiting fail at once. Reading again within it, the
    // peer finds the pushes that fit, then the close.
    tokio::time::sleep(Duration::from_millis(3_050)).await;
    assert_eq!(close_code(&mut ws).await, Some(1008));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_header_that_cannot_be_read_closes_with_1002_and_others_go_on() {
    let handle = server(Server::builder().on("/add", |(a, b): (i64, i64)| async move { a + b })).await;
    let mut bad = raw(served(&handle, 64 * 1024), Some(V1)).await;
    let good = Client::builder()
        .connect_stream(served(&handle, 64 * 1024), "ws://mem/")
        .await
        .unwrap();
    bad.send(Message::Binary(vec![0x80, 0x01, 0x00, 0xc0].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut bad).await, Some(1002));
    assert_eq!(good.call_path::<i64>("/add", &(1, 1)).await.unwrap(), 2);
    handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_the_call_in_flight_then_closes_with_1001() {
    let handle = server(Server::builder().on("/slow", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }))
    .await;
    let mut ws = raw(served(&handle, 64 * 1024), Some(V1)).await;
    ws.send(call(3, "/slow", &50u64)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopping = tokio::spawn({
        let handle = handle.clone();
        async move { handle.shutdown().await }
    });
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("the call's answer comes first")
    };
    let f = decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        b,
    )
    .unwrap();
    assert_eq!(
        (f.kind(), f.id(), f.decode::<u64>().unwrap()),
        (Kind::Reply, 3, 50)
    );
    assert_eq!(close_code(&mut ws).await, Some(1001));
    stopping.await.unwrap();
}

#[tokio::test]
async fn pings_are_answered_with_their_payload_and_a_peers_close_with_its_code() {
    let handle = server(Server::builder().on("/add", |(a, b): (i64, i64)| async move { a + b })).await;
    let mut ws = raw(served(&handle, 64 * 1024), Some(V1)).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4000.into(),
            reason: "done here".into(),
        },
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4000), "the close is echoed");
    // tungstenite saw a whole close handshake: its stream ends cleanly.
    assert!(ws.next().await.is_none());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_read_after_the_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handle = server(Server::builder().on("/add", |(a, b): (i64, i64)| async move { a + b })).await;
    let mut io = served(&handle, 64 * 1024);
    // The request and the first frame (a CALL, masked) in one write.
    let mut bytes = format!(
        "GET / HTTP/1.1\r\nHost: mem\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {V1}\r\n\r\n"
    )
    .into_bytes();
    let Message::Binary(payload) = call(9, "/add", &(40, 2)) else {
        unreachable!()
    };
    let key = [1, 2, 3, 4];
    bytes.extend_from_slice(&[0x82, 0x80 | payload.len() as u8]);
    bytes.extend_from_slice(&key);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    io.write_all(&bytes).await.unwrap();
    // The answer to the upgrade, then the reply frame (unmasked, short).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(io.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (first, len) = (io.read_u8().await.unwrap(), io.read_u8().await.unwrap());
    assert_eq!(first, 0x82);
    let mut reply = vec![0; usize::from(len)];
    io.read_exact(&mut reply).await.unwrap();
    let f = decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        reply.into(),
    )
    .unwrap();
    assert_eq!(
        (f.kind(), f.id(), f.decode::<i64>().unwrap()),
        (Kind::Reply, 9, 42)
    );
    handle.shutdown().await;
}
