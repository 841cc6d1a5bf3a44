//! Scale-out over NATS, with real `nats-server`s on free loopback ports: calls to routes served
//! on other nodes, topics across nodes, load sharing, a node killed mid-load, a NATS outage,
//! identity and limits, a Python 0.1.2 client, introspection.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webmesh::cluster::Nats;
use webmesh::codec::Limits;
use webmesh::{CallError, Client, Connection, Error, Event, Server, ServerHandle, UpgradeRequest};
use webmesh_tests::NatsServer;

/// News for the cross-node topic test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::topic("/cluster/news")]
pub struct News {
    /// Its number.
    pub n: u32,
}

/// A node: no routes of its own but those given, in the cluster at `nats`.
async fn node(nats: impl Into<Nats>, builder: webmesh::ServerBuilder) -> (ServerHandle, String) {
    let server = builder
        .registered_routes(false)
        .nats(nats)
        .bind("127.0.0.1:0")
        .build()
        .await
        .expect("the node joins the cluster");
    let url = format!("ws://{}", server.local_addr());
    (server.spawn(), url)
}

/// Waits (bounded) until node `url` sees `n` nodes serving: the others' subscriptions are live.
async fn until_nodes(url: &str, n: usize) {
    let client = Client::connect(url).await.unwrap();
    for _ in 0..200 {
        if client.describe().await.unwrap().cluster.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the cluster never showed {n} nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_three_server_nats_cluster_call_and_publish_across() {
    let nats = tokio::task::spawn_blocking(|| NatsServer::cluster(3))
        .await
        .unwrap();
    let (a, url_a) = node(
        nats[0].url(),
        Server::builder().on("/a/only", |x: u32| async move { x }),
    )
    .await;
    let (b, url_b) = node(nats[1].url(), Server::builder()).await;
    let (c, url_c) = node(
        nats[2].url(),
        Server::builder()
            .on("/c/only", |x: u32| async move { x * 2 })
            .on_fallible(
                "/c/fails",
                |x: u32| async move { Err::<u32, _>(format!("no {x}")) },
            ),
    )
    .await;
    until_nodes(&url_a, 3).await;
    until_nodes(&url_b, 3).await;
    until_nodes(&url_c, 3).await;

    // A client on A calls a route served only on C: typed reply, typed error, not_found.
    let on_a = Client::connect(&url_a).await.unwrap();
    assert_eq!(on_a.call_path::<u32>("/c/only", &21).await.unwrap(), 42);
    match on_a.call_path_as::<u32, String>("/c/fails", &7, None).await {
        Err(CallError::Handler(e)) => assert_eq!(e, "no 7"),
        other => panic!("expected C's handler error, got {other:?}"),
    }
    let missing = on_a.call_path::<u32>("/nowhere", &1).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    // Local routes stay local; C reaches A's route too.
    assert_eq!(on_a.call_path::<u32>("/a/only", &5).await.unwrap(), 5);
    let on_c = Client::connect(&url_c).await.unwrap();
    assert_eq!(on_c.call_path::<u32>("/a/only", &6).await.unwrap(), 6);

    // Every node describes the cluster: its routes and every node's.
    let d = on_a.describe().await.unwrap();
    assert_eq!(d.cluster.len(), 3);
    assert!(
        d.cluster[0].routes.contains(&"/a/only".to_owned()),
        "this node first"
    );
    assert!(d
        .cluster
        .iter()
        .any(|n| n.routes.contains(&"/c/fails".to_owned())));

    // Publishes from B reach subscribers on A and C, in order.
    let mut sub_a = on_a.subscribe::<News>().await.unwrap();
    let mut sub_c = on_c.subscribe::<News>().await.unwrap();
    // The subscriptions are in place on A and C when a probe published on B arrives.
    let probe = b.topics();
    let mut arrived = false;
    for _ in 0..200 {
        probe.publish(&News { n: 0 }).unwrap();
        let got_a = tokio::time::timeout(Duration::from_millis(50), sub_a.next_message()).await;
        if got_a.is_ok() {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "nothing published on B reached A");
    // Drain what the probes left on C.
    while tokio::time::timeout(Duration::from_millis(200), sub_c.next_message())
        .await
        .is_ok()
    {}
    while tokio::time::timeout(Duration::from_millis(50), sub_a.next_message())
        .await
        .is_ok()
    {}
    for n in 1..=50 {
        b.topics().publish(&News { n }).unwrap();
    }
    for sub in [&mut sub_a, &mut sub_c] {
        for n in 1..=50 {
            let got = tokio::time::timeout(Duration::from_secs(5), sub.next_message())
                .await
                .expect("delivered");
            assert_eq!(got.n, n, "in publishing order, none lost");
        }
    }
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

/// The next message of a subscription, skipping notices.
trait NextMessage {
    async fn next_message(&mut self) -> News;
}

impl NextMessage for webmesh::Subscription<News> {
    async fn next_message(&mut self) -> News {
        use futures_util::StreamExt;
        loop {
            match self.next().await {
                Some(Event::Message { value, .. }) => return value,
                Some(other) => panic!("unexpected {other:?}"),
                None => std::future::pending().await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_a_route_share_the_load() {
    let nats = NatsServer::start();
    let counts = [Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0))];
    let mut handles = Vec::new();
    for count in &counts {
        let count = count.clone();
        let (h, _) = node(
            nats.url(),
            Server::builder().on("/work", move |x: u32| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { x }
            }),
        )
        .await;
        handles.push(h);
    }
    let (front, url) = node(nats.url(), Server::builder()).await;
    until_nodes(&url, 3).await;
    let client = Client::connect(&url).await.unwrap();
    let calls = (0..200u32).map(|i| client.call_path::<u32>("/work", &i));
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.into_iter().all(|a| a.is_ok()));
    let (x, y) = (counts[0].load(Ordering::SeqCst), counts[1].load(Ordering::SeqCst));
    assert_eq!(x + y, 200);
    assert!(x > 0 && y > 0, "both instances served: {x} and {y}");
    front.shutdown().await;
    for h in handles {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_call_runs_in_the_servers_runtime() {
    let nats = tokio::task::spawn_blocking(NatsServer::start).await.unwrap();
    // What a handler spawns during its first poll on the link's thread belongs to the
    // server's runtime (two workers here); a handler that waits goes on in that runtime.
    let (far, _) = node(
        nats.url(),
        Server::builder()
            .on("/workers", |_: ()| async {
                let spawned =
                    tokio::spawn(async { tokio::runtime::Handle::current().metrics().num_workers() });
                spawned.await.unwrap_or(0)
            })
            .on("/workers/later", |_: ()| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tokio::runtime::Handle::current().metrics().num_workers()
            })
            // Not on the link's thread (documented): answered `internal`, nothing else hurt.
            .on("/blocking", |_: ()| async {
                tokio::task::block_in_place(|| 1usize)
            }),
    )
    .await;
    let (near, url) = node(nats.url(), Server::builder()).await;
    until_nodes(&url, 2).await;
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(client.call_path::<usize>("/workers", &()).await.unwrap(), 2);
    assert_eq!(client.call_path::<usize>("/workers/later", &()).await.unwrap(), 2);
    let blocking = client.call_path::<usize>("/blocking", &()).await.unwrap_err();
    assert_eq!(blocking.remote_code(), Some("internal"), "{blocking}");
    assert_eq!(client.call_path::<usize>("/workers", &()).await.unwrap(), 2);
    near.shutdown().await;
    far.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_closes_its_nats_connection() {
    let nats = tokio::task::spawn_blocking(NatsServer::start).await.unwrap();
    let count = |n: &NatsServer| n.connections().expect("nats-server's /varz answers");
    let until = |n: usize| {
        let nats = &nats;
        async move {
            for _ in 0..300 {
                if count(nats) == n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };
    // (The helper's readiness probe may still be counted for a moment.)
    assert!(until(0).await, "a fresh nats-server has no clients");
    let (far, _) = node(
        nats.url(),
        Server::builder().on("/slow", |x: u32| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            x
        }),
    )
    .await;
    let (near, url) = node(nats.url(), Server::builder()).await;
    until_nodes(&url, 2).await;
    assert_eq!(count(&nats), 2, "one NATS connection per node");
    // A call forwarded by the node that stops is still answered: its link to NATS stays up
    // until its connections have drained.
    let client = Client::connect(&url).await.unwrap();
    let call = tokio::spawn(async move { client.call_path::<u32>("/slow", &7).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    near.shutdown().await;
    assert_eq!(call.await.unwrap().unwrap(), 7);
    assert!(until(1).await, "the stopped node's NATS connection is closed");
    // A call forwarded *to* the node that stops is answered too: its serving loop, and the
    // handlers it moved to tasks, count among what its shutdown waits for.
    let (front, url) = node(nats.url(), Server::builder()).await;
    until_nodes(&url, 2).await;
    let client = Client::connect(&url).await.unwrap();
    let call = tokio::spawn(async move { client.call_path::<u32>("/slow", &8).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    far.shutdown().await;
    assert_eq!(call.await.unwrap().unwrap(), 8);
    assert!(until(1).await, "the serving node's NATS connection is closed");
    front.shutdown().await;
    assert!(until(0).await, "no NATS connection is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_instance_mid_load_fails_only_its_calls() {
    let nats = NatsServer::start();
    // One instance in this process, one in a process that gets killed.
    let (local, _) = node(
        nats.url(),
        Server::builder().on("/slow", |_: webmesh::Value| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "local".to_owned()
        }),
    )
    .await;
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_cluster_node"))
        .args([&nats.url(), "/slow", "300", "doomed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (front, url) = node(nats.url(), Server::builder()).await;
    until_nodes(&url, 3).await;
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(3)))
        .connect(&url)
        .await
        .unwrap();
    let calls: Vec<_> = (0..40)
        .map(|_| client.call_path::<String>("/slow", &()))
        .collect();
    let all = tokio::spawn(futures_util::future::join_all(calls));
    tokio::time::sleep(Duration::from_millis(100)).await;
    doomed.kill().unwrap();
    let _ = doomed.wait();
    let results = all.await.unwrap();
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if s == "local"))
        .count();
    let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok + failed.len(), 40, "every call ended: {results:?}");
    assert!(ok > 0, "the surviving instance answered");
    assert!(
        !failed.is_empty(),
        "the killed instance's calls failed: {results:?}"
    );
    for e in failed {
        assert!(
            e.remote_code() == Some("deadline_exceeded") || e.is_timeout(),
            "a typed error, not silence: {e}"
        );
    }
    // Later calls go to the instance left.
    for _ in 0..10 {
        assert_eq!(client.call_path::<String>("/slow", &()).await.unwrap(), "local");
    }
    front.shutdown().await;
    local.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_makes_remote_calls_unavailable_until_it_is_back() {
    let mut nats = NatsServer::start();
    let (far, _) = node(
        nats.url(),
        Server::builder().on("/far", |x: u32| async move { x + 1 }),
    )
    .await;
    let (near, url) = node(
        nats.url(),
        Server::builder().on("/near", |x: u32| async move { x }),
    )
    .await;
    until_nodes(&url, 2).await;
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(client.call_path::<u32>("/far", &1).await.unwrap(), 2);
    // A subscriber on this node: what other nodes publish during the outage cannot reach it,
    // and it is told so.
    let mut news = client.subscribe::<News>().await.unwrap();

    tokio::task::block_in_place(|| nats.stop());
    let mut last = None;
    for _ in 0..200 {
        match client.call_path::<u32>("/far", &1).await {
            Err(e) if e.is_unavailable() => {
                last = Some(e);
                break;
            }
            other => last = other.err(),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let e = last.expect("an error during the outage");
    assert!(e.is_unavailable(), "a typed unavailable error: {e}");
    // What this node serves itself does not need NATS.
    assert_eq!(client.call_path::<u32>("/near", &7).await.unwrap(), 7);

    tokio::task::block_in_place(|| nats.restart());
    let mut back = false;
    for _ in 0..400 {
        if client.call_path::<u32>("/far", &1).await.ok() == Some(2) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(back, "calls work again once NATS is back");
    use futures_util::StreamExt;
    match tokio::time::timeout(Duration::from_secs(10), news.next()).await {
        Ok(Some(Event::Gap { path, missed, .. })) => assert_eq!((path, missed), (None, None)),
        other => panic!("expected a gap notice after the outage, got {other:?}"),
    }
    near.shutdown().await;
    far.shutdown().await;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_identity_travels_and_the_serving_nodes_limits_apply() {
    let nats = NatsServer::start();
    let (serving, _) = node(
        Nats::new(nats.url()).forward_identity::<User>(),
        Server::builder()
            .limits(Limits::default().max_frame_size(1024).max_inflated_size(4096))
            .on("/whoami", |_: (), conn: Connection| async move {
                conn.identity::<User>().map(|u| u.name.clone())
            })
            .on("/size", |s: String| async move { s.len() }),
    )
    .await;
    let (front, url) = node(
        Nats::new(nats.url()).forward_identity::<User>(),
        Server::builder().auth(|req: &UpgradeRequest| {
            Ok::<_, webmesh::Reject>(User {
                name: req.bearer_token().map(|t| t.into_owned()).unwrap_or_default(),
            })
        }),
    )
    .await;
    until_nodes(&url, 2).await;
    let client = Client::builder().bearer("ada").connect(&url).await.unwrap();
    let who: Option<String> = client.call_path("/whoami", &()).await.unwrap();
    assert_eq!(who.as_deref(), Some("ada"));
    assert_eq!(
        client
            .call_path::<usize>("/size", &"x".repeat(100))
            .await
            .unwrap(),
        100
    );
    // The front node takes these; the serving node's frame limit is 1 KiB, and its inflate
    // limit 4 KiB: a frame that does not compress is too big, one that inflates past 4 KiB too.
    let mut x: u32 = 1;
    let noise: String = (0..2048)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            char::from(b'a' + (x >> 24) as u8 % 26)
        })
        .collect();
    for (what, s) in [("frame", noise), ("inflated", "x".repeat(8192))] {
        let too_big = client.call_path::<usize>("/size", &s).await.unwrap_err();
        assert_eq!(too_big.remote_code(), Some("bad_request"), "{what}: {too_big}");
    }
    // Compressible, inflating within the limit: fine.
    assert_eq!(
        client
            .call_path::<usize>("/size", &"y".repeat(3000))
            .await
            .unwrap(),
        3000
    );
    front.shutdown().await;
    serving.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_0_1_2_client_calls_a_route_served_on_another_node() {
    let nats = NatsServer::start();
    let (far, _) = node(
        nats.url(),
        Server::builder().on("/far/echo", |v: webmesh::Value| async move { v }),
    )
    .await;
    let (near, url) = node(nats.url(), Server::builder()).await;
    until_nodes(&url, 2).await;
    let port = url.rsplit(':').next().unwrap().to_owned();
    let script = "import sys\n\
from common import quiet_logs, serializer\n\
from webmesh.webmesh_client import WebMeshClient\n\
quiet_logs()\n\
c = WebMeshClient(host='127.0.0.1', port=int(sys.argv[1]), message_serializer=serializer(sys.argv[2]))\n\
c.start(threaded=True)\n\
c.await_started()\n\
print(c.call('/far/echo', {'k': [1, 'two']}))\n\
print(c.call('/nowhere', 1))\n\
c.close()\n";
    for codec in ["msgpack", "json"] {
        let port = port.clone();
        let out =
            tokio::task::spawn_blocking(move || webmesh_tests::run_python(script, &[&port, codec], b""))
                .await
                .unwrap();
        let text = webmesh_tests::expect_success(&out);
        assert_eq!(text, "{'k': [1, 'two']}\nPath not found\n", "{codec}");
    }
    near.shutdown().await;
    far.shutdown().await;
}

#[tokio::test]
async fn a_server_that_cannot_reach_nats_says_so() {
    let port = webmesh_tests::free_port();
    let err = Server::builder()
        .nats(Nats::new(format!("nats://127.0.0.1:{port}")).connect_timeout(Duration::from_millis(500)))
        .bind("127.0.0.1:0")
        .build()
        .await;
    let err = match err {
        Err(e) => e,
        Ok(_) => panic!("no NATS, no server"),
    };
    assert!(matches!(err, Error::Cluster { .. }), "{err}");
    let both = Server::builder()
        .nats("nats://127.0.0.1:1")
        .fallback(|v: webmesh::Value| async move { v })
        .bind("127.0.0.1:0")
        .build()
        .await;
    let both = match both {
        Err(e) => e,
        Ok(_) => panic!("a fallback and a cluster conflict"),
    };
    assert!(matches!(both, Error::Config(_)), "{both}");
    let bad_prefix = Server::builder()
        .nats(Nats::new(format!("nats://127.0.0.1:{port}")).prefix("my mesh"))
        .bind("127.0.0.1:0")
        .build()
        .await;
    let bad_prefix = match bad_prefix {
        Err(e) => e,
        Ok(_) => panic!("a prefix with a space is not a subject"),
    };
    assert!(
        matches!(&bad_prefix, Error::Cluster { reason, .. } if reason.contains("prefix")),
        "{bad_prefix}"
    );
}

#[test]
fn the_cluster_node_binary_says_how_to_use_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_cluster_node")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
