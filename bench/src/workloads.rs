//! The workloads: what the client does against a running server, and what it measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clients::{Conn, RawPayloads, System};
use crate::payload::{Large, Small};
use crate::proc_stats;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// One connection, one small call at a time.
    Sequential,
    /// Small calls, `conns` connections × `per_conn` calls in flight on each.
    InFlight { conns: usize, per_conn: usize },
    /// 64 KiB calls, `conns` × `per_conn` in flight: log records, or pseudo-random numbers.
    Large {
        conns: usize,
        per_conn: usize,
        numbers: bool,
    },
    /// `conns` connections opened and left idle: server memory per connection.
    Idle { conns: usize },
}

impl Workload {
    /// Small calls, one connection with 64 in flight.
    pub(crate) const ONE_BY_64: Workload = Workload::InFlight {
        conns: 1,
        per_conn: 64,
    };
    /// Small calls, 16 connections with 16 in flight each.
    pub(crate) const SIXTEEN_BY_16: Workload = Workload::InFlight {
        conns: 16,
        per_conn: 16,
    };
    /// 64 KiB calls of log records (compressible), one connection with 64 in flight.
    pub(crate) const LARGE: Workload = Workload::Large {
        conns: 1,
        per_conn: 64,
        numbers: false,
    };
    /// 64 KiB calls of pseudo-random numbers (issue 11's payload), one connection with 64 in
    /// flight.
    pub(crate) const LARGE_NUMBERS: Workload = Workload::Large {
        conns: 1,
        per_conn: 64,
        numbers: true,
    };

    /// A short name for `--workload`.
    pub(crate) fn key(self) -> String {
        match self {
            Workload::Sequential => "seq".into(),
            Workload::InFlight { conns, per_conn } => format!("{conns}x{per_conn}"),
            Workload::Large { numbers: false, .. } => "large".into(),
            Workload::Large { numbers: true, .. } => "large-numbers".into(),
            Workload::Idle { .. } => "idle".into(),
        }
    }

