//! What errors say (issue 9, point 6): each failure is its own variant, naming the address,
//! URL or path it concerns; handler errors display with `Display`; routes that cannot fail
//! convert into `webmesh::Error` with `?`.

use std::time::Duration;

use webmesh::{CallError, Client, Error, NoError, Server};
use webmesh_tests::start;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Refusal {
    why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.why)
    }
}

#[webmesh::route("/err/double")]
fn double(x: u32) -> u32 {
    x * 2
}

#[webmesh::route("/err/refuse")]
fn refuse() -> Result<u8, Refusal> {
    Err(Refusal {
        why: "closed on sundays".into(),
    })
}

/// `?` turns a `CallError<NoError>` into a `webmesh::Error`: no `Box<dyn Error>` needed.
async fn doubled(c: &Client, x: u32) -> webmesh::Result<u32> {
    let first = double::call(c, x).await?;
    Ok(double::call(c, first).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_no_error_routes_convert_and_handler_errors_display() {
    let (server, url) = start(Server::builder()).await;
    let c = Client::connect(&url).await.unwrap();
    assert_eq!(doubled(&c, 5).await.unwrap(), 20);
    let e = refuse::call(&c).await.unwrap_err();
    assert_eq!(e.to_string(), "handler error: refused: closed on sundays");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("closed on sundays"));
    let never: CallError<NoError> = CallError::Rpc(Error::Backpressure);
    assert!(matches!(Error::from(never), Error::Backpressure));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_bind_and_connect_errors_name_what_they_concern() {
    let (server, url) = start(Server::builder()).await;
    let taken = url.trim_start_matches("ws://").to_owned();
    match Server::builder().bind(taken.clone()).build().await {
        Err(e @ Error::Bind { .. }) => assert!(e.to_string().contains(&taken), "{e}"),
        other => panic!("expected a bind error: {other:?}"),
    }
    server.shutdown().await;
    // Nothing listens there any more.
    match Client::connect(&url).await {
        Err(e @ Error::Connect { .. }) => assert!(e.to_string().contains(&url), "{e}"),
        other => panic!("expected a connect error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_connect_timeout_is_not_a_call_timeout() {
    // A socket that accepts and never answers the upgrade.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            open.push(tcp);
        }
    });
    let e = Client::builder()
        .connect_timeout(Duration::from_millis(200))
        .connect(&url)
        .await
        .unwrap_err();
    match &e {
        Error::ConnectTimeout { url: u, after } => {
            assert_eq!((u.as_str(), *after), (url.as_str(), Duration::from_millis(200)))
        }
        other => panic!("expected a connect timeout: {other:?}"),
    }
    assert!(e.is_timeout());
    held.abort();

    let slow = Server::builder().shutdown_timeout(Duration::from_millis(100));
    let (server, url) = start(slow.on("/slow", |_: ()| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }))
    .await;
    let c = Client::builder()
        .timeout(Some(Duration::from_millis(100)))
        .connect(&url)
        .await
        .unwrap();
    match c.call_path::<()>("/slow", &()).await {
        Err(e @ Error::CallTimeout { .. }) => {
            assert!(e.is_timeout());
            assert!(e.to_string().contains("/slow"), "{e}");
        }
        other => panic!("expected a call timeout: {other:?}"),
    }
    server.shutdown().await;
}
