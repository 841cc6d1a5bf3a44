//! The client side of each system.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use webmesh::codec::AnyCodec;

use crate::payload::{echo_large, echo_small, BenchRpcClient, Large, Small};
use crate::servers::MAX_MESSAGE;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    /// tokio-tungstenite binary echo of pre-encoded payloads, one task per connection.
    Raw,
    /// The same with separate reader and writer tasks per connection.
    RawSplit,
    /// webmesh-rs between Rust peers, default codec (v1 framing, msgpack, compression over 1 KiB),
    /// through the generated stub.
    Webmesh,
    /// webmesh-rs between Rust peers with the JSON codec.
    WebmeshJson,
    /// webmesh-rs in 0.1.2 legacy framing (hex of zlib of msgpack, no ids).
    WebmeshLegacy,
    /// webmesh-rs as `Webmesh`, over TLS (`wss://`, rustls with ring, TLS 1.3).
    WebmeshTls,
    /// webmesh-rs as `Webmesh` with compression off on both sides: a labelled row of the 64 KiB
    /// tables only, showing what deflate costs and saves there (webmesh-rs is judged by its
    /// default row).
    WebmeshNoDeflate,
    /// jsonrpsee WebSocket server and its `#[rpc(client)]` stub.
    Jsonrpsee,
    /// tarpc over TCP with bincode (its serde transport) and its generated client.
    Tarpc,
    /// tonic (gRPC over HTTP/2, prost messages) and its generated client.
    Tonic,
}

impl System {
    pub(crate) const ALL: [System; 10] = [
        System::Raw,
        System::RawSplit,
        System::Webmesh,
        System::WebmeshNoDeflate,
        System::WebmeshTls,
        System::WebmeshJson,
        System::WebmeshLegacy,
        System::Jsonrpsee,
        System::Tarpc,
        System::Tonic,
    ];

    /// A short name for `--system`.
    pub(crate) fn key(self) -> &'static str {
        match self {
            System::Raw => "raw",
            System::RawSplit => "raw-split",
            System::Webmesh => "webmesh",
            System::WebmeshJson => "json",
            System::WebmeshLegacy => "legacy",
            System::WebmeshTls => "wss",
            System::WebmeshNoDeflate => "nodeflate",
            System::Jsonrpsee => "jsonrpsee",
            System::Tarpc => "tarpc",
            System::Tonic => "tonic",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Raw => "raw echo (one task)",
            System::RawSplit => "raw echo (split tasks)",
            System::Webmesh => "webmesh-rs (msgpack, v1)",
            System::WebmeshJson => "webmesh-rs (json, v1)",
            System::WebmeshLegacy => "webmesh-rs (0.1.2 legacy)",
            System::WebmeshTls => "webmesh-rs (msgpack, v1, wss)",
            System::WebmeshNoDeflate => "webmesh-rs (msgpack, v1, deflate off)",
            System::Jsonrpsee => "jsonrpsee",
            System::Tarpc => "tarpc (bincode, TCP)",
            System::Tonic => "tonic (gRPC, prost)",
        }
    }

    /// Which `serve` kind runs its server.
    pub(crate) fn server_kind(self) -> &'static str {
        match self {
            System::Raw => "raw",
            System::RawSplit => "raw-split",
            System::Webmesh | System::WebmeshJson | System::WebmeshLegacy => "webmesh",
            System::WebmeshTls => "webmesh-tls",
            System::WebmeshNoDeflate => "webmesh-nodeflate",
            System::Jsonrpsee => "jsonrpsee",
            System::Tarpc => "tarpc",
            System::Tonic => "tonic",
        }
    }
}

