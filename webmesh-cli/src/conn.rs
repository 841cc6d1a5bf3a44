//! The options every networked subcommand shares, and the client they build.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use webmesh::codec::AnyCodec;
use webmesh::{Client, ClientBuilder, Protocol};

use crate::output::{self, Failure};

/// A codec name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CodecArg {
    /// msgpack (0.1.2's default, and v1's).
    Msgpack,
    /// JSON (readable).
    Json,
}

impl CodecArg {
    pub(crate) fn codec(self) -> AnyCodec {
        match self {
            CodecArg::Msgpack => AnyCodec::MSGPACK,
            CodecArg::Json => AnyCodec::JSON,
        }
    }
}

/// Which framing to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProtocolArg {
    /// Offer v1; speak 0.1.2 if the server does not take it.
    Auto,
    /// v1 only.
    V1,
    /// 0.1.2's framing only (hex(zlib(msgpack)) or JSON text, no ids).
    Legacy,
}

/// How to reach a server.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The server's URL: ws://host:port[/path] or wss://...
    pub(crate) url: String,
    /// The codec. The framing is picked at the handshake (v1 when the server offers it);
    /// a 0.1.2 server needs the codec its serializer uses.
    #[arg(long, value_enum, default_value_t = CodecArg::Msgpack)]
    pub(crate) codec: CodecArg,
    /// Which framing to speak.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Auto)]
    pub(crate) protocol: ProtocolArg,
    /// An HTTP header for the upgrade request, as `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "K:V")]
    pub(crate) headers: Vec<String>,
    /// A bearer token for the upgrade request (`Authorization: Bearer ...`).
    #[arg(long, value_name = "TOKEN")]
    pub(crate) bearer: Option<String>,
    /// PEM file of the certificate authorities to trust for wss:// (instead of the web's roots).
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<std::path::PathBuf>,
    /// Do not verify the server's TLS certificate. Anyone on the path can then read and change
    /// the traffic: for local testing only.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) timeout: f64,
}

impl ConnectArgs {
    pub(crate) fn timeout(&self) -> Result<Duration, Failure> {
        Duration::try_from_secs_f64(self.timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Failure::bad_input(format!(
                    "--timeout {}: not a positive number of seconds",
                    self.timeout
                ))
            })
    }

    /// The builder these options describe.
    pub(crate) fn builder(&self) -> Result<ClientBuilder, Failure> {
        let timeout = self.timeout()?;
        let mut b = Client::builder()
            .codec(self.codec.codec())
            .protocol(match self.protocol {
                ProtocolArg::Auto => Protocol::Auto,
                ProtocolArg::V1 => Protocol::V1,
                ProtocolArg::Legacy => Protocol::Legacy,
            })
            .timeout(Some(timeout))
            .connect_timeout(timeout);
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| Failure::bad_input(format!("--header {h:?}: expected `Name: value`")))?;
            b = b.header(name.trim(), value.trim());
        }
        if let Some(token) = &self.bearer {
            b = b.bearer(token.clone());
        }
        if self.insecure {
            output::warn(
                "--insecure: the server's certificate is NOT verified; anyone on the path can read \
                 and change this traffic",
            );
            b = b.tls_config(insecure_config());
        } else if let Some(path) = &self.cacert {
            let pem = std::fs::read(path)
                .map_err(|e| Failure::bad_input(format!("--cacert {}: {e}", path.display())))?;
            b = b.tls_ca_pem(pem);
        }
        Ok(b)
    }

    /// Connects.
    pub(crate) async fn connect(&self) -> Result<Client, Failure> {
        Ok(self.builder()?.connect(&self.url).await?)
    }
}

/// A rustls client configuration that accepts any certificate (`--insecure`).
fn insecure_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnything(provider.clone()));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder_with_protocol_versions(rustls::DEFAULT_VERSIONS))
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The request: the JSON argument, `-` for stdin, or null when absent.
pub(crate) fn read_json(arg: Option<&str>) -> Result<rmpv::Value, Failure> {
    let text = match arg {
        None => return Ok(rmpv::Value::Nil),
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Failure::bad_input(format!("reading stdin: {e}")))?;
            s
        }
        Some(text) => text.to_owned(),
    };
    crate::lossless::parse(&text).map_err(|e| Failure::bad_input(format!("invalid JSON: {e}")))
}
