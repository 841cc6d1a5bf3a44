//! Authentication at the upgrade and per-route authorization (issue 10), over real sockets: a
//! valid token, a missing one (401), a bad one (403), tokens in the header, a subprotocol entry
//! or the query; the identity in handlers; a token refreshed on reconnect; `forbidden`; an async
//! hook; a TLS client certificate seen by the hook.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webmesh::codec::{AnyCodec, Compression, FrameEncoder, Framing};
use webmesh::{Client, Connection, Error, Protocol, Reconnect, Reject, Server, UpgradeRequest};
use webmesh_tests::start;

#[derive(Debug, Clone, PartialEq)]
struct User {
    name: String,
    admin: bool,
}

/// Tokens `ada` (admin) and `bob`; anything else is refused.
fn check(req: &UpgradeRequest) -> Result<User, Reject> {
    match req.bearer_token().as_deref() {
        None => Err(Reject::unauthorized("a bearer token is required")),
        Some("tok-ada") => Ok(User {
            name: "ada".into(),
            admin: true,
        }),
        Some("tok-bob") => Ok(User {
            name: "bob".into(),
            admin: false,
        }),
        Some(_) => Err(Reject::forbidden("unknown token")),
    }
}

fn server(ran: Arc<AtomicU32>) -> webmesh::ServerBuilder {
    Server::builder()
        .auth(check)
        .authorize("/admin/*", |user: Option<&User>| user.is_some_and(|u| u.admin))
        .on("/whoami", |_: (), conn: Connection| async move {
            conn.identity::<User>().map(|u| u.name.clone())
        })
        .on("/admin/wipe", move |_: ()| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { "wiped" }
        })
        .on("/kick", |_: (), conn: Connection| async move {
            conn.close("kicked");
        })
}

