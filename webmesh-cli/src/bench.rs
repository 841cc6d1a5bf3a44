//! `webmesh bench`: a bounded load generator with a latency histogram.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rmpv::Value;
use serde::de::IgnoredAny;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use webmesh::{CallError, Client};

use crate::conn::ConnectArgs;
use crate::output::{self, Failure};

const MAX_CONNS: usize = 10_000;
const MAX_IN_FLIGHT: usize = 10_000;
const MAX_DURATION: f64 = 3600.0;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) conn: ConnectArgs,
    /// The path to call.
    pub(crate) path: String,
    /// The request, as JSON; `-` reads stdin; nothing is null.
    #[arg(value_name = "JSON", allow_hyphen_values = true)]
    pub(crate) payload: Option<String>,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    pub(crate) conns: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 16)]
    pub(crate) in_flight: usize,
    /// Seconds to run (calls stop being started after it; the run always ends).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) duration: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What one calling task saw.
struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<Failure>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // 1 µs to 1 hour, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Bytes through the sockets, both ways.
#[derive(Default)]
struct Wire {
    sent: AtomicU64,
    received: AtomicU64,
}

pub(crate) async fn bench(args: &BenchArgs) -> Result<(), Failure> {
    if args.conns == 0 || args.conns > MAX_CONNS {
        return Err(Failure::bad_input(format!("--conns: from 1 to {MAX_CONNS}")));
    }
    if args.in_flight == 0 || args.in_flight > MAX_IN_FLIGHT {
        return Err(Failure::bad_input(format!(
            "--in-flight: from 1 to {MAX_IN_FLIGHT}"
        )));
    }
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION) {
        return Err(Failure::bad_input(format!(
            "--duration: more than 0, at most {MAX_DURATION} seconds"
        )));
    }
    let payload = Arc::new(crate::conn::read_json(args.payload.as_deref())?);
    let timeout = args.conn.timeout()?;
    let wire = Arc::new(Wire::default());
    let counted = args.conn.url.starts_with("ws://");
    let mut clients = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        clients.push(connect(&args.conn, counted.then(|| wire.clone())).await?);
    }

    let duration = Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let deadline = started + duration;
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in &clients {
        for _ in 0..args.in_flight {
            let (client, payload, calls) = (client.clone(), payload.clone(), calls.clone());
            let path = args.path.clone();
            tasks.spawn(async move { run(client, path, payload, timeout, deadline, calls).await });
        }
    }
    let progress = progress(args.duration, calls.clone());
    let mut tally = Tally::new();
    while let Some(t) = tasks.join_next().await {
        if let Ok(t) = t {
            tally.merge(t);
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    for c in &clients {
        c.close().await;
    }
    let wire = counted.then(|| {
        (
            wire.sent.load(Ordering::Relaxed),
            wire.received.load(Ordering::Relaxed),
        )
    });
    report(args, &tally, elapsed, wire);
    match tally.first_error {
        Some(first) if tally.ok == 0 => Err(first),
        _ => Ok(()),
    }
}

async fn connect(args: &ConnectArgs, wire: Option<Arc<Wire>>) -> Result<Client, Failure> {
    let Some(wire) = wire else {
        return args.connect().await;
    };
    let addr = authority(&args.url);
    let tcp = tokio::time::timeout(args.timeout()?, TcpStream::connect(&addr))
        .await
        .map_err(|_| Failure::new(output::Exit::Timeout, format!("connecting to {addr} timed out")))?
        .map_err(|e| Failure::new(output::Exit::Connection, format!("cannot connect to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream = Counted { inner: tcp, wire };
    Ok(args.builder()?.connect_stream(stream, &args.url).await?)
}

/// `host:port` of a ws:// URL (port 80 when it has none).
fn authority(url: &str) -> String {
    let rest = url.strip_prefix("ws://").unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:80")
    }
}

async fn run(
    client: Client,
    path: String,
    payload: Arc<Value>,
    timeout: Duration,
    deadline: Instant,
    calls: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        let result = client
            .call_path_as::<IgnoredAny, IgnoredAny>(&path, &*payload, Some(timeout))
            .await;
        calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                tally.latency_us.saturating_record(us);
                tally.ok += 1;
            }
            Err(e) => {
                let (kind, failure, fatal) = classify(e);
                *tally.errors.entry(kind).or_default() += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(failure);
                }
                if fatal {
                    // The connection is gone: every further call would fail at once.
                    break;
                }
            }
        }
    }
    tally
}

