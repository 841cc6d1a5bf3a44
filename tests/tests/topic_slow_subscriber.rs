//! A topic subscriber that never reads (issue 12): the server's memory stays bounded and the
//! other subscribers lose nothing. Its own test binary, so that no other test's memory shows in
//! the process's RSS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use webmesh::{Client, Server};
use webmesh_tests::topics::{blob, message, raw_subscriber, Blob};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_stays_bounded_and_slows_no_one() {
    let server = Server::builder().bind("127.0.0.1:0").build().await.unwrap();
    let (topics, url) = (server.topics(), format!("ws://{}", server.local_addr()));
    let handle = server.spawn();
    let stuck = raw_subscriber(&url, "/blobs").await;
    let client = Client::connect(&url).await.unwrap();
    let mut reader = client.subscribe::<Blob>().await.unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let counted = got.clone();
    let reading = tokio::spawn(async move {
        for n in 1..=50_000u64 {
            let (_, seq, b) = message(&mut reader).await;
            assert_eq!((seq, b.n), (n, n), "the reading subscriber loses nothing");
            counted.store(n, Ordering::SeqCst);
        }
    });
    // 50,000 messages of 2 KiB (100 MiB in all), paced by the subscriber that reads.
    let before = webmesh_tests::rss_kib();
    let publisher = std::thread::spawn(move || {
        for n in 1..=50_000u64 {
            while n > got.load(Ordering::SeqCst) + 500 {
                std::thread::sleep(Duration::from_millis(1));
            }
            topics.publish(&blob(n)).unwrap();
        }
    });
    tokio::task::spawn_blocking(move || publisher.join().unwrap())
        .await
        .unwrap();
    reading.await.unwrap();
    let grown_mib = webmesh_tests::rss_kib().saturating_sub(before) / 1024;
    // The stuck subscriber holds at most its queues (2 × 1,024 frames of ~2 KiB) and socket
    // buffers; the history keeps 1,024 messages. Unbounded, it would hold the 100 MiB.
    #[allow(clippy::print_stderr)] // the figure, for whoever reads the output
    let () = eprintln!("RSS grew by {grown_mib} MiB while 100 MiB went to a subscriber that never reads");
    assert!(grown_mib < 48, "RSS grew by {grown_mib} MiB");
    drop(stuck);
    handle.shutdown().await;
}
