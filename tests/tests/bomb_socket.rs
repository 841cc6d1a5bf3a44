//! A zlib bomb over a real socket: a frame that inflates to 1 GiB is rejected while it inflates,
//! the server's memory (this process's RSS, sampled from /proc every millisecond) grows by less
//! than twice the configured max inflated size, and another client is served meanwhile.
//!
//! Alone in its test binary, so no other test's allocations blur the measurement.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use webmesh::codec::{self, AnyCodec, FrameType, Framing, Kind, Limits};
use webmesh::{Client, Server, Value};
use webmesh_tests::{raw_ws, start};

/// zlib of `total` zeros, written 1 MiB at a time (about 1 MiB of output for 1 GiB).
fn bomb(total: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_bomb_over_a_socket_is_rejected_within_the_limit() {
    let limits = Limits::default();
    let max_inflated_kib = limits.max_inflated_size / 1024;
    let (server, url) = start(Server::builder().on("/echo", |v: Value| async move { v })).await;

    let z = bomb(1 << 30);
    let legacy_text: String = z.iter().map(|b| format!("{b:02x}")).collect();
    let mut v1_frame = vec![0x10, 0x07, 0x05];
    v1_frame.extend_from_slice(b"/echo");
    v1_frame.extend_from_slice(&z);
    assert!(
        legacy_text.len() < limits.max_frame_size,
        "the bomb fits in one frame"
    );

    // A bystander calling throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let c = Client::connect(&url).await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                assert_eq!(c.call_path::<u64>("/echo", &n).await.unwrap(), n);
                n += 1;
            }
            n
        })
    };

    // Sample RSS every millisecond from here on.
    let before = webmesh_tests::rss_kib();
    let peak = Arc::new(AtomicUsize::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(webmesh_tests::rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    // Legacy: the hex TEXT frame a 0.1.2 peer would send. No reply; the connection stays.
    let mut legacy = raw_ws(&url, None).await;
    legacy.send(Message::Text(legacy_text.into())).await.unwrap();
    let ok = codec::FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, codec::Compression::default())
        .call(0, "/echo", "after the bomb")
        .unwrap();
    legacy
        .send(Message::Text(
            String::from_utf8(ok.as_bytes().to_vec()).unwrap().into(),
        ))
        .await
        .unwrap();
    let Some(Ok(Message::Text(t))) = legacy.next().await else {
        panic!("expected the reply")
    };
    let f = codec::decode_frame(
        Framing::Legacy,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Text,
        t.into(),
    )
    .unwrap();
    assert_eq!(
        f.decode::<String>().unwrap(),
        "after the bomb",
        "the bomb got no reply, the next call did"
    );

    // v1: a compressed CALL. An ERROR bad_request for its id.
    let mut v1 = raw_ws(&url, Some("webmesh.v1.msgpack")).await;
    v1.send(Message::Binary(v1_frame.into())).await.unwrap();
    let Some(Ok(Message::Binary(b))) = v1.next().await else {
        panic!("expected an error frame")
    };
    let f = codec::decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        b,
    )
    .unwrap();
    assert_eq!((f.kind(), f.id()), (Kind::Error, 7));
    let (body, _) = f.decode_error::<Value>().unwrap();
    assert_eq!(body.code, "bad_request");
    assert!(body.message.contains("inflates past"), "{}", body.message);

    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "bomb: peak RSS growth {} KiB (bound {} KiB)",
            grown,
            2 * max_inflated_kib
        );
    }
    assert!(
        grown < 2 * max_inflated_kib,
        "RSS grew by {} MiB (limit {} MiB inflated)",
        grown / 1024,
        max_inflated_kib / 1024
    );
    stop.store(true, Ordering::Relaxed);
    assert!(
        bystander.await.unwrap() > 0,
        "the bystander was served throughout"
    );
    server.shutdown().await;
}