fn refused(e: Error) -> (u16, String) {
    match e {
        Error::Refused { status, body, .. } => (status, body),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_the_upgrade_and_the_identity_reaches_handlers() {
    let (handle, url) = start(server(Arc::default())).await;
    let ada = Client::builder().bearer("tok-ada").connect(&url).await.unwrap();
    assert_eq!(
        ada.call_path::<Option<String>>("/whoami", &()).await.unwrap(),
        Some("ada".to_owned())
    );
    let (status, body) = refused(Client::connect(&url).await.unwrap_err());
    assert_eq!((status, body.as_str()), (401, "a bearer token is required"));
    let (status, body) = refused(Client::builder().bearer("nope").connect(&url).await.unwrap_err());
    assert_eq!((status, body.as_str()), (403, "unknown token"));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_send_the_token_in_a_subprotocol_entry_or_the_query() {
    let (handle, url) = start(server(Arc::default())).await;
    // A subprotocol entry next to the codec's: the server picks the codec, never echoes the token.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "webmesh.v1.msgpack, webmesh.bearer.tok-bob".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "webmesh.v1.msgpack"
    );
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let call = enc.call(1, "/whoami", &()).unwrap();
    ws.send(Message::Binary(call.as_bytes().to_vec().into()))
        .await
        .unwrap();
    let Some(Ok(message)) = ws.next().await else {
        panic!("an answer")
    };
    let f = webmesh_tests::v1_frame(message);
    assert_eq!(f.decode::<Option<String>>().unwrap(), Some("bob".to_owned()));
    // The query string.
    let c = Client::connect(&format!("{url}/?access_token=tok-ada"))
        .await
        .unwrap();
    assert_eq!(
        c.call_path::<Option<String>>("/whoami", &()).await.unwrap(),
        Some("ada".to_owned())
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_refuses_calls_with_forbidden_and_drops_emits_and_legacy_requests() {
    let ran = Arc::new(AtomicU32::new(0));
    let (handle, url) = start(server(ran.clone())).await;
    let bob = Client::builder().bearer("tok-bob").connect(&url).await.unwrap();
    let e = bob.call_path::<String>("/admin/wipe", &()).await.unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    bob.emit_path("/admin/wipe", &()).await.unwrap();
    // A 0.1.2-style client: no reply, so the call ends at its timeout.
    let legacy = Client::builder()
        .bearer("tok-bob")
        .protocol(Protocol::Legacy)
        .timeout(Some(Duration::from_millis(300)))
        .connect(&url)
        .await
        .unwrap();
    assert!(matches!(
        legacy.call_path::<String>("/admin/wipe", &()).await,
        Err(Error::CallTimeout { .. })
    ));
    // Nothing ran; the admin's call does.
    assert_eq!(
        bob.call_path::<Option<String>>("/whoami", &()).await.unwrap(),
        Some("bob".into())
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a refused request never runs");
    let ada = Client::builder().bearer("tok-ada").connect(&url).await.unwrap();
    assert_eq!(
        ada.call_path::<String>("/admin/wipe", &()).await.unwrap(),
        "wiped"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_provider_runs_again_on_every_reconnect() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let (handle, url) = start(
        Server::builder()
            .auth(move |req: &UpgradeRequest| {
                let token = req.bearer_token().map(|t| t.into_owned());
                log.lock().unwrap().extend(token.clone());
                match token.as_deref() {
                    Some(t) if t.starts_with("fresh-") => Ok(t.to_owned()),
                    _ => Err(Reject::unauthorized("stale")),
                }
            })
            .on("/token", |_: (), conn: Connection| async move {
                conn.identity::<String>().cloned()
            })
            .on("/kick", |_: (), conn: Connection| async move {
                conn.close("kicked");
            }),
    )
    .await;
    let issued = Arc::new(AtomicU32::new(0));
    let counter = issued.clone();
    let c = Client::builder()
        .token_provider(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(format!("fresh-{n}")) }
        })
        .reconnect(
            Reconnect::default()
                .initial_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(50)),
        )
        .connect(&url)
        .await
        .unwrap();
    assert_eq!(
        c.call_path::<Option<String>>("/token", &()).await.unwrap(),
        Some("fresh-1".into())
    );
    let _ = c.call_path::<()>("/kick", &()).await;
    // The client reconnects by itself, with a token asked for again.
    let mut second = None;
    for _ in 0..500 {
        if let Ok(Some(t)) = c.call_path::<Option<String>>("/token", &()).await {
            if t != "fresh-1" {
                second = Some(t);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(second.as_deref(), Some("fresh-2"));
    assert_eq!(*seen.lock().unwrap(), ["fresh-1", "fresh-2"]);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_hook_and_a_client_certificate() {
    use webmesh_tests::pki::{Ca, Usage};
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let tls = webmesh::tls::server_config_from_pem(
        id.cert_pem.as_bytes(),
        id.key_pem.as_bytes(),
        Some(clients.pem().as_bytes()),
    )
    .unwrap();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .tls(tls)
        .auth_async(|req: UpgradeRequest| async move {
            // Stands for a lookup that waits.
            tokio::time::sleep(Duration::from_millis(20)).await;
            match req.peer_certificates() {
                Some(chain) if !chain.is_empty() => Ok(chain[0].len()),
                _ => Err(Reject::unauthorized("a client certificate is required")),
            }
        })
        .on("/cert", |_: (), conn: Connection| async move {
            conn.identity::<usize>().copied()
        })
        .build()
        .await
        .unwrap();
    let port = server.local_addr().port();
    let handle = server.spawn();
    let member = clients.issue(&["member"], Usage::Client);
    let c = Client::builder()
        .tls_ca_pem(ca.pem())
        .tls_client_cert_pem(member.cert_pem.clone(), member.key_pem)
        .connect(&format!("wss://localhost:{port}"))
        .await
        .unwrap();
    let der_len = c.call_path::<Option<usize>>("/cert", &()).await.unwrap();
    assert!(der_len.is_some_and(|n| n > 100), "{der_len:?}");
    handle.shutdown().await;
}
