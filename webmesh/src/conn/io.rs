//! The byte stream under a WebSocket: TCP, TLS over TCP, an in-memory duplex in tests, read
//! through a buffer that exists only while bytes flow.
//!
//! Reads from the kernel go into a buffer here (from [`CHUNK`] up to [`MAX_READ`] bytes per
//! system call), which is freed as soon as the socket has nothing more to read: an idle
//! connection holds no read buffer. The [`FrameReader`](super::FrameReader) reads the peer's
//! frames from it (a large frame's payload straight from the stream into its own buffer); the
//! HTTP handshake reads through [`AsyncRead`].

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
    /// While an HTTP handshake reads through [`AsyncRead`]: how much of the blank line that ends
    /// its headers was read so far (nothing past it is handed out, see
    /// [`stop_after_headers`](Self::stop_after_headers)).
    headers_end: Option<u8>,
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
            headers_end: None,
        }
    }

    /// Until the blank line that ends an HTTP message's headers has been read, reads through
    /// [`AsyncRead`] stop at it: a handshake (tungstenite's, which reads ahead into a buffer of
    /// its own) then leaves every byte after it here, for the [`FrameReader`](super::FrameReader).
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's handshake is tungstenite's
    pub(crate) fn stop_after_headers(&mut self) {
        self.headers_end = Some(0);
    }

    /// The bytes read from the stream and not consumed yet.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` buffered bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Takes the first `n` buffered bytes. A large piece that fills most of the buffer is split
    /// off it (no copy); anything else is copied into a buffer of its own, so that what a
    /// reader keeps (a message in a subscription's buffer) does not keep a whole read buffer.
    pub(crate) fn take(&mut self, n: usize) -> BytesMut {
        if n >= CHUNK && n * 2 >= self.buf.capacity() {
            return self.buf.split_to(n);
        }
        let piece = BytesMut::from(&self.buf[..n]);
        self.buf.advance(n);
        piece
    }

    /// Reads more of the stream after what is buffered: `Ready(Ok(0))` at its end.
    pub(crate) fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_fill(cx)
    }

    /// Moves up to `want` bytes into `dst`, which has room for them: buffered ones first,
    /// otherwise read from the stream straight into `dst` (a large frame's payload goes from
    /// the kernel to its own buffer, with no copy in between). `Ready(Ok(0))` at the end of
    /// the stream.
    pub(crate) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        if !self.buf.is_empty() {
            let n = want.min(self.buf.len());
            dst.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            return Poll::Ready(Ok(n));
        }
        let mut room = dst.limit(want);
        each!(&mut self.inner, s => tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut room))
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

    /// Reads what the stream has into the buffer, after what it holds; frees it if it is empty
    /// and nothing came.
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
                // connection that reads here. (A frame's first bytes stay.)
                if self.buf.is_empty() {
                    let spare = std::mem::take(&mut self.buf);
                    SPARE.with(|s| s.set(Some(spare)));
                }
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
        let mut n = this.buf.len().min(out.remaining());
        if let Some(matched) = &mut this.headers_end {
            if let Some(end) = headers_end(&this.buf[..n], matched) {
                n = end;
                this.headers_end = None;
            }
        }
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Where the blank line that ends HTTP headers (`\r\n\r\n`) ends in `bytes`, given that
/// `matched` bytes of it ended the bytes before; updates `matched`.
fn headers_end(bytes: &[u8], matched: &mut u8) -> Option<usize> {
    const END: &[u8; 4] = b"\r\n\r\n";
    for (i, &b) in bytes.iter().enumerate() {
        *matched = match b {
            _ if b == END[usize::from(*matched)] => *matched + 1,
            b'\r' => 1,
            _ => 0,
        };
        if *matched == 4 {
            return Some(i + 1);
        }
    }
    None
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
    async fn a_handshake_reads_up_to_the_end_of_the_headers_and_leaves_the_rest() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let frames = b"\x82\x00\r\n\r\nmore";
        // All at once, or with the blank line split between two reads.
        for cut in [head.len() + frames.len(), head.len() - 1, head.len() - 3] {
            let (near, mut far) = tokio::io::duplex(1 << 16);
            let mut io = Io::new(near);
            io.stop_after_headers();
            let all = [&head[..], &frames[..]].concat();
            far.write_all(&all[..cut]).await.unwrap();
            let mut got = Vec::new();
            let mut piece = [0u8; 4096];
            while got.len() < head.len() {
                if got.len() >= cut {
                    far.write_all(&all[cut..]).await.unwrap();
                }
                let n = io.read(&mut piece).await.unwrap();
                got.extend_from_slice(&piece[..n]);
            }
            assert_eq!(got, head, "cut at {cut}");
            if io.buffered().len() < frames.len() {
                std::future::poll_fn(|cx| io.poll_more(cx)).await.unwrap();
            }
            assert_eq!(io.buffered(), frames, "cut at {cut}");
            // Past the headers, reads are whole again.
            let n = io.read(&mut piece).await.unwrap();
            assert_eq!(&piece[..n], frames);
        }
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
