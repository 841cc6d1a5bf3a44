//! Cancellation of one call: set when the caller cancels it (v1 CANCEL, a dropped call) or its
//! deadline passes. The server driver stops the handler; the handler, and blocking work it
//! started, can observe it through its `CallContext`.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    /// The driver task polling the handler: woken to drop it.
    driver: AtomicWaker,
    /// Handlers waiting in `CallContext::cancelled`.
    waiters: Notify,
}

impl Cancel {
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // the server driver cancels
    pub(crate) fn cancel(&self) {
        if !self.flag.swap(true, Ordering::AcqRel) {
            self.driver.wake();
            self.waiters.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Wakes `waker`'s task when the call is cancelled.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.driver.register(waker);
    }

    /// Resolves once the call is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.waiters.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
