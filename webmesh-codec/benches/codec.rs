//! Codec micro-benchmark: one envelope encoded and decoded, per message, single thread.
//!
//! ```text
//! cargo bench -p webmesh-codec --bench codec
//! ```
//!
//! Runs every system side by side in one run and prints ns per message (median of 5 runs, with
//! min-max), wire bytes, and ratios to plain rmp-serde of the same envelope. The Python reference
//! (webmesh 0.1.2's own serializer, C zlib + hex) is timed in the same run when the interop venv
//! exists (`scripts/python-env.sh`, or `WEBMESH_PYTHON=/path/to/python`).
//!
//! Under `cargo test` (no `--bench` argument) it runs each case a few times only, so the harness
//! is built and exercised by the one test command; its timings then mean nothing.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use webmesh_codec::{
    decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Limits, WireMessage,
};

/// The small payload: about 60 bytes of msgpack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Small {
    id: u64,
    name: String,
    values: Vec<u32>,
}

/// One record of the large payload: a structured log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LogLine {
    id: u64,
    ts: u64,
    level: String,
    service: String,
    message: String,
    latency_ms: f64,
    tags: Vec<String>,
}

fn small() -> Small {
    Small {
        id: 123_456_789,
        name: "sixteen-chars-xx".into(),
        values: vec![1, 20, 300, 4_000, 50_000, 600_000, 7_000_000, 80_000_000],
    }
}

/// About 64 KiB of msgpack: log lines with repeating services, levels and message shapes.
fn large() -> Vec<LogLine> {
    let services = ["api-gateway", "billing", "auth", "search", "inventory"];
    let levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"];
    let mut out = Vec::new();
    let mut size = 0;
    let mut i: u64 = 0;
    while size < 64 * 1024 {
        let line = LogLine {
            id: i,
            ts: 1_764_000_000_000 + i * 137,
            level: levels[(i % 6) as usize].into(),
            service: services[(i % 5) as usize].into(),
            message: format!(
                "request {} handled in {} ms for user {}",
                i * 7919 % 100_000,
                i % 250,
                i % 1000
            ),
            latency_ms: (i % 250) as f64 + 0.25,
            tags: vec![format!("region-{}", i % 4), "v2".into()],
        };
        size += rmp_serde::to_vec_named(&line).map(|v| v.len()).unwrap_or(0);
        out.push(line);
        i += 1;
    }
    out
}

/// 64 KiB of numbers that barely compress: 13,098 pseudo-random `u32` values (as in
/// `webmesh-bench --large numbers`), where the time is the codec's per-value work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Numbers {
    values: Vec<u32>,
}

fn numbers() -> Numbers {
    let mut x: u32 = 0x9e37_79b9;
    let values = (0..13_098)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect();
    Numbers { values }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    id: u64,
    path: String,
    data: T,
}

type Case<'a> = Box<dyn FnMut() -> usize + 'a>;

fn v1_case<'a, T>(codec: AnyCodec, compression: Compression, value: &'a T) -> Case<'a>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let enc = FrameEncoder::new(Framing::V1, codec.clone(), compression);
    let limits = Limits::default();
    Box::new(move || {
        let WireMessage::Binary(bytes) = enc.call(7, "/bench", black_box(value)).unwrap() else {
            unreachable!()
        };
        let n = bytes.len();
        let frame = decode_frame(Framing::V1, &codec, &limits, FrameType::Binary, bytes.into()).unwrap();
        let back: T = frame.decode().unwrap();
        debug_assert!(back == *value);
        black_box(back);
        n
    })
}

fn legacy_case<'a, T>(codec: AnyCodec, value: &'a T) -> Case<'a>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let enc = FrameEncoder::new(Framing::Legacy, codec.clone(), Compression::default());
    let limits = Limits::default();
    Box::new(move || {
        let WireMessage::Text(text) = enc.call(0, "/bench", black_box(value)).unwrap() else {
            unreachable!()
        };
        let n = text.len();
        let frame = decode_frame(Framing::Legacy, &codec, &limits, FrameType::Text, text.into()).unwrap();
        let back: T = frame.decode().unwrap();
        black_box(back);
        n
    })
}

