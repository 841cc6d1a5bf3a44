//! Benchmark harness: webmesh-rs next to its anchors, in one run, over loopback, with server and
//! client in separate processes.
//!
//! ```text
//! cargo run --release -p webmesh-bench               # the full suite (a few minutes)
//! cargo run --release -p webmesh-bench -- --quick    # tiny counts: checks the harness works
//! ```
//!
//! Options: `--runs N` (default 3), `--secs S` per run (default 1.5), `--idle N` idle connections
//! (default 10000), `--subscribers N` of the fan-out (default 1000), `--burst N` messages of its
//! throughput phase (default 1000), `--large logs|numbers` (only one of the two 64 KiB rows:
//! compressible log records, or pseudo-random numbers; both by default), `--no-python`,
//! `--workload seq|1x64|16x16|large|large-numbers|idle|fanout|cluster` (`large` takes both 64 KiB
//! rows) and
//! `--system raw|raw-split|webmesh|nodeflate|wss|json|legacy|jsonrpsee|tarpc|tonic` to run one cell, or
//! a comma-separated list of them (for profiling and A/B runs; the cluster rows:
//! `nats|local|forwarded|fanout-local|fanout-cross`).
//!
//! Systems: raw tokio-tungstenite binary echo (the transport limit), webmesh-rs with the default
//! codec through the generated stub (and, in the 64 KiB tables only, a labelled row of it with
//! compression off on both sides), webmesh-rs JSON, webmesh-rs in 0.1.2 legacy framing,
//! jsonrpsee (WebSocket server + `#[rpc(client)]` stub), tarpc (serde transport over TCP with
//! bincode, each request in its own task), tonic (gRPC, prost), and the Python webmesh 0.1.2
//! reference
//! (client and server in Python, sequential only) when `.venv` exists. Each run starts a fresh
//! server process, and the systems of a table take their runs in turn (run 1 of each, then run 2
//! of each, ...), so that a drift of the machine's speed moves a table's rows together. Every
//! loop is bounded by time and count. `docs/BENCHMARKS.md` has results and what bounds them.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod clients;
mod cluster;
mod fanout;
mod grpc;
mod load;
mod payload;
mod proc_stats;
mod report;
mod servers;
mod tls;
mod workloads;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clients::{RawPayloads, System};
use workloads::{Budget, Inputs, Sample, Workload};

struct Options {
    quick: bool,
    workload: Option<String>,
    system: Option<String>,
    runs: usize,
    secs: f64,
    idle: usize,
    fanout_subscribers: usize,
    fanout_burst: u64,
    /// `--large`: only the logs (`Some(false)`) or numbers (`Some(true)`) large row; both
    /// by default.
    large: Option<bool>,
    python: bool,
}

