//! The load test: many connections, many calls each, every answer checked against its call.
//!
//! ```text
//! cargo run --release -p webmesh-bench -- load --conns 1000 --calls 1000
//! ```
//!
//! Each connection makes `calls` sequential calls whose payload carries (connection, sequence);
//! an answer with another pair is a mismatch, a call without an answer is lost. The server runs
//! in its own process; its peak RSS (VmHWM) and the client's are reported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::clients::{Conn, System};
use crate::payload::Small;

/// Outcome of a load run.
pub(crate) struct LoadReport {
    pub(crate) conns: usize,
    pub(crate) calls: usize,
    pub(crate) ok: u64,
    pub(crate) lost: u64,
    pub(crate) mismatched: u64,
    pub(crate) secs: f64,
    pub(crate) server_peak_kib: Option<u64>,
    pub(crate) client_peak_kib: Option<u64>,
}

pub(crate) async fn run(
    port: u16,
    server_pid: u32,
    conns: usize,
    calls: usize,
) -> Result<LoadReport, String> {
    let mut clients = Vec::with_capacity(conns);
    while clients.len() < conns {
        let n = (conns - clients.len()).min(100);
        let batch = futures_util::future::join_all((0..n).map(|_| connect(port))).await;
        for c in batch {
            clients.push(c?);
        }
    }
    let ok = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let mismatched = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let (ok, lost, mismatched) = (ok.clone(), lost.clone(), mismatched.clone());
            tokio::spawn(async move {
                for seq in 0..calls as u64 {
                    let id = (c as u64) << 32 | seq;
                    let req = Small {
                        id,
                        name: format!("conn-{c}"),
                        values: vec![seq as u32; 8],
                    };
                    match crate::payload::echo_small::call(&client, req).await {
                        Ok(back) if back.id == id && back.values[0] == seq as u32 => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(_) => mismatched.fetch_add(1, Ordering::Relaxed),
                        Err(_) => lost.fetch_add(1, Ordering::Relaxed),
                    };
                }
                client.close().await;
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(LoadReport {
        conns,
        calls,
        ok: ok.load(Ordering::Relaxed),
        lost: lost.load(Ordering::Relaxed),
        mismatched: mismatched.load(Ordering::Relaxed),
        secs,
        server_peak_kib: crate::proc_stats::peak_rss_kib(server_pid),
        client_peak_kib: crate::proc_stats::peak_rss_kib(std::process::id()),
    })
}

async fn connect(port: u16) -> Result<webmesh::Client, String> {
    match Conn::connect(System::Webmesh, port).await? {
        Conn::Webmesh(c) => Ok(c),
        _ => Err("not a webmesh client".into()),
    }
}

impl LoadReport {
    pub(crate) fn print(&self) {
        let total = self.conns * self.calls;
        println!("# webmesh-rs load test");
        println!();
        println!(
            "{} connections × {} calls = {} calls in {:.2} s ({:.0} calls/s)",
            self.conns,
            self.calls,
            total,
            self.secs,
            total as f64 / self.secs
        );
        println!("- answered and matched: {}", self.ok);
        println!("- lost (no answer): {}", self.lost);
        println!("- mismatched (another call's answer): {}", self.mismatched);
        let mib = |k: Option<u64>| k.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!("- server peak RSS: {}", mib(self.server_peak_kib));
        println!("- client peak RSS: {}", mib(self.client_peak_kib));
    }
}
