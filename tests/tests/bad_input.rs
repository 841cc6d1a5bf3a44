//! Malformed input over a real socket: each class gets its defined outcome (PROTOCOL.md §5), and
//! a client connected meanwhile is not disturbed.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webmesh::codec::{self, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits};
use webmesh::{Client, Server, Value};
use webmesh_tests::start;

type Ws = WebSocketStream<TcpStream>;

const MAX_FRAME: usize = 64 * 1024;

fn server() -> webmesh::ServerBuilder {
    Server::builder()
        .on("/echo", |v: Value| async move { v })
        .on("/add", |(a, b): (i64, i64)| async move { a + b })
        .limits(
            Limits::default()
                .max_frame_size(MAX_FRAME)
                .max_inflated_size(1 << 20),
        )
}

async fn raw(url: &str, protocol: Option<&str>) -> Ws {
    webmesh_tests::raw_ws(url, protocol).await
}

/// The next data or close message, within a bound.
async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Expects a close frame with `code`, and the reason to contain `reason`.
async fn expect_close(ws: &mut Ws, code: u16, reason: &str) {
    match next(ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), code, "close code (reason {:?})", f.reason);
            assert!(
                f.reason.contains(reason),
                "close reason {:?} lacks {reason:?}",
                f.reason
            );
        }
        other => panic!("expected a close {code}, got {other:?}"),
    }
}

fn decode(framing: Framing, m: Message) -> codec::Frame {
    let (t, b) = match m {
        Message::Text(t) => (FrameType::Text, bytes::Bytes::from(t)),
        Message::Binary(b) => (FrameType::Binary, b),
        other => panic!("expected a data frame, got {other:?}"),
    };
    codec::decode_frame(framing, &AnyCodec::MSGPACK, &Limits::default(), t, b).unwrap()
}

/// Expects an ERROR frame for `id` with `code`.
async fn expect_error(ws: &mut Ws, id: u64, code: &str) {
    let f = decode(Framing::V1, next(ws).await.expect("an error frame"));
    assert_eq!((f.kind(), f.id()), (Kind::Error, id));
    let (body, _) = f.decode_error::<Value>().unwrap();
    assert_eq!(body.code, code, "message: {}", body.message);
}

fn v1() -> FrameEncoder {
    FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::none())
}

fn legacy() -> FrameEncoder {
    FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default())
}

fn msg(m: codec::WireMessage) -> Message {
    match m {
        codec::WireMessage::Text(t) => Message::Text(t.into()),
        codec::WireMessage::Binary(b) => Message::Binary(b.into()),
    }
}

/// Proves the v1 connection still serves: a good call gets its reply next.
async fn still_serves_v1(ws: &mut Ws, id: u64) {
    ws.send(msg(v1().call(id, "/add", &(2, 3)).unwrap()))
        .await
        .unwrap();
    let f = decode(Framing::V1, next(ws).await.unwrap());
    assert_eq!(
        (f.kind(), f.id(), f.decode::<i64>().unwrap()),
        (Kind::Reply, id, 5)
    );
}

/// Proves the legacy connection still serves, and that nothing was answered before: the next
/// message is the reply to this call.
async fn still_serves_legacy(ws: &mut Ws, marker: &str) {
    ws.send(msg(legacy().call(0, "/echo", marker).unwrap()))
        .await
        .unwrap();
    let f = decode(Framing::Legacy, next(ws).await.unwrap());
    assert_eq!(
        f.decode::<String>().unwrap(),
        marker,
        "the first answer is the good call's"
    );
}

