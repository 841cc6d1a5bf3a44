//! Fan-out: one publisher, N subscribers on N connections, small messages. webmesh-rs topics next
//! to a raw tokio-tungstenite broadcast that writes the same pre-encoded frame to every socket.
//!
//! The server runs in a child process (`webmesh-bench serve fanout-raw|fanout-webmesh`) and
//! publishes on commands from its stdin: `paced P US` (P messages, US µs apart: latency) and
//! `burst B` (B messages back to back: deliveries per second). The subscribers run in this
//! process. Every message carries its publish time; a subscriber's delivery latency is its
//! arrival time minus that (one machine, one clock). Both systems' subscribers decode the same
//! frame into the same type; the raw one reads it off its socket, webmesh-rs's through its client
//! driver and a `Subscription` stream.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{http, Message};

use crate::proc_stats;

/// The message published: small, as price ticks are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::topic("/bench/tick")]
pub(crate) struct Tick {
    n: u64,
    /// Publish time, ns since the Unix epoch.
    ts_ns: u64,
    symbol: String,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        ts_ns: now_ns(),
        symbol: "ACME.EUR".into(),
    }
}

// --- Server side (child process) ------------------------------------------------------------

/// A publish command from stdin.
enum Command {
    Paced { count: u64, every: Duration },
    Burst { count: u64 },
}

/// Runs the fan-out server of `kind` (`fanout-raw`, `fanout-webmesh`): prints `port N`, then
/// publishes on each stdin command, until stdin closes.
pub(crate) async fn serve(kind: &str) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let publish: Box<dyn Fn(u64) + Send> = match kind {
        "fanout-raw" => Box::new(raw_broadcast(listener)),
        "fanout-webmesh" => {
            let server = webmesh::Server::builder()
                .listener(listener)
                .max_connections(crate::servers::MAX_CONNECTIONS)
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let topics = server.topics();
            server.spawn();
            Box::new(move |n| {
                let _ = topics.publish(&tick(n));
            })
        }
        other => return Err(format!("unknown fan-out server {other:?}")),
    };
    #[allow(clippy::print_stdout)]
    {
        println!("port {port}");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stdin = tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            let words: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            let command = match (line.split_whitespace().next(), words.as_slice()) {
                (Some("paced"), [count, us]) => Command::Paced {
                    count: *count,
                    every: Duration::from_micros(*us),
                },
                (Some("burst"), [count]) => Command::Burst { count: *count },
                _ => continue,
            };
            if tx.send(command).is_err() {
                break;
            }
        }
    });
    let mut n = 0;
    while let Some(command) = rx.recv().await {
        match command {
            Command::Paced { count, every } => {
                let mut at = tokio::time::interval(every);
                for _ in 0..count {
                    at.tick().await;
                    n += 1;
                    publish(n);
                }
            }
            Command::Burst { count } => {
                for _ in 0..count {
                    n += 1;
                    publish(n);
                }
            }
        }
    }
    stdin.await.map_err(|e| e.to_string())
}

