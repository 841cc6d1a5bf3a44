//! The tables: absolute figures, ratios to the raw echo and to the best peer RPC framework
//! (jsonrpsee, tarpc, tonic), and the targets.

use crate::workloads::{Sample, Workload};

/// One system's runs of one workload.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) samples: Vec<Sample>,
}

impl Row {
    pub(crate) fn new(name: &'static str, samples: Vec<Sample>) -> Row {
        Row { name, samples }
    }

    /// Median, min and max of `f` over the runs.
    fn stat(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.samples.iter().filter_map(f).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some((v[v.len() / 2], v[0], v[v.len() - 1]))
    }
}

/// The msgpack sizes of the two large payloads (the MiB/s figures count them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LargeSizes {
    pub(crate) logs: usize,
    pub(crate) numbers: usize,
}

/// The headline figure of a workload: calls/s, MiB/s, or KiB per connection.
fn headline(w: Workload, s: &Sample, sizes: LargeSizes) -> Option<f64> {
    match w {
        Workload::Sequential | Workload::InFlight { .. } => Some(s.rate()),
        Workload::Large { numbers, .. } => {
            let bytes = if numbers { sizes.numbers } else { sizes.logs };
            Some(s.rate() * bytes as f64 / (1024.0 * 1024.0))
        }
        Workload::Idle { .. } => s.rss_kib_per_conn,
    }
}

