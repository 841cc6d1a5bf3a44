//! TLS (`wss://`) over real sockets (issue 10): calls, emits and pushes; each way a certificate
//! can be wrong is refused with an error that says which; mutual TLS; a client on the wrong port
//! gets a clear error and neither side hangs; the TLS handshake is bounded. Certificates are made
//! at test time (tests/src/pki.rs).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webmesh::{Client, Connection, Error, Server, ServerHandle};
use webmesh_tests::pki::{Ca, Identity, Usage};

fn server_tls(id: &Identity, client_ca: Option<&Ca>) -> webmesh::tls::rustls::ServerConfig {
    let ca = client_ca.map(Ca::pem);
    webmesh::tls::server_config_from_pem(
        id.cert_pem.as_bytes(),
        id.key_pem.as_bytes(),
        ca.as_deref().map(str::as_bytes),
    )
    .unwrap()
}

fn routes() -> webmesh::ServerBuilder {
    Server::builder()
        .on("/add", |(a, b): (i64, i64)| async move { a + b })
        .on("/poke", |n: u32, conn: Connection| async move {
            let _ = conn.push("/poked", &n).await;
        })
        .on("/cert", |_: (), conn: Connection| async move {
            conn.peer_certificates().map_or(0, <[Vec<u8>]>::len)
        })
}

/// A wss server on 127.0.0.1 with `tls`; its port.
async fn start(builder: webmesh::ServerBuilder) -> (ServerHandle, u16) {
    let server = builder.bind("127.0.0.1:0").build().await.unwrap();
    let port = server.local_addr().port();
    (server.spawn(), port)
}

