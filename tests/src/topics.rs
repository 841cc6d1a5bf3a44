//! Helpers of the topic tests: a big message type, typed waits on a subscription, and a raw v1
//! subscriber.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use webmesh::codec::{AnyCodec, Compression, FrameEncoder, Framing, Kind, WireMessage};
use webmesh::{Event, Subscription, Topic};

/// A bigger message, for the memory tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::topic("/blobs")]
pub struct Blob {
    /// Its number.
    pub n: u64,
    /// 2 KiB of text.
    pub text: String,
}

/// A WebSocket binary message of an encoded frame.
pub fn bin(m: &WireMessage) -> Message {
    Message::Binary(m.as_bytes().to_vec().into())
}

/// The next event, within 10 s (a broken test fails instead of hanging).
pub async fn next<T: Topic>(sub: &mut Subscription<T>) -> Event<T> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event within 10 s")
        .expect("the subscription goes on")
}

/// The next event, which must be a message: its path, sequence number and value.
pub async fn message<T: Topic + std::fmt::Debug>(sub: &mut Subscription<T>) -> (String, u64, T) {
    match next(sub).await {
        Event::Message { path, seq, value } => (path, seq, value),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// 2 KiB of text that does not compress to nothing, different for each `n`.
pub fn blob(n: u64) -> Blob {
    let mut x = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let text = (0..2048)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect();
    Blob { n, text }
}

/// A raw v1 socket (msgpack) subscribed to `path` with id 1; the answer is read.
pub async fn raw_subscriber(
    url: &str,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let mut ws = crate::raw_ws(url, Some("webmesh.v1.msgpack")).await;
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::none());
    let subscribe = enc.v1_frame(Kind::Subscribe, 1, path, &()).unwrap();
    ws.send(bin(&subscribe)).await.unwrap();
    let answer = crate::v1_frame(ws.next().await.unwrap().unwrap());
    assert_eq!((answer.kind(), answer.id()), (Kind::Reply, 1));
    ws
}
