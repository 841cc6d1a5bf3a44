//! Cluster (issue 13): a call forwarded to another node over NATS, next to the same call made
//! on the serving node directly, and to NATS request/reply used directly through `async-nats`
//! (no webmesh): the anchor. Then fan-out: a publisher on one node, subscribers on another,
//! next to the same fan-out within one node.
//!
//! A real `nats-server` (Debian's package) runs on a free loopback port; the nodes, the clients
//! and the anchor's requester and responder run in this process (two cores shared by all).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::payload::{small, Small};

/// How much to run.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) secs: f64,
    pub(crate) in_flight: usize,
    pub(crate) subscribers: usize,
    pub(crate) burst: u64,
}

/// One run of one system.
#[derive(Clone, Default)]
pub(crate) struct Sample {
    ops: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    NatsDirect,
    Local,
    Forwarded,
    FanoutLocal,
    FanoutCrossNode,
}

impl System {
    pub(crate) const ALL: [System; 5] = [
        System::NatsDirect,
        System::Local,
        System::Forwarded,
        System::FanoutLocal,
        System::FanoutCrossNode,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::NatsDirect => "NATS request/reply (async-nats, no webmesh)",
            System::Local => "webmesh-rs call on the serving node",
            System::Forwarded => "webmesh-rs call forwarded over NATS",
            System::FanoutLocal => "fan-out within one node",
            System::FanoutCrossNode => "fan-out across nodes",
        }
    }

    /// The key `--system` selects this row with.
    pub(crate) fn short(self) -> &'static str {
        match self {
            System::NatsDirect => "nats",
            System::Local => "local",
            System::Forwarded => "forwarded",
            System::FanoutLocal => "fanout-local",
            System::FanoutCrossNode => "fanout-cross",
        }
    }

    fn is_fanout(self) -> bool {
        matches!(self, System::FanoutLocal | System::FanoutCrossNode)
    }
}

/// A tick for the fan-out rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::topic("/bench/cluster/tick")]
pub(crate) struct ClusterTick {
    n: u64,
}

