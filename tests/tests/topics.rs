//! Topics (issue 12) over real sockets: typed publish/subscribe, order, 1,000 subscribers, slow
//! subscribers (bounded, told what they lost), wildcards, groups and broadcast, client publish
//! under a rule, and resubscribing after a dropped connection or a server restart with the
//! missed messages replayed or an explicit gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use webmesh::codec::{AnyCodec, Compression, FrameEncoder, Framing, Kind};
use webmesh::{
    Client, Connection, Error, Event, LagPolicy, Reconnect, Reject, Server, SubscribeOptions, UpgradeRequest,
};
use webmesh_tests::topics::{bin, blob, message, next, raw_subscriber, Blob};
use webmesh_tests::{eventually, start};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::topic("/orders/created")]
struct OrderCreated {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::topic("/prices/*")]
struct Price(u64);

/// `Price` as an out-of-date contract had it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::topic("/prices/*")]
struct StalePrice(String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::push("/room/said")]
struct Said(String);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publishers_messages_arrive_in_order_with_their_sequence_numbers() {
    let server = Server::builder().bind("127.0.0.1:0").build().await.unwrap();
    let (topics, url) = (server.topics(), format!("ws://{}", server.local_addr()));
    let handle = server.spawn();
    let client = Client::connect(&url).await.unwrap();
    let mut prices = client.subscribe::<Price>().await.unwrap();
    let mut orders = client.subscribe::<OrderCreated>().await.unwrap();
    // Two publisher threads on two paths of one pattern, and a third on another topic; each
    // waits when 500 of its messages are unread, so nothing overflows a queue.
    let seen = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = ["/prices/a", "/prices/b", "/orders/created"]
        .into_iter()
        .map(|path| {
            let (topics, seen) = (topics.clone(), seen.clone());
            std::thread::spawn(move || {
                for i in 1..=1000u64 {
                    while i > seen.load(Ordering::SeqCst) / 3 + 500 {
                        std::thread::sleep(ms(1));
                    }
                    let delivered = if path == "/orders/created" {
                        topics.publish(&OrderCreated { id: i })
                    } else {
                        topics.publish_at(path, &Price(i))
                    };
                    assert_eq!(delivered.unwrap(), 1);
                }
            })
        })
        .collect();
    let mut last = std::collections::HashMap::new();
    for _ in 0..2000 {
        let (path, seq, Price(value)) = message(&mut prices).await;
        assert_eq!(seq, value, "sequence numbers count each path's messages from 1");
        let before = last.insert(path.clone(), seq).unwrap_or(0);
        assert_eq!(seq, before + 1, "in publishing order on {path}");
        seen.fetch_add(1, Ordering::SeqCst);
    }
    for i in 1..=1000 {
        let (path, seq, order) = message(&mut orders).await;
        assert_eq!(
            (path.as_str(), seq, order),
            ("/orders/created", i, OrderCreated { id: i })
        );
        seen.fetch_add(1, Ordering::SeqCst);
    }
    for p in publishers {
        p.join().unwrap();
    }
    assert_eq!(last.len(), 2);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_on_a_thousand_connections_get_every_message() {
    let server = Server::builder().bind("127.0.0.1:0").build().await.unwrap();
    let (topics, url) = (server.topics(), format!("ws://{}", server.local_addr()));
    let handle = server.spawn();
    let subscribers: Vec<_> = (0..1000)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = Client::connect(&url).await.unwrap();
                let sub = client.subscribe::<OrderCreated>().await.unwrap();
                (client, sub)
            })
        })
        .collect();
    let mut subs = Vec::new();
    for s in subscribers {
        subs.push(s.await.unwrap());
    }
    for id in 1..=100 {
        assert_eq!(
            topics.publish(&OrderCreated { id }).unwrap(),
            1000,
            "every connection takes it"
        );
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(client, mut sub)| {
            tokio::spawn(async move {
                for id in 1..=100 {
                    let (_, seq, order) = message(&mut sub).await;
                    assert_eq!((seq, order.id), (id, id));
                }
                drop(client);
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_at_the_server_is_told_how_many_it_missed() {
    let server = Server::builder()
        .outbound_queue(16)
        .bind("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let (topics, url) = (server.topics(), format!("ws://{}", server.local_addr()));
    let handle = server.spawn();
    let mut ws = raw_subscriber(&url, "/blobs").await;
    // Published while the subscriber does not read: far more than its queue and socket buffers.
    for n in 1..=10_000 {
        topics.publish(&blob(n)).unwrap();
    }
    // Now it reads: messages in order, and lag notices for the rest; the two add up.
    let (mut received, mut missed, mut last) = (0u64, 0u64, 0u64);
    while last < 10_000 {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frames until the last message is accounted for")
            .unwrap()
            .unwrap();
        let frame = webmesh_tests::v1_frame(frame);
        match frame.kind() {
            Kind::TopicMessage => {
                let seq = frame.seq().expect("a topic message has a sequence number");
                assert!(seq > last, "in order");
                assert_eq!(frame.decode::<Blob>().unwrap().n, seq);
                received += 1;
                last = seq;
            }
            Kind::Notice => {
                #[derive(Deserialize)]
                struct Lag {
                    kind: String,
                    missed: u64,
                    upto: u64,
                }
                let lag: Lag = frame.decode().unwrap();
                assert_eq!(lag.kind, "lag");
                missed += lag.missed;
                last = last.max(lag.upto);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(missed > 0, "the subscriber fell behind");
    assert_eq!(
        received + missed,
        10_000,
        "every message arrived or was counted as missed"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscription_buffer_drops_the_oldest_and_says_so_or_closes() {
    let server = Server::builder().bind("127.0.0.1:0").build().await.unwrap();
    let (topics, url) = (server.topics(), format!("ws://{}", server.local_addr()));
    let handle = server.spawn();
    let client = Client::connect(&url).await.unwrap();
    let mut dropping = client
        .subscribe_with::<OrderCreated>(SubscribeOptions::default().buffer(8))
        .await
        .unwrap();
    let mut closing = client
        .subscribe_with::<OrderCreated>(SubscribeOptions::default().buffer(4).on_lag(LagPolicy::Close))
        .await
        .unwrap();
    for id in 1..=100 {
        topics.publish(&OrderCreated { id }).unwrap();
    }
    // Drop-oldest: a lag event for what went, then the newest eight.
    let (mut seen, mut lost) = (Vec::new(), 0);
    while seen.last() != Some(&100) {
        match next(&mut dropping).await {
            Event::Lagged { missed, .. } => lost += missed,
            Event::Message { seq, .. } => seen.push(seq),
            other => panic!("{other:?}"),
        }
    }
    assert!(lost > 0);
    assert_eq!(seen.len() as u64 + lost, 100);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // Close: what fitted, then the end with its reason.
    let mut kept = 0;
    loop {
        match next(&mut closing).await {
            Event::Message { .. } => kept += 1,
            Event::Closed { reason } => {
                assert!(reason.contains("fell behind"), "{reason}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(kept, 4);
    assert!(closing.next().await.is_none(), "nothing after the end");
    // The server forgets the closed one; the other still gets messages.
    eventually("one subscription left", || {
        topics.publish(&OrderCreated { id: 0 }).unwrap() == 1
    })
    .await;
    drop(dropping);
    eventually("no subscription left after the drop", || {
        topics.publish(&OrderCreated { id: 0 }).unwrap() == 0
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_one_segment_and_narrow_to_a_path() {
    let server = Server::builder().bind("127.0.0.1:0").build().await.unwrap();
    let (topics, url) = (server.topics(), format!("ws://{}", server.local_addr()));
    let handle = server.spawn();
    let client = Client::connect(&url).await.unwrap();
    let mut all = client.subscribe::<Price>().await.unwrap();
    let mut acme = client
        .subscribe_with::<Price>(SubscribeOptions::default().path("/prices/acme"))
        .await
        .unwrap();
    topics.publish_at("/prices/acme", &Price(1)).unwrap();
    topics.publish_at("/prices/zeta", &Price(2)).unwrap();
    topics.publish_at("/prices/acme", &Price(3)).unwrap();
    let got: Vec<_> = [
        message(&mut all).await,
        message(&mut all).await,
        message(&mut all).await,
    ]
    .into_iter()
    .map(|(p, s, Price(v))| (p, s, v))
    .collect();
    assert_eq!(
        got,
        [
            ("/prices/acme".to_owned(), 1, 1),
            ("/prices/zeta".to_owned(), 1, 2),
            ("/prices/acme".to_owned(), 2, 3)
        ]
    );
    assert_eq!(message(&mut acme).await.2, Price(1));
    assert_eq!(message(&mut acme).await.2, Price(3));
    // Publishing at the pattern itself, deeper than it, or at another topic's path is refused.
    for path in ["/prices/*", "/prices/acme/eur", "/orders/created"] {
        assert!(
            matches!(topics.publish_at(path, &Price(0)), Err(Error::Config(_))),
            "{path}"
        );
    }
    let err = client
        .subscribe_with::<Price>(SubscribeOptions::default().path("/orders/created"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_broadcast_and_everyone_but_the_sender() {
    let (handle, url) = start(
        Server::builder()
            .on("/join", |room: String, conn: Connection| async move {
                conn.join(&room)
            })
            .on("/leave", |room: String, conn: Connection| async move {
                conn.leave(&room)
            })
            .on("/say", |text: String, conn: Connection| async move {
                // To the room, not back to the sender.
                conn.topics().to_group("lobby", &Said(text), Some(&conn)).unwrap()
            }),
    )
    .await;
    let topics = handle.topics();
    let mut clients = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..3 {
        let inbox: Arc<Mutex<Vec<String>>> = Arc::default();
        let i = inbox.clone();
        let client = Client::builder()
            .on_push_message(move |Said(text): Said| i.lock().unwrap().push(text))
            .connect(&url)
            .await
            .unwrap();
        clients.push(client);
        inboxes.push(inbox);
    }
    let got = |n: usize| inboxes[n].lock().unwrap().clone();
    for c in &clients[..2] {
        c.call_path::<()>("/join", &"lobby").await.unwrap();
    }
    let reached: usize = clients[0].call_path("/say", &"hi").await.unwrap();
    assert_eq!(reached, 1, "one other member");
    eventually("member 1 heard it", || got(1) == ["hi"]).await;
    assert_eq!(
        topics
            .to_group("lobby", &Said("all of the lobby".into()), None)
            .unwrap(),
        2
    );
    assert_eq!(topics.broadcast(&Said("everyone".into())).unwrap(), 3);
    eventually("everyone heard the broadcast", || {
        (0..3).all(|n| got(n).last().map(String::as_str) == Some("everyone"))
    })
    .await;
    assert_eq!(
        got(0),
        ["all of the lobby", "everyone"],
        "the sender did not hear itself"
    );
    assert_eq!(got(2), ["everyone"], "not a member");
    clients[1].call_path::<()>("/leave", &"lobby").await.unwrap();
    assert_eq!(topics.to_group("lobby", &Said("after".into()), None).unwrap(), 1);
    drop(clients);
    eventually("groups forget closed connections", || {
        topics.to_group("lobby", &Said("gone".into()), None).unwrap() == 0
    })
    .await;
    handle.shutdown().await;
}

#[derive(Debug)]
struct User {
    writer: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_publish_through_the_server_under_a_rule() {
    let (handle, url) = start(
        Server::builder()
            .auth(|req: &UpgradeRequest| match req.bearer_token().as_deref() {
                Some("writer") => Ok(User { writer: true }),
                Some("reader") => Ok(User { writer: false }),
                _ => Err(Reject::unauthorized("a token is required")),
            })
            .client_publish::<Price, User>(|user| user.is_some_and(|u| u.writer))
            .authorize("/orders/*", |user: Option<&User>| user.is_some_and(|u| u.writer)),
    )
    .await;
    let writer = Client::builder().bearer("writer").connect(&url).await.unwrap();
    let reader = Client::builder().bearer("reader").connect(&url).await.unwrap();
    let mut prices = reader.subscribe::<Price>().await.unwrap();
    assert_eq!(writer.publish_at("/prices/acme", &Price(5)).await.unwrap(), 1);
    assert_eq!(
        message(&mut prices).await,
        ("/prices/acme".to_owned(), 1, Price(5))
    );
    // The rule says no, or there is no rule: `forbidden`.
    for err in [
        reader.publish_at("/prices/acme", &Price(6)).await.unwrap_err(),
        writer.publish(&OrderCreated { id: 1 }).await.unwrap_err(),
        reader.subscribe::<OrderCreated>().await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Remote { code, .. } if code == "forbidden"),
            "{err}"
        );
    }
    // A publisher out of step with the contract (another type at the path): `bad_request`,
    // and nothing is published.
    let err = writer
        .publish_at("/prices/acme", &StalePrice("5.0".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code, .. } if code == "bad_request"),
        "{err}"
    );
    assert_eq!(writer.publish_at("/prices/acme", &Price(7)).await.unwrap(), 1);
    assert_eq!(
        message(&mut prices).await.1,
        2,
        "the refused message took no number"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_a_bounded_number_of_subscriptions() {
    let (handle, url) = start(Server::builder().max_subscriptions(3)).await;
    let client = Client::connect(&url).await.unwrap();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(client.subscribe::<OrderCreated>().await.unwrap());
    }
    let err = client.subscribe::<OrderCreated>().await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code, message } if code == "bad_request" && message.contains("at most 3")),
        "{err}"
    );
    subs.pop();
    // The unsubscribe goes out before the next subscribe, on the same connection.
    client.subscribe::<OrderCreated>().await.unwrap();
    handle.shutdown().await;
}

/// A server whose connections the test can drop, and which keeps `history` messages per path.
async fn kickable(history: usize) -> (webmesh::ServerHandle, String, Arc<Mutex<Vec<Connection>>>) {
    let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let c = conns.clone();
    let (handle, url) = start(
        Server::builder()
            .topic_history(history, Duration::from_secs(60))
            .on_connect(move |conn: &Connection| c.lock().unwrap().push(conn.clone())),
    )
    .await;
    (handle, url, conns)
}

/// Drops every connection of the server, then waits until `client` is reconnecting.
async fn kick(conns: &Mutex<Vec<Connection>>, client: &Client) {
    for c in conns.lock().unwrap().drain(..) {
        c.close("kicked by the test");
    }
    eventually("the client noticed", || !client.state().is_connected()).await;
}

fn reconnecting() -> webmesh::ClientBuilder {
    Client::builder().reconnect(
        Reconnect::default()
            .initial_delay(ms(300))
            .max_delay(ms(300))
            .jitter(0.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribing_client_gets_what_it_missed_in_order() {
    let (handle, url, conns) = kickable(1024).await;
    let topics = handle.topics();
    let client = reconnecting().connect(&url).await.unwrap();
    let mut orders = client.subscribe::<OrderCreated>().await.unwrap();
    let mut prices = client.subscribe::<Price>().await.unwrap();
    // Published before the subscription: not replayed later.
    topics.publish_at("/prices/old", &Price(0)).unwrap();
    for id in 1..=5 {
        topics.publish(&OrderCreated { id }).unwrap();
    }
    assert_eq!(message(&mut prices).await.2, Price(0));
    for id in 1..=5 {
        assert_eq!(message(&mut orders).await.2.id, id);
    }
    kick(&conns, &client).await;
    // While it is away: more orders, and a price on a path it never saw.
    for id in 6..=50 {
        topics.publish(&OrderCreated { id }).unwrap();
    }
    topics.publish_at("/prices/new", &Price(9)).unwrap();
    for id in 6..=50 {
        let (_, seq, order) = message(&mut orders).await;
        assert_eq!((seq, order.id), (id, id), "replayed in order, no gap");
    }
    assert_eq!(
        message(&mut prices).await,
        ("/prices/new".to_owned(), 1, Price(9))
    );
    // And live again.
    topics.publish(&OrderCreated { id: 51 }).unwrap();
    assert_eq!(message(&mut orders).await.1, 51);
    assert!(client.state().is_connected());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_history_no_longer_holds_is_an_explicit_gap() {
    let (handle, url, conns) = kickable(10).await;
    let topics = handle.topics();
    let client = reconnecting().connect(&url).await.unwrap();
    let mut orders = client.subscribe::<OrderCreated>().await.unwrap();
    topics.publish(&OrderCreated { id: 1 }).unwrap();
    assert_eq!(message(&mut orders).await.1, 1);
    kick(&conns, &client).await;
    for id in 2..=50 {
        topics.publish(&OrderCreated { id }).unwrap();
    }
    match next(&mut orders).await {
        Event::Gap {
            path,
            missed,
            epoch_changed,
        } => {
            assert_eq!(path.as_deref(), Some("/orders/created"));
            assert_eq!(missed, Some(39), "2 to 40 are gone");
            assert!(!epoch_changed);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    for id in 41..=50 {
        assert_eq!(message(&mut orders).await.1, id);
    }
    handle.shutdown().await;
}

/// A server on its own runtime that publishes `/orders/created` every 2 ms, so the test can kill
/// it mid-stream (every task and socket dropped at once) and start another on the same port.
struct Publishing {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
}

impl Publishing {
    fn start(port: u16) -> Publishing {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // The killed server's runtime lets go of the port in the background: retry a while.
        let mut tries = 0;
        let server = loop {
            match rt.block_on(Server::builder().bind(format!("127.0.0.1:{port}")).build()) {
                Ok(server) => break server,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(ms(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let (port, topics) = (server.local_addr().port(), server.topics());
        rt.spawn(server.run());
        rt.spawn(async move {
            for id in 1.. {
                topics.publish(&OrderCreated { id }).unwrap();
                tokio::time::sleep(ms(2)).await;
            }
        });
        Publishing { rt: Some(rt), port }
    }

    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn after_a_server_restart_the_client_resubscribes_and_is_told_of_the_gap() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = Publishing::start(0);
    let url = format!("ws://127.0.0.1:{}", server.port);
    let client = rt
        .block_on(
            Client::builder()
                .reconnect(Reconnect::default().initial_delay(ms(50)).max_delay(ms(200)))
                .connect(&url),
        )
        .unwrap();
    let mut orders = rt.block_on(client.subscribe::<OrderCreated>()).unwrap();
    // Mid-stream: 50 messages in a row from the first server, then it dies.
    let first = rt.block_on(async { message(&mut orders).await.1 });
    for seq in first + 1..first + 50 {
        assert_eq!(
            rt.block_on(message(&mut orders)).1,
            seq,
            "no hole before the crash"
        );
    }
    server.kill();
    let _restarted = Publishing::start(server.port);
    rt.block_on(async {
        // Whatever was in flight from the first server, then the gap, then the second server's
        // messages from its first: every one it published before the resubscription is replayed.
        let mut last = first + 49;
        loop {
            match next(&mut orders).await {
                Event::Message { seq, .. } => {
                    assert_eq!(seq, last + 1, "no silent hole before the gap");
                    last = seq;
                }
                Event::Gap { epoch_changed, .. } => {
                    assert!(epoch_changed, "the server restarted");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        for seq in 1..=100 {
            let (_, s, order) = message(&mut orders).await;
            assert_eq!(
                (s, order.id),
                (seq, seq),
                "the new server's messages, from its first"
            );
        }
    });
}

#[test]
fn the_blocking_client_subscribes_with_an_iterator_and_publishes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (handle, url) = rt.block_on(start(
        Server::builder().client_publish::<OrderCreated, ()>(|_| true),
    ));
    let client = webmesh::BlockingClient::connect(&url).unwrap();
    let mut orders = client.subscribe::<OrderCreated>().unwrap();
    assert_eq!(client.publish(&OrderCreated { id: 1 }).unwrap(), 1);
    handle.topics().publish(&OrderCreated { id: 2 }).unwrap();
    let ids: Vec<u64> = orders
        .by_ref()
        .take(2)
        .map(|e| match e {
            Event::Message { value, .. } => value.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2]);
    assert!(orders.next_timeout(ms(100)).is_none(), "nothing more");
    client.close();
    assert!(
        matches!(orders.next(), Some(Event::Closed { .. })),
        "the subscription ends with the connection"
    );
    assert!(orders.next().is_none());
    rt.block_on(handle.shutdown());
}

#[tokio::test]
async fn an_older_v1_server_answers_a_subscription_with_unsupported() {
    // A v1 server that does not know topics answers `unsupported`: an older webmesh-rs. Here a
    // hand-written one, answering every frame with an id that way.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, take_the_first_protocol)
            .await
            .unwrap();
        let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::none());
        while let Some(Ok(m)) = ws.next().await {
            if m.is_binary() {
                let f = webmesh_tests::v1_frame(m);
                let e = enc
                    .error_plain(f.id(), "unsupported", "unsupported frame kind")
                    .unwrap()
                    .unwrap();
                ws.send(bin(&e)).await.unwrap();
            }
        }
    });
    let client = Client::connect(&url).await.unwrap();
    let err = client.subscribe::<OrderCreated>().await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code, .. } if code == "unsupported"),
        "{err}"
    );
}

/// A WebSocket server's answer that takes the first subprotocol the client offers.
#[allow(clippy::result_large_err)] // the signature tungstenite asks for
fn take_the_first_protocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .unwrap()
        .to_str()
        .unwrap();
    let first = offered.split(',').next().unwrap().trim().to_owned();
    resp.headers_mut()
        .insert("sec-websocket-protocol", first.parse().unwrap());
    Ok(resp)
}
