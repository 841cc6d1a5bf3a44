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

/// The headline figure of a workload: calls/s, MiB/s, or KiB per connection.
fn headline(w: Workload, s: &Sample, large_bytes: usize) -> Option<f64> {
    match w {
        Workload::Sequential | Workload::InFlight { .. } => Some(s.rate()),
        Workload::Large { .. } => Some(s.rate() * large_bytes as f64 / (1024.0 * 1024.0)),
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
fn median_of(rows: &[Row], name_prefix: &str, w: Workload, large_bytes: usize) -> Option<f64> {
    let medians = rows
        .iter()
        .filter(|r| r.name.starts_with(name_prefix))
        .filter_map(|r| r.stat(|s| headline(w, s, large_bytes)).map(|(m, _, _)| m));
    if matches!(w, Workload::Idle { .. }) {
        medians.reduce(f64::min)
    } else {
        medians.reduce(f64::max)
    }
}

/// The peer RPC frameworks webmesh-rs is compared with.
const PEERS: [&str; 3] = ["jsonrpsee", "tarpc", "tonic"];

/// The best peer's median in `w` (the highest rate, or the least memory), and its name.
fn best_peer(rows: &[Row], w: Workload, large_bytes: usize) -> Option<(f64, &'static str)> {
    let idle = matches!(w, Workload::Idle { .. });
    PEERS
        .iter()
        .filter_map(|p| median_of(rows, p, w, large_bytes).map(|m| (m, *p)))
        .reduce(|a, b| if (b.0 > a.0) != idle { b } else { a })
}

pub(crate) fn table(w: Workload, rows: &[Row], large_bytes: usize, quick: bool) {
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
    let raw = median_of(rows, "raw", w, large_bytes);
    let best = best_peer(rows, w, large_bytes);
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
        let Some((m, lo, hi)) = r.stat(|s| headline(w, s, large_bytes)) else {
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

/// The targets, each marked met or missed from this run's medians.
pub(crate) fn targets(tables: &[(Workload, Vec<Row>)], large_bytes: usize) {
    println!();
    println!("## Targets (medians of this run)");
    println!();
    let get = |w: Workload, who: &str| {
        tables
            .iter()
            .find(|(tw, _)| *tw == w)
            .and_then(|(_, rows)| median_of(rows, who, w, large_bytes))
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
    let wm = "webmesh-rs (msgpack";
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
    let large = Workload::LARGE;
    check(
        "64 KiB: webmesh ÷ raw MiB/s".into(),
        ratio(get(large, wm), get(large, "raw")),
        0.5,
        true,
    );
    for (w, rows) in tables {
        let Some((best, name)) = best_peer(rows, *w, large_bytes) else {
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
    for w in [seq, large] {
        check(
            format!("{}: webmesh ÷ python 0.1.2", w.title()),
            ratio(get(w, wm), get(w, "python")),
            10.0,
            true,
        );
    }
}
