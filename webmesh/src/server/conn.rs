//! One server connection: handshake, read loop, dispatch, drain, close.

// tungstenite's handshake callback returns its HTTP error response by value.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tracing::Instrument;
use webmesh_codec::{
    code, decode_frame, parse_subprotocol, peek_v1_header, subprotocol, AnyCodec, Error as CodecError,
    FrameEncoder, FrameType, Framing, Kind, WireMessage,
};

use super::{Dispatch, ReplyTo, Shared};
use crate::connection::{Accepted, Connection};
use crate::transport::{self, close, Outbound};

/// What the handshake settled.
struct Negotiated {
    framing: Framing,
    codec: AnyCodec,
    path: String,
    headers: Vec<(String, String)>,
}

/// Why a read loop stopped.
enum Stop {
    /// The peer closed or vanished.
    PeerGone,
    /// We close, with this code and reason.
    Close(u16, String),
}

/// Serves one accepted TCP connection to its end.
pub(super) async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("connection", id, %peer);
    // Counted from before the handshake so a flood of half-open upgrades counts too.
    let live = shared.live.fetch_add(1, Ordering::AcqRel) + 1;
    let full = live > shared.max_connections;
    serve_counted(tcp, peer, id, full, &shared).instrument(span).await;
    shared.live.fetch_sub(1, Ordering::AcqRel);
}

async fn serve_counted(tcp: TcpStream, peer: SocketAddr, id: u64, full: bool, shared: &Arc<Shared>) {
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
    let config = transport::ws_config(&shared.limits);
    let ws = match tokio::time::timeout(
        shared.handshake_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("websocket handshake timed out");
            return;
        }
    };
    let Some(neg) = negotiated.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let encoder = FrameEncoder::new(neg.framing, neg.codec, shared.compression);
    let (tx, rx) = mpsc::channel(shared.outbound_queue);
    let conn = Connection::new(
        Accepted {
            id,
            peer,
            path: neg.path,
            headers: neg.headers,
            encoder,
        },
        tx,
    );
    tracing::debug!(
        framing = neg.framing.name(),
        codec = conn.codec_name(),
        "connected"
    );
    if let Some(hook) = &shared.on_connect {
        run_hook("on_connect", || hook(&conn));
    }

    let (sink, stream) = ws.split();
    let mut writer = tokio::spawn(transport::write_loop(sink, rx));
    let in_flight = Arc::new(Semaphore::new(shared.max_in_flight));
    let stop = read_loop(stream, &conn, shared, &in_flight).await;

    // Let the requests in flight finish and send their answers.
    let all = u32::try_from(shared.max_in_flight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(shared.shutdown_timeout, in_flight.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!("requests still running after the shutdown timeout; closing anyway");
    }
    match stop {
        Stop::Close(code, reason) => {
            tracing::debug!(code, %reason, "closing");
            let _ = conn.sender().try_send(Outbound::Close(code, reason));
            // The writer sends the close frame and stops; do not wait on a peer that does not read.
            if tokio::time::timeout(Duration::from_secs(2), &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        }
        Stop::PeerGone => writer.abort(),
    }
    conn.mark_closed();
    tracing::debug!("disconnected");
    if let Some(hook) = &shared.on_disconnect {
        run_hook("on_disconnect", || hook(&conn));
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
        .filter(|p| p.starts_with("webmesh."))
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
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Negotiated {
        framing,
        codec,
        path: req.uri().path().to_owned(),
        headers,
    });
    Ok(resp)
}

async fn read_loop<S>(
    mut stream: S,
    conn: &Connection,
    shared: &Arc<Shared>,
    in_flight: &Arc<Semaphore>,
) -> Stop
where
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    // Made once, polled each turn: cheaper than building them per message.
    let mut shutdown_rx = shared.shutdown.clone();
    let mut shutdown = std::pin::pin!(super::stopped(&mut shutdown_rx));
    let mut closing = std::pin::pin!(conn.close_requested());
    let mut permit_shutdown = shared.shutdown.clone();
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut shutdown => return Stop::Close(close::GOING_AWAY, "server shutting down".into()),
            (code, reason) = &mut closing => return Stop::Close(code, reason),
            next = stream.next() => next,
        };
        let msg = match next {
            None => return Stop::PeerGone,
            Some(Err(e)) => {
                use tokio_tungstenite::tungstenite::Error as WsError;
                return match e {
                    WsError::Capacity(c) => {
                        tracing::warn!(error = %c, "frame over the size limit");
                        Stop::Close(1009, format!("frame too big: {c}"))
                    }
                    WsError::Protocol(p) => {
                        tracing::debug!(error = %p, "websocket protocol error");
                        Stop::Close(close::PROTOCOL, p.to_string())
                    }
                    e => {
                        tracing::debug!(error = %e, "connection lost");
                        Stop::PeerGone
                    }
                };
            }
            Some(Ok(m)) => m,
        };
        let Some((frame_type, bytes)) = transport::data_of(msg) else {
            continue; // ping, pong, close: tungstenite answers them
        };
        if let Some(stop) =
            handle_data(frame_type, bytes, conn, shared, in_flight, &mut permit_shutdown).await
        {
            return stop;
        }
    }
}

