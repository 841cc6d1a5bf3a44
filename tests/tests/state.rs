//! Server state (issue 17): a value the server owns, taken by `#[webmesh::route]` functions and
//! closures as `State<T>`; a route whose state is missing fails `build`, naming route and type.
//! Also typed pushes and blocking stubs: the typed contract on every path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webmesh::{CallContext, Client, Connection, Error, Server, State};

/// Stands for a database pool.
pub struct Inventory {
    items: RwLock<BTreeMap<String, u32>>,
    queries: AtomicU32,
}

impl Inventory {
    fn new() -> Self {
        Inventory {
            items: RwLock::new(BTreeMap::from([("bolt".to_owned(), 10), ("nut".to_owned(), 1)])),
            queries: AtomicU32::new(0),
        }
    }
}

/// Read-only configuration, a second state type.
pub struct Limits {
    low: u32,
}

/// Pushed when an item runs low.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[webmesh::push("/state/low")]
pub struct Low {
    /// What runs low.
    pub item: String,
    /// How many are left.
    pub left: u32,
}

/// Takes items out; pushes `Low` to the caller when few are left.
#[webmesh::route("/state/take")]
pub async fn take(
    (item, n): (String, u32),
    db: &State<Inventory>,
    limits: &State<Limits>,
    conn: &Connection,
) -> Result<u32, String> {
    db.queries.fetch_add(1, Ordering::Relaxed);
    let left = {
        let mut items = db.items.write().unwrap();
        let stock = items.get_mut(&item).ok_or_else(|| format!("no {item}"))?;
        *stock = stock
            .checked_sub(n)
            .ok_or_else(|| format!("only {stock} {item}"))?;
        *stock
    };
    if left <= limits.low {
        let _ = conn.push_message(&Low { item, left }).await;
    }
    Ok(left)
}

/// Owned `State` and a call context in one handler.
#[webmesh::route("/state/queries")]
pub fn queries(call: &CallContext, db: State<Inventory>) -> (String, u32) {
    (call.path().to_owned(), db.queries.load(Ordering::Relaxed))
}

fn builder() -> webmesh::ServerBuilder {
    Server::builder()
        .bind("127.0.0.1:0")
        .state(Inventory::new())
        .state(Limits { low: 3 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_closures_take_server_state() {
    let server = builder()
        .on("/state/count", |_: (), db: State<Inventory>| async move {
            db.items.read().unwrap().len()
        })
        .on_fallible(
            "/state/stock",
            |item: String, db: State<Inventory>, call: CallContext| async move {
                let n = db.items.read().unwrap().get(&item).copied();
                n.ok_or_else(|| format!("{}: no {item}", call.path()))
            },
        )
        .build()
        .await
        .unwrap();
    let url = format!("ws://{}", server.local_addr());
    let handle = server.spawn();
    let lows = Arc::new(Mutex::new(Vec::new()));
    let seen = lows.clone();
    let c = Client::builder()
        .on_push_message(move |low: Low| seen.lock().unwrap().push(low))
        .connect(&url)
        .await
        .unwrap();
    assert_eq!(take::call(&c, ("bolt".into(), 4)).await.unwrap(), 6);
    assert_eq!(take::call(&c, ("bolt".into(), 4)).await.unwrap(), 2);
    assert!(matches!(
        take::call(&c, ("nut".into(), 5)).await,
        Err(webmesh::CallError::Handler(e)) if e == "only 1 nut"
    ));
    assert_eq!(c.call_path::<usize>("/state/count", &()).await.unwrap(), 2);
    assert_eq!(c.call_path::<u32>("/state/stock", &"bolt").await.unwrap(), 2);
    let e = c.call_path::<u32>("/state/stock", &"gear").await.unwrap_err();
    assert!(e.to_string().contains("/state/stock: no gear"), "{e}");
    assert_eq!(queries::call(&c).await.unwrap(), ("/state/queries".to_owned(), 3));
    webmesh_tests::eventually("the push arrived", || !lows.lock().unwrap().is_empty()).await;
    assert_eq!(
        *lows.lock().unwrap(),
        [Low {
            item: "bolt".into(),
            left: 2
        }]
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_its_state_fails_build_naming_route_and_type() {
    // The registered routes of this test binary take `Inventory` and `Limits`.
    let e = Server::builder()
        .bind("127.0.0.1:0")
        .state(Inventory::new())
        .build()
        .await
        .unwrap_err();
    match &e {
        Error::MissingState {
            route,
            path,
            type_name,
        } => {
            assert_eq!(path, "/state/take");
            assert!(route.ends_with("::take"), "{route}");
            assert!(type_name.ends_with("::Limits"), "{type_name}");
        }
        other => panic!("expected MissingState, got {other}"),
    }
    assert!(e.to_string().contains("ServerBuilder::state"), "{e}");
    // A closure too.
    struct Missing;
    let e = Server::builder()
        .bind("127.0.0.1:0")
        .registered_routes(false)
        .on("/m", |_: (), _m: State<Missing>| async {})
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::MissingState { path, type_name, .. } if path == "/m" && type_name.ends_with("Missing")),
        "{e}"
    );
}

#[test]
fn blocking_stubs_have_the_route_types() {
    let server = builder().start_threaded().unwrap();
    let url = format!("ws://{}", server.local_addr());
    let c = webmesh::BlockingClient::connect(&url).unwrap();
    assert_eq!(take::call_blocking(&c, ("bolt".into(), 1)).unwrap(), 9);
    take::emit_blocking(&c, ("bolt".into(), 1)).unwrap();
    let t0 = std::time::Instant::now();
    while queries::call_blocking(&c).unwrap().1 < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the emit ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.close();
    server.close();
}
