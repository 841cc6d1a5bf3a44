//! The introspection route (`/_webmesh/describe`), the catch-all `fallback`, and the untyped
//! client calls tools are built on, over real sockets.

use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use webmesh::{CallError, Client, Error, Event, Server, SubscribeOptions, Value, DESCRIBE_PATH};
use webmesh_tests::start;

/// Two numbers.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Add {
    /// The first.
    pub a: i64,
    /// The second.
    pub b: i64,
}

/// Why a division failed.
#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum DivError {
    /// By zero.
    ByZero,
}

/// No schema derived: described without one.
#[derive(Debug, Serialize, Deserialize)]
pub struct Opaque(pub u8);

/// Adds `a` and `b`.
///
/// Second line.
#[webmesh::route("/calc/add")]
pub fn add(msg: Add) -> i64 {
    msg.a + msg.b
}

// No doc comment.
#[allow(missing_docs)]
#[webmesh::route("/calc/div")]
pub fn div(msg: Add) -> Result<i64, DivError> {
    msg.a.checked_div(msg.b).ok_or(DivError::ByZero)
}

/// Returns what it got.
#[webmesh::route("/opaque")]
pub fn opaque(o: Opaque) -> Opaque {
    o
}

/// A price moved.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[webmesh::topic("/intro/prices/*")]
pub struct Tick {
    /// The new price, in cents.
    pub cents: u64,
}

#[tokio::test]
async fn a_server_describes_its_routes_and_topics_with_docs_and_schemas() {
    let (server, url) = start(Server::builder().on("/closure", |v: Value| async move { v })).await;
    let client = Client::connect(&url).await.unwrap();
    let d = client.describe().await.unwrap();

    let paths: Vec<&str> = d.routes.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/calc/add", "/calc/div", "/closure", "/opaque"]);
    assert!(!paths.contains(&DESCRIBE_PATH), "the route does not list itself");

    let add = &d.routes[0];
    assert_eq!(add.name, "introspection::add");
    assert_eq!(add.doc.as_deref(), Some("Adds `a` and `b`.\n\nSecond line."));
    let request = add.request.as_ref().expect("Add derives JsonSchema");
    assert_eq!(request["title"], "Add");
    assert_eq!(request["properties"]["a"]["type"], "integer");
    assert_eq!(request["properties"]["b"]["description"], "The second.");
    assert_eq!(add.response.as_ref().unwrap()["type"], "integer");
    let error = add.error.as_ref().unwrap();
    assert_eq!(
        (&error["title"], &error["not"]),
        (&"NoError".into(), &serde_json::json!({})),
        "cannot fail"
    );

    let div = &d.routes[1];
    assert_eq!(div.doc, None);
    assert_eq!(div.error.as_ref().unwrap()["title"], "DivError");

    let closure = &d.routes[2];
    assert_eq!((closure.doc.as_ref(), closure.request.as_ref()), (None, None));

    let opaque = &d.routes[3];
    assert_eq!(opaque.request, None, "no JsonSchema derive, no schema");
    assert_eq!(opaque.response, None);

    let tick = d
        .topics
        .iter()
        .find(|t| t.path == "/intro/prices/*")
        .expect("the topic is listed");
    assert_eq!(tick.name, "introspection::Tick");
    assert_eq!(tick.doc.as_deref(), Some("A price moved."));
    assert_eq!(
        tick.message.as_ref().unwrap()["properties"]["cents"]["description"],
        "The new price, in cents."
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_description_reads_the_same_in_json() {
    let (server, url) = start(Server::builder()).await;
    let json = Client::builder()
        .codec(webmesh::codec::AnyCodec::JSON)
        .connect(&url)
        .await
        .unwrap();
    let msgpack = Client::connect(&url).await.unwrap();
    assert_eq!(json.describe().await.unwrap(), msgpack.describe().await.unwrap());
    server.shutdown().await;
}

#[tokio::test]
async fn introspection_can_be_turned_off_and_its_path_is_reserved() {
    let (server, url) = start(Server::builder().introspection(false)).await;
    let client = Client::connect(&url).await.unwrap();
    match client.describe().await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, "not_found"),
        other => panic!("expected not_found, got {other:?}"),
    }
    server.shutdown().await;

    let taken = Server::builder()
        .on(DESCRIBE_PATH, |_: ()| async {})
        .bind("127.0.0.1:0")
        .build()
        .await;
    match taken {
        Err(Error::DuplicateRoute { path, .. }) => assert_eq!(path, DESCRIBE_PATH),
        Err(other) => panic!("expected a duplicate route, got {other}"),
        Ok(_) => panic!("expected a duplicate route, got a server"),
    }
    // With introspection off, the path is the application's.
    let (server, url) = start(
        Server::builder()
            .introspection(false)
            .on(DESCRIBE_PATH, |_: ()| async { "mine" }),
    )
    .await;
    let client = Client::connect(&url).await.unwrap();
    let mine: String = client.call_path(DESCRIBE_PATH, &()).await.unwrap();
    assert_eq!(mine, "mine");
    server.shutdown().await;
}

#[tokio::test]
async fn a_fallback_answers_every_path_without_a_route() {
    let (server, url) = start(
        Server::builder().fallback(|v: Value, call: webmesh::CallContext| async move {
            format!("{} got {v}", call.path())
        }),
    )
    .await;
    let client = Client::connect(&url).await.unwrap();
    let a: String = client.call_path("/anything", &1).await.unwrap();
    assert_eq!(a, "/anything got 1");
    // Routes still win over the fallback.
    let sum: i64 = client.call_path("/calc/add", &Add { a: 2, b: 40 }).await.unwrap();
    assert_eq!(sum, 42);
    server.shutdown().await;
}

#[tokio::test]
async fn untyped_calls_keep_a_handlers_error_as_a_value() {
    let (server, url) = start(Server::builder()).await;
    let client = Client::connect(&url).await.unwrap();
    let ok: Value = client
        .call_path_as::<Value, Value>("/calc/div", &Add { a: 84, b: 2 }, None)
        .await
        .unwrap();
    assert_eq!(ok, Value::from(42));
    match client
        .call_path_as::<Value, Value>("/calc/div", &Add { a: 1, b: 0 }, None)
        .await
    {
        Err(CallError::Handler(v)) => assert_eq!(v, Value::from("ByZero")),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_untyped_subscription_gets_values() {
    let (server, url) = start(Server::builder()).await;
    let client = Client::connect(&url).await.unwrap();
    let mut sub = client
        .subscribe_untyped("/intro/prices/*", SubscribeOptions::default())
        .await
        .unwrap();
    server
        .topics()
        .publish_at("/intro/prices/acme", &Tick { cents: 1234 })
        .unwrap();
    match sub.next().await {
        Some(Event::Message { path, value, .. }) => {
            assert_eq!(path, "/intro/prices/acme");
            assert_eq!(value, Value::Map(vec![("cents".into(), 1234.into())]));
        }
        other => panic!("expected a message, got {other:?}"),
    }
    server.shutdown().await;
}
