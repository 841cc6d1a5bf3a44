//! The byte stream under a WebSocket: TCP, TLS over TCP, an in-memory duplex in tests, read
//! through a buffer that exists only while bytes flow.
//!
//! tungstenite keeps a read buffer for as long as a connection lives, and asks for at most that
//! buffer's size per read. [`Io`] lets it keep a small one ([`super::READ_BUFFER`]): reads from
//! the kernel go into a buffer here (from [`CHUNK`] up to [`MAX_READ`] bytes per system call),
//! which is freed as soon as the socket has nothing more to read. An idle connection then holds
//! no read buffer beyond tungstenite's small one.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's bytes travel over.
pub(crate) trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncIo for T {}

/// Bytes asked of the kernel per system call at first, and again after any read that it did not
/// fill. A read that fills it doubles the next one, up to [`MAX_READ`], so a large frame comes in
/// a few reads.
pub(crate) const CHUNK: usize = 4 * 1024;

/// The most bytes asked of the kernel in one system call.
pub(crate) const MAX_READ: usize = 64 * 1024;

thread_local! {
    /// The read buffer the last connection that went idle on this thread gave up: the next one
    /// to read here takes it instead of allocating. (One per thread, at most [`MAX_READ`] bytes
    /// plus a little: connections that wait hold none.)
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// A stream with a read buffer held only while reading moves: the one type both drivers run on.
pub(crate) struct Io {
    inner: Stream,
    /// Read from `inner`, not yet read from here. Empty and unallocated while the stream waits.
    buf: BytesMut,
    /// Bytes to ask of the next read: [`CHUNK`] to [`MAX_READ`].
    next: usize,
}

enum Stream {
    /// Plain TCP, read until the kernel has no more. (Through `AsyncRead`, tokio stops reading
    /// after any read that did not fill its buffer until the reactor reports the socket readable
    /// again: bytes that arrive while a batch is being processed would then wait for the next
    /// batch, and every batch of answers would be smaller, costing more sends.)
    Tcp(tokio::net::TcpStream),
    /// Anything else (TLS, an in-memory pipe, a Unix socket).
    Other(Box<dyn AsyncIo>),
}

macro_rules! each {
    ($stream:expr, $s:ident => $e:expr) => {
        match $stream {
            Stream::Tcp($s) => $e,
            Stream::Other($s) => $e,
        }
    };
}

impl Io {
    pub(crate) fn new(stream: impl AsyncIo) -> Self {
        Self::with(Stream::Other(Box::new(stream)))
    }

    pub(crate) fn tcp(stream: tokio::net::TcpStream) -> Self {
        Self::with(Stream::Tcp(stream))
    }

    fn with(inner: Stream) -> Self {
        Io {
            inner,
            buf: BytesMut::new(),
            next: CHUNK,
        }
    }

    /// Puts `bytes` (read from this stream by someone else) back in front: they are read again.
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's auth hook reads ahead
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut joined = BytesMut::with_capacity(bytes.len() + self.buf.len());
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(&self.buf);
        self.buf = joined;
    }

    /// Waits for bytes and returns what is buffered without consuming it: empty at the end of
    /// the stream.
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // the server tells TLS from HTTP
    pub(crate) async fn peek(&mut self) -> io::Result<&[u8]> {
        if self.buf.is_empty() {
            std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        }
        Ok(&self.buf)
    }

    /// Reads what the stream has into the buffer (which is empty); frees it if nothing came.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            self.buf = SPARE.with(Cell::take).unwrap_or_default();
        }
        self.buf.reserve(self.next);
        let mut room = (&mut self.buf).limit(self.next);
        // tokio's read takes a short read as the sign that the kernel has nothing more (its
        // readiness is cleared), so the next wait costs no `recv` that finds nothing.
        let read = each!(&mut self.inner, s => tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut room));
        match read {
            Poll::Pending => {
                // Nothing buffered: the buffer goes to this thread's spare, for the next
                // connection that reads here.
                let spare = std::mem::take(&mut self.buf);
                SPARE.with(|s| s.set(Some(spare)));
                self.next = CHUNK;
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                self.next = if n == self.next {
                    (n * 2).min(MAX_READ)
                } else {
                    CHUNK
                };
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() && std::task::ready!(this.poll_fill(cx))? == 0 {
            return Poll::Ready(Ok(())); // end of stream
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(&mut self.inner, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(&mut self.inner, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(&mut self.inner, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(&mut self.inner, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(&self.inner, s => s.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_in_order_with_bytes_put_back_and_frees_its_buffer_while_waiting() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut io = Io::new(near);
        far.write_all(b"hello world").await.unwrap();
        assert_eq!(io.peek().await.unwrap(), b"hello world", "peek consumes nothing");
        let mut five = [0u8; 5];
        io.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"hello");
        io.unread(b"<>");
        let mut rest = [0u8; 8];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"<> world");
        // Nothing buffered and nothing to read: the chunk is gone.
        let waiting = futures_util::FutureExt::now_or_never(io.read(&mut rest));
        assert!(waiting.is_none());
        assert_eq!(io.buf.capacity(), 0, "no buffer held while the stream waits");
        // A large write arrives whole through small reads.
        let big: Vec<u8> = (0..3 * CHUNK).map(|i| i as u8).collect();
        far.write_all(&big).await.unwrap();
        drop(far);
        let mut got = Vec::new();
        let mut small = [0u8; 512];
        loop {
            let n = io.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, big);
        assert!(io.peek().await.unwrap().is_empty(), "end of stream");
    }

    #[tokio::test]
    async fn over_tcp_it_reads_everything_the_kernel_has_and_waits_without_a_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut far = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut io = Io::tcp(listener.accept().await.unwrap().0);
        let sent: Vec<u8> = (0..5 * MAX_READ).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn(async move {
            far.write_all(&sent).await.unwrap();
            far
        });
        let mut got = vec![0u8; 5 * MAX_READ];
        io.read_exact(&mut got).await.unwrap();
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        let mut far = writer.await.unwrap();
        let waiting = futures_util::FutureExt::now_or_never(io.read(&mut got));
        assert!(waiting.is_none());
        assert_eq!(io.buf.capacity(), 0, "no buffer held while the socket waits");
        far.write_all(b"more").await.unwrap();
        io.write_all(b"back").await.unwrap();
        let mut four = [0u8; 4];
        io.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"more");
        far.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"back");
    }
}
