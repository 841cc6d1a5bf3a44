//! Resilience: keepalive, peers that stop reading, in-flight limits, reconnection under load.
//! Every wait is bounded; nothing asserts a timing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use webmesh::{
    CallError, Client, CloseKind, Connection, ConnectionState, Error, Keepalive, Reconnect, Server, Value,
};
use webmesh_tests::{eventually, start};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A peer that vanished without closing: upgraded, then silent (it never reads or writes).
async fn silent_peer(url: &str) -> TcpStream {
    webmesh_tests::raw_upgrade(url, Some("webmesh.v1.msgpack")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keepalive_drops_a_peer_that_vanished() {
    let gone = Arc::new(AtomicUsize::new(0));
    let g = gone.clone();
    let (server, url) = start(
        Server::builder()
            .keepalive(Some(Keepalive::new(ms(100), ms(200))))
            .on_disconnect(move |_: &Connection| {
                g.fetch_add(1, Ordering::SeqCst);
            }),
    )
    .await;
    let _peer = silent_peer(&url).await;
    eventually("the dead peer is dropped and on_disconnect runs", || {
        gone.load(Ordering::SeqCst) == 1
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keepalive_fails_calls_to_a_server_that_vanished() {
    // A server that completes the upgrade, then never reads or answers again.
    let (url, held) = webmesh_tests::mute_v1_server(Duration::from_secs(30)).await;
    let c = Client::builder()
        .timeout(None)
        .keepalive(Some(Keepalive::new(ms(100), ms(200))))
        .connect(&url)
        .await
        .unwrap();
    // No call timeout: only the keepalive can end this call; the outer bound guards the test.
    let r = tokio::time::timeout(Duration::from_secs(10), c.call_path::<u8>("/anything", &1))
        .await
        .expect("the keepalive ends the call");
    match r {
        Err(Error::Closed {
            kind: CloseKind::Lost,
            reason,
        }) => assert!(reason.contains("keepalive"), "{reason}"),
        other => panic!("expected a closed connection, got {other:?}"),
    }
    assert!(c.is_closed());
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_live_idle_connections() {
    let gone = Arc::new(AtomicUsize::new(0));
    let g = gone.clone();
    let k = Some(Keepalive::new(ms(30), ms(100)));
    let (server, url) = start(
        Server::builder()
            .keepalive(k)
            .on("/add", |(a, b): (i64, i64)| async move { a + b })
            .on_disconnect(move |_: &Connection| {
                g.fetch_add(1, Ordering::SeqCst);
            }),
    )
    .await;
    let c = Client::builder().keepalive(k).connect(&url).await.unwrap();
    // Ten keepalive rounds of silence on both sides: pings and pongs keep it up.
    tokio::time::sleep(ms(500)).await;
    assert_eq!(c.call_path::<i64>("/add", &(1, 2)).await.unwrap(), 3);
    assert_eq!(c.state(), ConnectionState::Connected);
    assert_eq!(gone.load(Ordering::SeqCst), 0);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_caps_what_one_connection_runs_at_once() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (g, a, p) = (gate.clone(), active.clone(), peak.clone());
    let (server, url) = start(Server::builder().max_in_flight(4).on("/hold", move |i: u32| {
        let (g, a, p) = (g.clone(), a.clone(), p.clone());
        async move {
            let now = a.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let _permit = g.acquire().await.unwrap();
            a.fetch_sub(1, Ordering::SeqCst);
            i
        }
    }))
    .await;
    let c = Client::connect(&url).await.unwrap();
    let calls: Vec<_> = (0..12u32)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.call_path::<u32>("/hold", &i).await })
        })
        .collect();
    eventually("4 handlers running", || active.load(Ordering::SeqCst) == 4).await;
    // The other 8 wait unread in the socket: give them a chance to (wrongly) start.
    tokio::time::sleep(ms(200)).await;
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    gate.add_permits(12);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "never more than max_in_flight at once"
    );
    server.shutdown().await;
}

/// A server on its own runtime, so the test can crash it (drop every task and socket at once).
struct Crashable {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
}

impl Crashable {
    fn start(port: u16, headers: Arc<Mutex<Vec<String>>>) -> Crashable {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(
                Server::builder()
                    .bind(format!("127.0.0.1:{port}"))
                    .on("/echo", |v: Value| async move { v })
                    .on("/slow", |ms: u64| async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        ms
                    })
                    .on_connect(move |c: &Connection| {
                        headers
                            .lock()
                            .unwrap()
                            .push(c.header("authorization").unwrap_or("none").to_owned());
                    })
                    .build(),
            )
            .unwrap();
        let port = server.local_addr().port();
        rt.spawn(server.run());
        Crashable { rt: Some(rt), port }
    }

    fn crash(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        self.crash();
    }
}

/// `/echo` as a typed route, for `call_idempotent`.
struct EchoRoute;

impl webmesh::Route for EchoRoute {
    const PATH: &'static str = "/echo";
    type Request = u64;
    type Response = u64;
    type Error = webmesh::NoError;
}

/// The runtime the client side of a crash test runs on (the server has its own).
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One call of the load: its result and how long it took.
type Outcome = (Result<u64, String>, Duration);