/// Handles one data message; `Some` when the connection must close.
async fn handle_data(
    frame_type: FrameType,
    bytes: Bytes,
    conn: &Connection,
    shared: &Arc<Shared>,
    in_flight: &Arc<Semaphore>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Stop> {
    let framing = conn.framing();
    let frame = match decode_frame(
        framing,
        conn.encoder().codec(),
        &shared.limits,
        frame_type,
        bytes.clone(),
    ) {
        Ok(f) => f,
        Err(e) => return bad_frame(framing, &e, &bytes, conn).await,
    };
    let (reply, path_known) = match frame.kind() {
        Kind::Call if frame.id() != 0 => (ReplyTo::Call(frame.id()), true),
        Kind::Call => {
            return Some(Stop::Close(close::PROTOCOL, "CALL with id 0".into()));
        }
        Kind::Notify => (ReplyTo::Nothing, true),
        Kind::Legacy => (ReplyTo::Legacy, true),
        Kind::Cancel | Kind::Reply | Kind::Error => {
            // This server makes no calls; a CANCEL may be ignored (PROTOCOL.md §4).
            tracing::trace!(kind = ?frame.kind(), id = frame.id(), "ignored");
            (ReplyTo::Nothing, false)
        }
        _ => {
            if frame.id() != 0 {
                let msg = format!("unsupported frame kind {:?}", frame.kind());
                send(
                    conn,
                    conn.encoder().error_plain(frame.id(), code::UNSUPPORTED, &msg),
                )
                .await;
            }
            (ReplyTo::Nothing, false)
        }
    };
    if !path_known {
        return None;
    }
    let Some(handler) = shared.router.get(frame.path()) else {
        not_found(&frame, reply, conn, shared).await;
        return None;
    };
    // Backpressure: at the limit, wait for a running request to finish before reading on.
    let permit = tokio::select! {
        biased;
        _ = super::stopped(shutdown) => return Some(Stop::Close(close::GOING_AWAY, "server shutting down".into())),
        p = in_flight.clone().acquire_owned() => p.ok()?,
    };
    let handler = handler.clone();
    let conn = conn.clone();
    let path: Arc<str> = frame.path().into();
    let fallback = Dispatch {
        frame: frame.clone(),
        conn: conn.clone(),
        reply,
    };
    let dispatch = Dispatch { frame, conn, reply };
    tokio::spawn(async move {
        let answer = match AssertUnwindSafe(async move { handler(dispatch).await })
            .catch_unwind()
            .await
        {
            Ok(answer) => answer,
            Err(_) => {
                tracing::error!(path = &*path, "handler panicked");
                fallback.fail(code::INTERNAL, &format!("handler for {path} panicked"))
            }
        };
        if let Some(msg) = answer {
            // Waits while the peer's queue is full: the permit is held, so reading pauses too.
            let _ = fallback.conn.sender().send(msg.into()).await;
        }
        drop(permit);
    });
    None
}

async fn send(conn: &Connection, msg: Result<Option<WireMessage>, CodecError>) {
    match msg {
        Ok(Some(m)) => {
            let _ = conn.sender().send(m.into()).await;
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot encode an error answer"),
    }
}

async fn not_found(frame: &webmesh_codec::Frame, reply: ReplyTo, conn: &Connection, shared: &Shared) {
    let path = frame.path();
    tracing::debug!(path, "no route");
    let answer = match &shared.on_not_found {
        Some(hook) => hook(path, conn),
        None if reply == ReplyTo::Legacy => Some("Path not found".to_owned()),
        None => None,
    };
    match reply {
        ReplyTo::Call(id) => {
            let message = answer.unwrap_or_else(|| format!("no route at {path}"));
            send(conn, conn.encoder().error_plain(id, code::NOT_FOUND, &message)).await;
        }
        ReplyTo::Legacy => {
            if let Some(text) = answer {
                let enc = super::handler::reply_encoder(conn.encoder(), frame);
                send(conn, enc.reply(0, path, &text)).await;
            }
        }
        ReplyTo::Nothing => {}
    }
}

/// A frame that did not decode: PROTOCOL.md §5 says what each class gets.
async fn bad_frame(framing: Framing, e: &CodecError, bytes: &[u8], conn: &Connection) -> Option<Stop> {
    use CodecError::*;
    match (framing, e) {
        (_, WrongFrameType { .. }) => Some(Stop::Close(close::UNSUPPORTED, e.to_string())),
        (Framing::V1, TruncatedHeader(_) | ReservedFlags(_) | VarintOverflow | PathNotUtf8) => {
            Some(Stop::Close(close::PROTOCOL, e.to_string()))
        }
        (Framing::V1, _) => {
            match peek_v1_header(bytes) {
                Some((Kind::Call, id)) if id != 0 => {
                    send(
                        conn,
                        conn.encoder().error_plain(id, code::BAD_REQUEST, &e.to_string()),
                    )
                    .await;
                }
                _ => tracing::warn!(error = %e, "bad frame"),
            }
            None
        }
        (Framing::Legacy, _) => {
            // As 0.1.2: log, no reply, keep the connection.
            tracing::warn!(error = %e, "bad legacy frame");
            None
        }
    }
}
