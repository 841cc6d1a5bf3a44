//! The client side of the WebSocket upgrade, done here rather than by tungstenite: a 0.1.2 server
//! answers a subprotocol offer without the `Sec-WebSocket-Protocol` header (RFC 6455 allows it),
//! which tungstenite's client rejects. Reading the answer ourselves lets one handshake both offer
//! v1 and fall back to legacy.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::{Error, Result};

/// Largest HTTP answer head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest error body read to report a refusal.
const MAX_BODY: usize = 4 * 1024;

/// The parts of a `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsUrl {
    /// The URL as given, for messages.
    pub(crate) original: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
    /// `wss://`: TLS under the WebSocket.
    pub(crate) tls: bool,
}

impl WsUrl {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let (rest, tls) = if let Some(r) = url.strip_prefix("ws://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("wss://") {
            if cfg!(not(feature = "tls")) {
                return Err(bad("wss:// needs webmesh's `tls` feature"));
            }
            (r, true)
        } else {
            return Err(bad(
                "expected ws://host[:port][/path] or wss://host[:port][/path]",
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match &v6[end + 1..] {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(WsUrl {
            original: url.to_owned(),
            host: host.to_owned(),
            port,
            path,
            tls,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// What the server answered.
pub(crate) struct Upgraded {
    /// The subprotocol it chose, if any.
    pub(crate) protocol: Option<String>,
    /// Bytes read past the HTTP head (the first WebSocket frames, if the server already sent any).
    pub(crate) leftover: Vec<u8>,
}

/// Sends the upgrade request on `tcp` and checks the answer.
pub(crate) async fn upgrade(
    tcp: &mut (impl AsyncRead + AsyncWrite + Unpin),
    url: &WsUrl,
    protocols: &[String],
    headers: &[(String, String)],
) -> Result<Upgraded> {
    let failed = |reason: String| Error::Handshake {
        url: url.original.clone(),
        reason,
    };
    let io = |source: std::io::Error| {
        // Over TLS, the server's verdict on our certificate arrives here, as an alert.
        #[cfg(feature = "tls")]
        if source.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
            return Error::Handshake {
                url: url.original.clone(),
                reason: crate::tls::handshake_failure(&source),
            };
        }
        Error::Connect {
            url: url.original.clone(),
            source,
        }
    };
    let key = generate_key();
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: webmesh-rs/{}\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    if !protocols.is_empty() {
        req.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(", ")));
    }
    for (k, v) in headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(Error::Config(format!("invalid header {k:?}")));
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.map_err(io)?;

    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(failed("connection closed during the upgrade".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(failed("answer head too large".into()));
        }
    };
    let mut header_store = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut header_store);
    match resp.parse(&buf[..head_end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(failed("incomplete answer".into())),
        Err(e) => return Err(failed(format!("not an HTTP answer: {e}"))),
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        // The body says why; without a length it runs to the end of the connection.
        let want = header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(MAX_BODY)
            .min(MAX_BODY);
        let mut body = buf[head_end..].to_vec();
        let read_rest = async {
            while body.len() < want {
                let mut chunk = [0u8; 1024];
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read_rest).await;
        body.truncate(want);
        return Err(Error::Refused {
            url: url.original.clone(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(failed("answer lacks Upgrade: websocket".into()));
    }
    if !header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))) {
        return Err(failed("answer lacks Connection: upgrade".into()));
    }
    if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(failed("wrong Sec-WebSocket-Accept".into()));
    }
    let protocol = match header("sec-websocket-protocol") {
        None => None,
        Some(p) if protocols.iter().any(|o| o == p.trim()) => Some(p.trim().to_owned()),
        Some(p) => {
            return Err(failed(format!(
                "server chose subprotocol {p:?}, which was not offered"
            )))
        }
    };
    Ok(Upgraded {
        protocol,
        leftover: buf[head_end..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WsUrl::parse("ws://127.0.0.1:4269").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 4269, "/")
        );
        let u = WsUrl::parse("ws://[::1]:9/mesh?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9, "/mesh?x=1")
        );
        assert_eq!(u.host_header(), "[::1]:9");
        let u = WsUrl::parse("ws://example.test?a").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/?a"));
        for bad in [
            "http://x",
            "ws://",
            "ws://:80",
            "ws://h:port",
            "ws://u@h",
            "ws://[::1",
        ] {
            assert!(WsUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
