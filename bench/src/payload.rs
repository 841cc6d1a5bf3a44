//! The payloads every system sends, and the routes that echo them.

use serde::{Deserialize, Serialize};

/// The small payload: `{id, name (16 chars), values (8 × u32)}`, about 60 bytes of msgpack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Small {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) values: Vec<u32>,
}

pub(crate) fn small() -> Small {
    Small {
        id: 123_456_789,
        name: "sixteen-chars-xx".into(),
        values: vec![1, 20, 300, 4_000, 50_000, 600_000, 7_000_000, 80_000_000],
    }
}

/// One record of the large payload: a structured log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogLine {
    pub(crate) id: u64,
    pub(crate) ts: u64,
    pub(crate) level: String,
    pub(crate) service: String,
    pub(crate) message: String,
    pub(crate) latency_ms: f64,
    pub(crate) tags: Vec<String>,
}

/// The large payload, about 64 KiB of msgpack: log records whose services, levels and message
/// shapes repeat (compressible like real logs, not like zeros), or, with `--large numbers`,
/// 13,098 pseudo-random `u32` values (zlib saves only ~10 % of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Large {
    pub(crate) logs: Vec<LogLine>,
    pub(crate) values: Vec<u32>,
}

impl Large {
    /// What it holds, for the header of the report.
    pub(crate) fn describe(&self) -> String {
        if self.values.is_empty() {
            format!("{} log records", self.logs.len())
        } else {
            format!("{} pseudo-random u32 values", self.values.len())
        }
    }
}

pub(crate) fn large(numbers: bool) -> Large {
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
    Large {
        logs: out,
        values: Vec::new(),
    }
}

/// Echoes the small payload.
#[webmesh::route("/bench/small")]
pub(crate) fn echo_small(p: Small) -> Small {
    p
}

/// Echoes the large payload.
#[webmesh::route("/bench/large")]
pub(crate) fn echo_large(p: Large) -> Large {
    p
}

/// The same two methods for jsonrpsee.
#[jsonrpsee::proc_macros::rpc(server, client)]
pub(crate) trait BenchRpc {
    /// Echoes the small payload.
    #[method(name = "small")]
    fn small(&self, p: Small) -> jsonrpsee::core::RpcResult<Small>;
    /// Echoes the large payload.
    #[method(name = "large")]
    fn large(&self, p: Large) -> jsonrpsee::core::RpcResult<Large>;
}

pub(crate) struct RpcImpl;

impl BenchRpcServer for RpcImpl {
    fn small(&self, p: Small) -> jsonrpsee::core::RpcResult<Small> {
        Ok(p)
    }
    fn large(&self, p: Large) -> jsonrpsee::core::RpcResult<Large> {
        Ok(p)
    }
}

/// The same two methods for tarpc.
#[tarpc::service]
pub(crate) trait BenchTarpc {
    /// Echoes the small payload.
    async fn small(p: Small) -> Small;
    /// Echoes the large payload.
    async fn large(p: Large) -> Large;
}

#[derive(Clone)]
pub(crate) struct TarpcImpl;

impl BenchTarpc for TarpcImpl {
    async fn small(self, _: tarpc::context::Context, p: Small) -> Small {
        p
    }
    async fn large(self, _: tarpc::context::Context, p: Large) -> Large {
        p
    }
}
