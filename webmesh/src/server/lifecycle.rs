//! A server's lifecycle: the shutdown signal, with the one deadline every connection drains to,
//! and the count of what still runs (the accept loop and each connection).
//!
//! Nothing here belongs to a single task, so a shutdown completes however the server is driven:
//! `run` awaited to its end, its future dropped by a `select!`, the server dropped unstarted.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// After the shutdown deadline, how long a connection has to send its close frame and read the
/// peer's answer.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Past the deadline and the close grace, how long a shutdown waits for stragglers (a hook that
/// blocks) before it returns anyway.
const SLACK: Duration = Duration::from_secs(1);

pub(crate) struct Lifecycle {
    timeout: Duration,
    /// `Some(deadline)` once a shutdown started: handlers in flight may run until `deadline`.
    shutdown: watch::Sender<Option<Instant>>,
    /// How many parts run: the accept loop and each connection task.
    running: watch::Sender<usize>,
}

impl Lifecycle {
    pub(crate) fn new(timeout: Duration) -> Self {
        Lifecycle {
            timeout,
            shutdown: watch::Sender::new(None),
            running: watch::Sender::new(0),
        }
    }

    /// Starts the shutdown (once: a second call keeps the first deadline).
    pub(crate) fn start_shutdown(&self) {
        let deadline = Instant::now() + self.timeout;
        self.shutdown.send_if_modified(|d| match d {
            Some(_) => false,
            None => {
                *d = Some(deadline);
                true
            }
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.shutdown.subscribe()
    }

    /// The shutdown deadline, once a shutdown started.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.shutdown.borrow()
    }

    /// Counts one more running part until the returned guard drops.
    pub(crate) fn track(self: &Arc<Self>) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running(self.clone())
    }

    pub(crate) fn running(&self) -> usize {
        *self.running.borrow()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.deadline().is_some() && self.running() == 0
    }

    /// Waits until nothing runs, for at most the shutdown deadline plus `grace` (and a little
    /// slack for hooks). True if everything stopped.
    pub(crate) async fn wait_stopped(&self, grace: Duration) -> bool {
        let mut running = self.running.subscribe();
        let all_done = running.wait_for(|n| *n == 0);
        match self.deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline + grace + SLACK, all_done)
                .await
                .is_ok(),
            None => all_done.await.is_ok(),
        }
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("shutdown_deadline", &self.deadline())
            .field("running", &self.running())
            .finish()
    }
}

/// Resolves with the deadline once a shutdown started.
pub(crate) async fn started(rx: &mut watch::Receiver<Option<Instant>>) -> Instant {
    loop {
        if let Some(d) = *rx.borrow_and_update() {
            return d;
        }
        // The sender lives in the `Lifecycle` this receiver came from, which outlives the wait.
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One running part of a server; counted until dropped.
pub(crate) struct Running(Arc<Lifecycle>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Starts the shutdown when dropped: held by a [`Server`](super::Server) and by its `run`
/// future, so a server that goes away for any reason shuts down.
#[derive(Debug)]
pub(crate) struct ShutdownOnDrop(pub(crate) Arc<Lifecycle>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.start_shutdown();
    }
}