/// WebSocket framing bytes around a message of `len` bytes (the client masks its frames).
fn ws_overhead(len: usize, from_client: bool) -> usize {
    let ext = match len {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + ext + if from_client { 4 } else { 0 }
}

/// Bytes on the wire for one call and its answer (WebSocket framing included, TCP/IP not), as
/// each system encodes them: computed with the systems' own encoders, not sampled.
pub(crate) fn wire_bytes<T: serde::Serialize + crate::grpc::Proto>(
    system: System,
    payload: &T,
    raw: &Bytes,
) -> usize {
    use webmesh::codec::{Compression, FrameEncoder, Framing};
    let both = |req: usize, resp: usize| req + ws_overhead(req, true) + resp + ws_overhead(resp, false);
    let wm = |framing: Framing, codec: AnyCodec, compression: Compression| {
        let enc = FrameEncoder::new(framing, codec, compression);
        let req = enc.call(1, "/bench/small", payload).map(|m| m.len()).unwrap_or(0);
        let resp = enc
            .reply(1, "/bench/small", payload)
            .ok()
            .flatten()
            .map_or(0, |m| m.len());
        both(req, resp)
    };
    match system {
        System::Raw | System::RawSplit => both(raw.len(), raw.len()),
        // TLS records add ~22 bytes per message on top (TLS 1.3 AEAD tag and header): not counted.
        System::Webmesh | System::WebmeshTls => wm(Framing::V1, AnyCodec::MSGPACK, Compression::default()),
        System::WebmeshNoDeflate => wm(Framing::V1, AnyCodec::MSGPACK, Compression::none()),
        System::WebmeshJson => wm(Framing::V1, AnyCodec::JSON, Compression::default()),
        System::WebmeshLegacy => wm(Framing::Legacy, AnyCodec::MSGPACK, Compression::default()),
        System::Jsonrpsee => {
            let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "small", "params": [payload]});
            let resp = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": payload});
            both(req.to_string().len(), resp.to_string().len())
        }
        System::Tarpc => tarpc_wire_bytes(payload),
        System::Tonic => payload.grpc_wire_bytes(),
    }
}

/// tarpc's bytes for one call and its answer: bincode (the options tokio-serde uses) of the
/// request and response envelopes around the payload, each behind a 4-byte length.
fn tarpc_wire_bytes<T: serde::Serialize>(payload: &T) -> usize {
    use bincode::Options;
    let opts = bincode::DefaultOptions::new();
    let body = opts.serialized_size(payload).unwrap_or(0) as usize;
    // Envelope: a request carries its context (deadline, trace ids), id and method tag; a
    // response its request id and `Ok` tag. Measured on an empty body.
    let req = tarpc::ClientMessage::Request(tarpc::Request {
        context: tarpc::context::current(),
        id: 1,
        message: (),
    });
    let resp: tarpc::Response<()> = tarpc::Response {
        request_id: 1,
        message: Ok(()),
    };
    let req_env = opts.serialized_size(&req).unwrap_or(0) as usize + 1; // + method tag
    let resp_env = opts.serialized_size(&resp).unwrap_or(0) as usize + 1;
    (4 + req_env + body) + (4 + resp_env + body)
}

/// One connection of a system.
#[derive(Clone)]
pub(crate) enum Conn {
    Raw(Arc<RawClient>),
    RawSplit(Arc<RawSplitClient>),
    Webmesh(webmesh::Client),
    Jsonrpsee(Arc<WsClient>),
    Tarpc(crate::payload::BenchTarpcClient),
    Tonic(crate::grpc::BenchClient<tonic::transport::Channel>),
}

/// Pre-encoded payloads for the raw echo, which sends bytes and gets them back.
pub(crate) struct RawPayloads {
    pub(crate) small: Bytes,
    pub(crate) logs: Bytes,
    pub(crate) numbers: Bytes,
}