impl Options {
    /// Whether `--system` (a comma-separated list) names `system`, or is absent.
    fn wants(&self, system: &str) -> bool {
        self.system
            .as_ref()
            .is_none_or(|list| list.split(',').any(|s| s == system))
    }
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        workload: None,
        system: None,
        runs: 3,
        secs: 1.5,
        idle: 10_000,
        fanout_subscribers: 1000,
        fanout_burst: 1000,
        large: None,
        python: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--runs" => o.runs = value("--runs")?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--secs" => o.secs = value("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--idle" => o.idle = value("--idle")?.parse().map_err(|e| format!("--idle: {e}"))?,
            "--subscribers" => {
                o.fanout_subscribers = value("--subscribers")?
                    .parse()
                    .map_err(|e| format!("--subscribers: {e}"))?;
            }
            "--burst" => {
                o.fanout_burst = value("--burst")?.parse().map_err(|e| format!("--burst: {e}"))?;
            }
            "--large" => {
                o.large = match value("--large")?.as_str() {
                    "logs" => Some(false),
                    "numbers" => Some(true),
                    other => return Err(format!("--large: logs or numbers, not {other:?}")),
                };
            }
            "--no-python" => o.python = false,
            "--workload" => o.workload = Some(value("--workload")?),
            "--system" => o.system = Some(value("--system")?),
            // `cargo bench` passes this.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.quick {
        o.runs = 1;
        o.secs = 0.05;
        o.idle = 20;
        o.python = false;
    }
    o.runs = o.runs.max(1);
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("load") {
        std::process::exit(load_main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("serve") {
        if let Err(e) = servers::serve(args.get(2).map_or("", String::as_str)) {
            eprintln!("serve: {e}");
            std::process::exit(1);
        }
        return;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    proc_stats::raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(orchestrate(&opts)) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// `webmesh-bench load [--conns N] [--calls N]`: the load test; exit code 1 if any call was lost
/// or mismatched.
fn load_main(args: &[String]) -> i32 {
    let mut conns = 1000;
    let mut calls = 1000;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--conns", Some(n)) => conns = n,
            ("--calls", Some(n)) => calls = n,
            _ => {
                eprintln!("usage: webmesh-bench load [--conns N] [--calls N]");
                return 2;
            }
        }
    }
    proc_stats::raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return 1;
        }
    };
    let report = rt.block_on(async {
        let server = rust_server("webmesh")?;
        load::run(server.port, server.pid(), conns, calls).await
    });
    match report {
        Ok(r) => {
            r.print();
            i32::from(r.lost > 0 || r.mismatched > 0)
        }
        Err(e) => {
            eprintln!("load test failed: {e}");
            1
        }
    }
}

/// A server child process; stops when dropped (its stdin closes).
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(mut cmd: Command) -> Result<ServerProcess, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn server: {e}"))?;
        let mut line = String::new();
        let out = child.stdout.as_mut().ok_or("no server stdout")?;
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("server said {line:?}"))?;
        Ok(ServerProcess { child, port })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rust_server(kind: &str) -> Result<ServerProcess, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg(kind);
    if kind == "webmesh-tls" {
        tls::pass_to(&mut cmd);
    }
    ServerProcess::start(cmd)
}

