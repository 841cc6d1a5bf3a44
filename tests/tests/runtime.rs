//! Rust server and Rust client over real loopback sockets: the whole webmesh model.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webmesh::codec::AnyCodec;
use webmesh::{CallError, Client, CloseKind, Connection, Error, Framing, Protocol, Server};
use webmesh_tests::{eventually, start};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    name: String,
    n: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum MathError {
    DivideByZero,
    Overflow { a: i64, b: i64 },
}

/// Echoes a greeting.
#[webmesh::route("/rt/echo")]
async fn echo(msg: Greeting) -> Greeting {
    msg
}

/// Integer division that can fail.
#[webmesh::route("/rt/div")]
fn div(p: (i64, i64)) -> Result<i64, MathError> {
    match p {
        (_, 0) => Err(MathError::DivideByZero),
        (a, b) => a.checked_div(b).ok_or(MathError::Overflow { a, b }),
    }
}

/// Sleeps, then answers the duration.
#[webmesh::route("/rt/sleep")]
async fn sleep_ms(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Panics.
#[webmesh::route("/rt/panic")]
async fn panics(_: ()) -> u8 {
    panic!("this handler panics")
}

/// Panics, in a plain `fn`: it runs as its request is dispatched, not in a future.
#[webmesh::route("/rt/panic_now")]
fn panics_now(_: ()) -> u8 {
    panic!("this handler panics at once")
}

/// The call's budget as a plain `fn` sees it: milliseconds left, if it has a deadline.
#[webmesh::route("/rt/budget_now")]
fn budget_now(_: (), call: &webmesh::CallContext) -> Option<u128> {
    call.remaining().map(|left| left.as_millis())
}

fn closures() -> webmesh::ServerBuilder {
    Server::builder()
        .on("/add", |(a, b): (i64, i64)| async move { a + b })
        .on("/none", |_: webmesh::Value| async move { None::<u8> })
        .on("/whoami", |_: (), conn: Connection| async move { conn.id() })
}

async fn client(url: &str, codec: AnyCodec) -> Client {
    Client::builder()
        .codec(codec)
        .connect(url)
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_between_rust_peers_with_both_codecs() {
    let (server, url) = start(closures()).await;
    for codec in [AnyCodec::MSGPACK, AnyCodec::JSON] {
        let c = client(&url, codec.clone()).await;
        assert_eq!(c.framing(), Framing::V1);
        let g = Greeting {
            name: "Ada".into(),
            n: 7,
        };
        assert_eq!(echo::call(&c, g.clone()).await.unwrap(), g);
        assert_eq!(c.call::<echo::Route>(g.clone()).await.unwrap(), g);
        assert_eq!(c.call_path::<i64>("/add", &(2, 40)).await.unwrap(), 42);
        // v1 answers null too: the caller learns the call finished.
        assert_eq!(c.call_path::<Option<u8>>("/none", &1).await.unwrap(), None);
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_and_remote_errors() {
    let (server, url) = start(closures()).await;
    let c = client(&url, AnyCodec::MSGPACK).await;
    assert_eq!(div::call(&c, (84, 2)).await.unwrap(), 42);
    match div::call(&c, (1, 0)).await {
        Err(CallError::Handler(MathError::DivideByZero)) => {}
        other => panic!("expected the typed handler error, got {other:?}"),
    }
    match div::call(&c, (i64::MIN, -1)).await {
        Err(CallError::Handler(MathError::Overflow { a: i64::MIN, b: -1 })) => {}
        other => panic!("expected overflow, got {other:?}"),
    }
    // Unknown path.
    let e = c.call_path::<u8>("/nope", &1).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // Payload of the wrong type for the route.
    let e = c.call_path::<i64>("/add", &"not a pair").await.unwrap_err();
    assert_eq!(e.remote_code(), Some("bad_request"), "{e}");
    // A panicking handler: an internal error, and the server keeps serving.
    match panics::call(&c, ()).await {
        Err(CallError::Rpc(e)) => assert_eq!(e.remote_code(), Some("internal"), "{e}"),
        other => panic!("expected internal error, got {other:?}"),
    }
    assert_eq!(c.call_path::<i64>("/add", &(1, 1)).await.unwrap(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_fn_routes_answer_at_dispatch_with_the_same_outcomes_as_async_ones() {
    let (server, url) = start(closures()).await;
    let c = Client::builder()
        .timeout(Some(Duration::from_secs(30)))
        .connect(&url)
        .await
        .expect("connects");
    // A value, and a typed error (`div` is a plain `fn`).
    assert_eq!(div::call(&c, (84, 2)).await.unwrap(), 42);
    assert!(matches!(
        div::call(&c, (1, 0)).await,
        Err(CallError::Handler(MathError::DivideByZero))
    ));
    // A payload of the wrong type: `bad_request`.
    let e = c.call_path::<i64>("/rt/div", &"not a pair").await.unwrap_err();
    assert_eq!(e.remote_code(), Some("bad_request"), "{e}");
    // A panic: `internal`, with its path, and the connection goes on serving.
    for _ in 0..2 {
        match panics_now::call(&c, ()).await {
            Err(CallError::Rpc(e)) => {
                assert_eq!(e.remote_code(), Some("internal"), "{e}");
                assert!(e.to_string().contains("/rt/panic_now"), "{e}");
            }
            other => panic!("expected internal error, got {other:?}"),
        }
        assert_eq!(div::call(&c, (9, 3)).await.unwrap(), 3);
    }
    // Its context carries the caller's budget, counted from when it started.
    let left = budget_now::call(&c, ()).await.unwrap().expect("a deadline");
    assert!((20_000..=30_000).contains(&left), "{left} ms left of 30 s");
    // Without a budget: the server's default deadline (60 s).
    let unbounded = Client::builder()
        .timeout(None)
        .connect(&url)
        .await
        .expect("connects");
    let left = budget_now::call(&unbounded, ())
        .await
        .unwrap()
        .expect("the default");
    assert!((50_000..=60_000).contains(&left), "{left} ms left of 60 s");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_flight_on_one_connection_run_concurrently() {
    // Every call waits on a barrier of N: they can only finish if all N run at the same time on
    // the one connection (a sequential server would deadlock and the calls would time out).
    const N: usize = 64;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let b = barrier.clone();
    let (server, url) = start(Server::builder().on("/barrier", move |i: usize| {
        let b = b.clone();
        async move {
            b.wait().await;
            i
        }
    }))
    .await;
    let c = client(&url, AnyCodec::MSGPACK)
        .await
        .with_timeout(Some(Duration::from_secs(20)));
    let calls = (0..N).map(|i| {
        let c = c.clone();
        async move { c.call_path::<usize>("/barrier", &i).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i, "each reply matched to its own call");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_complete_out_of_order() {
    let (server, url) = start(closures()).await;
    let c = client(&url, AnyCodec::MSGPACK).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let calls = [300u64, 150, 0].map(|ms| {
        let (c, order) = (c.clone(), order.clone());
        async move {
            let got = sleep_ms::call(&c, ms).await.unwrap();
            order.lock().unwrap().push(got);
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(
        *order.lock().unwrap(),
        vec![0, 150, 300],
        "sent 300, 150, 0; answered as they finished"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_blocks_neither_its_connection_nor_others() {
    // `/hold` waits until `/release` is called: on the same connection and from another one.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (g1, g2) = (gate.clone(), gate.clone());
    let (server, url) = start(
        Server::builder()
            .on("/hold", move |_: ()| {
                let g = g1.clone();
                async move {
                    g.notified().await;
                    "released"
                }
            })
            .on("/release", move |_: ()| {
                let g = g2.clone();
                async move {
                    g.notify_one();
                    "ok"
                }
            }),
    )
    .await;
    let a = client(&url, AnyCodec::MSGPACK).await;
    let b = client(&url, AnyCodec::MSGPACK).await;
    for releaser in [&a, &b] {
        let held = tokio::spawn({
            let a = a.clone();
            async move { a.call_path::<String>("/hold", &()).await }
        });
        // Other calls still run while /hold is pending.
        assert_eq!(sleep_ms::call(&a, 1).await.unwrap(), 1);
        assert_eq!(releaser.call_path::<String>("/release", &()).await.unwrap(), "ok");
        assert_eq!(held.await.unwrap().unwrap(), "released");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_per_client_and_per_call() {
    let (server, url) = start(closures()).await;
    let c = Client::builder()
        .timeout(Some(Duration::from_millis(100)))
        .connect(&url)
        .await
        .unwrap();
    match sleep_ms::call(&c, 5_000).await {
        Err(CallError::Rpc(Error::CallTimeout { path, after })) => {
            assert_eq!((path.as_str(), after), ("/rt/sleep", Duration::from_millis(100)))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    match c
        .call_timeout::<sleep_ms::Route>(5_000, Some(Duration::from_millis(20)))
        .await
    {
        Err(CallError::Rpc(Error::CallTimeout { after, .. })) => {
            assert_eq!(after, Duration::from_millis(20))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A longer per-call timeout lets a slower call through; the client still works.
    assert_eq!(
        c.call_timeout::<sleep_ms::Route>(150, Some(Duration::from_secs(10)))
            .await
            .unwrap(),
        150
    );
    assert_eq!(c.call_path::<i64>("/add", &(2, 2)).await.unwrap(), 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_fail_at_once_when_the_connection_is_lost() {
    let (server, url) = start(
        Server::builder()
            .on("/forever", |_: ()| async move {
                std::future::pending::<()>().await;
                0u8
            })
            .on("/kick", |_: (), conn: Connection| async move {
                conn.close("kicked");
                0u8
            })
            .shutdown_timeout(Duration::from_millis(200)),
    )
    .await;
    let c = Client::builder().timeout(None).connect(&url).await.unwrap();
    let stuck = tokio::spawn({
        let c = c.clone();
        async move { c.call_path::<u8>("/forever", &()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let kicker = Client::connect(&url).await.unwrap();
    assert_eq!(kicker.call_path::<u8>("/kick", &()).await.unwrap(), 0);
    // `c` has no call timeout: only the lost connection can end its call; a bound guards the test.
    c.close().await;
    let r = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("the call ends")
        .unwrap();
    let local = |r: &Result<u8, Error>| {
        matches!(
            r,
            Err(Error::Closed {
                kind: CloseKind::Local,
                ..
            })
        )
    };
    assert!(local(&r), "{r:?}");
    let after = c.call_path::<u8>("/forever", &()).await;
    assert!(local(&after), "{after:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_push_hooks_and_connection_state() {
    #[derive(Clone)]
    struct Visits(u32);
    let connects = Arc::new(AtomicUsize::new(0));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (c1, d1) = (connects.clone(), disconnects.clone());
    let (server, url) = start(
        Server::builder()
            .on_connect(move |conn: &Connection| {
                c1.fetch_add(1, Ordering::SeqCst);
                conn.state().insert(Visits(0));
                // Push from a hook: delivered before any reply.
                let _ = conn.try_push("/welcome", &format!("hello #{}", conn.id()));
            })
            .on_disconnect(move |_: &Connection| {
                d1.fetch_add(1, Ordering::SeqCst);
            })
            .on("/visit", |_: (), conn: Connection| async move {
                let n = conn.state().with(|v: &mut Visits| {
                    v.0 += 1;
                    v.0
                });
                conn.push("/visited", &n).await.unwrap();
                n
            }),
    )
    .await;
    let welcomes = Arc::new(Mutex::new(Vec::new()));
    let visited = Arc::new(Mutex::new(Vec::new()));
    let (w, v) = (welcomes.clone(), visited.clone());
    let c = Client::builder()
        .on_push("/welcome", move |s: String| w.lock().unwrap().push(s))
        .on_push("/visited", move |n: u32| v.lock().unwrap().push(n))
        .connect(&url)
        .await
        .unwrap();
    for want in 1..=3u32 {
        assert_eq!(
            c.call_path::<Option<u32>>("/visit", &()).await.unwrap(),
            Some(want)
        );
    }
    eventually("3 pushes", || visited.lock().unwrap().len() == 3).await;
    assert_eq!(*visited.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(welcomes.lock().unwrap().len(), 1);
    assert!(welcomes.lock().unwrap()[0].starts_with("hello #"));
    // State is per connection.
    let other = Client::connect(&url).await.unwrap();
    assert_eq!(
        other.call_path::<Option<u32>>("/visit", &()).await.unwrap(),
        Some(1)
    );
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    c.close().await;
    other.close().await;
    eventually("both disconnects", || disconnects.load(Ordering::SeqCst) == 2).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_in_flight_then_closes() {
    let (server, url) = start(closures().shutdown_timeout(Duration::from_secs(5))).await;
    let c = client(&url, AnyCodec::MSGPACK).await;
    let slow = tokio::spawn({
        let c = c.clone();
        async move { sleep_ms::call(&c, 300).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
    assert_eq!(
        slow.await.unwrap().unwrap(),
        300,
        "the call in flight got its reply"
    );
    eventually("client sees the close", || c.is_closed()).await;
    assert!(
        matches!(c.call_path::<i64>("/add", &(1, 1)).await, Err(Error::Closed { kind: CloseKind::Remote { code: Some(1001) }, reason }) if reason.contains("shutting down"))
    );
    // No new connections.
    assert!(Client::connect(&url).await.is_err());
}

#[test]
fn threaded_server_and_blocking_client_python_style() {
    let server = closures().bind("127.0.0.1:0").start_threaded().unwrap();
    let url = format!("ws://{}", server.local_addr());
    let c = webmesh::BlockingClient::connect(&url).unwrap();
    assert_eq!(c.call_path::<i64>("/add", &(20, 22)).unwrap(), 42);
    assert_eq!(
        c.call::<echo::Route>(Greeting {
            name: "b".into(),
            n: 1
        })
        .unwrap()
        .name,
        "b"
    );
    c.emit_path("/add", &(1, 2)).unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let handle = c.call_path_async("/add", (5, 5), move |r: Result<i64, Error>| {
        *g.lock().unwrap() = Some(r.unwrap());
    });
    handle.wait();
    assert_eq!(*got.lock().unwrap(), Some(10));
    let g = got.clone();
    c.call_async::<div::Route>((9, 3), move |r| *g.lock().unwrap() = r.ok())
        .wait();
    assert_eq!(*got.lock().unwrap(), Some(3));
    // Calls from several threads at once.
    std::thread::scope(|s| {
        for i in 0..8i64 {
            let c = &c;
            s.spawn(move || assert_eq!(c.call_path::<i64>("/add", &(i, i)).unwrap(), 2 * i));
        }
    });
    c.close();
    server.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_framing_between_rust_peers() {
    let (server, url) = start(closures()).await;
    let c = Client::builder()
        .protocol(Protocol::Legacy)
        .timeout(Some(Duration::from_millis(300)))
        .connect(&url)
        .await
        .unwrap();
    assert_eq!(c.framing(), Framing::Legacy);
    assert_eq!(c.call_path::<i64>("/add", &(1, 2)).await.unwrap(), 3);
    // Calls on different paths may be in flight together; replies are matched by path.
    let (a, b) = tokio::join!(sleep_ms::call(&c, 100), c.call_path::<i64>("/add", &(3, 4)));
    assert_eq!((a.unwrap(), b.unwrap()), (100, 7));
    // 0.1.2 semantics: no reply for null, so the call ends at its timeout, not never.
    assert!(matches!(
        c.call_path::<Option<u8>>("/none", &1).await,
        Err(Error::CallTimeout { .. })
    ));
    // Unknown path: 0.1.2's "Path not found" reply, surfaced as not_found.
    assert!(c.call_path::<u8>("/nope", &1).await.unwrap_err().is_not_found());
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_paths_are_an_error_at_build_naming_both() {
    let err = Server::builder()
        .bind("127.0.0.1:0")
        .on("/rt/echo", |g: Greeting| async move { g })
        .build()
        .await
        .unwrap_err();
    match err {
        Error::DuplicateRoute { path, first, second } => {
            assert_eq!(path, "/rt/echo");
            assert!(first.contains("runtime::echo"), "{first}");
            assert!(second.contains("closure"), "{second}");
        }
        e => panic!("expected DuplicateRoute, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_the_upgrade_with_503() {
    let (server, url) = start(closures().max_connections(2)).await;
    let a = Client::connect(&url).await.unwrap();
    let b = Client::connect(&url).await.unwrap();
    match Client::connect(&url).await {
        Err(Error::Refused {
            status: 503,
            body,
            url: refused_url,
        }) => {
            assert!(body.contains("too many connections"), "{body}");
            assert_eq!(refused_url, url, "the error names the URL");
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    a.close().await;
    // A slot frees up once a connection ends.
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(c) = Client::connect(&url).await {
            assert_eq!(c.call_path::<i64>("/add", &(1, 1)).await.unwrap(), 2);
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "a slot freed after a close");
    drop(b);
    server.shutdown().await;
}