impl Conn {
    pub(crate) async fn connect(system: System, port: u16) -> Result<Conn, String> {
        let url = format!("ws://127.0.0.1:{port}");
        let limits = webmesh::codec::Limits::default()
            .max_frame_size(MAX_MESSAGE)
            .max_inflated_size(MAX_MESSAGE);
        let wm = |codec: AnyCodec, protocol: webmesh::Protocol| {
            webmesh::Client::builder()
                .codec(codec)
                .protocol(protocol)
                .limits(limits)
                .outbound_queue(4096)
        };
        Ok(match system {
            System::Raw => Conn::Raw(Arc::new(RawClient::connect(&url).await?)),
            System::RawSplit => Conn::RawSplit(Arc::new(RawSplitClient::connect(&url).await?)),
            System::Webmesh => Conn::Webmesh(
                wm(AnyCodec::MSGPACK, webmesh::Protocol::V1)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            System::WebmeshJson => Conn::Webmesh(
                wm(AnyCodec::JSON, webmesh::Protocol::V1)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            System::WebmeshLegacy => Conn::Webmesh(
                wm(AnyCodec::MSGPACK, webmesh::Protocol::Legacy)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            System::WebmeshNoDeflate => Conn::Webmesh(
                wm(AnyCodec::MSGPACK, webmesh::Protocol::V1)
                    .compression(webmesh::codec::Compression::none())
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            System::WebmeshTls => Conn::Webmesh(
                wm(AnyCodec::MSGPACK, webmesh::Protocol::V1)
                    .tls_ca_pem(crate::tls::pki().ca_pem.clone())
                    .connect(&format!("wss://localhost:{port}"))
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            System::Jsonrpsee => Conn::Jsonrpsee(Arc::new(
                WsClientBuilder::default()
                    .max_concurrent_requests(4096)
                    .max_request_size(MAX_MESSAGE as u32)
                    .max_response_size(MAX_MESSAGE as u32)
                    .build(&url)
                    .await
                    .map_err(|e| e.to_string())?,
            )),
            System::Tarpc => {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut config = tarpc::client::Config::default();
                config.max_in_flight_requests = 4096;
                Conn::Tarpc(
                    crate::payload::BenchTarpcClient::new(config, crate::servers::tarpc_transport(tcp))
                        .spawn(),
                )
            }
            System::Tonic => Conn::Tonic(crate::grpc::connect(port).await?),
        })
    }

    pub(crate) async fn small(&self, p: &Small, raw: &RawPayloads) -> Result<(), String> {
        match self {
            Conn::Raw(c) => c.echo(raw.small.clone()).await.map(drop),
            Conn::RawSplit(c) => c.echo(raw.small.clone()).await.map(drop),
            Conn::Webmesh(c) => echo_small::call(c, p.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Conn::Jsonrpsee(c) => c.small(p.clone()).await.map(drop).map_err(|e| e.to_string()),
            Conn::Tarpc(c) => c
                .small(tarpc_context(), p.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            // A clone of the client per call is tonic's documented way to make concurrent calls.
            Conn::Tonic(c) => c
                .clone()
                .small(crate::grpc::PbSmall::from(p))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) async fn large(&self, p: &Large, raw: &Bytes) -> Result<(), String> {
        match self {
            Conn::Raw(c) => c.echo(raw.clone()).await.map(drop),
            Conn::RawSplit(c) => c.echo(raw.clone()).await.map(drop),
            Conn::Webmesh(c) => echo_large::call(c, p.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Conn::Jsonrpsee(c) => c.large(p.clone()).await.map(drop).map_err(|e| e.to_string()),
            Conn::Tarpc(c) => c
                .large(tarpc_context(), p.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Conn::Tonic(c) => c
                .clone()
                .large(crate::grpc::PbLarge::from(p))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) async fn close(self) {
        match self {
            Conn::Raw(_) | Conn::RawSplit(_) | Conn::Jsonrpsee(_) | Conn::Tarpc(_) | Conn::Tonic(_) => {}
            Conn::Webmesh(c) => c.close().await,
        }
    }
}

/// A tarpc call's context: its default (a 10 s deadline), as webmesh's calls have no deadline
/// unless given one.
fn tarpc_context() -> tarpc::context::Context {
    tarpc::context::current()
}

/// The raw WebSocket settings: as webmesh's (4 KiB reads), with room for the large payload.
pub(crate) fn raw_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Messages waiting for a raw socket, and whether a flush is owed: the write half of the
/// one-task raw echo, server and client.
#[derive(Default)]
pub(crate) struct RawOut {
    pub(crate) queue: VecDeque<Message>,
    unflushed: bool,
}

impl RawOut {
    /// Moves queued messages into `ws` while it takes them; `Ok(true)` if any moved.
    pub(crate) fn poll_write<S>(&mut self, ws: &mut S, cx: &mut std::task::Context<'_>) -> Result<bool, ()>
    where
        S: Sink<Message> + Unpin,
    {
        let mut wrote = false;
        while !self.queue.is_empty() {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(m) = self.queue.pop_front() else { break };
                    Pin::new(&mut *ws).start_send(m).map_err(drop)?;
                    self.unflushed = true;
                    wrote = true;
                }
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => break,
            }
        }
        Ok(wrote)
    }

    /// Flushes if anything was written since the last flush.
    pub(crate) fn poll_flush<S>(&mut self, ws: &mut S, cx: &mut std::task::Context<'_>) -> Result<(), ()>
    where
        S: Sink<Message> + Unpin,
    {
        if self.unflushed {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }
}

/// A pipelining raw WebSocket client: one task owns the socket (as webmesh's client driver does);
/// callers hand it their message and a oneshot; the echo answers in order, so a FIFO pairs them.
pub(crate) struct RawClient {
    tx: mpsc::UnboundedSender<(Bytes, oneshot::Sender<Bytes>)>,
}

impl RawClient {
    async fn connect(url: &str) -> Result<RawClient, String> {
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://"))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(raw_config()))
            .await
            .map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, oneshot::Sender<Bytes>)>();
        tokio::spawn(async move {
            let mut waiting: VecDeque<oneshot::Sender<Bytes>> = VecDeque::new();
            let mut out = RawOut::default();
            std::future::poll_fn(|cx| loop {
                let mut progress = false;
                while out.queue.len() < 256 {
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some((b, w))) => {
                            waiting.push_back(w);
                            out.queue.push_back(Message::Binary(b));
                            progress = true;
                        }
                        Poll::Ready(None) => return Poll::Ready(()),
                        Poll::Pending => break,
                    }
                }
                match out.poll_write(&mut ws, cx) {
                    Ok(wrote) => progress |= wrote,
                    Err(()) => return Poll::Ready(()),
                }
                match Pin::new(&mut ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(Message::Binary(b)))) => {
                        if let Some(w) = waiting.pop_front() {
                            let _ = w.send(b);
                        }
                        progress = true;
                    }
                    Poll::Ready(Some(Ok(_))) => progress = true,
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                if !progress {
                    if out.poll_flush(&mut ws, cx).is_err() {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            })
            .await;
        });
        Ok(RawClient { tx })
    }

    async fn echo(&self, payload: Bytes) -> Result<Bytes, String> {
        let (w, rx) = oneshot::channel();
        self.tx.send((payload, w)).map_err(|_| "raw connection closed")?;
        rx.await.map_err(|_| "raw connection closed".to_owned())
    }
}

/// A pipelining raw WebSocket client with separate reader and writer tasks; the echo answers in
/// order, so replies pair with a FIFO.
/// Answers waiting, oldest first.
type Fifo = Arc<Mutex<VecDeque<oneshot::Sender<Bytes>>>>;

pub(crate) struct RawSplitClient {
    send: Mutex<(mpsc::UnboundedSender<Message>, Fifo)>,
}

impl RawSplitClient {
    async fn connect(url: &str) -> Result<RawSplitClient, String> {
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://"))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(raw_config()))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let waiting: Fifo = Arc::default();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64);
            while rx.recv_many(&mut batch, 64).await > 0 {
                for m in batch.drain(..) {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        let w = waiting.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Binary(b))) = stream.next().await {
                let next = w.lock().map(|mut q| q.pop_front()).ok().flatten();
                if let Some(tx) = next {
                    let _ = tx.send(b);
                }
            }
        });
        Ok(RawSplitClient {
            send: Mutex::new((tx, waiting)),
        })
    }

    async fn echo(&self, payload: Bytes) -> Result<Bytes, String> {
        let (tx, rx) = oneshot::channel();
        {
            // Queue and send under one lock, so the FIFO order is the wire order.
            let guard = self.send.lock().map_err(|_| "poisoned")?;
            guard.1.lock().map_err(|_| "poisoned")?.push_back(tx);
            guard
                .0
                .send(Message::Binary(payload))
                .map_err(|_| "raw connection closed")?;
        }
        rx.await.map_err(|_| "raw connection closed".to_owned())
    }
}
