//! The TypeScript client (`clients/typescript`), built with `tsc` and tested under Node's test
//! runner: its unit tests (the wire format against PROTOCOL.md and the Python golden vectors),
//! then its live tests against a webmesh-rs server started here and the Python 0.1.2 reference.

use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webmesh::{Connection, Server};
use webmesh_tests::typescript::{build, package, run};
use webmesh_tests::{start, PyServer};

/// A tick for the topic test.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[webmesh::topic("/ts/ticks")]
pub struct Tick {
    /// Its number.
    pub n: u32,
}

/// Two numbers to divide.
#[derive(Debug, Deserialize)]
struct Div {
    a: i64,
    b: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_unit_and_live_tests() {
    tokio::task::block_in_place(build);
    let unit =
        tokio::task::block_in_place(|| run("node", &["--test", "--test-timeout=30000", "test/unit/"], &[]));
    assert!(unit.contains("# fail 0"), "{unit}");

    let (handle, url) = start(
        Server::builder()
            .registered_routes(false)
            .on("/echo", |v: webmesh::Value| async move { v })
            .on_fallible("/div", |d: Div| async move {
                d.a.checked_div(d.b).ok_or_else(|| "DivByZero".to_owned())
            })
            .on("/sleep", |ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            })
            .on("/poke", |n: u32, conn: Connection| async move {
                let _ = conn.push("/poked", &n).await;
            })
            .on("/kick", |_: (), conn: Connection| async move {
                conn.close("kicked by the test")
            })
            .on("/publish_ticks", |n: u32, conn: Connection| async move {
                for i in 0..n {
                    let _ = conn.topics().publish(&Tick { n: i });
                }
            })
            // Closes the caller's connection, then publishes while it is away: a client that
            // resubscribes gets these from the history.
            .on("/kick_and_publish", |from: u32, conn: Connection| async move {
                conn.close("kicked by the test");
                let topics = conn.topics();
                tokio::spawn(async move {
                    // After the connection is gone (the client waits 400 ms to reconnect).
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    for i in from..from + 3 {
                        let _ = topics.publish(&Tick { n: i });
                    }
                });
            }),
    )
    .await;
    let (guarded, auth_url) = start(
        Server::builder()
            .registered_routes(false)
            .auth(
                |req: &webmesh::UpgradeRequest| match req.bearer_token().as_deref() {
                    Some("tok-ada") => Ok("ada".to_owned()),
                    _ => Err(webmesh::Reject::unauthorized("a bearer token is required")),
                },
            )
            .on("/whoami", |_: (), conn: Connection| async move {
                conn.identity::<String>().cloned()
            }),
    )
    .await;
    let py = tokio::task::block_in_place(|| PyServer::start("msgpack"));
    let legacy = py.url();
    let live = tokio::task::block_in_place(|| {
        run(
            "node",
            &[
                "--experimental-websocket",
                "--test",
                "--test-timeout=30000",
                "test/live/",
            ],
            &[
                ("WEBMESH_URL", &url),
                ("WEBMESH_LEGACY_URL", &legacy),
                ("WEBMESH_AUTH_URL", &auth_url),
            ],
        )
    });
    assert!(live.contains("# fail 0") && !live.contains("# pass 0"), "{live}");
    handle.shutdown().await;
    guarded.shutdown().await;
}

/// TypeScript for the inventory contract, from a live server's introspection route.
async fn inventory_typescript() -> String {
    let (handle, url) = start(
        Server::builder()
            .registered_routes(false)
            .routes(inventory_contract::routes())
            .state(inventory_contract::store::Store::new(2)),
    )
    .await;
    let client = webmesh::Client::connect(&url).await.unwrap();
    let mut d = client.describe().await.unwrap();
    // This test binary links other crates' topics too: the contract's only.
    d.topics.retain(|t| t.name.starts_with("inventory_contract::"));
    handle.shutdown().await;
    d.to_typescript("../index.js")
}

#[tokio::test]
async fn the_generated_inventory_types_are_checked_in_and_current() {
    let fresh = inventory_typescript().await;
    let path = package().join("src/generated/inventory.ts");
    if std::env::var_os("WEBMESH_REGENERATE").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is not what the contract generates now: run \
         `WEBMESH_REGENERATE=1 cargo test -p webmesh-tests --test typescript` and commit it\n{fresh}",
        path.display()
    );
    assert!(
        fresh.contains("stockAdd: route<Line, number, never>(\"/stock/add\")"),
        "{fresh}"
    );
}

#[test]
fn tsc_accepts_the_contracts_types_and_refuses_a_wrong_payload() {
    build();
    let tsc = |file: &str| {
        Command::new("node")
            .args([
                "node_modules/typescript/bin/tsc",
                "--noEmit",
                "--strict",
                "--target",
                "ES2022",
                "--module",
                "ES2022",
                "--moduleResolution",
                "Bundler",
                "--lib",
                "ES2022,DOM",
                file,
            ])
            .current_dir(package())
            .output()
            .expect("run tsc")
    };
    let ok = tsc("test/types/ok.ts");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let wrong = tsc("test/types/wrong.ts");
    let said = String::from_utf8_lossy(&wrong.stdout).into_owned();
    assert!(!wrong.status.success(), "a wrong payload compiled");
    assert!(
        said.contains("wrong.ts(6,") && said.contains("Type 'string' is not assignable to type 'number'"),
        "{said}"
    );
}