    pub(crate) fn title(self) -> String {
        match self {
            Workload::Sequential => "sequential small calls (1 connection, 1 in flight)".into(),
            Workload::InFlight { conns, per_conn } => {
                format!("small calls, {conns} connection(s) × {per_conn} in flight")
            }
            Workload::Large {
                conns,
                per_conn,
                numbers,
            } => {
                let what = if numbers { "numbers" } else { "logs" };
                format!("64 KiB calls ({what}), {conns} × {per_conn} in flight")
            }
            Workload::Idle { conns } => format!("{conns} idle connections: server RSS"),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Calls completed (or connections, for idle).
    pub(crate) ops: u64,
    /// Seconds the calls took.
    pub(crate) secs: f64,
    /// p50 and p99 call latency, µs (sequential only).
    pub(crate) latency_us: Option<(f64, f64)>,
    /// Server plus client CPU time per call, µs.
    pub(crate) cpu_us_per_op: Option<f64>,
    /// Bytes on the wire per call, both ways, WebSocket framing included.
    pub(crate) wire_per_op: Option<f64>,
    /// Server RSS growth per idle connection, KiB.
    pub(crate) rss_kib_per_conn: Option<f64>,
}

impl Sample {
    pub(crate) fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// How long and how much: every loop stops at `duration` or `max_ops`, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) duration: Duration,
    pub(crate) max_ops: u64,
    pub(crate) warmup: Duration,
}

pub(crate) struct Inputs {
    pub(crate) small: Small,
    /// The large payloads: log records, and pseudo-random numbers.
    pub(crate) logs: Large,
    pub(crate) numbers: Large,
    pub(crate) raw: RawPayloads,
}

impl Inputs {
    /// A large payload, typed and as the raw echo sends it.
    pub(crate) fn large(&self, numbers: bool) -> (&Large, &bytes::Bytes) {
        match numbers {
            true => (&self.numbers, &self.raw.numbers),
            false => (&self.logs, &self.raw.logs),
        }
    }
}

pub(crate) async fn run(
    workload: Workload,
    system: System,
    port: u16,
    server_pid: u32,
    budget: Budget,
    inputs: Arc<Inputs>,
) -> Result<Sample, String> {
    match workload {
        // In a task of the runtime, as the other workloads' callers: on the thread that runs
        // `block_on`, every wake-up of the caller (the reply is read on a worker) would cross
        // threads, a futex wake per call for every system (two for a client with a driver task).
        Workload::Sequential => tokio::spawn(sequential(system, port, server_pid, budget, inputs))
            .await
            .map_err(|e| e.to_string())?,
        Workload::InFlight { conns, per_conn } => {
            in_flight(system, port, server_pid, budget, inputs, conns, per_conn, None).await
        }
        Workload::Large {
            conns,
            per_conn,
            numbers,
        } => {
            in_flight(
                system,
                port,
                server_pid,
                budget,
                inputs,
                conns,
                per_conn,
                Some(numbers),
            )
            .await
        }
        Workload::Idle { conns } => idle(system, port, server_pid, conns).await,
    }
}

struct Meter {
    server_pid: u32,
    cpu: u64,
    start: Instant,
}

impl Meter {
    fn start(server_pid: u32) -> Meter {
        Meter {
            server_pid,
            cpu: cpu_both(server_pid),
            start: Instant::now(),
        }
    }

    fn finish(self, ops: u64) -> Sample {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = cpu_both(self.server_pid).saturating_sub(self.cpu);
        Sample {
            ops,
            secs,
            cpu_us_per_op: (ops > 0).then(|| cpu as f64 / ops as f64),
            ..Sample::default()
        }
    }
}

fn cpu_both(server_pid: u32) -> u64 {
    proc_stats::cpu_us(server_pid).unwrap_or(0) + proc_stats::cpu_us(std::process::id()).unwrap_or(0)
}

async fn sequential(
    system: System,
    port: u16,
    server_pid: u32,
    budget: Budget,
    inputs: Arc<Inputs>,
) -> Result<Sample, String> {
    let conn = Conn::connect(system, port).await?;
    let warm_until = Instant::now() + budget.warmup;
    while Instant::now() < warm_until {
        conn.small(&inputs.small, &inputs.raw).await?;
    }
    let mut latencies = Vec::with_capacity(budget.max_ops.min(1 << 20) as usize);
    let meter = Meter::start(server_pid);
    let deadline = Instant::now() + budget.duration;
    while Instant::now() < deadline && (latencies.len() as u64) < budget.max_ops {
        let t = Instant::now();
        conn.small(&inputs.small, &inputs.raw).await?;
        latencies.push(t.elapsed());
    }
    let mut sample = meter.finish(latencies.len() as u64);
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    sample.latency_us = Some((pct(0.50), pct(0.99)));
    conn.close().await;
    Ok(sample)
}

#[allow(clippy::too_many_arguments)]
async fn in_flight(
    system: System,
    port: u16,
    server_pid: u32,
    budget: Budget,
    inputs: Arc<Inputs>,
    conns: usize,
    per_conn: usize,
    // `Some(numbers)` for large calls.
    large: Option<bool>,
) -> Result<Sample, String> {
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(Conn::connect(system, port).await?);
    }
    // Warm up with the same shape, then measure.
    let mut sample = Sample::default();
    for (phase, dur) in [("warmup", budget.warmup), ("measure", budget.duration)] {
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + dur;
        let meter = Meter::start(server_pid);
        let mut tasks = Vec::with_capacity(conns * per_conn);
        for conn in &connections {
            for _ in 0..per_conn {
                let (conn, done, inputs) = (conn.clone(), done.clone(), inputs.clone());
                let max = budget.max_ops;
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline && done.load(Ordering::Relaxed) < max {
                        match large {
                            Some(numbers) => {
                                let (p, raw) = inputs.large(numbers);
                                conn.large(p, raw).await?;
                            }
                            None => conn.small(&inputs.small, &inputs.raw).await?,
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), String>(())
                }));
            }
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        if phase == "measure" {
            sample = meter.finish(done.load(Ordering::Relaxed));
        }
    }
    for c in connections {
        c.close().await;
    }
    Ok(sample)
}

async fn idle(system: System, port: u16, server_pid: u32, conns: usize) -> Result<Sample, String> {
    // One connection first, so the baseline includes whatever the first connection sets up.
    let first = Conn::connect(system, port).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proc_stats::rss_kib(server_pid).ok_or("no server RSS")?;
    let start = Instant::now();
    let mut open = Vec::with_capacity(conns);
    // TLS handshakes cost the server far more CPU: smaller batches keep each within the
    // client's connect timeout on two busy cores.
    let batch = if system == System::WebmeshTls { 25 } else { 200 };
    while open.len() < conns {
        let n = (conns - open.len()).min(batch);
        let batch = futures_util::future::join_all((0..n).map(|_| Conn::connect(system, port))).await;
        for c in batch {
            open.push(c?);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_stats::rss_kib(server_pid).ok_or("no server RSS")?;
    drop(open);
    drop(first);
    Ok(Sample {
        ops: conns as u64,
        secs,
        rss_kib_per_conn: Some(after.saturating_sub(before) as f64 / conns as f64),
        ..Sample::default()
    })
}
