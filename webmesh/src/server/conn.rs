//! One server connection: admission, handshake, hooks; `driver` serves it.

// tungstenite's handshake callback returns its HTTP error response by value.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use webmesh_codec::{parse_subprotocol, subprotocol, AnyCodec, FrameEncoder, Framing};

use super::lifecycle::{self, Running};
use super::Shared;
use crate::conn::{self, Io, Socket};
use crate::connection::{Accepted, Connection};

/// What the handshake settled.
struct Negotiated {
    framing: Framing,
    codec: AnyCodec,
    path: String,
    headers: crate::connection::Headers,
}

/// Serves one accepted connection to its end; `running` counts it as a part of the server until
/// then.
pub(super) async fn serve(io: Io, peer: Option<SocketAddr>, shared: Arc<Shared>, running: Running) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("connection", id, peer = ?peer);
    // Counted from before the handshake so a flood of half-open upgrades counts too.
    let live = shared.live.fetch_add(1, Ordering::AcqRel) + 1;
    let full = live > shared.max_connections;
    crate::in_span(serve_counted(io, peer, id, full, &shared), span).await;
    shared.live.fetch_sub(1, Ordering::AcqRel);
    drop(running);
}

async fn serve_counted(io: Io, peer: Option<SocketAddr>, id: u64, full: bool, shared: &Arc<Shared>) {
    // Only `conn` and the driver live across the driver's await: what the handshake and the
    // setup used ends with this block (a moved-from local of an async fn still takes room in its
    // future until its scope ends).
    let (conn, mut driver) = {
        // The handshake's state (TLS, HTTP, tungstenite's handshake machine) is large and brief:
        // boxed, so the connection's task does not carry room for it for its whole life.
        let Some(done) = Box::pin(handshake(io, peer, full, shared)).await else {
            return;
        };
        connected(done, id, peer, shared)
    };
    driver.run().await;
    conn.mark_closing();
    shared.hub.remove_connection(conn.id());
    tracing::debug!("disconnected");
    if let Some(hook) = &shared.on_disconnect {
        run_hook("on_disconnect", || hook(&conn));
    }
}

/// The connection and its driver, once the handshake settled everything; runs the connect hook.
fn connected(
    done: Handshaken,
    id: u64,
    peer: Option<SocketAddr>,
    shared: &Arc<Shared>,
) -> (Connection, super::driver::Driver) {
    let Handshaken {
        io,
        neg,
        peer_certificates,
        identity,
    } = done;
    let encoder = FrameEncoder::new(neg.framing, neg.codec, shared.compression);
    let conn = Connection::new(Accepted {
        id,
        peer,
        path: neg.path,
        headers: neg.headers,
        encoder,
        server_state: shared.states.clone(),
        peer_certificates,
        identity,
        hub: shared.hub.clone(),
        queue: shared.outbound_queue,
    });
    tracing::debug!(
        framing = neg.framing.name(),
        codec = conn.codec_name(),
        "connected"
    );
    shared.hub.add_connection(&conn);
    if let Some(hook) = &shared.on_connect {
        run_hook("on_connect", || hook(&conn));
    }
    let max = shared.limits.max_frame_size;
    let socket = Socket::new(io, true, max, shared.keepalive, shared.stalled_peer_timeout);
    let driver = super::driver::Driver::new(socket, conn.clone(), shared.clone());
    (conn, driver)
}

/// A connection past its WebSocket handshake.
struct Handshaken {
    /// The stream, past the handshake (tungstenite's WebSocket, which did it, holds nothing).
    io: Io,
    neg: Negotiated,
    peer_certificates: Option<Vec<Vec<u8>>>,
    identity: Option<super::auth::Identity>,
}

/// TLS, the auth hook and the WebSocket upgrade, within the handshake timeout; `None` when the
/// connection ended there (logged).
async fn handshake(io: Io, peer: Option<SocketAddr>, full: bool, shared: &Arc<Shared>) -> Option<Handshaken> {
    let negotiated: Arc<Mutex<Option<Negotiated>>> = Arc::default();
    let slot = negotiated.clone();
    let codecs = shared.codecs.clone();
    let max = shared.max_connections;
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if full {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many connections (limit {max})"),
            ));
        }
        negotiate(req, resp, &codecs, &slot)
    };
    let config = conn::ws_config();
    // One bound for TLS and the upgrade together: a slow peer at either layer costs at most this.
    let handshake = tokio::time::timeout(shared.handshake_timeout, async {
        let (io, certs) = secure(io, shared).await?;
        let (mut io, identity) = authenticate(io, peer, &certs, shared).await?;
        io.stop_after_headers();
        tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(config))
            .await
            .map(|ws| (ws.into_inner(), certs, identity))
            .map_err(|e| Refusal::Debug(format!("websocket handshake failed: {e}")))
    });
    let mut shutdown = shared.lifecycle.subscribe();
    let (io, peer_certificates, identity) = tokio::select! {
        done = handshake => match done {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(Refusal::Debug(why))) => {
                tracing::debug!("{why}");
                return None;
            }
            Ok(Err(Refusal::Warn(why))) => {
                tracing::warn!("{why}");
                return None;
            }
            Ok(Err(Refusal::Info(why))) => {
                tracing::info!("{why}");
                return None;
            }
            Err(_) => {
                tracing::debug!("handshake timed out");
                return None;
            }
        },
        _ = lifecycle::started(&mut shutdown) => {
            tracing::debug!("server shutting down during the websocket handshake");
            return None;
        }
    };
    let neg = negotiated.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    Some(Handshaken {
        io,
        neg,
        peer_certificates,
        identity,
    })
}

