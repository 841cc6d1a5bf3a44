//! The NATS connection's own thread, and the answers to forwarded calls: one subscription for
//! all of them, each answer handed to the call that waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_nats::{Message, Subject};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::conn::OwnIdMap;

/// The thread the NATS connection runs on: its reads, writes and reconnects run beside the
/// server's runtime, not in it. In the server's runtime, a request sent from a connection's
/// driver wakes the NATS connection's task into that worker's LIFO slot, where no other worker
/// can take it: it waits until the driver's whole batch is done, and the other cores stay idle
/// (measured: a forwarded call used ~1.06 of 2 cores; on its own thread, ~1.4, and 8–10 % more
/// calls per second). The thread also hands out the answers to forwarded calls ([`Replies`])
/// and runs the loop that serves the calls other nodes forward here (`super::serve`: a call
/// answered where it arrives, with no hop between threads, another ~10 %).
/// Dropping it stops the thread and closes the connection.
pub(super) struct LinkThread {
    _stop: oneshot::Sender<()>,
    runtime: tokio::runtime::Handle,
}

impl LinkThread {
    /// Connects on a new thread; the client, the answers' registry and the thread's guard.
    pub(super) async fn connect(
        options: async_nats::ConnectOptions,
        url: String,
    ) -> Result<(async_nats::Client, Arc<Replies>, LinkThread), String> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (done, connected) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the cluster link's runtime: {e}"))?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("webmesh-nats".into())
            .spawn(move || runtime.block_on(run(options, url, done, stopped)))
            .map_err(|e| format!("cannot start the cluster link's thread: {e}"))?;
        let (client, replies) = connected
            .await
            .map_err(|_| "the cluster link's thread stopped".to_owned())??;
        Ok((
            client,
            replies,
            LinkThread {
                _stop: stop,
                runtime: handle,
            },
        ))
    }

    /// The thread's runtime, to run tasks on it.
    pub(super) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

type Connected = Result<(async_nats::Client, Arc<Replies>), String>;

/// The thread's work: connect, then hand each answer to its call until told to stop.
async fn run(
    options: async_nats::ConnectOptions,
    url: String,
    done: oneshot::Sender<Connected>,
    mut stopped: oneshot::Receiver<()>,
) {
    let connected = async {
        let client = options.connect(url).await.map_err(|e| e.to_string())?;
        let replies = Arc::new(Replies::new(format!("{}.", client.new_inbox())));
        let answers = client
            .subscribe(format!("{}*", replies.base))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((client, replies, answers))
    };
    let (client, replies, mut answers) = match connected.await {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    let flushing = client.clone();
    if done.send(Ok((client, replies.clone()))).is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            answer = answers.next() => match answer {
                Some(msg) => replies.deliver(msg),
                // The client closed: no answer can come any more.
                None => {
                    replies.close();
                    let _ = stopped.await;
                    return;
                }
            },
        }
    }
    // Stopping (the server has drained): what is still queued (answers to calls other nodes
    // forwarded here) goes out before the connection closes with this thread's runtime; calls
    // of this node still waiting for an answer fail now rather than at their deadline.
    let _ = tokio::time::timeout(FLUSH_ON_STOP, flushing.flush()).await;
    replies.close();
}

/// How long a stopping link waits for NATS to take what it still has to send.
const FLUSH_ON_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// The forwarded calls waiting for their answer, each under a token at the end of its reply
/// subject (`<inbox>.<token>`), all answered through one subscription (`<inbox>.*`). (That
/// subscription's channel holds async-nats' default 64 Ki messages; the link's thread drains
/// it as it fills, so it does not overflow in practice.)
pub(super) struct Replies {
    base: String,
    next: AtomicU64,
    /// Mixed into each token: tokens follow no order another node could guess from one it saw.
    key: u64,
    waiting: Mutex<Waiters>,
}

/// The calls waiting, and whether the link has stopped (then none can wait any more).
#[derive(Default)]
struct Waiters {
    calls: OwnIdMap<oneshot::Sender<Answer>>,
    closed: bool,
}

impl Replies {
    fn new(base: String) -> Self {
        Replies {
            base,
            next: AtomicU64::new(1),
            key: crate::topics::hub::new_epoch(),
            waiting: Mutex::new(Waiters::default()),
        }
    }