/// Runs `call` from `in_flight` tasks until `secs` have passed.
async fn drive<F, Fut>(in_flight: usize, secs: f64, call: F) -> Result<Sample, String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let call = call.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                call().await?;
                lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Ok::<_, String>(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(t) = tasks.join_next().await {
        all.extend(t.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(Sample {
        ops: all.len() as u64,
        secs,
        p50_us: q(0.5),
        p99_us: q(0.99),
    })
}

async fn node(
    nats: &str,
    builder: webmesh::ServerBuilder,
) -> Result<(webmesh::ServerHandle, String), String> {
    let server = builder
        .registered_routes(false)
        .nats(nats)
        .max_connections(crate::servers::MAX_CONNECTIONS)
        .bind("127.0.0.1:0")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{}", server.local_addr());
    Ok((server.spawn(), url))
}

/// Until `url`'s node sees `n` nodes (their subscriptions are live).
async fn until_nodes(url: &str, n: usize) -> Result<(), String> {
    let client = webmesh::Client::connect(url).await.map_err(|e| e.to_string())?;
    for _ in 0..400 {
        if client.describe().await.map_err(|e| e.to_string())?.cluster.len() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("the cluster never showed {n} nodes"))
}

pub(crate) async fn run(system: System, sizes: Sizes) -> Result<Sample, String> {
    // The tests' helper: a free port, stopped when dropped.
    let nats = tokio::task::spawn_blocking(webmesh_tests::NatsServer::start)
        .await
        .map_err(|e| format!("cannot start nats-server (apt-get install nats-server): {e}"))?;
    let url = nats.url();
    match system {
        System::NatsDirect => nats_direct(&url, sizes).await,
        System::Local | System::Forwarded => calls(&url, sizes, system == System::Forwarded).await,
        System::FanoutLocal | System::FanoutCrossNode => {
            fanout(&url, sizes, system == System::FanoutCrossNode).await
        }
    }
}

/// The anchor: a responder that answers each request with its payload, and requesters, each
/// on its own connection as two services would be. Tried and not kept, as they made the anchor
/// slower: both connections on a thread of their own (as a webmesh node's link is).
async fn nats_direct(url: &str, sizes: Sizes) -> Result<Sample, String> {
    let responder = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let requester = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let mut sub = responder
        .subscribe("bench.echo")
        .await
        .map_err(|e| e.to_string())?;
    let answering = responder.clone();
    let serving = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            // Decoded and encoded as a service would: the same work as a webmesh handler.
            let Ok(value) = rmp_serde::from_slice::<Small>(&msg.payload) else {
                continue;
            };
            let Ok(body) = rmp_serde::to_vec(&value) else {
                continue;
            };
            if let Some(reply) = msg.reply {
                let _ = answering.publish(reply, body.into()).await;
            }
        }
    });
    responder.flush().await.map_err(|e| e.to_string())?;
    let payload = Bytes::from(rmp_serde::to_vec(&small()).map_err(|e| e.to_string())?);
    // Until a request is answered: the subscription is live for the requester too (a run once
    // saw "no responders" right after the responder's flush).
    for attempt in 0.. {
        match requester.request("bench.echo", payload.clone()).await {
            Ok(_) => break,
            Err(e) if attempt >= 200 => return Err(format!("the anchor never answered: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let sample = drive(sizes.in_flight, sizes.secs, move || {
        let (requester, payload) = (requester.clone(), payload.clone());
        async move {
            // No timeout: no timer per request (4 % faster than `request`, measured), the
            // strongest form of the anchor.
            let reply = requester
                .send_request(
                    "bench.echo",
                    async_nats::Request::new().payload(payload).timeout(None),
                )
                .await
                .map_err(|e| e.to_string())?;
            rmp_serde::from_slice::<Small>(&reply.payload).map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await;
    serving.abort();
    sample
}

/// A typed call to `/bench/echo`, on the serving node or through another node.
async fn calls(url: &str, sizes: Sizes, forwarded: bool) -> Result<Sample, String> {
    let (serving, serving_url) = node(
        url,
        webmesh::Server::builder().on("/bench/echo", |m: Small| async move { m }),
    )
    .await?;
    let (front, front_url) = node(url, webmesh::Server::builder()).await?;
    until_nodes(&front_url, 2).await?;
    let target = if forwarded { front_url } else { serving_url };
    let client = webmesh::Client::connect(&target)
        .await
        .map_err(|e| e.to_string())?;
    // Built once, as the anchor's payload is: a call encodes it, the harness builds nothing.
    let request = small();
    let sample = drive(sizes.in_flight, sizes.secs, move || {
        // The request is encoded here, before the future's first poll.
        let call = client.call_path::<Small>("/bench/echo", &request);
        async move { call.await.map(drop).map_err(|e| e.to_string()) }
    })
    .await;
    front.shutdown().await;
    serving.shutdown().await;
    sample
}

/// A burst published on one node; every subscriber (a typed client) counts its messages.
async fn fanout(url: &str, sizes: Sizes, cross: bool) -> Result<Sample, String> {
    let (publisher, pub_url) = node(url, webmesh::Server::builder()).await?;
    let (other, other_url) = node(url, webmesh::Server::builder()).await?;
    until_nodes(&pub_url, 2).await?;
    let sub_url = if cross { &other_url } else { &pub_url };
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..sizes.subscribers {
        let client = webmesh::Client::connect(sub_url)
            .await
            .map_err(|e| e.to_string())?;
        let mut sub = client
            .subscribe::<ClusterTick>()
            .await
            .map_err(|e| e.to_string())?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while let Some(e) = sub.next().await {
                if matches!(e, webmesh::Event::Message { .. }) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // A probe until it arrives: the cross-node path is live.
    let topics = publisher.topics();
    for _ in 0..400 {
        topics.publish(&ClusterTick { n: 0 }).map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if received.load(Ordering::Relaxed) >= sizes.subscribers as u64 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = received.load(Ordering::Relaxed);
    let expected = before + sizes.burst * sizes.subscribers as u64;
    let started = Instant::now();
    for n in 1..=sizes.burst {
        topics.publish(&ClusterTick { n }).map_err(|e| e.to_string())?;
    }
    let give_up = started + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed) - before;
    for t in tasks {
        t.abort();
    }
    publisher.shutdown().await;
    other.shutdown().await;
    Ok(Sample {
        ops: got,
        secs,
        p50_us: 0,
        p99_us: 0,
    })
}

fn median(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn report(sizes: Sizes, rows: &[(System, Vec<Sample>)], quick: bool) {
    println!();
    println!(
        "## Cluster: calls at 1 × {} in flight (small payload), fan-out of {} messages to {} subscribers; a real nats-server, everything else in this process",
        sizes.in_flight, sizes.burst, sizes.subscribers
    );
    if quick {
        for (s, samples) in rows {
            let ops: u64 = samples.iter().map(|x| x.ops).sum();
            let expected = sizes.burst * sizes.subscribers as u64 * samples.len() as u64;
            let lost = if s.is_fanout() {
                expected.saturating_sub(ops)
            } else {
                0
            };
            println!("- {}: {ops} ops, {lost} lost", s.name());
        }
        return;
    }
    let anchor = rows
        .iter()
        .find(|(s, _)| *s == System::NatsDirect)
        .map(|(_, v)| median(v, Sample::rate));
    println!();
    println!("| system | ops/s | µs per op | p50 µs | p99 µs | cost ÷ NATS request/reply |");
    println!("|---|---|---|---|---|---|");
    for (s, samples) in rows {
        let rate = median(samples, Sample::rate);
        let ratio = match (anchor, s.is_fanout()) {
            (Some(a), false) if rate > 0.0 => format!("{:.2}", a / rate),
            _ => "–".into(),
        };
        let lat = |v: f64| {
            if s.is_fanout() {
                "–".into()
            } else {
                format!("{v:.0}")
            }
        };
        println!(
            "| {} | {:.0} | {:.2} | {} | {} | {ratio} |",
            s.name(),
            rate,
            1e6 / rate.max(1e-9),
            lat(median(samples, |x| x.p50_us as f64)),
            lat(median(samples, |x| x.p99_us as f64)),
        );
    }
    println!();
    println!("Target (issue 13): a forwarded call costs at most 1.5× a direct NATS request/reply.");
}
