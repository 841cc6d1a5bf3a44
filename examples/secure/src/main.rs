//! A `wss://` server that authenticates every connection with a bearer token and keeps one
//! route for admins, and clients that show each outcome. One command:
//!
//! ```text
//! cargo run -p secure
//! ```
//!
//! The certificates are made at startup (a CA and a `localhost` certificate it signs), so
//! nothing secret is in the repository. In production, load yours with
//! `webmesh::tls::server_config_from_files("cert.pem", "key.pem", None)`.
#![allow(clippy::print_stdout)]

use webmesh::{Client, Connection, Reject, Server, UpgradeRequest};

/// Who a token belongs to: what the auth hook stores on the connection.
struct User {
    name: String,
    admin: bool,
}

/// The tokens this demo knows; a real service verifies a JWT or asks an identity provider
/// (`ServerBuilder::auth_async` for a hook that waits).
fn authenticate(req: &UpgradeRequest) -> Result<User, Reject> {
    let user = |name: &str, admin| User {
        name: name.into(),
        admin,
    };
    match req.bearer_token().as_deref() {
        None => Err(Reject::unauthorized("a bearer token is required")),
        Some("token-ada") => Ok(user("ada", true)),
        Some("token-bob") => Ok(user("bob", false)),
        Some(_) => Err(Reject::forbidden("unknown token")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (ca_pem, cert_pem, key_pem) = demo_certificates()?;
    let tls = webmesh::tls::server_config_from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), None)?;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .tls(tls)
        .auth(authenticate)
        .authorize("/admin/*", |user: Option<&User>| user.is_some_and(|u| u.admin))
        .on("/whoami", |_: (), conn: Connection| async move {
            conn.identity::<User>()
                .map_or_else(String::new, |u| u.name.clone())
        })
        .on("/admin/stats", |_: (), conn: Connection| async move {
            format!("stats for {}", conn.identity::<User>().map_or("?", |u| &u.name))
        })
        .build()
        .await?;
    let url = format!("wss://localhost:{}", server.local_addr().port());
    println!("serving {url}");
    let handle = server.spawn();

    // A client with a valid token; it trusts the demo CA, not the public roots.
    let ada = Client::builder()
        .tls_ca_pem(ca_pem.clone())
        .bearer("token-ada")
        .connect(&url)
        .await?;
    println!(
        "ada: whoami -> {}",
        ada.call_path::<String>("/whoami", &()).await?
    );
    println!(
        "ada: /admin/stats -> {}",
        ada.call_path::<String>("/admin/stats", &()).await?
    );

    // A valid token without the admin right: the rule answers `forbidden`.
    let bob = Client::builder()
        .tls_ca_pem(ca_pem.clone())
        .bearer("token-bob")
        .connect(&url)
        .await?;
    match bob.call_path::<String>("/admin/stats", &()).await {
        Err(e) if e.is_forbidden() => println!("bob: /admin/stats -> forbidden ({e})"),
        other => println!("bob: /admin/stats -> unexpected {other:?}"),
    }

    // No token, a wrong token, plain ws:// on the TLS port, an unknown CA: refused, saying why.
    let attempts = [
        ("no token", Client::builder().tls_ca_pem(ca_pem.clone())),
        (
            "a wrong token",
            Client::builder().tls_ca_pem(ca_pem.clone()).bearer("guess"),
        ),
        ("the public roots only", Client::builder().bearer("token-ada")),
    ];
    for (what, builder) in attempts {
        match builder.connect(&url).await {
            Err(e) => println!("{what}: refused: {e}"),
            Ok(_) => println!("{what}: unexpectedly accepted"),
        }
    }
    let plain = url.replacen("wss://", "ws://", 1);
    if let Err(e) = Client::connect(&plain).await {
        println!("ws:// on the TLS port: refused: {e}");
    }

    ada.close().await;
    bob.close().await;
    handle.shutdown().await;
    Ok(())
}

/// A CA, and a certificate for `localhost` it signs: (CA PEM, certificate PEM, key PEM).
fn demo_certificates() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}
