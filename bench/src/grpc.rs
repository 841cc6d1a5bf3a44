//! The tonic peer: prost messages mirroring the payloads, the generated service, its server.

use crate::payload::{Large, LogLine, Small};

#[allow(clippy::all, missing_docs, unreachable_pub)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bench.Bench.rs"));
}
pub(crate) use generated::bench_client::BenchClient;
use generated::bench_server::{Bench, BenchServer};

/// [`Small`] as protobuf.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbSmall {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(string, tag = "2")]
    pub(crate) name: String,
    #[prost(uint32, repeated, tag = "3")]
    pub(crate) values: Vec<u32>,
}

/// [`LogLine`] as protobuf.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbLogLine {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) ts: u64,
    #[prost(string, tag = "3")]
    pub(crate) level: String,
    #[prost(string, tag = "4")]
    pub(crate) service: String,
    #[prost(string, tag = "5")]
    pub(crate) message: String,
    #[prost(double, tag = "6")]
    pub(crate) latency_ms: f64,
    #[prost(string, repeated, tag = "7")]
    pub(crate) tags: Vec<String>,
}

/// [`Large`] as protobuf.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbLarge {
    #[prost(message, repeated, tag = "1")]
    pub(crate) logs: Vec<PbLogLine>,
    #[prost(uint32, repeated, tag = "2")]
    pub(crate) values: Vec<u32>,
}

impl From<&Small> for PbSmall {
    fn from(s: &Small) -> Self {
        PbSmall {
            id: s.id,
            name: s.name.clone(),
            values: s.values.clone(),
        }
    }
}

impl From<&Large> for PbLarge {
    fn from(l: &Large) -> Self {
        PbLarge {
            logs: l.logs.iter().map(PbLogLine::from).collect(),
            values: l.values.clone(),
        }
    }
}

impl From<&LogLine> for PbLogLine {
    fn from(l: &LogLine) -> Self {
        PbLogLine {
            id: l.id,
            ts: l.ts,
            level: l.level.clone(),
            service: l.service.clone(),
            message: l.message.clone(),
            latency_ms: l.latency_ms,
            tags: l.tags.clone(),
        }
    }
}

struct Echo;

#[tonic::async_trait]
impl Bench for Echo {
    async fn small(&self, r: tonic::Request<PbSmall>) -> Result<tonic::Response<PbSmall>, tonic::Status> {
        Ok(tonic::Response::new(r.into_inner()))
    }
    async fn large(&self, r: tonic::Request<PbLarge>) -> Result<tonic::Response<PbLarge>, tonic::Status> {
        Ok(tonic::Response::new(r.into_inner()))
    }
}

/// tonic's server in its default configuration (HTTP/2, Nagle off), message limits raised to
/// the bench's.
pub(crate) async fn server() -> Result<u16, String> {
    let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())
        .map_err(|e| e.to_string())?
        .with_nodelay(Some(true));
    let port = incoming.local_addr().map_err(|e| e.to_string())?.port();
    let service = BenchServer::new(Echo)
        .max_decoding_message_size(crate::servers::MAX_MESSAGE * 2)
        .max_encoding_message_size(crate::servers::MAX_MESSAGE * 2);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    Ok(port)
}

/// A client on its own HTTP/2 connection.
pub(crate) async fn connect(port: u16) -> Result<BenchClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(BenchClient::new(channel)
        .max_decoding_message_size(crate::servers::MAX_MESSAGE * 2)
        .max_encoding_message_size(crate::servers::MAX_MESSAGE * 2))
}

/// A payload's protobuf size, for the wire bytes of tonic.
pub(crate) trait Proto {
    /// Bytes of one call and its answer: the protobuf body in a gRPC frame (5-byte prefix) each
    /// way. HTTP/2 HEADERS and DATA frame headers (tens of bytes, HPACK-compressed) are not
    /// counted.
    fn grpc_wire_bytes(&self) -> usize;
}

impl Proto for Small {
    fn grpc_wire_bytes(&self) -> usize {
        2 * (5 + prost::Message::encoded_len(&PbSmall::from(self)))
    }
}

impl Proto for Large {
    fn grpc_wire_bytes(&self) -> usize {
        2 * (5 + prost::Message::encoded_len(&PbLarge::from(self)))
    }
}