async fn orchestrate(o: &Options) -> Result<(), String> {
    let small = payload::small();
    let (logs, numbers) = (payload::large(false), payload::large(true));
    let encoded = |v: &payload::Large| rmp_serde::to_vec_named(v).map_err(|e| e.to_string());
    let raw = RawPayloads {
        small: rmp_serde::to_vec_named(&small).map_err(|e| e.to_string())?.into(),
        logs: encoded(&logs)?.into(),
        numbers: encoded(&numbers)?.into(),
    };
    let large_sizes = report::LargeSizes {
        logs: raw.logs.len(),
        numbers: raw.numbers.len(),
    };
    let inputs = Arc::new(Inputs {
        small,
        logs,
        numbers,
        raw,
    });
    let budget = Budget {
        duration: Duration::from_secs_f64(o.secs),
        max_ops: if o.quick { 200 } else { 50_000_000 },
        warmup: Duration::from_secs_f64((o.secs / 5.0).min(0.3)),
    };
    let workloads = [
        Workload::Sequential,
        Workload::ONE_BY_64,
        Workload::SIXTEEN_BY_16,
        Workload::LARGE,
        Workload::LARGE_NUMBERS,
        Workload::Idle { conns: o.idle },
    ];
    println!("# webmesh-rs benchmark");
    println!();
    println!(
        "{} run(s) per cell, {:.1} s each, the systems of a table taking their runs in turn, fresh server process per run; server and client on 127.0.0.1, separate processes; {} cores.",
        o.runs,
        o.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "Small payload: {{id: u64, name: 16 chars, values: 8 × u32}} ({} bytes of msgpack). Large payloads: {} ({} bytes of msgpack); {} ({} bytes).",
        inputs.raw.small.len(),
        inputs.logs.describe(),
        large_sizes.logs,
        inputs.numbers.describe(),
        large_sizes.numbers,
    );
    let mut tables = Vec::new();
    for w in workloads {
        if o.workload.as_ref().is_some_and(|f| !w.key().contains(f.as_str())) {
            continue;
        }
        if let (Workload::Large { numbers, .. }, Some(only)) = (w, o.large) {
            if numbers != only {
                continue;
            }
        }
        // The deflate-off row belongs to the 64 KiB tables, where deflate runs.
        let systems: Vec<System> = System::ALL
            .into_iter()
            .filter(|s| o.wants(s.key()))
            .filter(|s| *s != System::WebmeshNoDeflate || matches!(w, Workload::Large { .. }))
            .collect();
        // Run k of every system, then run k + 1 of every system: each row's runs spread over the
        // same minutes, so a machine that speeds up or slows down for a while moves all the rows
        // of a table together instead of the ratios between them.
        let mut samples: Vec<Vec<workloads::Sample>> = systems.iter().map(|_| Vec::new()).collect();
        for _ in 0..o.runs {
            for (system, samples) in systems.iter().zip(&mut samples) {
                let system = *system;
                let server = rust_server(system.server_kind())?;
                let mut s = workloads::run(w, system, server.port, server.pid(), budget, inputs.clone())
                    .await
                    .map_err(|e| format!("{} / {}: {e}", w.title(), system.name()))?;
                s.wire_per_op = match w {
                    Workload::Idle { .. } => None,
                    Workload::Large { numbers, .. } => {
                        let (p, raw) = inputs.large(numbers);
                        Some(clients::wire_bytes(system, p, raw) as f64)
                    }
                    _ => Some(clients::wire_bytes(system, &inputs.small, &inputs.raw.small) as f64),
                };
                samples.push(s);
            }
        }
        let rows: Vec<report::Row> = systems
            .iter()
            .zip(samples)
            .map(|(system, samples)| report::Row::new(system.name(), samples))
            .collect();
        tables.push((w, rows));
    }
    let fanout_wanted = o.workload.as_ref().is_none_or(|f| "fanout".contains(f.as_str()));
    let mut fanout_rows = Vec::new();
    let sizes = if o.quick {
        fanout::Sizes {
            subscribers: 20,
            paced: 10,
            every: Duration::from_millis(2),
            burst: 50,
        }
    } else {
        fanout::Sizes {
            subscribers: o.fanout_subscribers,
            paced: 200,
            every: Duration::from_millis(5),
            burst: o.fanout_burst,
        }
    };
    for system in fanout::Fanout::ALL {
        let wanted = o.wants(system.short());
        if !fanout_wanted || !wanted {
            continue;
        }
        let mut samples = Vec::new();
        for _ in 0..o.runs {
            samples.push(
                fanout::run(system, sizes)
                    .await
                    .map_err(|e| format!("fan-out / {}: {e}", system.name()))?,
            );
        }
        fanout_rows.push((system, samples));
    }
    let cluster_wanted = o.workload.as_ref().is_none_or(|f| "cluster".contains(f.as_str()));
    let cluster_sizes = if o.quick {
        cluster::Sizes {
            secs: 0.05,
            in_flight: 8,
            subscribers: 5,
            burst: 20,
        }
    } else {
        cluster::Sizes {
            secs: o.secs,
            in_flight: 64,
            subscribers: 200,
            burst: 500,
        }
    };
    // The runs interleave (anchor, local, forwarded, … then again), so that a drift of the
    // machine's speed during the run moves every row alike and not the ratios.
    let mut cluster_rows: Vec<(cluster::System, Vec<cluster::Sample>)> = cluster::System::ALL
        .into_iter()
        .filter(|s| cluster_wanted && o.wants(s.short()))
        .map(|s| (s, Vec::new()))
        .collect();
    for _ in 0..o.runs {
        for (system, samples) in &mut cluster_rows {
            samples.push(
                cluster::run(*system, cluster_sizes)
                    .await
                    .map_err(|e| format!("cluster / {}: {e}", system.name()))?,
            );
        }
    }
    if o.python {
        match python_reference(o, &inputs) {
            Ok(py) => {
                for (w, rows) in &mut tables {
                    if let Some(samples) = py.iter().find(|(pw, _)| pw == w).map(|(_, s)| s.clone()) {
                        rows.push(report::Row::new("python webmesh 0.1.2", samples));
                    }
                }
            }
            Err(e) => eprintln!("(python reference skipped: {e})"),
        }
    }
    for (w, rows) in &tables {
        report::table(*w, rows, large_sizes, o.quick);
    }
    if !fanout_rows.is_empty() {
        fanout::report(sizes, &fanout_rows, o.quick);
    }
    if !cluster_rows.is_empty() {
        cluster::report(cluster_sizes, &cluster_rows, o.quick);
    }
    if !o.quick {
        report::targets(&tables, large_sizes);
    }
    Ok(())
}