#[test]
fn reconnecting_client_survives_a_server_crash_under_load() {
    let rt = client_runtime();
    let headers: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut server = Crashable::start(0, headers.clone());
    let port = server.port;
    let url = format!("ws://127.0.0.1:{port}");
    let timeout = ms(1500);
    let client = rt
        .block_on(
            Client::builder()
                .timeout(Some(timeout))
                .header("authorization", "Bearer t0ken")
                .reconnect(Reconnect::default().initial_delay(ms(50)).max_delay(ms(400)))
                .connect(&url),
        )
        .unwrap();
    let states: Arc<Mutex<Vec<ConnectionState>>> = Arc::default();
    let mut watcher = client.watch_state();
    let s = states.clone();
    rt.spawn(async move {
        while let Some(state) = watcher.changed().await {
            s.lock().unwrap().push(state);
        }
    });

    // Load: 8 tasks calling in a loop (bounded by a stop flag and a count).
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (c, stop, outcomes) = (client.clone(), stop.clone(), outcomes.clone());
            rt.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                    let t = Instant::now();
                    let r = c.call_path::<u64>("/echo", &(w * 1_000_000 + i)).await;
                    let took = t.elapsed();
                    let r = r.map_err(|e| e.to_string());
                    if let Ok(v) = &r {
                        assert_eq!(*v, w * 1_000_000 + i, "a reply matched to another call");
                    }
                    if r.is_err() {
                        tokio::time::sleep(ms(5)).await;
                    }
                    outcomes.lock().unwrap().push((r, took));
                    i += 1;
                }
            })
        })
        .collect();

    std::thread::sleep(ms(300));
    server.crash();
    std::thread::sleep(ms(500));
    let _restarted = Crashable::start(port, headers.clone());
    // Calls get through again after the restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if rt.block_on(client.call_path::<u64>("/echo", &7)).ok() == Some(7) {
            break;
        }
        assert!(Instant::now() < deadline, "no successful call after the restart");
        std::thread::sleep(ms(20));
    }
    std::thread::sleep(ms(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        rt.block_on(w).unwrap();
    }

    let outcomes = outcomes.lock().unwrap();
    let ok = outcomes.iter().filter(|(r, _)| r.is_ok()).count();
    let failed = outcomes.len() - ok;
    assert!(ok > 100, "{ok} calls succeeded");
    assert!(failed > 0, "the crash failed some calls");
    for (r, took) in outcomes.iter() {
        // Every call ended by itself within its timeout (plus scheduling slack): none hung.
        assert!(*took < timeout + ms(1000), "a call took {took:?}: {r:?}");
        if let Err(e) = r {
            assert!(
                e.contains("closed") || e.contains("timed out"),
                "unexpected error: {e}"
            );
        }
    }
    let seen = states.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        "states: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&ConnectionState::Connected), "states: {seen:?}");
    // The upgrade headers were sent again on the new connection.
    let h = headers.lock().unwrap().clone();
    assert!(h.len() >= 2 && h.iter().all(|v| v == "Bearer t0ken"), "{h:?}");
}

#[test]
fn idempotent_calls_wait_for_the_reconnection_and_calls_meanwhile_fail_fast() {
    let rt = client_runtime();
    let headers: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut server = Crashable::start(0, headers.clone());
    let port = server.port;
    let client = rt
        .block_on(
            Client::builder()
                .timeout(Some(Duration::from_secs(8)))
                .reconnect(Reconnect::default().initial_delay(ms(100)).max_delay(ms(200)))
                .connect(&format!("ws://127.0.0.1:{port}")),
        )
        .unwrap();
    assert_eq!(rt.block_on(client.call::<EchoRoute>(1)).unwrap(), 1);
    server.crash();
    // While down: a plain call fails at once (not at its 8 s timeout).
    rt.block_on(async {
        let mut w = client.watch_state();
        while w.current().is_connected() {
            w.changed().await;
        }
    });
    let t = Instant::now();
    let r = rt.block_on(client.call::<EchoRoute>(2));
    assert!(
        matches!(
            r,
            Err(CallError::Rpc(Error::Closed {
                kind: CloseKind::Reconnecting { .. },
                ..
            }))
        ),
        "{r:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "failed fast, took {:?}",
        t.elapsed()
    );
    // An idempotent call started now waits for the server to come back.
    let pending = {
        let c = client.clone();
        rt.spawn(async move { c.call_idempotent::<EchoRoute>(3).await })
    };
    std::thread::sleep(ms(400));
    let _restarted = Crashable::start(port, headers);
    assert_eq!(rt.block_on(pending).unwrap().unwrap(), 3);
}

#[test]
fn giving_up_after_max_attempts_closes_for_good() {
    let rt = client_runtime();
    let mut server = Crashable::start(0, Arc::default());
    let client = rt
        .block_on(
            Client::builder()
                .reconnect(
                    Reconnect::default()
                        .initial_delay(ms(10))
                        .max_delay(ms(20))
                        .max_attempts(Some(3)),
                )
                .connect(&format!("ws://127.0.0.1:{}", server.port)),
        )
        .unwrap();
    server.crash();
    let state = rt.block_on(async {
        let mut w = client.watch_state();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if w.current().is_closed() {
                    return w.current();
                }
                w.changed().await;
            }
        })
        .await
        .expect("gives up in time")
    });
    match state {
        ConnectionState::Closed {
            kind: CloseKind::GaveUp,
            reason,
        } => assert!(reason.contains("gave up"), "{reason}"),
        s => panic!("{s:?}"),
    }
    assert!(matches!(
        rt.block_on(client.call::<EchoRoute>(1)),
        Err(CallError::Rpc(Error::Closed {
            kind: CloseKind::GaveUp,
            ..
        }))
    ));
}