/// The anchor: rmp-serde alone on the same envelope (structs as maps, as the codec writes them).
fn rmp_case<'a, T>(value: &'a T) -> Case<'a>
where
    T: Serialize + serde::de::DeserializeOwned + Clone,
{
    Box::new(move || {
        let env = Envelope {
            id: 7,
            path: "/bench".to_owned(),
            data: black_box(value),
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        let back: Envelope<T> = rmp_serde::from_slice(&bytes).unwrap();
        black_box(back);
        bytes.len()
    })
}

/// The other anchor: rmp-serde under zlib level 6 with a fresh flate2 state per message.
fn fresh_zlib_case<'a, T>(value: &'a T) -> Case<'a>
where
    T: Serialize + serde::de::DeserializeOwned + Clone,
{
    Box::new(move || {
        let env = Envelope {
            id: 7,
            path: "/bench".to_owned(),
            data: black_box(value),
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
        z.write_all(&bytes).unwrap();
        let zipped = z.finish().unwrap();
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&zipped[..])
            .read_to_end(&mut plain)
            .unwrap();
        let back: Envelope<T> = rmp_serde::from_slice(&plain).unwrap();
        black_box(back);
        zipped.len()
    })
}

/// The naive default: flate2's default backend (miniz_oxide), level 6, fresh state per message.
fn fresh_miniz_case<'a, T>(value: &'a T) -> Case<'a>
where
    T: Serialize + serde::de::DeserializeOwned + Clone,
{
    Box::new(move || {
        let env = Envelope {
            id: 7,
            path: "/bench".to_owned(),
            data: black_box(value),
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        let zipped = miniz_oxide::deflate::compress_to_vec_zlib(&bytes, 6);
        let plain = miniz_oxide::inflate::decompress_to_vec_zlib(&zipped).unwrap();
        let back: Envelope<T> = rmp_serde::from_slice(&plain).unwrap();
        black_box(back);
        zipped.len()
    })
}

struct Measured {
    name: String,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    wire: usize,
}

fn measure(name: &str, mut case: Case<'_>, quick: bool) -> Measured {
    let wire = case();
    if quick {
        for _ in 0..3 {
            case();
        }
        return Measured {
            name: name.into(),
            median_ns: 0.0,
            min_ns: 0.0,
            max_ns: 0.0,
            wire,
        };
    }
    // Calibrate to ~150 ms a run.
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            case();
        }
        if t.elapsed() > Duration::from_millis(50) {
            break;
        }
        iters *= 2;
    }
    iters *= 3;
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                case();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    Measured {
        name: name.into(),
        median_ns: runs[2],
        min_ns: runs[0],
        max_ns: runs[4],
        wire,
    }
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEBMESH_PYTHON") {
        return Some(p.into());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    p.exists().then_some(p)
}

const PY_BENCH: &str = r#"
import json, sys, time
from webmesh.message_serializers import MessagePackSerializer, StandardJsonSerializer
from webmesh.message_protocols import SimpleDictProtocol
proto = SimpleDictProtocol()
data = json.load(open(sys.argv[1]))
for label, ser in (("msgpack+zlib", MessagePackSerializer()), ("json", StandardJsonSerializer())):
    for size in ("small", "large"):
        value = data[size]
        def once():
            text = ser.serialize(proto.pack("/bench", value))
            proto.unpack(ser.deserialize(text))
            return len(text)
        wire = once()
        n = 1
        while True:
            t = time.perf_counter()
            for _ in range(n): once()
            if time.perf_counter() - t > 0.05: break
            n *= 2
        n *= 3
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n): once()
            runs.append((time.perf_counter() - t) / n * 1e9)
        runs.sort()
        print(f"{label} {size} {runs[2]} {runs[0]} {runs[4]} {wire}")
"#;

