//! Matching a 0.1.2 server's replies to calls: replies carry no id, only the path.
//!
//! Per path, at most one call is in flight, so the next reply on a path is the answer to that
//! call: unless a reply is still owed to a message nobody waits for any more. Such a reply is
//! owed after a call timed out (or its future was dropped) and after an emit (0.1.2 answers an
//! emit whose callback returns a value). While one may be owed, the next reply cannot be told
//! apart from it, so calls on the path fail at once with [`Error::StaleReplyPending`] instead of
//! risking another call's answer; the path is free again when the owed replies arrive or the
//! connection is renewed. A call therefore never receives an answer that was not its own.

use std::collections::{HashMap, VecDeque};

use tokio_tungstenite::tungstenite::Message;

use super::driver::Waiter;
use crate::error::Error;

/// What waits on one path.
#[derive(Default)]
struct PathState {
    /// The call that was sent and whose reply is awaited.
    waiting: Option<(u64, Waiter)>,
    /// Messages behind it, sent in order once the path is free.
    queued: VecDeque<Queued>,
    /// Replies that may still arrive for messages nobody waits for (a timed-out call, emits).
    owed: u32,
}

enum Queued {
    Call(u64, Message, Waiter),
    Emit(Message),
}

impl PathState {
    fn is_idle(&self) -> bool {
        self.waiting.is_none() && self.queued.is_empty() && self.owed == 0
    }

    /// Sends what the path can take now, in order: emits go out (each may be answered), a call
    /// goes out if no reply is owed, and fails at once if one is.
    fn pump(&mut self, path: &str, out: &mut VecDeque<Message>) {
        while self.waiting.is_none() {
            match self.queued.pop_front() {
                None => return,
                Some(Queued::Emit(msg)) => {
                    out.push_back(msg);
                    self.owed += 1;
                }
                Some(Queued::Call(id, msg, waiter)) if self.owed == 0 => {
                    out.push_back(msg);
                    self.waiting = Some((id, waiter));
                }
                Some(Queued::Call(_, _, waiter)) => {
                    let _ = waiter.send(Err(blocked(path)));
                }
            }
        }
    }
}

fn blocked(path: &str) -> Error {
    Error::StaleReplyPending {
        path: path.to_owned(),
    }
}

/// Where a reply on a path goes.
pub(super) enum Reply {
    /// To the call waiting on the path.
    Deliver(Waiter),
    /// Nowhere: it answers a message nobody waits for (a timed-out call, an emit).
    Owed,
    /// No message on the path expects it: a server push.
    Unsolicited,
}

/// The state of every path with something in flight; idle paths are dropped.
#[derive(Default)]
pub(super) struct LegacyPaths {
    paths: HashMap<String, PathState>,
}

impl LegacyPaths {
    /// A call: sent at once into `out`, queued behind the path's call in flight, or failed
    /// (a reply is owed on the path).
    pub(super) fn call(
        &mut self,
        id: u64,
        path: String,
        msg: Message,
        waiter: Waiter,
        out: &mut VecDeque<Message>,
    ) {
        let state = self.paths.entry(path.clone()).or_default();
        state.queued.push_back(Queued::Call(id, msg, waiter));
        self.pump(&path, out);
    }

    /// An emit: sent in order with the path's calls; the path then owes a possible reply.
    pub(super) fn emit(&mut self, path: String, msg: Message, out: &mut VecDeque<Message>) {
        self.paths
            .entry(path.clone())
            .or_default()
            .queued
            .push_back(Queued::Emit(msg));
        self.pump(&path, out);
    }

    /// A reply arrived on `path`.
    pub(super) fn reply(&mut self, path: &str, out: &mut VecDeque<Message>) -> Reply {
        let Some(state) = self.paths.get_mut(path) else {
            return Reply::Unsolicited;
        };
        let reply = if let Some((_, waiter)) = state.waiting.take() {
            Reply::Deliver(waiter)
        } else if state.owed > 0 {
            state.owed -= 1;
            Reply::Owed
        } else {
            Reply::Unsolicited
        };
        self.pump(path, out);
        reply
    }