fn unit(w: Workload) -> &'static str {
    match w {
        Workload::Sequential | Workload::InFlight { .. } => "calls/s",
        Workload::Large { .. } => "MiB/s each way",
        Workload::Idle { .. } => "KiB/conn",
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{:.0}", x)
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The median of the row whose name starts with `name_prefix`; for "raw", the better of the raw
/// echoes (the transport limit is the best transport we could write).
fn median_of(rows: &[Row], name_prefix: &str, w: Workload, sizes: LargeSizes) -> Option<f64> {
    let medians = rows
        .iter()
        .filter(|r| r.name.starts_with(name_prefix))
        .filter_map(|r| r.stat(|s| headline(w, s, sizes)).map(|(m, _, _)| m));
    if matches!(w, Workload::Idle { .. }) {
        medians.reduce(f64::min)
    } else {
        medians.reduce(f64::max)
    }
}

/// The peer RPC frameworks webmesh-rs is compared with.
const PEERS: [&str; 3] = ["jsonrpsee", "tarpc", "tonic"];

/// The best peer's median in `w` (the highest rate, or the least memory), and its name.
fn best_peer(rows: &[Row], w: Workload, sizes: LargeSizes) -> Option<(f64, &'static str)> {
    let idle = matches!(w, Workload::Idle { .. });
    PEERS
        .iter()
        .filter_map(|p| median_of(rows, p, w, sizes).map(|m| (m, *p)))
        .reduce(|a, b| if (b.0 > a.0) != idle { b } else { a })
}

pub(crate) fn table(w: Workload, rows: &[Row], sizes: LargeSizes, quick: bool) {
    println!();
    println!("## {}", w.title());
    println!();
    if quick {
        for r in rows {
            let n: u64 = r.samples.iter().map(|s| s.ops).sum();
            println!("- {}: {n} ops (quick mode: figures not meaningful)", r.name);
        }
        return;
    }
    let raw = median_of(rows, "raw", w, sizes);
    let best = best_peer(rows, w, sizes);
    let rpc = best.map(|(m, _)| m);
    let idle = matches!(w, Workload::Idle { .. });
    if let Some((_, name)) = best {
        println!("Best peer here: {name}.");
        println!();
    }
    println!(
        "| system | {} median | min–max | ÷ raw | ÷ best peer | p50 µs | p99 µs | CPU µs/call | wire B/call |",
        unit(w)
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let Some((m, lo, hi)) = r.stat(|s| headline(w, s, sizes)) else {
            continue;
        };
        let ratio = |base: Option<f64>| match base {
            Some(b) if b > 0.0 && !idle => format!("{:.2}", m / b),
            Some(b) if b > 0.0 => format!("{:.2}", m / b),
            _ => "-".into(),
        };
        let lat = r.stat(|s| s.latency_us.map(|l| l.0)).map(|x| fmt(x.0));
        let p99 = r.stat(|s| s.latency_us.map(|l| l.1)).map(|x| fmt(x.0));
        let cpu = r.stat(|s| s.cpu_us_per_op).map(|x| fmt(x.0));
        let wire = r.stat(|s| s.wire_per_op).map(|x| format!("{:.0}", x.0));
        println!(
            "| {} | {} | {}–{} | {} | {} | {} | {} | {} | {} |",
            r.name,
            fmt(m),
            fmt(lo),
            fmt(hi),
            ratio(raw),
            ratio(rpc),
            lat.unwrap_or_else(|| "-".into()),
            p99.unwrap_or_else(|| "-".into()),
            cpu.unwrap_or_else(|| "-".into()),
            wire.unwrap_or_else(|| "-".into()),
        );
    }
}

/// The row the targets judge webmesh-rs by: its defaults, over plain WebSocket.
const WM: &str = "webmesh-rs (msgpack, v1)";

/// The targets, each marked met or missed from this run's medians.
pub(crate) fn targets(tables: &[(Workload, Vec<Row>)], sizes: LargeSizes) {
    println!();
    println!("## Targets (medians of this run)");
    println!();
    // The best of the rows whose name starts with `who` (the strongest raw echo, the best
    // configuration of a peer); webmesh-rs is judged by its default row alone (`WM`), never
    // by the best of it and its TLS row.
    let get = |w: Workload, who: &str| {
        tables.iter().find(|(tw, _)| *tw == w).and_then(|(_, rows)| {
            if who == WM {
                let row = rows.iter().find(|r| r.name == WM)?;
                row.stat(|s| headline(w, s, sizes)).map(|(m, _, _)| m)
            } else {
                median_of(rows, who, w, sizes)
            }
        })
    };
    let check = |what: String, value: Option<f64>, goal: f64, at_least: bool| {
        let status = match value {
            Some(v) if (at_least && v >= goal) || (!at_least && v <= goal) => "met",
            Some(_) => "MISSED",
            None => "n/a",
        };
        let shown = value.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
        println!(
            "- {what}: {shown} ({} {goal}) **{status}**",
            if at_least { "≥" } else { "≤" }
        );
    };
    let wm = WM;
    let seq = Workload::Sequential;
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    check(
        "sequential: webmesh ÷ raw calls/s".into(),
        ratio(get(seq, wm), get(seq, "raw")),
        0.9,
        true,
    );
    for w in [Workload::ONE_BY_64, Workload::SIXTEEN_BY_16] {
        check(
            format!("{}: webmesh ÷ raw", w.title()),
            ratio(get(w, wm), get(w, "raw")),
            0.55,
            true,
        );
    }
    let numbers = Workload::LARGE_NUMBERS;
    check(
        "64 KiB numbers (the issue's payload): webmesh ÷ raw MiB/s".into(),
        ratio(get(numbers, wm), get(numbers, "raw")),
        0.5,
        true,
    );
    // The compressible payload travels compressed: fewer bytes than every peer's.
    let large = Workload::LARGE;
    let wire = |who: &str| {
        tables
            .iter()
            .find(|(tw, _)| *tw == large)
            .and_then(|(_, rows)| {
                rows.iter().find(|r| {
                    if who == WM {
                        r.name == WM
                    } else {
                        r.name.starts_with(who)
                    }
                })
            })
            .and_then(|r| r.stat(|s| s.wire_per_op))
            .map(|(m, _, _)| m)
    };
    let fewest_peer = PEERS.iter().filter_map(|p| wire(p)).reduce(f64::min);
    check(
        "64 KiB logs: webmesh wire bytes per call ÷ the fewest of the peers'".into(),
        ratio(wire(wm), fewest_peer),
        1.0,
        false,
    );
    for (w, rows) in tables {
        let Some((best, name)) = best_peer(rows, *w, sizes) else {
            continue;
        };
        if matches!(w, Workload::Idle { .. }) {
            // Memory: at most the best peer's ÷ 1.2.
            check(
                format!("{}: best peer ({name}) ÷ webmesh KiB", w.title()),
                ratio(Some(best), get(*w, wm)),
                1.2,
                true,
            );
        } else {
            check(
                format!("{}: webmesh ÷ best peer ({name})", w.title()),
                ratio(get(*w, wm), Some(best)),
                1.2,
                true,
            );
        }
    }
    let idle = tables
        .iter()
        .find(|(w, _)| matches!(w, Workload::Idle { .. }))
        .map(|(w, _)| *w);
    if let Some(idle) = idle {
        check(
            "idle: webmesh server KiB per connection".into(),
            get(idle, wm),
            4.0,
            false,
        );
    }
    for w in [seq, large, numbers] {
        if tables
            .iter()
            .all(|(tw, rows)| *tw != w || !rows.iter().any(|r| r.name.starts_with("python")))
        {
            continue;
        }
        check(
            format!("{}: webmesh ÷ python 0.1.2", w.title()),
            ratio(get(w, wm), get(w, "python")),
            10.0,
            true,
        );
    }
}
