//! Issue 11: would a faster compressor negotiated between Rust peers pay for itself on the
//! 64 KiB payloads of `webmesh-bench`? Compresses and decompresses each payload (msgpack with
//! named fields, as webmesh-rs sends a struct) with zlib-rs level 1 (what webmesh-rs sends
//! today), lz4 (`lz4_flex`) and zstd levels 1 and -1, and prints µs per operation and the size.
//! One thread; best of 5 rounds of 200 operations each.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

#[derive(Serialize)]
struct LogLine {
    id: u64,
    ts: u64,
    level: String,
    service: String,
    message: String,
    latency_ms: f64,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct Large {
    logs: Vec<LogLine>,
    values: Vec<u32>,
}

/// The same payloads as `bench/src/payload.rs`.
fn large(numbers: bool) -> Large {
    if numbers {
        let mut x: u32 = 0x9e37_79b9;
        let values = (0..13_098)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .collect();
        return Large {
            logs: Vec::new(),
            values,
        };
    }
    let services = ["api-gateway", "billing", "auth", "search", "inventory"];
    let levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"];
    let (mut logs, mut size, mut i) = (Vec::new(), 0, 0u64);
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
        logs.push(line);
        i += 1;
    }
    Large {
        logs,
        values: Vec::new(),
    }
}

/// Best µs per call of `f` over 5 rounds of 200.
fn time(mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    let mut sink = 0;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..200 {
            sink += f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
    }
    assert!(sink > 0);
    best
}

fn main() {
    for (name, numbers) in [("logs", false), ("numbers", true)] {
        let input = rmp_serde::to_vec_named(&large(numbers)).unwrap();
        println!("\n{name}: {} bytes of msgpack", input.len());
        println!(
            "| compressor | bytes | ratio | compress µs | decompress µs | compress MB/s | decompress MB/s |"
        );
        println!("|---|---|---|---|---|---|---|");
        let row = |label: &str, packed: Vec<u8>, c: f64, d: f64| {
            let mb = input.len() as f64;
            println!(
                "| {label} | {} | {:.2} | {c:.1} | {d:.1} | {:.0} | {:.0} |",
                packed.len(),
                input.len() as f64 / packed.len() as f64,
                mb / c,
                mb / d
            );
        };
        // zlib-rs level 1, a zlib stream, as webmesh-codec's `zlib.rs` (state reused).
        let mut z = flate2::Compress::new(flate2::Compression::new(1), true);
        let mut zout = Vec::with_capacity(input.len() * 2 + 1024);
        let mut deflate = |out: &mut Vec<u8>| {
            z.reset();
            out.clear();
            z.compress_vec(&input, out, flate2::FlushCompress::Finish)
                .unwrap();
            out.len()
        };
        deflate(&mut zout);
        let packed = zout.clone();
        let c = time(|| deflate(&mut zout));
        let mut d = flate2::Decompress::new(true);
        let mut back = Vec::with_capacity(input.len());
        let dt = time(|| {
            d.reset(true);
            back.clear();
            d.decompress_vec(&packed, &mut back, flate2::FlushDecompress::Finish)
                .unwrap();
            back.len()
        });
        assert!(back == input, "zlib round trip");
        row("zlib-rs level 1 (today)", packed, c, dt);
        // lz4 block format with the size in front.
        let packed = lz4_flex::compress_prepend_size(&input);
        let c = time(|| lz4_flex::compress_prepend_size(&input).len());
        let dt = time(|| lz4_flex::decompress_size_prepended(&packed).unwrap().len());
        assert!(
            lz4_flex::decompress_size_prepended(&packed).unwrap() == input,
            "lz4 round trip"
        );
        row("lz4 (lz4_flex)", packed, c, dt);
        for level in [1, -1] {
            let mut comp = zstd::bulk::Compressor::new(level).unwrap();
            let mut dec = zstd::bulk::Decompressor::new().unwrap();
            let packed = comp.compress(&input).unwrap();
            let c = time(|| comp.compress(&input).unwrap().len());
            let dt = time(|| dec.decompress(&packed, input.len()).unwrap().len());
            assert!(
                dec.decompress(&packed, input.len()).unwrap() == input,
                "zstd round trip"
            );
            row(&format!("zstd level {level}"), packed, c, dt);
        }
        std::io::stdout().flush().unwrap();
    }
}
