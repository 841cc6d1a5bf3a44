//! The server side of each system, run in a child process (`webmesh-bench serve <kind>`).

use std::io::BufRead;

use std::pin::Pin;
use std::task::Poll;

use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::payload::{BenchRpcServer, RpcImpl};

/// Frames up to 64 MiB everywhere, so the 64 KiB payloads fit every system.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;
/// Above the 10,000 idle connections of that workload.
pub(crate) const MAX_CONNECTIONS: usize = 20_000;

/// Runs the server of `kind` on 127.0.0.1, prints `port N`, and serves until stdin closes.
pub(crate) fn serve(kind: &str) -> Result<(), String> {
    crate::proc_stats::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    if kind.starts_with("fanout-") {
        return rt.block_on(crate::fanout::serve(kind));
    }
    rt.block_on(async {
        let port = match kind {
            "raw" => raw_echo().await,
            "raw-split" => raw_echo_split().await,
            "webmesh" => webmesh_server(false, true).await,
            "webmesh-nodeflate" => webmesh_server(false, false).await,
            "webmesh-tls" => webmesh_server(true, true).await,
            "jsonrpsee" => jsonrpsee_server().await,
            "tarpc" => tarpc_server().await,
            "tonic" => crate::grpc::server().await,
            other => Err(format!("unknown server kind {other:?}")),
        }?;
        #[allow(clippy::print_stdout)]
        {
            println!("port {port}");
        }
        // Serve until the harness closes our stdin.
        tokio::task::spawn_blocking(|| {
            let stdin = std::io::stdin();
            for _ in stdin.lock().lines() {}
        })
        .await
        .map_err(|e| e.to_string())
    })
}

/// A transport limit: a tokio-tungstenite server that echoes every message. One task per
/// connection reads everything available, queues the echoes, and flushes once (the same batching
/// webmesh's driver does, without any decoding or dispatch).
async fn raw_echo() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let config = crate::clients::raw_config();
                let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
                    return;
                };
                let mut out = crate::clients::RawOut::default();
                let _ = std::future::poll_fn(|cx| loop {
                    let mut progress = false;
                    match out.poll_write(&mut ws, cx) {
                        Ok(wrote) => progress |= wrote,
                        Err(()) => return Poll::Ready(()),
                    }
                    if out.queue.len() < 256 {
                        match Pin::new(&mut ws).poll_next(cx) {
                            Poll::Ready(Some(Ok(m))) => {
                                if m.is_binary() || m.is_text() {
                                    out.queue.push_back(m);
                                }
                                progress = true;
                            }
                            Poll::Ready(_) => return Poll::Ready(()),
                            Poll::Pending => {}
                        }
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
        }
    });
    Ok(port)
}

/// A transport limit: a tokio-tungstenite server that echoes every message, reading and writing
/// on separate tasks (read and write syscalls run in parallel), writes batched between flushes.
async fn raw_echo_split() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let config = crate::clients::raw_config();
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                let writer = tokio::spawn(async move {
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
                while let Some(Ok(m)) = stream.next().await {
                    if (m.is_binary() || m.is_text()) && tx.send(m).is_err() {
                        break;
                    }
                }
                drop(tx);
                let _ = writer.await;
            });
        }
    });
    Ok(port)
}

/// webmesh-rs: the two `#[webmesh::route]` echo routes, for v1 (msgpack and JSON) and legacy
/// peers; over TLS with the certificate the harness made (`crate::tls`).
async fn webmesh_server(tls: bool, deflate: bool) -> Result<u16, String> {
    let limits = webmesh::codec::Limits::default()
        .max_frame_size(MAX_MESSAGE)
        .max_inflated_size(MAX_MESSAGE);
    let mut builder = webmesh::Server::builder()
        .bind("127.0.0.1:0")
        .limits(limits)
        .max_connections(MAX_CONNECTIONS);
    if !deflate {
        builder = builder.compression(webmesh::codec::Compression::none());
    }
    if tls {
        builder = builder.tls(crate::tls::server_config_from_env()?);
    }
    let server = builder.build().await.map_err(|e| e.to_string())?;
    let port = server.local_addr().port();
    server.spawn();
    Ok(port)
}

/// jsonrpsee: its WebSocket server with the `#[rpc(server)]` impl.
async fn jsonrpsee_server() -> Result<u16, String> {
    let config = jsonrpsee::server::ServerConfig::builder()
        .max_connections(MAX_CONNECTIONS as u32)
        .max_request_body_size(MAX_MESSAGE as u32)
        .max_response_body_size(MAX_MESSAGE as u32)
        .ws_only()
        .build();
    let server = jsonrpsee::server::Server::builder()
        .set_config(config)
        .build("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = server.local_addr().map_err(|e| e.to_string())?.port();
    let handle = server.start(RpcImpl.into_rpc());
    // The handle stops the server when dropped: keep it for the process's life.
    std::mem::forget(handle);
    Ok(port)
}

/// A tarpc transport over `tcp`: length-delimited frames (up to the bench's message limit) of
/// bincode, as `tarpc::serde_transport::tcp` builds it, with Nagle off as for every other system.
pub(crate) fn tarpc_transport<Item, SinkItem>(
    tcp: tokio::net::TcpStream,
) -> tarpc::serde_transport::Transport<
    tokio::net::TcpStream,
    Item,
    SinkItem,
    tarpc::tokio_serde::formats::Bincode<Item, SinkItem>,
>
where
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
{
    let _ = tcp.set_nodelay(true);
    let framing = tarpc::tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_MESSAGE * 2)
        .new_codec();
    tarpc::serde_transport::new(
        tarpc::tokio_util::codec::Framed::new(tcp, framing),
        tarpc::tokio_serde::formats::Bincode::default(),
    )
}

/// tarpc: its serde transport over TCP with bincode, every request handled in its own task (as
/// its README's server does), no limit on in-flight requests per connection past its default.
async fn tarpc_server() -> Result<u16, String> {
    use crate::payload::BenchTarpc;
    use futures_util::StreamExt;
    use tarpc::server::{BaseChannel, Channel};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let channel = BaseChannel::with_defaults(tarpc_transport(tcp));
            tokio::spawn(channel.execute(crate::payload::TarpcImpl.serve()).for_each(
                |response| async move {
                    tokio::spawn(response);
                },
            ));
        }
    });
    Ok(port)
}
