//! Messages waiting for the socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{self, Message};

/// Messages waiting for a WebSocket, and whether what was written still awaits a flush: the
/// write half that the server and client drivers share.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) queue: VecDeque<Message>,
    unflushed: bool,
    /// A close frame went to the socket: nothing may follow it.
    pub(crate) close_sent: bool,
}

impl Outbox {
    /// True when something was written and not flushed yet.
    pub(crate) fn unflushed(&self) -> bool {
        self.unflushed
    }

    /// Moves queued messages into `ws` while it takes them; true if any moved.
    pub(crate) fn poll_write<S>(
        &mut self,
        ws: &mut S,
        cx: &mut Context<'_>,
    ) -> Result<bool, tungstenite::Error>
    where
        S: Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        let mut wrote = false;
        while !self.queue.is_empty() {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(msg) = self.queue.pop_front() else { break };
                    self.close_sent |= matches!(msg, Message::Close(_));
                    Pin::new(&mut *ws).start_send(msg)?;
                    self.unflushed = true;
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(wrote)
    }

    /// Flushes what was written, if anything; true once nothing awaits a flush.
    pub(crate) fn poll_flush<S>(
        &mut self,
        ws: &mut S,
        cx: &mut Context<'_>,
    ) -> Result<bool, tungstenite::Error>
    where
        S: Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        if self.unflushed {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(!self.unflushed)
    }
}
