//! `#[webmesh::route]` end to end: every handler shape, called through its generated stub and
//! through `client.call::<Route>`, with both codecs, over a real socket.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webmesh::codec::AnyCodec;
use webmesh::{CallError, Client, Connection, Error, Route, Server};
use webmesh_tests::{eventually, start};

/// What `/s/unit` received (tests run in parallel: a set, not a last value).
static UNIT_SEEN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn unit_seen(x: u32) -> bool {
    UNIT_SEEN.lock().unwrap().contains(&x)
}

/// The error of `/s/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Negative(i32);

/// Every shape a handler may have.
pub mod shapes {
    use super::*;

    /// async, payload, plain value.
    #[webmesh::route("/s/async_value")]
    pub async fn async_value(x: u32) -> u32 {
        x + 1
    }

    /// sync, payload, plain value.
    #[webmesh::route("/s/sync_value")]
    pub fn sync_value(x: u32) -> u32 {
        x * 2
    }

    /// No payload.
    #[webmesh::route("/s/no_payload")]
    pub fn no_payload() -> String {
        "nothing in, this out".into()
    }

    /// No return value.
    #[webmesh::route("/s/unit")]
    pub async fn unit(x: u32) {
        UNIT_SEEN.lock().unwrap().insert(x);
    }

    /// Option.
    #[webmesh::route("/s/option")]
    pub fn option(x: u32) -> Option<u32> {
        x.is_multiple_of(2).then_some(x / 2)
    }

    /// Result, async.
    #[webmesh::route("/s/result")]
    pub async fn result(x: i32) -> Result<u32, Negative> {
        u32::try_from(x).map_err(|_| Negative(x))
    }

    /// Result, sync, with a std error type that is serde-able.
    #[webmesh::route("/s/sync_result")]
    pub fn sync_result(s: String) -> Result<u8, String> {
        s.parse().map_err(|e: std::num::ParseIntError| e.to_string())
    }

    /// `&Connection` after the payload.
    #[webmesh::route("/s/conn_ref")]
    pub async fn conn_ref(x: u64, conn: &Connection) -> u64 {
        conn.id() * 1000 + x
    }

    /// Owned `Connection` before the payload.
    #[webmesh::route("/s/conn_owned")]
    pub async fn conn_owned(conn: Connection, x: u64) -> (u64, u64) {
        tokio::task::yield_now().await;
        (conn.id(), x)
    }

    /// Only the connection.
    #[webmesh::route("/s/conn_only")]
    pub fn conn_only(conn: &Connection) -> String {
        conn.framing().name().to_owned()
    }

    /// The call's context: its path and id.
    #[webmesh::route("/s/call_context")]
    pub fn call_context(x: u8, call: &webmesh::CallContext) -> (String, bool, u8) {
        (call.path().to_owned(), call.id().is_some(), x)
    }

    /// A destructuring pattern as the payload.
    #[webmesh::route("/s/pattern")]
    pub fn pattern((a, b): (u32, u32)) -> u32 {
        a * b
    }