/// An error's kind (for the table), what it means, and whether the connection is gone.
fn classify(e: CallError<IgnoredAny>) -> (String, Failure, bool) {
    match e {
        CallError::Handler(_) => (
            "handler".into(),
            Failure::new(output::Exit::Handler, "the handler returned an error"),
            false,
        ),
        CallError::Rpc(e) => {
            let kind = match &e {
                webmesh::Error::Remote { code, .. } => code.clone(),
                webmesh::Error::CallTimeout { .. } => "timeout".into(),
                webmesh::Error::Closed { .. } => "closed".into(),
                webmesh::Error::Backpressure => "backpressure".into(),
                webmesh::Error::Codec(_) => "codec".into(),
                _ => "other".into(),
            };
            let fatal = matches!(e, webmesh::Error::Closed { .. });
            (kind, Failure::from(e), fatal)
        }
        _ => (
            "other".into(),
            Failure::new(output::Exit::Remote, "unknown error"),
            false,
        ),
    }
}

/// A progress bar on a terminal (nothing when stderr is not one), ticking every 100 ms.
fn progress(secs: f64, calls: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let total = (secs * 1000.0) as u64;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let elapsed = started.elapsed();
            let n = calls.load(Ordering::Relaxed);
            bar.set_position((elapsed.as_millis() as u64).min(total));
            bar.set_message(format!("{n} calls, {:.0}/s", n as f64 / elapsed.as_secs_f64()));
            if elapsed.as_millis() as u64 >= total {
                bar.finish_and_clear();
                return;
            }
        }
    })
}

fn report(args: &BenchArgs, t: &Tally, elapsed: Duration, wire: Option<(u64, u64)>) {
    let h = &t.latency_us;
    let failed: u64 = t.errors.values().sum();
    let total = t.ok + failed;
    let secs = elapsed.as_secs_f64();
    let rate = t.ok as f64 / secs;
    let q = |p: f64| if t.ok == 0 { 0 } else { h.value_at_quantile(p) };
    if args.json {
        let mut v = serde_json::json!({
            "url": args.conn.url,
            "path": args.path,
            "conns": args.conns,
            "in_flight": args.in_flight,
            "duration_s": secs,
            "calls": total,
            "ok": t.ok,
            "errors": t.errors,
            "calls_per_s": rate,
            "latency_us": {
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999),
                "max": if t.ok == 0 { 0 } else { h.max() },
                "mean": if t.ok == 0 { 0.0 } else { h.mean() },
            },
        });
        if let Some((sent, received)) = wire {
            v["bytes_sent"] = sent.into();
            v["bytes_received"] = received.into();
        }
        output::print_line(&v.to_string());
        return;
    }
    let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
    let mut out = vec![
        format!(
            "{} on {}: {} connection(s) × {} in flight, {secs:.1} s",
            args.path, args.conn.url, args.conns, args.in_flight
        ),
        format!("  calls     {} ok, {failed} failed ({rate:.1} calls/s)", t.ok),
        format!(
            "  latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(q(0.5)),
            ms(q(0.9)),
            ms(q(0.99)),
            ms(q(0.999)),
            ms(if t.ok == 0 { 0 } else { h.max() })
        ),
    ];
    if !t.errors.is_empty() {
        let kinds: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        out.push(format!("  errors    {}", kinds.join(", ")));
    }
    match wire {
        Some((sent, received)) => {
            let per = |b: u64| b.checked_div(total).unwrap_or(0);
            out.push(format!(
                "  wire      sent {sent} bytes ({} per call), received {received} bytes ({} per call)",
                per(sent),
                per(received)
            ));
        }
        None => out.push("  wire      not counted over TLS".into()),
    }
    for line in out {
        output::print_line(&line);
    }
}

/// A TCP stream that counts the bytes it carries.
struct Counted {
    inner: TcpStream,
    wire: Arc<Wire>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.wire.received.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.wire.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.wire.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn authorities_get_a_port() {
        assert_eq!(authority("ws://127.0.0.1:4269/x"), "127.0.0.1:4269");
        assert_eq!(authority("ws://localhost"), "localhost:80");
        assert_eq!(authority("ws://[::1]:9/"), "[::1]:9");
        assert_eq!(authority("ws://[::1]?a=b"), "[::1]:80");
    }
}
