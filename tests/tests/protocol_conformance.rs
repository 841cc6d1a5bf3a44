//! Rules of docs/PROTOCOL.md that only show over a connection, pinned against a real server:
//! the document's conformance section points here. Each test is named after its section.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webmesh::codec::{self, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits};
use webmesh::{Server, Value};
use webmesh_tests::start;

type Ws = WebSocketStream<TcpStream>;

const V1: &str = "webmesh.v1.msgpack";

async fn next(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return m,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

fn v1_frame(m: Message) -> codec::Frame {
    let Message::Binary(b) = m else {
        panic!("expected a binary frame, got {m:?}")
    };
    codec::decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        b,
    )
    .unwrap()
}

fn binary(m: codec::WireMessage) -> Message {
    match m {
        codec::WireMessage::Binary(b) => Message::Binary(b.into()),
        codec::WireMessage::Text(t) => Message::Text(t.into()),
    }
}

fn v1() -> FrameEncoder {
    FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default())
}

/// The head of the server's answer to an upgrade offering `protocols` (raw header value).
async fn upgrade_head(url: &str, protocols: &str) -> String {
    let mut tcp = TcpStream::connect(url.trim_start_matches("ws://")).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_3_subprotocols_are_case_sensitive_and_only_webmesh_ones_count() {
    let (server, url) = start(Server::builder().on("/echo", |v: Value| async move { v })).await;
    let chose = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("sec-websocket-protocol:"))
            .map(|v| v.trim().to_owned())
    };
    // No webmesh offer: legacy (101 without the header).
    let head = upgrade_head(&url, "chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(chose(&head), None);
    // Names are case-sensitive: this is not a webmesh offer, so legacy too.
    let head = upgrade_head(&url, "WebMesh.V1.MsgPack").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(chose(&head), None);
    // A usable webmesh offer among others: chosen.
    let head = upgrade_head(&url, "chat, webmesh.v1.json").await;
    assert_eq!(chose(&head).as_deref(), Some("webmesh.v1.json"), "{head}");
    // Webmesh offers, none usable: 400, even next to a non-webmesh one.
    let head = upgrade_head(&url, "chat, webmesh.foo").await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    server.shutdown().await;
}

/// Frames are dispatched in arrival order, and a handler that does not wait finishes before the
/// next frame is dispatched; a NOTIFY's id is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_dispatch_follows_arrival_order_and_notify_ids_are_ignored() {
    let store = Arc::new(Mutex::new(Vec::<i64>::new()));
    let (set, get) = (store.clone(), store.clone());
    let (server, url) = start(
        Server::builder()
            .on("/push", move |v: i64| {
                set.lock().unwrap().push(v);
                async {}
            })
            .on("/all", move |_: ()| {
                let seen = get.lock().unwrap().clone();
                async move { seen }
            }),
    )
    .await;
    let mut ws = webmesh_tests::raw_ws(&url, Some(V1)).await;
    ws.send(binary(v1().notify("/push", &1).unwrap())).await.unwrap();
    // A NOTIFY written with a non-zero id (kind 1, id 5): run, not answered.
    let mut notify_with_id = vec![0x01, 0x05, 0x05];
    notify_with_id.extend(b"/push");
    notify_with_id.push(0x02);
    ws.send(Message::Binary(notify_with_id.into())).await.unwrap();
    ws.send(binary(v1().call(9, "/all", &()).unwrap())).await.unwrap();
    let f = v1_frame(next(&mut ws).await);
    assert_eq!(
        (f.kind(), f.id()),
        (Kind::Reply, 9),
        "the first answer is the call's"
    );
    assert_eq!(f.decode::<Vec<i64>>().unwrap(), vec![1, 2]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_an_empty_body_or_trailing_bytes_get_bad_request() {
    let (server, url) = start(Server::builder().on("/echo", |v: Value| async move { v })).await;
    let mut ws = webmesh_tests::raw_ws(&url, Some(V1)).await;
    let mut empty = vec![0x00, 0x03, 0x05];
    empty.extend(b"/echo");
    let mut trailing = vec![0x00, 0x04, 0x05];
    trailing.extend(b"/echo");
    trailing.extend([0x01, 0x02]);
    for (id, frame) in [(3, empty), (4, trailing)] {
        ws.send(Message::Binary(frame.into())).await.unwrap();
        let f = v1_frame(next(&mut ws).await);
        assert_eq!((f.kind(), f.id()), (Kind::Error, id));
        let (body, _) = f.decode_error::<Value>().unwrap();
        assert_eq!(body.code, "bad_request");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_2_a_legacy_reply_mirrors_the_request() {
    let (server, url) = start(Server::builder().on("/echo", |v: Value| async move { v })).await;
    let mut ws = webmesh_tests::raw_ws(&url, None).await;
    let mut ask = async |text: String| {
        ws.send(Message::Text(text.into())).await.unwrap();
        match next(&mut ws).await {
            Message::Text(t) => t.to_string(),
            other => panic!("{other:?}"),
        }
    };
    // zlib (level 6, as Python writes it) in, zlib level 1 out.
    let zlib6 = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
        z.write_all(&[
            0x82, 0xa4, b'p', b'a', b't', b'h', 0xa5, b'/', b'e', b'c', b'h', b'o', 0xa4, b'd', b'a', b't',
            b'a', 0xa2, b'h', b'i',
        ])
        .unwrap();
        z.finish()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(zlib6.starts_with("789c"));
    assert_eq!(
        ask(zlib6).await,
        "78016b5a52905892b1543f3539237f494a6249e2a28c4c005f7708f8"
    );
    // Plain msgpack in, plain msgpack out.
    assert_eq!(
        ask("82a470617468a52f6563686fa464617461a26869".into()).await,
        "82a470617468a52f6563686fa464617461a26869"
    );
    // JSON with Python's spaces in, compact JSON out.
    assert_eq!(
        ask(r#"{"path": "/echo", "data": "hi"}"#.into()).await,
        r#"{"path":"/echo","data":"hi"}"#
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_5_a_frame_of_exactly_the_limit_is_accepted() {
    const MAX: usize = 4096;
    let (server, url) = start(
        Server::builder()
            .on(
                "/len",
                |v: Value| async move { v.as_slice().map_or(0, <[u8]>::len) },
            )
            .limits(Limits::default().max_frame_size(MAX)),
    )
    .await;
    let mut ws = webmesh_tests::raw_ws(&url, Some(V1)).await;
    // Header 1 + id 1 + path 1+4, bin16 marker 3: the payload fills the frame to MAX exactly.
    let payload = MAX - 1 - 1 - 5 - 3;
    let plain = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::none());
    let frame = plain.call(1, "/len", &Value::Binary(vec![7; payload])).unwrap();
    assert_eq!(frame.len(), MAX);
    ws.send(binary(frame)).await.unwrap();
    let f = v1_frame(next(&mut ws).await);
    assert_eq!((f.kind(), f.decode::<usize>().unwrap()), (Kind::Reply, payload));
    server.shutdown().await;
}
