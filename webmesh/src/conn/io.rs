//! The byte stream under a WebSocket: TCP, TLS over TCP, an in-memory duplex in tests. Boxed, so
//! one driver serves every kind (a virtual call per read or write, next to a system call).

use tokio::io::{AsyncRead, AsyncWrite};

/// What a connection's bytes travel over.
pub(crate) trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncIo for T {}

/// A boxed stream: the one type both drivers run on.
pub(crate) type Io = Box<dyn AsyncIo>;
