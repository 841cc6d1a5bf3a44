//! The certificates of the `wss` system, made once per harness run (rcgen): a CA and a server
//! certificate for `localhost` it signs. The server child gets them through its environment;
//! nothing is written to disk or committed.

use std::process::Command;
use std::sync::OnceLock;

const CERT_VAR: &str = "WEBMESH_BENCH_TLS_CERT";
const KEY_VAR: &str = "WEBMESH_BENCH_TLS_KEY";

pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// The harness's certificates.
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| make().expect("make the benchmark's certificates"))
}

fn make() -> Result<Pki, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca_cert, &ca_key)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Hands the server certificate and key to a server child.
pub(crate) fn pass_to(cmd: &mut Command) {
    let p = pki();
    cmd.env(CERT_VAR, &p.cert_pem).env(KEY_VAR, &p.key_pem);
}

/// In the server child: its TLS configuration, from what the harness passed.
pub(crate) fn server_config_from_env() -> Result<webmesh::tls::rustls::ServerConfig, String> {
    let cert = std::env::var(CERT_VAR).map_err(|_| format!("{CERT_VAR} is not set"))?;
    let key = std::env::var(KEY_VAR).map_err(|_| format!("{KEY_VAR} is not set"))?;
    webmesh::tls::server_config_from_pem(cert.as_bytes(), key.as_bytes(), None).map_err(|e| e.to_string())
}