    /// Slow, to test a stub call with a timeout.
    #[webmesh::route("/s/slow")]
    pub async fn slow(ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// A private handler with private types: its stub is visible in this module only.
    #[derive(Debug, Serialize, Deserialize)]
    struct Secret(u8);

    #[webmesh::route("/s/private")]
    fn private(s: Secret) -> Secret {
        Secret(s.0 + 1)
    }

    /// Calls the private route from inside its module.
    pub async fn call_private(c: &Client) -> u8 {
        private::call(c, Secret(1)).await.unwrap().0
    }
}

/// The webmesh crate under another path, as a re-export.
pub mod reexport {
    pub use ::webmesh as wm;
}

/// `crate = ..` points the expansion at a renamed or re-exported webmesh.
#[webmesh::route("/s/renamed", crate = "crate::reexport::wm")]
pub fn renamed(x: u8) -> u8 {
    x
}

#[test]
fn the_original_functions_stay_callable() {
    assert_eq!(shapes::sync_value(21), 42);
    assert_eq!(shapes::pattern((6, 7)), 42);
    assert_eq!(shapes::sync_result("7".into()), Ok(7));
    assert_eq!(shapes::async_value::PATH, "/s/async_value");
    assert_eq!(<shapes::result::Route as Route>::PATH, "/s/result");
}

async fn all_shapes(codec: AnyCodec) {
    use shapes::*;
    let (server, url) = start(Server::builder()).await;
    let c = Client::builder()
        .codec(codec.clone())
        .connect(&url)
        .await
        .unwrap();

    assert_eq!(async_value::call(&c, 1).await.unwrap(), 2);
    assert_eq!(c.call::<async_value::Route>(2).await.unwrap(), 3);
    assert_eq!(sync_value::call(&c, 4).await.unwrap(), 8);
    assert_eq!(no_payload::call(&c).await.unwrap(), "nothing in, this out");
    let base = if codec == AnyCodec::JSON { 100 } else { 200 };
    unit::call(&c, base + 1).await.unwrap();
    assert!(unit_seen(base + 1), "the call ran before its reply");
    unit::emit(&c, base + 2).await.unwrap();
    eventually("the emit ran", || unit_seen(base + 2)).await;
    assert_eq!(option::call(&c, 8).await.unwrap(), Some(4));
    assert_eq!(option::call(&c, 7).await.unwrap(), None);
    assert_eq!(result::call(&c, 5).await.unwrap(), 5);
    match result::call(&c, -5).await {
        Err(CallError::Handler(Negative(-5))) => {}
        other => panic!("{other:?}"),
    }
    match sync_result::call(&c, "x".into()).await {
        Err(CallError::Handler(msg)) => assert!(msg.contains("invalid digit"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let n = conn_ref::call(&c, 7).await.unwrap();
    let (id, x) = conn_owned::call(&c, 9).await.unwrap();
    assert_eq!((n, x), (id * 1000 + 7, 9), "both see the same connection");
    assert_eq!(conn_only::call(&c).await.unwrap(), "v1");
    assert_eq!(pattern::call(&c, (6, 7)).await.unwrap(), 42);
    assert_eq!(
        call_context::call(&c, 5).await.unwrap(),
        ("/s/call_context".to_owned(), true, 5)
    );
    assert_eq!(call_private(&c).await, 2);
    assert_eq!(renamed::call(&c, 9).await.unwrap(), 9);

    // A stub call with a timeout.
    let short = c.with_timeout(Some(Duration::from_millis(50)));
    assert!(matches!(
        slow::call(&short, 2_000).await,
        Err(CallError::Rpc(Error::CallTimeout { .. }))
    ));
    assert_eq!(slow::call(&c, 1).await.unwrap(), 1);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_through_its_stub_msgpack() {
    all_shapes(AnyCodec::MSGPACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_through_its_stub_json() {
    all_shapes(AnyCodec::JSON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_routes_can_be_turned_off_and_added_one_by_one() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .registered_routes(false)
        .route::<shapes::sync_value::Route>()
        .build()
        .await
        .unwrap();
    assert_eq!(server.paths(), vec!["/s/sync_value".to_owned()]);
    let url = format!("ws://{}", server.local_addr());
    let handle = server.spawn();
    let c = Client::connect(&url).await.unwrap();
    assert_eq!(shapes::sync_value::call(&c, 1).await.unwrap(), 2);
    match shapes::async_value::call(&c, 1).await {
        Err(CallError::Rpc(e)) => assert!(e.is_not_found(), "{e}"),
        other => panic!("{other:?}"),
    }
    handle.shutdown().await;
}

#[test]
fn blocking_client_uses_the_route_types() {
    let server = Server::builder().bind("127.0.0.1:0").start_threaded().unwrap();
    let c = webmesh::BlockingClient::connect(&format!("ws://{}", server.local_addr())).unwrap();
    assert_eq!(c.call::<shapes::pattern::Route>((3, 4)).unwrap(), 12);
    assert!(matches!(
        c.call::<shapes::result::Route>(-1),
        Err(CallError::Handler(Negative(-1)))
    ));
    c.emit::<shapes::unit::Route>(5).unwrap();
    c.close();
    server.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_closure_on_several_paths_knows_which_it_serves() {
    // The Python callbacks' `path` argument: the same handler registered twice.
    let handler = |x: u32, call: webmesh::CallContext| async move { format!("{} {x}", call.path()) };
    let (server, url) = start(Server::builder().on("/one", handler).on("/two", handler)).await;
    let c = Client::connect(&url).await.unwrap();
    assert_eq!(c.call_path::<String>("/one", &1).await.unwrap(), "/one 1");
    assert_eq!(c.call_path::<String>("/two", &2).await.unwrap(), "/two 2");
    // A 0.1.2-style client: no ids, same path.
    let legacy = Client::builder()
        .protocol(webmesh::Protocol::Legacy)
        .connect(&url)
        .await
        .unwrap();
    assert_eq!(legacy.call_path::<String>("/two", &3).await.unwrap(), "/two 3");
    server.shutdown().await;
}

/// Issue 9, point 6: closures with no argument at all serve routes without a payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_zero_argument_closures() {
    let (server, url) = start(
        Server::builder()
            .on("/answer", || async { 42u8 })
            .on_fallible("/nope", || async { Err::<u8, String>("no".into()) }),
    )
    .await;
    let c = Client::connect(&url).await.unwrap();
    assert_eq!(c.call_path::<u8>("/answer", &()).await.unwrap(), 42);
    let e = c.call_path::<u8>("/nope", &()).await.unwrap_err();
    assert_eq!(e.remote_code(), Some("handler"), "{e}");
    server.shutdown().await;
}
