//! Authentication at the upgrade, and per-route authorization.
//!
//! An auth hook sees the HTTP upgrade request before the WebSocket exists (headers, query,
//! offered subprotocols, peer address, TLS client certificate) and returns an identity, stored on
//! the connection, or a refusal with an HTTP status. Authorization rules then check the identity
//! on every request to the paths they cover; a call that fails gets the v1 error `forbidden`.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::connection::Connection;

/// The subprotocol prefix that carries a bearer token: `webmesh.bearer.<token>`.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "webmesh.bearer.";
/// The query parameter that carries a bearer token (RFC 6750 §2.3): `?access_token=<token>`.
pub const BEARER_QUERY_PARAMETER: &str = "access_token";

/// Largest upgrade request head read when an auth hook is set.
const MAX_HEAD: usize = 16 * 1024;

/// The HTTP upgrade request, as an auth hook sees it.
///
/// A bearer token may travel three ways; [`bearer_token`](Self::bearer_token) finds it in any:
///
/// - the `Authorization: Bearer <token>` header: for programs (webmesh's client sends it with
///   `ClientBuilder::bearer`);
/// - a `Sec-WebSocket-Protocol` entry `webmesh.bearer.<token>`: for browsers, which cannot set
///   headers on a WebSocket. Prefer it there: proxies and servers do not log it by default,
///   while a URL's query string lands in access logs and browser history. The token must be made
///   of token characters (a JWT is: letters, digits, `-`, `_`, `.`). The server never echoes it;
/// - the query parameter `access_token=<token>`: the fallback for clients that can set neither.
#[derive(Clone)]
pub struct UpgradeRequest {
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    peer: Option<SocketAddr>,
    peer_certificates: Option<Vec<Vec<u8>>>,
}

impl UpgradeRequest {
    /// The request path, without the query (`/` usually).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string, without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The value of query parameter `name`, percent-decoded; the first if it repeats.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    }

    /// A header (name case-insensitive); the first if it repeats.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The subprotocols the client offered, in order.
    pub fn subprotocols(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// The bearer token, from the `Authorization` header, a `webmesh.bearer.` subprotocol entry
    /// or the `access_token` query parameter, in that order.
    pub fn bearer_token(&self) -> Option<Cow<'_, str>> {
        if let Some(auth) = self.header("authorization") {
            let (scheme, token) = auth.trim().split_once(' ').unwrap_or((auth, ""));
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(Cow::Borrowed(token.trim()));
            }
        }
        if let Some(token) = self
            .subprotocols()
            .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        {
            return Some(Cow::Borrowed(token));
        }
        self.query_param(BEARER_QUERY_PARAMETER)
    }

    /// The peer's address; `None` for a stream that has none.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client's TLS certificate chain (DER, leaf first), on a server with mutual TLS.
    pub fn peer_certificates(&self) -> Option<&[Vec<u8>]> {
        self.peer_certificates.as_deref()
    }
}

impl fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the headers: they may hold credentials.
        f.debug_struct("UpgradeRequest")
            .field("path", &self.path)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// An auth hook's refusal: the HTTP status and body the client gets instead of the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    status: u16,
    body: String,
}

impl Reject {
    /// 401 Unauthorized: no credentials, or unreadable ones.
    pub fn unauthorized(body: impl Into<String>) -> Self {
        Reject {
            status: 401,
            body: body.into(),
        }
    }

    /// 403 Forbidden: credentials that are not good enough.
    pub fn forbidden(body: impl Into<String>) -> Self {
        Reject {
            status: 403,
            body: body.into(),
        }
    }

    /// Any other status (a 4xx or 5xx); anything else becomes 403.
    pub fn with_status(status: u16, body: impl Into<String>) -> Self {
        let status = if (400..600).contains(&status) { status } else { 403 };
        Reject {
            status,
            body: body.into(),
        }
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }
}

/// The identity an auth hook returned, type-erased.
pub(crate) type Identity = Arc<dyn Any + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An auth hook, erased.
pub(crate) type AuthHook = Arc<dyn Fn(UpgradeRequest) -> BoxFuture<Result<Identity, Reject>> + Send + Sync>;