/// Why a connection ended before its WebSocket existed, and how loudly to say so.
enum Refusal {
    /// Ordinary (a scanner, a peer that gave up).
    Debug(String),
    /// A misconfiguration worth a warning (a client on the wrong port).
    Warn(String),
    /// A decision worth a line (the auth hook refused).
    Info(String),
}

/// The stream the WebSocket runs on: TLS when the server has it. The first byte tells a TLS
/// ClientHello (`0x16`) from plain HTTP, so a client on the wrong port gets a clear answer and
/// the server a log line, instead of a hang.
async fn secure(mut io: Io, shared: &Shared) -> Result<(Io, Option<Vec<Vec<u8>>>), Refusal> {
    let first = io
        .peek()
        .await
        .map_err(|e| Refusal::Debug(format!("connection failed before the handshake: {e}")))?;
    let Some(&first) = first.first() else {
        return Err(Refusal::Debug("connection closed before the handshake".into()));
    };
    let hello = first == 0x16;
    #[cfg(feature = "tls")]
    if let Some(acceptor) = &shared.tls {
        if !hello {
            let mut io = io;
            let body = "this server speaks TLS: connect with a wss:// URL";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::io::AsyncWriteExt::write_all(&mut io, answer.as_bytes()).await;
            return Err(Refusal::Warn(
                "a plaintext client on the TLS port: answered 400 (it should use wss://)".into(),
            ));
        }
        let tls = acceptor
            .accept(io)
            .await
            .map_err(|e| Refusal::Warn(format!("TLS handshake failed: {e}")))?;
        let certs = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect());
        return Ok((Io::new(tls), certs));
    }
    #[cfg(not(feature = "tls"))]
    let _ = shared;
    if hello {
        return Err(Refusal::Warn(
            "a TLS client on a plaintext port (this server has no TLS): closed".into(),
        ));
    }
    Ok((io, None))
}

/// Runs the auth hook on the upgrade request, if the server has one: its identity, or the HTTP
/// refusal written to the client.
async fn authenticate(
    mut io: Io,
    peer: Option<SocketAddr>,
    certs: &Option<Vec<Vec<u8>>>,
    shared: &Shared,
) -> Result<(Io, Option<super::auth::Identity>), Refusal> {
    let Some(hook) = &shared.auth else {
        return Ok((io, None));
    };
    let (request, head) = super::auth::read_request(&mut io, peer, certs.clone())
        .await
        .map_err(Refusal::Debug)?;
    let path = request.path().to_owned();
    match hook(request).await {
        Ok(identity) => {
            io.unread(&head);
            Ok((io, Some(identity)))
        }
        Err(reject) => {
            let answer = super::auth::refusal_response(&reject);
            let _ = tokio::io::AsyncWriteExt::write_all(&mut io, &answer).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
            Err(Refusal::Info(format!(
                "upgrade to {path} refused by the auth hook: HTTP {}",
                reject.status()
            )))
        }
    }
}

fn run_hook(name: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!(hook = name, "hook panicked");
    }
}

fn refuse(status: StatusCode, body: String) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(body));
    *resp.status_mut() = status;
    resp
}

/// Picks the framing from `Sec-WebSocket-Protocol`: the first offered `webmesh.v1.<codec>` the
/// server has; none offered means a 0.1.2 peer; only unusable ones offered is a 400.
fn negotiate(
    req: &Request,
    mut resp: Response,
    codecs: &[AnyCodec],
    slot: &Mutex<Option<Negotiated>>,
) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let webmesh: Vec<&str> = offered
        .iter()
        .copied()
        // A bearer token entry is a credential, not a protocol choice.
        .filter(|p| p.starts_with("webmesh.") && !p.starts_with(super::auth::BEARER_SUBPROTOCOL_PREFIX))
        .collect();
    let chosen = webmesh.iter().find_map(|p| {
        let name = parse_subprotocol(p)?;
        codecs.iter().find(|c| c.name() == name).map(|c| (*p, c.clone()))
    });
    let (framing, codec) = match chosen {
        Some((proto, codec)) => {
            let value = HeaderValue::from_str(proto)
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "bad subprotocol".into()))?;
            resp.headers_mut().insert("sec-websocket-protocol", value);
            (Framing::V1, codec)
        }
        None if webmesh.is_empty() => (Framing::Legacy, codecs[0].clone()),
        None => {
            let supported: Vec<String> = codecs.iter().map(subprotocol).collect();
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "unsupported webmesh subprotocol {:?}; this server speaks {}",
                    webmesh.join(", "),
                    supported.join(", ")
                ),
            ));
        }
    };
    let headers = crate::connection::Headers::new(
        req.headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Negotiated {
        framing,
        codec,
        path: req.uri().path().to_owned(),
        headers,
    });
    Ok(resp)
}
