//! The harness in `--quick` mode, inside the test command, so it never rots: every system runs
//! every workload for a few calls. No timing is asserted.

#[test]
fn quick_mode_runs_every_system_and_workload() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webmesh-bench"))
        .arg("--quick")
        .output()
        .expect("run the benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "benchmark failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for system in [
        "raw echo (one task)",
        "raw echo (split tasks)",
        "webmesh-rs (msgpack, v1)",
        "webmesh-rs (json, v1)",
        "webmesh-rs (0.1.2 legacy)",
        "jsonrpsee",
        "tarpc (bincode, TCP)",
        "tonic (gRPC, prost)",
    ] {
        // One line per workload (the two 64 KiB payloads are two), each with a non-zero count.
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("- {system}:")))
            .collect();
        assert_eq!(lines.len(), 6, "{system}: {lines:?}\n{stdout}");
        assert!(
            lines.iter().all(|l| !l.contains(": 0 ops")),
            "{system}: {lines:?}"
        );
    }
    // The labelled deflate-off row runs in the two 64 KiB tables, and only there.
    let no_deflate: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("- webmesh-rs (msgpack, v1, deflate off):"))
        .collect();
    assert_eq!(no_deflate.len(), 2, "{no_deflate:?}\n{stdout}");
    assert!(
        no_deflate.iter().all(|l| !l.contains(": 0 ops")),
        "{no_deflate:?}"
    );
    // The fan-out: each system delivers, and loses nothing.
    for system in [
        "raw broadcast (tokio-tungstenite)",
        "webmesh-rs server, raw subscribers",
        "webmesh-rs topics, typed client",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("- {system}:")))
            .unwrap_or_else(|| panic!("no fan-out line for {system}:\n{stdout}"));
        assert!(
            line.contains(" 0 lost") && !line.contains(": 0 deliveries"),
            "{line}"
        );
    }
    // The cluster rows (a real nats-server): each runs, and the fan-outs lose nothing.
    for system in [
        "NATS request/reply (async-nats, no webmesh)",
        "webmesh-rs call on the serving node",
        "webmesh-rs call forwarded over NATS",
        "fan-out within one node",
        "fan-out across nodes",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("- {system}:")))
            .unwrap_or_else(|| panic!("no cluster line for {system}:\n{stdout}"));
        assert!(line.ends_with(" 0 lost") && !line.contains(": 0 ops"), "{line}");
    }
}

#[test]
fn load_test_loses_and_mismatches_nothing() {
    // The full run is `load --conns 1000 --calls 1000` (release); this is the same code, smaller.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webmesh-bench"))
        .args(["load", "--conns", "100", "--calls", "100"])
        .output()
        .expect("run the load test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "load test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("answered and matched: 10000"), "{stdout}");
    assert!(
        stdout.contains("lost (no answer): 0") && stdout.contains("mismatched (another call's answer): 0")
    );
}