/// The anchor: every connection's task takes each message from a `broadcast` channel (the frame
/// encoded once, shared) and writes it, flushing once per batch. Returns the publish function.
fn raw_broadcast(listener: TcpListener) -> impl Fn(u64) + Send {
    // Room for a whole burst: like webmesh-rs's queues, nothing is dropped below it.
    let (tx, _) = broadcast::channel::<Bytes>(4096);
    let subscribe = tx.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut rx = subscribe.subscribe();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(crate::clients::raw_config()))
                        .await
                else {
                    return;
                };
                loop {
                    let first = match rx.recv().await {
                        Ok(b) => b,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if ws.feed(Message::Binary(first)).await.is_err() {
                        return;
                    }
                    loop {
                        match rx.try_recv() {
                            Ok(b) => {
                                if ws.feed(Message::Binary(b)).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    // The same bytes webmesh-rs sends: a v1 topic message, msgpack.
    let encoder = webmesh::codec::FrameEncoder::new(
        webmesh::codec::Framing::V1,
        webmesh::codec::AnyCodec::MSGPACK,
        webmesh::codec::Compression::default(),
    );
    move |n| {
        if let Ok(frame) = encoder.topic_message(n, "/bench/tick", &tick(n)) {
            let _ = tx.send(Bytes::copy_from_slice(frame.as_bytes()));
        }
    }
}

// --- Harness side -------------------------------------------------------------------------

/// What every subscriber adds to.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    lost: AtomicU64,
    /// Arrival time of the latest delivery, ns since the epoch.
    last_ns: AtomicU64,
    recording: AtomicBool,
    latencies_ns: Mutex<Vec<u64>>,
}

impl Tally {
    fn delivered(&self, t: &Tick) {
        let now = now_ns();
        if self.recording.load(Ordering::Relaxed) {
            self.latencies_ns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(now.saturating_sub(t.ts_ns));
        }
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// The systems of the fan-out: the anchor, webmesh-rs's server with the anchor's subscribers
/// (the server's fan-out alone), and webmesh-rs end to end (typed `Subscription` streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fanout {
    Raw,
    WebmeshServer,
    Webmesh,
}

impl Fanout {
    pub(crate) const ALL: [Fanout; 3] = [Fanout::Raw, Fanout::WebmeshServer, Fanout::Webmesh];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fanout::Raw => "raw broadcast (tokio-tungstenite)",
            Fanout::WebmeshServer => "webmesh-rs server, raw subscribers",
            Fanout::Webmesh => "webmesh-rs topics, typed client",
        }
    }

    /// The name `--system` selects it by.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Fanout::Raw => "raw",
            Fanout::WebmeshServer => "webmesh-server",
            Fanout::Webmesh => "webmesh",
        }
    }

    fn server_kind(self) -> &'static str {
        match self {
            Fanout::Raw => "fanout-raw",
            Fanout::WebmeshServer | Fanout::Webmesh => "fanout-webmesh",
        }
    }

    /// Connects one subscriber that reports to `tally`; returns once it is subscribed.
    async fn subscriber(self, port: u16, tally: Arc<Tally>) -> Result<tokio::task::JoinHandle<()>, String> {
        let url = format!("ws://127.0.0.1:{port}");
        match self {
            Fanout::Raw | Fanout::WebmeshServer => {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = tcp.set_nodelay(true);
                let mut request = url.into_client_request().map_err(|e| e.to_string())?;
                if self == Fanout::WebmeshServer {
                    request.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        http::HeaderValue::from_static("webmesh.v1.msgpack"),
                    );
                }
                let (mut ws, _) = tokio_tungstenite::client_async_with_config(
                    request,
                    tcp,
                    Some(crate::clients::raw_config()),
                )
                .await
                .map_err(|e| e.to_string())?;
                let codec = webmesh::codec::AnyCodec::MSGPACK;
                let limits = webmesh::codec::Limits::default();
                let decode = move |b: Bytes| {
                    webmesh::codec::decode_frame(
                        webmesh::codec::Framing::V1,
                        &codec,
                        &limits,
                        webmesh::codec::FrameType::Binary,
                        b,
                    )
                };
                if self == Fanout::WebmeshServer {
                    // Subscribe as the client would (id 1), and wait for the answer.
                    let enc = webmesh::codec::FrameEncoder::new(
                        webmesh::codec::Framing::V1,
                        webmesh::codec::AnyCodec::MSGPACK,
                        webmesh::codec::Compression::none(),
                    );
                    let subscribe = enc
                        .v1_frame(
                            webmesh::codec::Kind::Subscribe,
                            1,
                            <Tick as webmesh::Topic>::PATH,
                            &(),
                        )
                        .map_err(|e| e.to_string())?;
                    ws.send(Message::Binary(Bytes::copy_from_slice(subscribe.as_bytes())))
                        .await
                        .map_err(|e| e.to_string())?;
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => {
                            let answer = decode(b).map_err(|e| e.to_string())?;
                            if answer.kind() != webmesh::codec::Kind::Reply {
                                return Err(format!("subscribe answered with {:?}", answer.kind()));
                            }
                        }
                        other => return Err(format!("no answer to subscribe: {other:?}")),
                    }
                }
                Ok(tokio::spawn(async move {
                    while let Some(Ok(Message::Binary(b))) = ws.next().await {
                        match decode(b).and_then(|f| f.decode::<Tick>()) {
                            Ok(t) => tally.delivered(&t),
                            Err(_) => {
                                tally.lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }))
            }
            Fanout::Webmesh => {
                let client = webmesh::Client::connect(&url).await.map_err(|e| e.to_string())?;
                let mut ticks = client.subscribe::<Tick>().await.map_err(|e| e.to_string())?;
                Ok(tokio::spawn(async move {
                    let _client = client;
                    while let Some(event) = ticks.next().await {
                        match event {
                            webmesh::Event::Message { value, .. } => tally.delivered(&value),
                            webmesh::Event::Lagged { missed, .. } => {
                                tally.lost.fetch_add(missed, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                }))
            }
        }
    }
}

/// The sizes of a fan-out run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) subscribers: usize,
    /// Messages of the latency phase, and the gap between them.
    pub(crate) paced: u64,
    pub(crate) every: Duration,
    /// Messages of the throughput phase.
    pub(crate) burst: u64,
}

/// What one run of one system measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct FanoutSample {
    pub(crate) deliveries_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Deliveries that did not happen (lag, timeouts).
    pub(crate) lost: u64,
    /// Server RSS growth per subscriber (connection and subscription), KiB.
    pub(crate) kib_per_subscriber: f64,
    /// Server CPU time per delivery in the burst, µs.
    pub(crate) server_cpu_us_per_delivery: f64,
}

/// Waits until `tally` has `want` deliveries or 60 s pass; false on the timeout.
async fn until_received(tally: &Tally, want: u64) -> bool {
    let give_up = Instant::now() + Duration::from_secs(60);
    while tally.received.load(Ordering::Relaxed) < want {
        if Instant::now() > give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// One run: a fresh server, `sizes.subscribers` subscribers, the latency phase, the burst.
pub(crate) async fn run(system: Fanout, sizes: Sizes) -> Result<FanoutSample, String> {
    let mut server = crate::rust_server(system.server_kind())?;
    let pid = server.pid();
    let tally = Arc::new(Tally::default());
    let rss_before = proc_stats::rss_kib(pid).unwrap_or(0);
    let mut tasks = Vec::with_capacity(sizes.subscribers);
    let connecting: Vec<_> = futures_util::stream::iter(0..sizes.subscribers)
        .map(|_| system.subscriber(server.port, tally.clone()))
        .buffer_unordered(64)
        .collect()
        .await;
    for t in connecting {
        tasks.push(t?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = proc_stats::rss_kib(pid).unwrap_or(0);
    let subs = sizes.subscribers as u64;
    let mut command = |line: String| -> Result<(), String> {
        let stdin = server.child.stdin.as_mut().ok_or("no server stdin")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| e.to_string())
    };

    // Latency: messages far enough apart that none waits for another.
    tally.recording.store(true, Ordering::Relaxed);
    command(format!("paced {} {}", sizes.paced, sizes.every.as_micros()))?;
    let paced_ok = until_received(&tally, subs * sizes.paced).await;
    tally.recording.store(false, Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *tally.latencies_ns.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    let (p50_us, p99_us) = (pct(0.50), pct(0.99));

    // Throughput: a burst, from the command to the last delivery.
    let got_before = tally.received.load(Ordering::Relaxed);
    let cpu_before = proc_stats::cpu_us(pid).unwrap_or(0);
    let start_ns = now_ns();
    command(format!("burst {}", sizes.burst))?;
    let burst_ok = until_received(&tally, got_before + subs * sizes.burst).await;
    let cpu = proc_stats::cpu_us(pid).unwrap_or(0).saturating_sub(cpu_before);
    let delivered = tally.received.load(Ordering::Relaxed) - got_before;
    let secs = tally.last_ns.load(Ordering::Relaxed).saturating_sub(start_ns) as f64 / 1e9;
    let mut lost = tally.lost.load(Ordering::Relaxed);
    if !paced_ok || !burst_ok {
        let expected = subs * (sizes.paced + sizes.burst);
        lost = lost.max(expected.saturating_sub(tally.received.load(Ordering::Relaxed)));
    }
    for t in tasks {
        t.abort();
    }
    Ok(FanoutSample {
        deliveries_per_sec: if secs > 0.0 { delivered as f64 / secs } else { 0.0 },
        p50_us,
        p99_us,
        lost,
        kib_per_subscriber: rss_after.saturating_sub(rss_before) as f64 / subs.max(1) as f64,
        server_cpu_us_per_delivery: cpu as f64 / delivered.max(1) as f64,
    })
}

/// Prints the fan-out table and the ratio to the anchor.
pub(crate) fn report(sizes: Sizes, rows: &[(Fanout, Vec<FanoutSample>)], quick: bool) {
    println!();
    println!(
        "## Fan-out: one publisher, {} subscribers on {} connections, small messages",
        sizes.subscribers, sizes.subscribers
    );
    println!();
    let median = |v: &[FanoutSample], f: fn(&FanoutSample) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).copied().unwrap_or(0.0)
    };
    if quick {
        for (system, samples) in rows {
            let lost: u64 = samples.iter().map(|s| s.lost).sum();
            println!(
                "- {}: {:.0} deliveries/s, {lost} lost (quick mode: figures not meaningful)",
                system.name(),
                median(samples, |s| s.deliveries_per_sec)
            );
        }
        return;
    }
    println!(
        "Latency: {} messages {} µs apart, publish to delivery, every subscriber. Throughput: a burst of {} messages, from the command to the last delivery.",
        sizes.paced,
        sizes.every.as_micros(),
        sizes.burst
    );
    println!();
    println!("| system | deliveries/s median | ÷ raw | p50 µs | p99 µs | lost | server CPU µs/delivery | server KiB/subscriber |");
    println!("|---|---|---|---|---|---|---|---|");
    let raw = rows
        .iter()
        .find(|(s, _)| *s == Fanout::Raw)
        .map(|(_, v)| median(v, |s| s.deliveries_per_sec));
    for (system, samples) in rows {
        let rate = median(samples, |s| s.deliveries_per_sec);
        let ratio = raw
            .filter(|r| *r > 0.0)
            .map_or_else(|| "-".into(), |r| format!("{:.2}", rate / r));
        println!(
            "| {} | {:.0} | {ratio} | {:.0} | {:.0} | {} | {:.2} | {:.1} |",
            system.name(),
            rate,
            median(samples, |s| s.p50_us),
            median(samples, |s| s.p99_us),
            samples.iter().map(|s| s.lost).sum::<u64>(),
            median(samples, |s| s.server_cpu_us_per_delivery),
            median(samples, |s| s.kib_per_subscriber),
        );
    }
    for (system, label) in [
        (Fanout::WebmeshServer, "server fan-out (same subscribers)"),
        (Fanout::Webmesh, "end to end (typed client)"),
    ] {
        if let (Some(raw), Some((_, wm))) = (raw, rows.iter().find(|(s, _)| *s == system)) {
            let ratio = median(wm, |s| s.deliveries_per_sec) / raw.max(1.0);
            let status = if ratio >= 0.5 { "met" } else { "MISSED" };
            println!();
            println!("- fan-out deliveries/s ÷ raw broadcast, {label}: {ratio:.2} (≥ 0.5) **{status}**");
        }
    }
}
