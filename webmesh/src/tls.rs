//! TLS (`wss://`) with rustls: loading certificates and keys, the server and client
//! configurations, and readable reasons for handshake failures.
//!
//! # The crypto provider
//!
//! webmesh builds every rustls configuration with one provider chosen explicitly: *ring*
//! ([`provider`]). It never relies on rustls's process-wide default, so a program whose
//! dependency graph compiles in a second provider (aws-lc-rs, through another crate) does not
//! panic at startup, as `ServerConfig::builder()` would. A configuration you build yourself
//! and hand to [`ServerBuilder::tls`](crate::ServerBuilder::tls) or
//! [`ClientBuilder::tls_config`](crate::ClientBuilder::tls_config) may use any provider.
//!
//! # Examples
//!
//! A server from PEM files, and a client that trusts the CA that signed its certificate:
//!
//! ```no_run
//! # async fn run() -> Result<(), webmesh::Error> {
//! let server = webmesh::Server::builder()
//!     .tls(webmesh::tls::server_config_from_files("cert.pem", "key.pem", None)?)
//!     .build()
//!     .await?;
//!
//! let client = webmesh::Client::builder()
//!     .tls_ca_pem(std::fs::read("ca.pem")?)
//!     .connect("wss://mesh.internal:4269")
//!     .await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

pub use rustls;

/// The crypto provider every configuration webmesh builds uses: *ring*.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: impl std::fmt::Display) -> Error {
    Error::TlsConfig(what.to_string())
}

/// Every certificate in PEM text, in order (a chain: the leaf first).
///
/// # Errors
///
/// [`Error::TlsConfig`] when the text holds no certificate, or a malformed one; `what` names the
/// source in the message.
pub fn certificates_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("{what}: malformed PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "{what}: no certificate in it (expected a `-----BEGIN CERTIFICATE-----` block)"
        )));
    }
    Ok(certs)
}

/// The private key in PEM text (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
///
/// [`Error::TlsConfig`] when the text holds no private key, or a malformed one.
pub fn private_key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => config_error(format!(
            "{what}: no private key in it (expected a `-----BEGIN PRIVATE KEY-----` block)"
        )),
        e => config_error(format!("{what}: malformed PEM private key: {e}")),
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| config_error(format!("cannot read the {what} {}: {e}", path.display())))
}

/// A server configuration from PEM text: the certificate chain (leaf first), its private key,
/// and, for mutual TLS, the CA certificates that client certificates must chain to (clients
/// without a valid certificate are then refused during the handshake).
///
/// # Errors
///
/// [`Error::TlsConfig`] saying which input is wrong: no certificate, a malformed one, no key, a
/// key that does not match the certificate, no CA certificate.
pub fn server_config_from_pem(
    cert_chain: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<ServerConfig> {
    let certs = certificates_from_pem(cert_chain, "the certificate chain")?;
    let key = private_key_from_pem(key, "the private key")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = root_store(ca, "the client CA")?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| config_error(format!("the client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            config_error("the private key does not match the certificate (the first in the chain)")
        }
        e => config_error(format!("the certificate or key is not usable: {e}")),
    })
}

/// [`server_config_from_pem`] from files; the errors name the file.
///
/// # Errors
///
/// [`Error::TlsConfig`]: a file that cannot be read, or any error of [`server_config_from_pem`].
pub fn server_config_from_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig> {
    let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
    let certs = read(cert_path, "certificate file")?;
    let key = read(key_path, "key file")?;
    let ca = client_ca.map(|p| read(p, "client CA file")).transpose()?;
    let name = |e: Error, path: &Path| match e {
        Error::TlsConfig(m) => Error::TlsConfig(format!("{}: {m}", path.display())),
        e => e,
    };
    // Check each file on its own first, so the error names the file that is wrong.
    certificates_from_pem(&certs, "the certificate chain").map_err(|e| name(e, cert_path))?;
    private_key_from_pem(&key, "the private key").map_err(|e| name(e, key_path))?;
    if let (Some(ca), Some(path)) = (&ca, client_ca) {
        certificates_from_pem(ca, "the client CA").map_err(|e| name(e, path))?;
    }
    server_config_from_pem(&certs, &key, ca.as_deref())
}

/// The roots: every certificate in `pem`.
fn root_store(pem: &[u8], what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(pem, what)? {
        roots
            .add(cert)
            .map_err(|e| config_error(format!("{what}: not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// What a client's TLS configuration is made of, before it is built at connect time.
#[derive(Clone, Default)]
pub(crate) struct ClientTls {
    /// PEM CA certificates to trust instead of the webpki roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key for mutual TLS.
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    /// A configuration given whole.
    pub(crate) config: Option<Arc<ClientConfig>>,
}

impl ClientTls {
    /// The client configuration: the one given, or one from the CA and identity set (the
    /// Mozilla roots of `webpki-roots` by default).
    pub(crate) fn build(&self) -> Result<Arc<ClientConfig>> {
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        let roots = match &self.ca_pem {
            Some(pem) => root_store(pem, "the CA")?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = certificates_from_pem(cert, "the client certificate")?;
                let key = private_key_from_pem(key, "the client key")?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| config_error(format!("the client certificate or key: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }
}

/// Why a client's TLS handshake failed, in words a user can act on.
pub(crate) fn handshake_failure(e: &std::io::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error as TlsError};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "TLS: the server closed the connection during the TLS handshake (does it speak \
                 TLS on this port? a ws:// server?)"
                    .into()
            }
            _ => format!("TLS: {e}"),
        };
    };
    let why = match tls {
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (UnknownIssuer)".to_owned()
        }
        TlsError::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired (Expired)".to_owned()
        }
        TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate is not valid for this host name (NotValidForName)".to_owned(),
        TlsError::InvalidMessage(_) => {
            "the server did not answer in TLS (a ws:// server on this port?)".to_owned()
        }
        TlsError::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (mutual TLS): set one with \
             ClientBuilder::tls_client_cert_pem"
                .to_owned()
        }
        TlsError::AlertReceived(AlertDescription::BadCertificate | AlertDescription::UnknownCA) => {
            "the server refused the client certificate".to_owned()
        }
        other => other.to_string(),
    };
    format!("TLS: {why}")
}