    /// A reply subject for one call, and the answer's future (the call's entry goes when the
    /// future is dropped, answered or not); `None` once the link has stopped.
    pub(super) fn wait(&self) -> Option<(Subject, Waiting<'_>)> {
        let token = scramble(self.next.fetch_add(1, Ordering::Relaxed) ^ self.key);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.lock();
            if waiters.closed {
                return None;
            }
            waiters.calls.insert(token, tx);
        }
        let mut subject = String::with_capacity(self.base.len() + 20);
        subject.push_str(&self.base);
        push_decimal(&mut subject, token);
        Some((
            Subject::from(subject),
            Waiting {
                replies: self,
                token,
                rx,
                done: false,
            },
        ))
    }

    /// The link stopped: the calls waiting fail (their futures give `Err`), and no new one
    /// may wait.
    pub(super) fn close(&self) {
        let mut waiters = self.lock();
        waiters.closed = true;
        waiters.calls.clear();
    }

    /// True once the link has stopped.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// An answer: to the call waiting under its subject's token (none: it gave up).
    fn deliver(&self, msg: Message) {
        let token = msg
            .subject
            .as_str()
            .strip_prefix(self.base.as_str())
            .filter(|t| canonical_decimal(t))
            .and_then(|t| t.parse::<u64>().ok());
        let waiting = token.and_then(|t| self.lock().calls.remove(&t));
        if let Some(tx) = waiting {
            let _ = tx.send(Answer {
                no_responders: msg.status == Some(async_nats::StatusCode::NO_RESPONDERS),
                payload: msg.payload,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().calls.len()
    }
}

/// What a node answered to a forwarded call.
pub(super) struct Answer {
    /// NATS said no node subscribes to the call's subject (the status `503`).
    pub(super) no_responders: bool,
    /// The answer (a v1 REPLY or ERROR frame).
    pub(super) payload: bytes::Bytes,
}

/// One call's answer, or `Err` when the link stopped first ([`Replies::close`]).
pub(super) struct Waiting<'a> {
    replies: &'a Replies,
    token: u64,
    rx: oneshot::Receiver<Answer>,
    /// The answer came, or the link stopped: the call's entry is gone already.
    done: bool,
}

impl Future for Waiting<'_> {
    type Output = Result<Answer, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.done = true;
        Poll::Ready(out)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Still there when the call gave up (its deadline, its caller gone).
        if !self.done {
            self.replies.lock().calls.remove(&self.token);
        }
    }
}

/// A bijection of `u64` (splitmix64's finalizer): distinct counters give distinct tokens.
fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Digits as [`push_decimal`] writes them (no sign, no leading zero).
fn canonical_decimal(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && (t == "0" || !t.starts_with('0'))
}

fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[i..] {
        out.push(char::from(*d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(subject: &str) -> Message {
        Message {
            subject: Subject::from(subject),
            reply: None,
            // The subject as the answer: the test sees which answer reached which call.
            payload: bytes::Bytes::copy_from_slice(subject.as_bytes()),
            headers: None,
            status: None,
            description: None,
            length: subject.len(),
        }
    }

    #[tokio::test]
    async fn each_answer_reaches_the_call_of_its_token_and_a_call_that_gives_up_leaves_nothing() {
        let replies = Replies::new("_INBOX.abc.".into());
        let (s1, w1) = replies.wait().unwrap();
        let (s2, w2) = replies.wait().unwrap();
        let token = |s: &Subject| s.as_str().strip_prefix("_INBOX.abc.").unwrap().to_owned();
        let (t1, t2) = (token(&s1), token(&s2));
        assert!(canonical_decimal(&t1) && canonical_decimal(&t2), "{t1} {t2}");
        assert_ne!(t1, t2);
        let n1: u64 = t1.parse().unwrap();
        assert_ne!(
            t2.parse::<u64>().unwrap(),
            n1.wrapping_add(1),
            "not the next number"
        );
        assert_eq!(replies.len(), 2);
        // Not ours, not a token, or the token written another way: ignored.
        replies.deliver(answer(&format!("_INBOX.other.{t2}")));
        replies.deliver(answer("_INBOX.abc.x"));
        replies.deliver(answer(&format!("_INBOX.abc.+{t2}")));
        replies.deliver(answer(&format!("_INBOX.abc.0{t2}")));
        assert_eq!(replies.len(), 2);
        replies.deliver(answer(s2.as_str()));
        assert_eq!(w2.await.unwrap().payload, s2.as_str().as_bytes());
        assert_eq!(replies.len(), 1);
        drop(w1);
        assert_eq!(replies.len(), 0, "a call that gave up is forgotten");
        // An answer after its call gave up goes nowhere.
        replies.deliver(answer(s1.as_str()));
        assert_eq!(replies.len(), 0);
    }

    #[tokio::test]
    async fn a_stopped_link_fails_the_calls_waiting_and_takes_no_more() {
        let replies = Replies::new("_INBOX.abc.".into());
        let (_, waiting) = replies.wait().unwrap();
        assert!(!replies.is_closed());
        replies.close();
        assert!(replies.is_closed());
        assert!(waiting.await.is_err(), "the waiting call fails at once");
        assert!(replies.wait().is_none(), "no call waits on a stopped link");
        assert_eq!(replies.len(), 0);
    }

    #[test]
    fn scrambled_tokens_stay_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..10_000u64 {
            assert!(seen.insert(scramble(n ^ 0x1234_5678)));
        }
        for (t, ok) in [
            ("0", true),
            ("7", true),
            ("10", true),
            ("", false),
            ("01", false),
            ("+1", false),
            ("1a", false),
        ] {
            assert_eq!(canonical_decimal(t), ok, "{t:?}");
        }
    }

    #[test]
    fn decimal_tokens() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