/// A client that keeps calling while the bad input goes on; returns a flag to stop it and its
/// task, which fails if any call fails.
async fn bystander(url: &str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let c = Client::connect(url).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut n = 0;
        // Bounded: at most 100k calls even if never stopped.
        while !s.load(Ordering::Relaxed) && n < 100_000 {
            assert_eq!(
                c.call_path::<i64>("/add", &(n, 1)).await.expect("bystander call"),
                n + 1
            );
            n += 1;
        }
        n
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_bad_frames() {
    let (server, url) = start(server()).await;
    let (stop, watcher) = bystander(&url).await;
    let proto = Some("webmesh.v1.msgpack");

    // Unreadable headers close the connection with 1002 and the reason.
    for (bytes, reason) in [
        (&b"\x80\x01\x00\xc0"[..], "reserved flag"),
        (b"\x00", "truncated"),
        (b"\x00\x80", "truncated"),
        (b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00", "varint"),
        (b"\x00\x01\x02\xff\xfe\xc0", "UTF-8"),
        (b"\x00\x00\x02/a\xc0", "id 0"),
    ] {
        let mut ws = raw(&url, proto).await;
        ws.send(Message::Binary(bytes.to_vec().into())).await.unwrap();
        expect_close(&mut ws, 1002, reason).await;
    }
    // A TEXT frame on a v1 connection.
    let mut ws = raw(&url, proto).await;
    ws.send(Message::Text("{\"path\": \"/echo\"}".into()))
        .await
        .unwrap();
    expect_close(&mut ws, 1003, "text").await;

    // Readable header, bad body: an ERROR for the call, and the connection goes on.
    let mut ws = raw(&url, proto).await;
    ws.send(Message::Binary(b"\x10\x05\x04/add not zlib".to_vec().into()))
        .await
        .unwrap();
    expect_error(&mut ws, 5, "bad_request").await;
    let mut truncated = v1().call(6, "/add", &(1, 2)).unwrap().as_bytes().to_vec();
    truncated.pop();
    ws.send(Message::Binary(truncated.into())).await.unwrap();
    expect_error(&mut ws, 6, "bad_request").await;
    ws.send(msg(v1().call(7, "/add", &"not a pair").unwrap()))
        .await
        .unwrap();
    expect_error(&mut ws, 7, "bad_request").await;
    ws.send(msg(v1().call(8, "/nope", &1).unwrap())).await.unwrap();
    expect_error(&mut ws, 8, "not_found").await;
    ws.send(Message::Binary(b"\x0e\x09\x00".to_vec().into()))
        .await
        .unwrap();
    expect_error(&mut ws, 9, "unsupported").await;
    // A compressed body that inflates past the limit (1 MiB here).
    let bomb = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default().min_size(0));
    let big = bomb.call(10, "/echo", &Value::Binary(vec![0; 2 << 20])).unwrap();
    assert!(big.len() < MAX_FRAME);
    ws.send(msg(big)).await.unwrap();
    expect_error(&mut ws, 10, "bad_request").await;
    // Answers to calls this server never made, and a NOTIFY with a bad payload: nothing.
    ws.send(msg(v1().reply(99, "", &1).unwrap().unwrap()))
        .await
        .unwrap();
    ws.send(msg(v1().notify("/add", &"bad").unwrap())).await.unwrap();
    still_serves_v1(&mut ws, 11).await;

    stop.store(true, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0, "the bystander made calls throughout");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_bad_frames_are_logged_and_the_connection_kept() {
    let (server, url) = start(server()).await;
    let (stop, watcher) = bystander(&url).await;
    let mut ws = raw(&url, None).await;

    let zlib = |b: &[u8]| {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b).unwrap();
        z.finish().unwrap()
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mp = |v: &Value| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    };
    let map =
        |pairs: Vec<(&str, Value)>| Value::Map(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
    let good = zlib(&mp(&map(vec![("path", "/echo".into()), ("data", 1.into())])));
    let bomb = {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..8 {
            z.write_all(&chunk).unwrap();
        }
        z.finish().unwrap()
    };
    let cases: Vec<(&str, String)> = vec![
        ("bad hex", "zz".repeat(10)),
        ("odd hex", "789".into()),
        ("not zlib", hex(b"hello")),
        ("truncated zlib", hex(&good[..good.len() - 4])),
        ("zlib of non-msgpack", hex(&zlib(b"\xc1\xc1"))),
        ("non-map", hex(&zlib(&mp(&Value::from(vec![Value::from(1)]))))),
        ("missing path", hex(&zlib(&mp(&map(vec![("data", 1.into())]))))),
        (
            "non-string path",
            hex(&zlib(&mp(&map(vec![("path", 5.into()), ("data", 1.into())])))),
        ),
        (
            "wrong payload type",
            hex(&zlib(&mp(&map(vec![
                ("path", "/add".into()),
                ("data", "x".into()),
            ])))),
        ),
        ("bomb (8 MiB of zeros, 1 MiB limit)", hex(&bomb)),
        ("json non-map", "{\"path\": [1]}".into()),
    ];
    for (what, text) in cases {
        assert!(text.len() <= MAX_FRAME, "{what}: {} bytes", text.len());
        ws.send(Message::Text(text.into())).await.unwrap();
        still_serves_legacy(&mut ws, what).await;
    }
    // Unknown path: 0.1.2's reply.
    ws.send(msg(legacy().call(0, "/nope", &1).unwrap()))
        .await
        .unwrap();
    let f = decode(Framing::Legacy, next(&mut ws).await.unwrap());
    assert_eq!(
        (f.path(), f.decode::<String>().unwrap().as_str()),
        ("/nope", "Path not found")
    );
    // A BINARY frame is not 0.1.2: closed with a reason.
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    expect_close(&mut ws, 1003, "binary").await;

    stop.store(true, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_from_its_header_before_buffering() {
    let (server, url) = start(server()).await;
    let (stop, watcher) = bystander(&url).await;
    // Upgrade by hand, then announce a 1 GiB frame and send none of it: a server that buffered
    // before checking would wait for the gigabyte; this one closes at once (1009).
    let mut tcp = webmesh_tests::raw_upgrade(&url, None).await;
    let mut header = vec![0x82u8, 0xff];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("closed without waiting for the payload")
        .ok();
    // A close frame: 0x88, length, code 1009 (0x03f1).
    assert_eq!(answer.first(), Some(&0x88), "a close frame: {answer:?}");
    assert_eq!(&answer[2..4], &[0x03, 0xf1], "code 1009");

    // A frame just over the limit through a normal client: same outcome.
    let mut ws = raw(&url, Some("webmesh.v1.msgpack")).await;
    let over = v1().call(1, "/echo", &Value::Binary(vec![7; MAX_FRAME])).unwrap();
    let _ = ws.send(msg(over)).await;
    expect_close(&mut ws, 1009, "").await;

    stop.store(true, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_subprotocols_are_refused_with_400() {
    let (server, url) = start(server()).await;
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "webmesh.v1.cbor, webmesh.v9.msgpack".parse().unwrap(),
    );
    let tcp = TcpStream::connect(url.trim_start_matches("ws://")).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(
                body.contains("webmesh.v1.msgpack") && body.contains("webmesh.v1.json"),
                "{body}"
            );
        }
        other => panic!("expected a 400, got {:?}", other.map(|_| ())),
    }
    // A non-webmesh subprotocol next to a webmesh one is fine; only webmesh ones count.
    let mut ws = raw(&url, Some("webmesh.v1.json")).await;
    ws.send(msg(FrameEncoder::new(
        Framing::V1,
        AnyCodec::JSON,
        Compression::none(),
    )
    .call(1, "/add", &(1, 1))
    .unwrap()))
        .await
        .unwrap();
    let m = next(&mut ws).await.unwrap();
    let Message::Binary(b) = m else { panic!("{m:?}") };
    let f = codec::decode_frame(
        Framing::V1,
        &AnyCodec::JSON,
        &Limits::default(),
        FrameType::Binary,
        b,
    )
    .unwrap();
    assert_eq!(f.decode::<i64>().unwrap(), 2);
    server.shutdown().await;
}