fn python_cases(small: &Small, large: &[LogLine]) -> Vec<(String, Measured)> {
    let Some(py) = python() else {
        eprintln!("(python reference skipped: no .venv; run scripts/python-env.sh)");
        return Vec::new();
    };
    let dir = std::env::temp_dir().join(format!("webmesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("payloads.json");
    std::fs::write(
        &data,
        serde_json::to_vec(&serde_json::json!({"small": small, "large": large})).unwrap(),
    )
    .unwrap();
    let out = Command::new(py).arg("-c").arg(PY_BENCH).arg(&data).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("python reference failed: {}", String::from_utf8_lossy(&o.stderr));
            return Vec::new();
        }
        Err(e) => {
            eprintln!("python reference failed: {e}");
            return Vec::new();
        }
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| f.get(i)?.parse::<f64>().ok();
            Some((
                f.get(1)?.to_string(),
                Measured {
                    name: format!("python 0.1.2 {}", f.first()?),
                    median_ns: num(2)?,
                    min_ns: num(3)?,
                    max_ns: num(4)?,
                    wire: num(5)? as usize,
                },
            ))
        })
        .collect()
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let small = small();
    let large = large();
    let numbers = numbers();
    let py = if quick {
        Vec::new()
    } else {
        python_cases(&small, &large)
    };

    for (label, size_name) in [
        ("small (~60 B payload)", "small"),
        ("64 KiB compressible", "large"),
        ("64 KiB pseudo-random numbers", "numbers"),
    ] {
        let cases: Vec<(&str, Case<'_>)> = if size_name == "numbers" {
            vec![
                ("rmp-serde envelope (anchor)", rmp_case(&numbers)),
                (
                    "zlib-6 fresh state, miniz_oxide (anchor)",
                    fresh_miniz_case(&numbers),
                ),
                ("zlib-6 fresh state, zlib-rs (anchor)", fresh_zlib_case(&numbers)),
                (
                    "v1 msgpack, default compression",
                    v1_case(AnyCodec::MSGPACK, Compression::default(), &numbers),
                ),
                (
                    "v1 msgpack, no compression",
                    v1_case(AnyCodec::MSGPACK, Compression::none(), &numbers),
                ),
            ]
        } else if size_name == "small" {
            vec![
                ("rmp-serde envelope (anchor)", rmp_case(&small)),
                (
                    "zlib-6 fresh state, miniz_oxide (anchor)",
                    fresh_miniz_case(&small),
                ),
                ("zlib-6 fresh state, zlib-rs (anchor)", fresh_zlib_case(&small)),
                (
                    "v1 msgpack, default compression",
                    v1_case(AnyCodec::MSGPACK, Compression::default(), &small),
                ),
                (
                    "v1 msgpack, always zlib-1",
                    v1_case(AnyCodec::MSGPACK, Compression::default().min_size(0), &small),
                ),
                ("legacy msgpack+zlib+hex", legacy_case(AnyCodec::MSGPACK, &small)),
                ("v1 json", v1_case(AnyCodec::JSON, Compression::default(), &small)),
                ("legacy json", legacy_case(AnyCodec::JSON, &small)),
            ]
        } else {
            vec![
                ("rmp-serde envelope (anchor)", rmp_case(&large)),
                (
                    "zlib-6 fresh state, miniz_oxide (anchor)",
                    fresh_miniz_case(&large),
                ),
                ("zlib-6 fresh state, zlib-rs (anchor)", fresh_zlib_case(&large)),
                (
                    "v1 msgpack, default compression",
                    v1_case(AnyCodec::MSGPACK, Compression::default(), &large),
                ),
                (
                    "v1 msgpack, no compression",
                    v1_case(AnyCodec::MSGPACK, Compression::none(), &large),
                ),
                ("legacy msgpack+zlib+hex", legacy_case(AnyCodec::MSGPACK, &large)),
                ("v1 json", v1_case(AnyCodec::JSON, Compression::default(), &large)),
                ("legacy json", legacy_case(AnyCodec::JSON, &large)),
            ]
        };
        let mut rows: Vec<Measured> = cases.into_iter().map(|(n, c)| measure(n, c, quick)).collect();
        rows.extend(py.iter().filter(|(s, _)| s == size_name).map(|(_, m)| Measured {
            name: m.name.clone(),
            median_ns: m.median_ns,
            min_ns: m.min_ns,
            max_ns: m.max_ns,
            wire: m.wire,
        }));
        if quick {
            println!("{label}: {} cases ran (quick mode, no timings)", rows.len());
            continue;
        }
        let anchor = rows[0].median_ns;
        let fresh = rows[1].median_ns;
        let fresh_rs = rows[2].median_ns;
        let python = rows
            .iter()
            .find(|r| r.name == "python 0.1.2 msgpack+zlib")
            .map(|r| r.median_ns);
        println!("\n## {label}: encode + decode of one envelope\n");
        println!(
            "| system | median | min-max | wire bytes | × rmp-serde time | fresh zlib-6 (miniz / zlib-rs) ÷ this | python ÷ this |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {}-{} | {} | {:.2} | {:.2} / {:.2} | {} |",
                r.name,
                fmt_ns(r.median_ns),
                fmt_ns(r.min_ns),
                fmt_ns(r.max_ns),
                r.wire,
                r.median_ns / anchor,
                fresh / r.median_ns,
                fresh_rs / r.median_ns,
                python.map_or_else(|| "-".into(), |p| format!("{:.2}", p / r.median_ns)),
            );
        }
    }
}