fn python_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEBMESH_PYTHON") {
        return Some(p.into());
    }
    let p = repo_root().join(".venv/bin/python");
    p.exists().then_some(p)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Python client against Python server, sequential small and large, `runs` times.
fn python_reference(o: &Options, inputs: &Inputs) -> Result<Vec<(Workload, Vec<Sample>)>, String> {
    let py = python_bin().ok_or("no .venv (run scripts/python-env.sh)")?;
    let dir = std::env::temp_dir().join(format!("webmesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let data = dir.join("payloads.json");
    // The Python reference runs one large payload: the logs, unless `--large numbers`.
    let numbers = o.large == Some(true);
    let json = serde_json::json!({"small": inputs.small, "large": inputs.large(numbers).0});
    std::fs::write(&data, serde_json::to_vec(&json).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let pydir = repo_root().join("tests/python");
    let mut seq = Vec::new();
    let mut big = Vec::new();
    for _ in 0..o.runs {
        let mut cmd = Command::new(&py);
        cmd.arg(pydir.join("serve.py")).arg("msgpack").current_dir(&pydir);
        let server = ServerProcess::start(cmd)?;
        let server_cpu = proc_stats::cpu_us(server.pid()).unwrap_or(0);
        let mut client = Command::new(&py)
            .arg(pydir.join("bench_client.py"))
            .arg(server.port.to_string())
            .arg(&data)
            .arg(o.secs.to_string())
            .current_dir(&pydir)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let client_pid = client.id();
        let mut lines = Vec::new();
        let mut client_cpu = 0;
        if let Some(out) = client.stdout.take() {
            for line in BufReader::new(out).lines() {
                let line = line.map_err(|e| e.to_string())?;
                client_cpu = proc_stats::cpu_us(client_pid).unwrap_or(client_cpu);
                lines.push(line);
            }
        }
        let status = client.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("python bench client failed: {status}"));
        }
        let cpu_total = client_cpu
            + proc_stats::cpu_us(server.pid())
                .unwrap_or(0)
                .saturating_sub(server_cpu);
        let parsed: Vec<Sample> = lines
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(Sample {
                    ops: f.get(1)?.parse().ok()?,
                    secs: f.get(2)?.parse().ok()?,
                    latency_us: Some((f.get(3)?.parse().ok()?, f.get(4)?.parse().ok()?)),
                    ..Sample::default()
                })
            })
            .collect();
        let [s, l] = parsed.as_slice() else {
            return Err(format!("python bench client said {lines:?}"));
        };
        let total_ops = (s.ops + l.ops).max(1);
        // CPU is only known for both payloads together: split it by time.
        let share = |x: &Sample| {
            let t = s.secs + l.secs;
            (t > 0.0).then(|| cpu_total as f64 * (x.secs / t) / x.ops.max(1) as f64)
        };
        let _ = total_ops;
        seq.push(Sample {
            cpu_us_per_op: share(s),
            ..s.clone()
        });
        big.push(Sample {
            cpu_us_per_op: share(l),
            latency_us: None,
            ..l.clone()
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let large = if numbers {
        Workload::LARGE_NUMBERS
    } else {
        Workload::LARGE
    };
    Ok(vec![(Workload::Sequential, seq), (large, big)])
}