fn handshake_reason(e: &Error) -> &str {
    match e {
        Error::Handshake { reason, .. } => reason,
        other => panic!("expected a handshake error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_calls_emits_and_pushes() {
    let ca = Ca::new("test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let (server, port) = start(routes().tls(server_tls(&id, None))).await;
    let (tx, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    let c = Client::builder()
        .tls_ca_pem(ca.pem())
        .on_push("/poked", move |n: u32| {
            let _ = tx.send(n);
        })
        .connect(&format!("wss://localhost:{port}"))
        .await
        .unwrap();
    assert_eq!(c.call_path::<i64>("/add", &(40, 2)).await.unwrap(), 42);
    c.emit_path("/poke", &9u32).await.unwrap();
    assert_eq!(pushed.recv().await, Some(9));
    assert_eq!(
        c.call_path::<usize>("/cert", &()).await.unwrap(),
        0,
        "no client certificate"
    );
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_server_certificate_is_refused_saying_why() {
    let ca = Ca::new("test CA");
    let other_ca = Ca::new("another CA");
    // Signed by a CA the client does not trust.
    let (s1, port) = start(routes().tls(server_tls(&ca.issue(&["localhost"], Usage::Server), None))).await;
    let e = Client::builder()
        .tls_ca_pem(other_ca.pem())
        .connect(&format!("wss://localhost:{port}"))
        .await
        .unwrap_err();
    assert!(handshake_reason(&e).contains("not signed by a trusted CA"), "{e}");
    // The default roots (Mozilla's) do not know a private CA either.
    let e = Client::connect(&format!("wss://localhost:{port}"))
        .await
        .unwrap_err();
    assert!(handshake_reason(&e).contains("not signed by a trusted CA"), "{e}");
    // Not valid for the name connected to.
    let e = Client::builder()
        .tls_ca_pem(ca.pem())
        .connect(&format!("wss://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        handshake_reason(&e).contains("not valid for this host name"),
        "{e}"
    );
    // Expired.
    let expired = ca.issue_expired(&["localhost"], Usage::Server);
    let (s2, port2) = start(routes().tls(server_tls(&expired, None))).await;
    let e = Client::builder()
        .tls_ca_pem(ca.pem())
        .connect(&format!("wss://localhost:{port2}"))
        .await
        .unwrap_err();
    assert!(handshake_reason(&e).contains("expired"), "{e}");
    s1.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let (server, port) = start(routes().tls(server_tls(&id, Some(&clients)))).await;
    let url = format!("wss://localhost:{port}");
    // Without a certificate: refused.
    let e = Client::builder()
        .tls_ca_pem(ca.pem())
        .connect(&url)
        .await
        .unwrap_err();
    assert!(handshake_reason(&e).contains("client certificate"), "{e}");
    // With one the server's client CA did not sign: refused.
    let stranger = ca.issue(&["stranger"], Usage::Client);
    // (TLS 1.3 finishes the client's side of the handshake before the server judges its
    // certificate: the refusal then arrives during the upgrade, and says so all the same.)
    let refused = Client::builder()
        .tls_ca_pem(ca.pem())
        .tls_client_cert_pem(stranger.cert_pem, stranger.key_pem)
        .connect(&url)
        .await
        .map(|_| ())
        .expect_err("a stranger's certificate is refused");
    assert!(
        handshake_reason(&refused).contains("refused the client certificate"),
        "{refused}"
    );
    // With the right one: served, and the handler sees the certificate.
    let member = clients.issue(&["member"], Usage::Client);
    let c = Client::builder()
        .tls_ca_pem(ca.pem())
        .tls_client_cert_pem(member.cert_pem, member.key_pem)
        .connect(&url)
        .await
        .unwrap();
    assert_eq!(c.call_path::<usize>("/cert", &()).await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_wrong_port_gets_a_clear_error_and_nothing_hangs() {
    let ca = Ca::new("test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let (tls_server, tls_port) = start(routes().tls(server_tls(&id, None))).await;
    let (plain_server, plain_port) = start(routes()).await;
    let bound = Duration::from_secs(10);
    // ws:// to the TLS port: the server answers in plain HTTP.
    let e = tokio::time::timeout(bound, Client::connect(&format!("ws://localhost:{tls_port}")))
        .await
        .expect("no hang")
        .unwrap_err();
    match &e {
        Error::Refused {
            status: 400, body, ..
        } => assert!(body.contains("wss://"), "{body}"),
        other => panic!("expected a 400 telling to use wss://, got {other}"),
    }
    // wss:// to the plaintext port.
    let e = tokio::time::timeout(
        bound,
        Client::builder()
            .tls_ca_pem(ca.pem())
            .connect(&format!("wss://localhost:{plain_port}")),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(handshake_reason(&e).contains("TLS"), "{e}");
    // Both servers still serve.
    let c = Client::connect(&format!("ws://localhost:{plain_port}"))
        .await
        .unwrap();
    assert_eq!(c.call_path::<i64>("/add", &(1, 1)).await.unwrap(), 2);
    tls_server.shutdown().await;
    plain_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_bounded_by_the_handshake_timeout() {
    let ca = Ca::new("test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let (server, port) = start(
        routes()
            .tls(server_tls(&id, None))
            .handshake_timeout(Duration::from_millis(300)),
    )
    .await;
    // A ClientHello's first byte, and nothing more: slowloris at the TLS layer.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server dropped the stalled handshake");
    server.shutdown().await;
}

#[test]
fn configs_do_not_depend_on_a_process_wide_crypto_provider() {
    // With several providers compiled in, rustls's `builder()` panics unless one is installed
    // process-wide; webmesh names *ring* explicitly, so nothing is installed or needed.
    let ca = Ca::new("test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let _ = server_tls(&id, Some(&ca));
    assert!(webmesh::tls::rustls::crypto::CryptoProvider::get_default().is_none());
}

#[test]
fn pem_loading_says_what_is_wrong() {
    let ca = Ca::new("test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let other = ca.issue(&["localhost"], Usage::Server);
    let err = |r: Result<webmesh::tls::rustls::ServerConfig, Error>| match r {
        Err(Error::TlsConfig(m)) => m,
        Err(e) => panic!("expected TlsConfig, got {e}"),
        Ok(_) => panic!("expected an error"),
    };
    let no_cert = err(webmesh::tls::server_config_from_pem(
        b"",
        id.key_pem.as_bytes(),
        None,
    ));
    assert!(no_cert.contains("no certificate"), "{no_cert}");
    let key_as_cert = err(webmesh::tls::server_config_from_pem(
        id.key_pem.as_bytes(),
        id.key_pem.as_bytes(),
        None,
    ));
    assert!(key_as_cert.contains("no certificate"), "{key_as_cert}");
    let no_key = err(webmesh::tls::server_config_from_pem(
        id.cert_pem.as_bytes(),
        id.cert_pem.as_bytes(),
        None,
    ));
    assert!(no_key.contains("no private key"), "{no_key}");
    let mismatch = err(webmesh::tls::server_config_from_pem(
        id.cert_pem.as_bytes(),
        other.key_pem.as_bytes(),
        None,
    ));
    assert!(mismatch.contains("does not match"), "{mismatch}");
    let dir = std::env::temp_dir().join(format!("webmesh-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = err(webmesh::tls::server_config_from_files(
        dir.join("nope.pem"),
        dir.join("nope.key"),
        None,
    ));
    assert!(
        missing.contains("cannot read the certificate file") && missing.contains("nope.pem"),
        "{missing}"
    );
    let cert_path = dir.join("cert.pem");
    std::fs::write(&cert_path, &id.key_pem).unwrap();
    let wrong_file = err(webmesh::tls::server_config_from_files(
        &cert_path, &cert_path, None,
    ));
    assert!(
        wrong_file.contains("cert.pem") && wrong_file.contains("no certificate"),
        "{wrong_file}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real Python 0.1.2 client reaches a Rust wss:// server (its `websockets` speaks TLS; the
/// script only swaps the dial for one with an ssl context).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_0_1_2_client_over_wss() {
    use std::sync::{Arc, Mutex};
    use webmesh::Value;
    let ca = Ca::new("test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let recorded: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (r1, r2) = (recorded.clone(), recorded.clone());
    let (server, port) = start(
        Server::builder()
            .tls(server_tls(&id, None))
            .on("/echo", |v: Value| async move { v })
            .on("/record", move |v: Value| {
                r1.lock().unwrap().push(v);
                async {}
            })
            .on("/recorded", move |_: Value| {
                let all = r2.lock().unwrap().clone();
                async move { all }
            }),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("webmesh-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let script = webmesh_tests::repo_root().join("tests/python/client_over_wss.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(webmesh_tests::python())
            .arg(&script)
            .arg(port.to_string())
            .arg(&ca_file)
            .current_dir(webmesh_tests::repo_root().join("tests/python"))
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = webmesh_tests::expect_success(&out);
    assert_eq!(stdout.lines().last(), Some("ok 5"), "{stdout}");
    assert_eq!(recorded.lock().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}
