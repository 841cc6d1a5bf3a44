//! Deadlines and cancellation (issue 16) over real sockets: a call carries its time budget; the
//! server stops the handler when it passes or the caller cancels; calls made on behalf of a call
//! inherit both, across three services; stopped calls are counted per route.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use webmesh::codec::{AnyCodec, Compression, FrameEncoder, Framing, Kind};
use webmesh::{CallContext, Client, Error, Server, Value};
use webmesh_tests::{eventually, start};

/// Sets its flag when dropped: shows that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A handler that waits forever, raising `dropped` when the server stops it.
fn forever(
    dropped: Arc<AtomicBool>,
) -> impl Fn(()) -> std::pin::Pin<Box<dyn std::future::Future<Output = u8> + Send>> + Clone {
    move |()| {
        let guard = DropFlag(dropped.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            0u8
        })
    }
}

fn stats(handle: &webmesh::ServerHandle, path: &str) -> (u64, u64) {
    let s = handle.stats();
    let r = s.route(path).expect("the route is counted");
    (r.cancelled, r.deadline_exceeded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_budget_stops_a_handler_that_awaits() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (handle, url) = start(Server::builder().on("/forever", forever(dropped.clone()))).await;
    let c = Client::builder()
        .timeout(Some(Duration::from_millis(200)))
        .connect(&url)
        .await
        .unwrap();
    let t = Instant::now();
    match c.call_path::<u8>("/forever", &()).await {
        Err(Error::CallTimeout { path, after }) => {
            assert_eq!((path.as_str(), after), ("/forever", Duration::from_millis(200)))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    eventually("the handler was dropped", || dropped.load(Ordering::SeqCst)).await;
    // Stopped by its deadline or by the client's CANCEL, whichever reached it first: counted.
    eventually("counted", || {
        let (c, d) = stats(&handle, "/forever");
        c + d == 1
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_budget_gets_the_servers_default_deadline() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (handle, url) = start(
        Server::builder()
            .default_deadline(Some(Duration::from_millis(150)))
            .on("/forever", forever(dropped.clone())),
    )
    .await;
    // A raw v1 peer that sends no budget (flag 0x20 unset) and waits forever.
    let mut ws = webmesh_tests::raw_ws(&url, Some("webmesh.v1.msgpack")).await;
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    ws.send(Message::Binary(
        enc.call(5, "/forever", &()).unwrap().as_bytes().to_vec().into(),
    ))
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an answer at the deadline");
    let Some(Ok(message)) = answer else {
        panic!("{answer:?}")
    };
    let f = webmesh_tests::v1_frame(message);
    assert_eq!((f.kind(), f.id()), (Kind::Error, 5));
    assert_eq!(f.decode_error::<Value>().unwrap().0.code, "deadline_exceeded");
    assert!(dropped.load(Ordering::SeqCst), "the handler was dropped");
    assert_eq!(stats(&handle, "/forever"), (0, 1));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_drops_its_call_cancels_the_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (handle, url) = start(Server::builder().on("/forever", forever(dropped.clone()))).await;
    let c = Client::builder().timeout(None).connect(&url).await.unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.call_path::<u8>("/forever", &()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dropped.load(Ordering::SeqCst), "running while its caller waits");
    call.abort();
    eventually("the CANCEL stopped the handler", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    eventually("counted as cancelled", || stats(&handle, "/forever") == (1, 0)).await;
    // The connection goes on.
    let quick = c.with_timeout(Some(Duration::from_millis(50)));
    assert!(quick.call_path::<u8>("/forever", &()).await.is_err());
    handle.shutdown().await;
}

/// True when `work` makes no progress over 200 ms: its handler stopped.
async fn stopped(work: &AtomicU64) -> bool {
    let before = work.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    before == work.load(Ordering::SeqCst)
}

/// A → B → C: B calls C on behalf of A's call. When A gives up (timeout or drop), C's handler
/// stops within a stated bound, and its work counter shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_propagates_across_three_services() {
    const BOUND: Duration = Duration::from_secs(2);
    // C works until stopped, counting.
    let work = Arc::new(AtomicU64::new(0));
    let c_work = work.clone();
    let (c_handle, c_url) = start(Server::builder().on("/c", move |_: (), call: CallContext| {
        let work = c_work.clone();
        async move {
            while !call.is_cancelled() {
                work.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            0u8
        }
    }))
    .await;
    // B forwards to C with the budget A left it.
    let to_c = Client::builder().timeout(None).connect(&c_url).await.unwrap();
    let (b_handle, b_url) = start(
        Server::builder().on_fallible("/b", move |_: (), call: CallContext| {
            let c = to_c.child_of(&call);
            async move { c.call_path::<u8>("/c", &()).await.map_err(|e| e.to_string()) }
        }),
    )
    .await;
    let a = Client::builder()
        .timeout(Some(Duration::from_millis(300)))
        .connect(&b_url)
        .await
        .unwrap();
    let t = Instant::now();
    // A's own timer, or B's answer that its deadline (A's budget) passed: both end A's call.
    let err = a.call_path::<u8>("/b", &()).await.unwrap_err();
    assert!(
        err.is_timeout() || err.remote_code() == Some("deadline_exceeded"),
        "{err:?}"
    );

    let mut ok = false;
    while t.elapsed() < Duration::from_millis(300) + BOUND {
        if stopped(&work).await {
            ok = true;
            break;
        }
    }
    assert!(ok, "C still works {BOUND:?} after A's timeout");
    assert!(work.load(Ordering::SeqCst) > 0, "C did run");
    eventually("C counted the stop", || {
        let (c, d) = stats(&c_handle, "/c");
        c + d == 1
    })
    .await;

    // The same when A drops its call instead.
    let before = work.load(Ordering::SeqCst);
    let a_forever = a.with_timeout(None);
    let call = tokio::spawn(async move { a_forever.call_path::<u8>("/b", &()).await });
    eventually("C runs again", || work.load(Ordering::SeqCst) > before + 3).await;
    call.abort();
    let t = Instant::now();
    let mut ok = false;
    while t.elapsed() < BOUND {
        if stopped(&work).await {
            ok = true;
            break;
        }
    }
    assert!(ok, "C still works {BOUND:?} after A dropped its call");
    b_handle.shutdown().await;
    c_handle.shutdown().await;
}

/// Blocking work cannot be dropped: the handler's future is, at the deadline, and the blocking
/// task sees `is_cancelled` and stops; the server answers other calls meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_work_observes_the_cancellation() {
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let saw = saw_cancel.clone();
    let (handle, url) = start(
        Server::builder()
            .on("/crunch", move |_: (), call: CallContext| {
                let saw = saw.clone();
                async move {
                    let job = tokio::task::spawn_blocking(move || {
                        // Bounded: stops at cancellation, or after 10 s regardless.
                        for _ in 0..1000 {
                            if call.is_cancelled() {
                                saw.store(true, Ordering::SeqCst);
                                return 0u8;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        1
                    });
                    job.await.unwrap_or(2)
                }
            })
            .on("/ping", |_: ()| async { "pong" }),
    )
    .await;
    let c = Client::builder()
        .timeout(Some(Duration::from_millis(150)))
        .connect(&url)
        .await
        .unwrap();
    assert!(c.call_path::<u8>("/crunch", &()).await.unwrap_err().is_timeout());
    assert_eq!(c.call_path::<String>("/ping", &()).await.unwrap(), "pong");
    eventually("the blocking job saw the cancellation", || {
        saw_cancel.load(Ordering::SeqCst)
    })
    .await;
    handle.shutdown().await;
}

/// 1,000 calls time out at once, four times: every handler future (and the 16 KiB it holds) is
/// dropped and counted, the server counts each stop, and the connection still serves calls.
///
/// Memory is checked through the drop counter rather than RSS: with server and client in one
/// process, glibc's pools made RSS swing by 17 MiB between identical rounds, which hides any
/// per-call leak small enough to matter and fails on noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timeouts_at_once_leave_nothing_behind() {
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let (handle, url) = start(
        Server::builder()
            .max_in_flight(2000)
            .on("/forever", move |_: ()| {
                let d = d.clone();
                struct Count(Arc<AtomicU64>);
                impl Drop for Count {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let guard = Count(d);
                async move {
                    let _guard = guard;
                    // Holds some memory while it runs, as a real handler would.
                    let buffer = vec![7u8; 16 * 1024];
                    std::future::pending::<()>().await;
                    buffer.len()
                }
            }),
    )
    .await;
    let c = Client::builder()
        .timeout(Some(Duration::from_millis(500)))
        .outbound_queue(2048)
        .connect(&url)
        .await
        .unwrap();
    // Each round: 1,000 calls that time out at once; every handler is stopped and counted.
    let round = |n: u64| {
        let c = c.clone();
        let dropped = dropped.clone();
        async move {
            let calls: Vec<_> = (0..1000)
                .map(|_| {
                    let c = c.clone();
                    tokio::spawn(async move { c.call_path::<usize>("/forever", &()).await })
                })
                .collect();
            let mut timeouts = 0;
            for call in calls {
                if call.await.unwrap().is_err_and(|e| e.is_timeout()) {
                    timeouts += 1;
                }
            }
            assert_eq!(timeouts, 1000);
            eventually("every handler stopped", || {
                dropped.load(Ordering::SeqCst) == 1000 * n
            })
            .await;
        }
    };
    for n in 1..=4 {
        round(n).await;
    }
    let (cancelled, exceeded) = stats(&handle, "/forever");
    assert_eq!(cancelled + exceeded, 4000);
    // Nothing is left holding the connection's in-flight slots: 2,000 more calls fit at once.
    let calls: Vec<_> = (0..2000)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.call_path::<usize>("/forever", &()).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
    eventually("every handler stopped", || dropped.load(Ordering::SeqCst) == 6000).await;
    handle.shutdown().await;
}

/// A v1 server that completes the upgrade, answers nothing, and reports the kind, id and path
/// of each frame it reads.
async fn silent_v1_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<(Kind, u64, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = webmesh_tests::accept_v1(tcp).await;
        while let Some(Ok(message)) = ws.next().await {
            if !message.is_binary() {
                continue;
            }
            let f = webmesh_tests::v1_frame(message);
            if tx.send((f.kind(), f.id(), f.path().to_owned())).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// The ids of the next `n` CANCEL frames `frames` reports.
async fn cancels(
    frames: &mut tokio::sync::mpsc::UnboundedReceiver<(Kind, u64, String)>,
    n: usize,
) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let (kind, id, _) = tokio::time::timeout(Duration::from_secs(5), frames.recv())
            .await
            .expect("a CANCEL for each call")
            .unwrap();
        if kind == Kind::Cancel {
            ids.push(id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_deadlines_end_calls_a_server_never_answers_each_at_its_time() {
    let (url, mut frames) = silent_v1_server().await;
    let c = Client::builder()
        .timeout(Some(Duration::from_millis(400)))
        .connect(&url)
        .await
        .unwrap();
    let t = Instant::now();
    // Three calls in flight at once with different timeouts, the longest first: each ends at
    // its own time with its own path and timeout, and the server gets each one's CANCEL.
    let call = |path: &'static str, timeout: Option<Duration>| {
        let c = c.clone();
        tokio::spawn(async move {
            let r = match timeout {
                Some(t) => c
                    .call_path_as::<u8, Value>(path, &(), Some(t))
                    .await
                    .map_err(|e| match e {
                        webmesh::CallError::Rpc(e) => e,
                        other => panic!("{other:?}"),
                    }),
                None => c.call_path::<u8>(path, &()).await,
            };
            (r, t.elapsed())
        })
    };
    let long = call("/long", None);
    let middle = call("/middle", Some(Duration::from_millis(200)));
    let short = call("/short", Some(Duration::from_millis(50)));
    for (task, path, after) in [
        (short, "/short", 50),
        (middle, "/middle", 200),
        (long, "/long", 400),
    ] {
        let (r, elapsed) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap_or_else(|_| panic!("{path} never ended"))
            .unwrap();
        match r {
            Err(Error::CallTimeout { path: p, after: a }) => {
                assert_eq!((p.as_str(), a), (path, Duration::from_millis(after)))
            }
            other => panic!("expected a timeout from {path}, got {other:?}"),
        }
        assert!(
            elapsed >= Duration::from_millis(after),
            "{path} ended after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(after) + Duration::from_secs(5),
            "{path}: {elapsed:?}"
        );
    }
    let mut ids = cancels(&mut frames, 3).await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one CANCEL per call: {ids:?}");
    // The connection is still up: a new call goes out (and times out in turn).
    let again = c
        .call_path_as::<u8, Value>("/again", &(), Some(Duration::from_millis(30)))
        .await;
    assert!(
        matches!(again, Err(webmesh::CallError::Rpc(Error::CallTimeout { .. }))),
        "{again:?}"
    );
    assert!(!c.is_closed());
}

/// A client with 300 ms calls, no keepalive and a small command channel (32), for a server that
/// stops reading.
async fn clogging_client(url: &str) -> Client {
    Client::builder()
        .timeout(Some(Duration::from_millis(300)))
        .keepalive(None)
        .outbound_queue(32)
        .connect(url)
        .await
        .unwrap()
}

/// 600 calls to `/x` of ~72 KiB each of numbers that do not compress: ~43 MB, far more than the
/// socket's buffers, the outbox (256 messages) and the channel (32) hold.
fn clog(c: &Client) -> Vec<tokio::task::JoinHandle<Result<u8, Error>>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let payload: Arc<Vec<u64>> = Arc::new(
        (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect(),
    );
    (0..600)
        .map(|_| {
            let (c, payload) = (c.clone(), payload.clone());
            tokio::spawn(async move { c.call_path::<u8>("/x", &*payload).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_behind_a_server_that_stopped_reading_still_end_at_their_deadline() {
    // A v1 server that completes the upgrade and then reads nothing: the client's socket, its
    // outbox and its command channel fill up, and the calls stuck in each must still end at
    // their deadline (no keepalive here to end the connection).
    let (url, held) = webmesh_tests::mute_v1_server(Duration::from_secs(60)).await;
    let c = clogging_client(&url).await;
    let t = Instant::now();
    let calls = clog(&c);
    for (i, call) in calls.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .unwrap_or_else(|_| panic!("call {i} never ended"))
            .unwrap();
        assert!(matches!(r, Err(Error::CallTimeout { .. })), "{r:?}");
    }
    // Each waited its 300 ms (plus the time to hand it over), not a keepalive or forever.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_no_time_left_is_never_sent() {
    let (url, mut frames) = silent_v1_server().await;
    let c = Client::builder().connect(&url).await.unwrap();
    let late = c
        .call_path_as::<u8, Value>("/late", &(), Some(Duration::ZERO))
        .await;
    assert!(
        matches!(late, Err(webmesh::CallError::Rpc(Error::CallTimeout { .. }))),
        "{late:?}"
    );
    // The next call is the first frame the server reads: neither the late CALL nor a CANCEL
    // for it went out before it.
    let next = c
        .call_path_as::<u8, Value>("/next", &(), Some(Duration::from_millis(50)))
        .await;
    assert!(
        matches!(next, Err(webmesh::CallError::Rpc(Error::CallTimeout { .. }))),
        "{next:?}"
    );
    let (kind, _, path) = tokio::time::timeout(Duration::from_secs(5), frames.recv())
        .await
        .expect("the next call reaches the server")
        .unwrap();
    assert_eq!((kind, path.as_str()), (Kind::Call, "/next"));
    assert!(!c.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_deadline_passes_while_they_wait_to_be_written_are_never_sent() {
    // A server that reads nothing for a while, then reports every frame it reads: the calls
    // made meanwhile fill the socket's buffers, the outbox and the command channel. Those whose
    // deadline passes while still queued in the client never leave it; those already written
    // get a CANCEL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let wake = Arc::new(tokio::sync::Notify::new());
    let server_wake = wake.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = webmesh_tests::accept_v1(tcp).await;
        server_wake.notified().await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_binary() {
                let f = webmesh_tests::v1_frame(message);
                if tx.send((f.kind(), f.id(), f.path().to_owned())).is_err() {
                    return;
                }
            }
        }
    });
    let c = clogging_client(&url).await;
    let calls = clog(&c);
    for call in calls {
        let r = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(Error::CallTimeout { .. })), "{r:?}");
    }
    // Every call has ended: the server starts reading, and a last call marks the end of what
    // the client sent before it.
    wake.notify_one();
    let marker = c.clone();
    tokio::spawn(async move {
        let _ = marker
            .call_path_as::<u8, Value>("/marker", &(), Some(Duration::from_secs(30)))
            .await;
    });
    let (mut sent, mut cancelled) = (Vec::new(), Vec::new());
    loop {
        let (kind, id, path) = tokio::time::timeout(Duration::from_secs(20), frames.recv())
            .await
            .expect("the server reads up to the marker")
            .unwrap();
        match (kind, path.as_str()) {
            (Kind::Call, "/marker") => break,
            (Kind::Call, _) => sent.push(id),
            (Kind::Cancel, _) => cancelled.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        sent.len() < 600,
        "calls still queued at their deadline were sent anyway ({} of 600)",
        sent.len()
    );
    sent.sort_unstable();
    cancelled.sort_unstable();
    assert_eq!(
        sent, cancelled,
        "each call that was sent, and only those, got a CANCEL"
    );
    assert!(!c.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_while_the_client_closes_still_ends_at_its_deadline() {
    // A server that never answers, not even the close frame: the client waits for the close
    // answer for a while; a call in flight meanwhile ends at its own deadline, as a timeout.
    let (url, _held) = webmesh_tests::mute_v1_server(Duration::from_secs(60)).await;
    let c = Client::builder().keepalive(None).connect(&url).await.unwrap();
    let t = Instant::now();
    let call = {
        let c = c.clone();
        tokio::spawn(async move {
            let r = c
                .call_path_as::<u8, Value>("/x", &(), Some(Duration::from_millis(1000)))
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let closing = tokio::spawn(async move { c.close().await });
    let (r, elapsed) = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r, Err(webmesh::CallError::Rpc(Error::CallTimeout { .. }))),
        "{r:?} after {elapsed:?}"
    );
    // (Had the deadline waited for the close to end, the call would have failed as `Closed`.)
    assert!(
        elapsed >= Duration::from_millis(1000) && elapsed < Duration::from_secs(5),
        "ended after {elapsed:?}"
    );
    closing.await.unwrap();
}