    /// The caller of call `id` on `path` stopped waiting (timeout, dropped future). If the call
    /// was sent, its reply is now owed; if it was still queued, it is simply dropped.
    pub(super) fn forget(&mut self, id: u64, path: &str, out: &mut VecDeque<Message>) {
        let Some(state) = self.paths.get_mut(path) else {
            return;
        };
        if state.waiting.as_ref().is_some_and(|(i, _)| *i == id) {
            state.waiting = None;
            state.owed += 1;
        } else {
            state
                .queued
                .retain(|q| !matches!(q, Queued::Call(i, _, _) if *i == id));
        }
        self.pump(path, out);
    }

    /// Treats calls whose caller is gone (a lost `forget`) as forgotten.
    pub(super) fn sweep(&mut self, out: &mut VecDeque<Message>) {
        let gone: Vec<(u64, String)> = self
            .paths
            .iter()
            .flat_map(|(path, s)| {
                let waiting = s.waiting.iter().map(|(id, w)| (*id, w));
                let queued = s.queued.iter().filter_map(|q| match q {
                    Queued::Call(id, _, w) => Some((*id, w)),
                    Queued::Emit(_) => None,
                });
                waiting
                    .chain(queued)
                    .filter(|(_, w)| w.is_closed())
                    .map(|(id, _)| (id, path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (id, path) in gone {
            self.forget(id, &path, out);
        }
    }

    /// The connection is gone: every call fails with `error()`; owed replies will never come.
    pub(super) fn fail_all(&mut self, error: impl Fn() -> Error) {
        for (_, state) in self.paths.drain() {
            if let Some((_, w)) = state.waiting {
                let _ = w.send(Err(error()));
            }
            for q in state.queued {
                if let Queued::Call(_, _, w) = q {
                    let _ = w.send(Err(error()));
                }
            }
        }
    }

    /// Paths with something in flight or owed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn pump(&mut self, path: &str, out: &mut VecDeque<Message>) {
        if let Some(state) = self.paths.get_mut(path) {
            state.pump(path, out);
            if state.is_idle() {
                self.paths.remove(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::error::Result;

    type Rx = oneshot::Receiver<Result<webmesh_codec::Frame>>;

    fn msg(text: &str) -> Message {
        Message::Text(text.into())
    }

    fn sent(out: &mut VecDeque<Message>) -> Vec<String> {
        out.drain(..)
            .map(|m| m.into_text().map(|t| t.to_string()).unwrap_or_default())
            .collect()
    }

    fn call(paths: &mut LegacyPaths, id: u64, path: &str, out: &mut VecDeque<Message>) -> Rx {
        let (tx, rx) = oneshot::channel();
        paths.call(id, path.into(), msg(&format!("call {id}")), tx, out);
        rx
    }

    fn delivered(reply: Reply, rx: &mut Rx) -> bool {
        match reply {
            Reply::Deliver(w) => {
                drop(w);
                // The waiter handed out is this call's: its receiver sees it go.
                matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed))
            }
            _ => false,
        }
    }

    fn is_blocked(rx: &mut Rx) -> bool {
        matches!(rx.try_recv(), Ok(Err(Error::StaleReplyPending { .. })))
    }

    #[test]
    fn one_call_per_path_in_flight_the_rest_in_order() {
        let (mut paths, mut out) = (LegacyPaths::default(), VecDeque::new());
        let mut a = call(&mut paths, 1, "/p", &mut out);
        let mut b = call(&mut paths, 2, "/p", &mut out);
        let _other = call(&mut paths, 3, "/q", &mut out);
        assert_eq!(
            sent(&mut out),
            ["call 1", "call 3"],
            "one per path; paths independent"
        );
        assert!(delivered(paths.reply("/p", &mut out), &mut a));
        assert_eq!(
            sent(&mut out),
            ["call 2"],
            "the next call goes once the first is answered"
        );
        assert!(delivered(paths.reply("/p", &mut out), &mut b));
        assert!(matches!(paths.reply("/p", &mut out), Reply::Unsolicited));
    }

    /// Issue 9, point 4: the late reply to a timed-out call never reaches the next call.
    #[test]
    fn issue_9_a_timed_out_calls_late_reply_is_not_handed_to_the_next_call() {
        let (mut paths, mut out) = (LegacyPaths::default(), VecDeque::new());
        let _slow = call(&mut paths, 1, "/slow", &mut out);
        let mut queued = call(&mut paths, 2, "/slow", &mut out);
        paths.forget(1, "/slow", &mut out);
        assert!(is_blocked(&mut queued), "a call queued behind it fails at once");
        let mut new = call(&mut paths, 3, "/slow", &mut out);
        assert!(is_blocked(&mut new), "so does a new call while the reply is owed");
        assert_eq!(sent(&mut out), ["call 1"], "nothing else was sent");
        assert!(
            matches!(paths.reply("/slow", &mut out), Reply::Owed),
            "the late reply is dropped"
        );
        let mut after = call(&mut paths, 4, "/slow", &mut out);
        assert_eq!(sent(&mut out), ["call 4"], "the path is free again");
        assert!(delivered(paths.reply("/slow", &mut out), &mut after));
        assert_eq!(paths.len(), 0, "idle paths are dropped: the map does not grow");
    }

    #[test]
    fn a_call_forgotten_while_queued_owes_nothing() {
        let (mut paths, mut out) = (LegacyPaths::default(), VecDeque::new());
        let mut a = call(&mut paths, 1, "/p", &mut out);
        let _b = call(&mut paths, 2, "/p", &mut out);
        paths.forget(2, "/p", &mut out);
        assert!(delivered(paths.reply("/p", &mut out), &mut a));
        assert_eq!(sent(&mut out), ["call 1"], "the forgotten call was never sent");
        assert_eq!(paths.len(), 0);
    }

    #[test]
    fn an_emit_may_be_answered_so_calls_wait_for_that_answer() {
        let (mut paths, mut out) = (LegacyPaths::default(), VecDeque::new());
        let mut a = call(&mut paths, 1, "/p", &mut out);
        paths.emit("/p".into(), msg("emit"), &mut out);
        assert_eq!(
            sent(&mut out),
            ["call 1"],
            "the emit waits for the call in flight"
        );
        assert!(delivered(paths.reply("/p", &mut out), &mut a));
        assert_eq!(sent(&mut out), ["emit"]);
        let mut b = call(&mut paths, 2, "/p", &mut out);
        assert!(
            is_blocked(&mut b),
            "the emit's answer may come: the path is blocked"
        );
        assert!(matches!(paths.reply("/p", &mut out), Reply::Owed));
        let mut c = call(&mut paths, 3, "/p", &mut out);
        assert_eq!(sent(&mut out), ["call 3"]);
        assert!(delivered(paths.reply("/p", &mut out), &mut c));
    }

    #[test]
    fn a_sweep_treats_a_gone_caller_as_forgotten() {
        let (mut paths, mut out) = (LegacyPaths::default(), VecDeque::new());
        let a = call(&mut paths, 1, "/p", &mut out);
        drop(a);
        paths.sweep(&mut out);
        let mut b = call(&mut paths, 2, "/p", &mut out);
        assert!(is_blocked(&mut b), "the gone call's reply is owed");
    }

    #[test]
    fn failing_all_reaches_every_call() {
        let (mut paths, mut out) = (LegacyPaths::default(), VecDeque::new());
        let mut a = call(&mut paths, 1, "/p", &mut out);
        let mut b = call(&mut paths, 2, "/p", &mut out);
        paths.fail_all(|| Error::closed(crate::error::CloseKind::Lost, "gone"));
        for rx in [&mut a, &mut b] {
            assert!(matches!(rx.try_recv(), Ok(Err(Error::Closed { .. }))));
        }
        assert_eq!(paths.len(), 0);
    }
}