pub(crate) fn erase_sync<I, F>(hook: F) -> AuthHook
where
    I: Send + Sync + 'static,
    F: Fn(&UpgradeRequest) -> Result<I, Reject> + Send + Sync + 'static,
{
    Arc::new(move |req: UpgradeRequest| {
        let out = hook(&req).map(|i| Arc::new(i) as Identity);
        Box::pin(std::future::ready(out))
    })
}

pub(crate) fn erase_async<I, F, Fut>(hook: F) -> AuthHook
where
    I: Send + Sync + 'static,
    F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, Reject>> + Send + 'static,
{
    Arc::new(move |req: UpgradeRequest| {
        let fut = hook(req);
        Box::pin(async move { fut.await.map(|i| Arc::new(i) as Identity) })
    })
}

/// Paths an authorization rule covers: one path, or every path under a prefix (`/admin/*`).
#[derive(Debug, Clone)]
pub(crate) enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub(crate) fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
            None => PathPattern::Exact(pattern.to_owned()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// An authorization rule: a predicate on the connection (its identity) for some paths.
pub(crate) struct Rule {
    pub(crate) paths: PathPattern,
    pub(crate) allows: Arc<dyn Fn(&Connection) -> bool + Send + Sync>,
}

/// True when every rule that covers `path` allows the connection.
pub(crate) fn authorized(rules: &[Rule], path: &str, conn: &Connection) -> bool {
    rules
        .iter()
        .filter(|r| r.paths.matches(path))
        .all(|r| (r.allows)(conn))
}

/// Reads the upgrade request's head from `io` (up to the blank line) and parses it. Returns the
/// request and every byte read, which the WebSocket layer reads again.
pub(crate) async fn read_request(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    peer: Option<SocketAddr>,
    peer_certificates: Option<Vec<Vec<u8>>>,
) -> Result<(UpgradeRequest, Vec<u8>), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the upgrade request: {e}"))?;
        if n == 0 {
            return Err("connection closed during the upgrade request".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("upgrade request head over {MAX_HEAD} bytes"));
        }
    };
    let mut store = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut store);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete upgrade request".into()),
        Err(e) => return Err(format!("not an HTTP request: {e}")),
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let headers = req
        .headers
        .iter()
        .filter_map(|h| Some((h.name.to_owned(), std::str::from_utf8(h.value).ok()?.to_owned())))
        .collect();
    let request = UpgradeRequest {
        path,
        query,
        headers,
        peer,
        peer_certificates,
    };
    Ok((request, buf))
}

/// The HTTP answer of a refusal.
pub(crate) fn refusal_response(reject: &Reject) -> Vec<u8> {
    let reason = match reject.status {
        401 => "Unauthorized",
        403 => "Forbidden",
        400 => "Bad Request",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Refused",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n",
        reject.status,
        reject.body.len()
    );
    if reject.status == 401 {
        head.push_str("WWW-Authenticate: Bearer\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(reject.body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> UpgradeRequest {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        UpgradeRequest {
            path,
            query,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            peer: None,
            peer_certificates: None,
        }
    }

    #[test]
    fn bearer_tokens_come_from_the_header_the_subprotocol_or_the_query() {
        let header = request("/", &[("Authorization", "Bearer abc.def")]);
        assert_eq!(header.bearer_token().as_deref(), Some("abc.def"));
        let sub = request(
            "/",
            &[(
                "Sec-WebSocket-Protocol",
                "webmesh.v1.msgpack, webmesh.bearer.x-1_y.z",
            )],
        );
        assert_eq!(sub.bearer_token().as_deref(), Some("x-1_y.z"));
        let query = request("/mesh?a=1&access_token=t%2Bk%20n", &[]);
        assert_eq!(query.path(), "/mesh");
        assert_eq!(query.bearer_token().as_deref(), Some("t+k n"));
        let basic = request("/", &[("Authorization", "Basic dXNlcg==")]);
        assert_eq!(basic.bearer_token(), None);
        assert_eq!(request("/?access_token", &[]).bearer_token().as_deref(), Some(""));
    }

    #[test]
    fn patterns_cover_one_path_or_a_prefix() {
        assert!(PathPattern::parse("/admin/*").matches("/admin/users"));
        assert!(!PathPattern::parse("/admin/*").matches("/adminx"));
        assert!(PathPattern::parse("/a").matches("/a"));
        assert!(!PathPattern::parse("/a").matches("/ab"));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
