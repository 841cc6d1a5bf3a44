//! The deadlines of one connection's calls in flight, under one runtime timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::Context;

use tokio::time::Instant;

use super::timers::Timer;

/// Entries past twice the live calls, plus this many, are swept in one go.
const SWEEP_SLACK: usize = 64;

/// The deadlines of a connection's calls in flight, under one runtime timer owned by the
/// connection's driver. A call costs a heap push, not a timer of its own: a runtime timer per
/// call registers and deregisters under the runtime's timer lock, which both workers take
/// (measured in `webmesh-bench`: 11–18 % more calls at 64 in flight; sequential calls within
/// noise).
///
/// The entries of calls that ended are not removed one by one: one is dropped when it comes
/// due (the driver finds no such call any more), and all of them at once when they outnumber
/// the live calls (so the heap holds at most about twice the calls in flight).
#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Created at the first deadline (an idle connection has none).
    timer: Option<Timer>,
    /// When the timer fires, if it is set.
    armed: Option<Instant>,
}

impl Deadlines {
    /// Notes that call `id` ends at `at`. `live` counts the calls in flight and `is_live`
    /// tells whether one still is: when ended calls' entries pile up, they go.
    pub(crate) fn insert(&mut self, at: Instant, id: u64, live: usize, is_live: impl Fn(u64) -> bool) {
        if self.heap.len() >= 2 * live + SWEEP_SLACK {
            self.heap.retain(|Reverse((_, id))| is_live(*id));
        }
        self.heap.push(Reverse((at, id)));
        if self.armed.is_none_or(|armed| at < armed) {
            self.arm(at);
        }
    }

    fn arm(&mut self, at: Instant) {
        self.armed = Some(at);
        match &mut self.timer {
            Some(timer) => timer.reset(at),
            None => self.timer = Some(Timer::at(at)),
        }
    }

    /// Hands `due` each id whose deadline has passed (ended calls' among them: `due` checks),
    /// and sets the timer for the next one. True if any came due. Registers `cx` to be woken
    /// at the next deadline.
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>, mut due: impl FnMut(u64)) -> bool {
        let mut any = false;
        loop {
            let (Some(_), Some(timer)) = (self.armed, &mut self.timer) else {
                return any;
            };
            if timer.poll(cx).is_pending() {
                return any;
            }
            self.armed = None;
            let now = Instant::now();
            while let Some(&Reverse((at, id))) = self.heap.peek() {
                if at > now {
                    self.arm(at);
                    break;
                }
                self.heap.pop();
                any = true;
                due(id);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::task::Poll;
    use std::time::Duration;

    fn poll(d: &mut Deadlines) -> Vec<u64> {
        let mut out = Vec::new();
        let waker = futures_util::task::noop_waker();
        d.poll_due(&mut Context::from_waker(&waker), |id| out.push(id));
        out
    }

    #[tokio::test(start_paused = true)]
    async fn calls_come_due_in_deadline_order_whatever_order_they_came_in() {
        let mut d = Deadlines::default();
        let t0 = Instant::now();
        for (id, ms) in [(1, 300), (2, 100), (3, 200), (4, 100)] {
            d.insert(t0 + Duration::from_millis(ms), id, 4, |_| true);
        }
        assert!(poll(&mut d).is_empty(), "nothing is due yet");
        tokio::time::advance(Duration::from_millis(150)).await;
        let mut first = poll(&mut d);
        first.sort_unstable();
        assert_eq!(first, [2, 4]);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(poll(&mut d), [3]);
        // A call with an earlier deadline than the one the timer waits for.
        d.insert(Instant::now() + Duration::from_millis(10), 5, 2, |_| true);
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(poll(&mut d), [5]);
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_eq!(poll(&mut d), [1]);
        assert!(poll(&mut d).is_empty());
        assert_eq!(d.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_wakes_the_driver_at_the_next_deadline() {
        let mut d = Deadlines::default();
        d.insert(Instant::now() + Duration::from_millis(50), 7, 1, |_| true);
        let due = std::future::poll_fn(|cx| {
            let mut ids = Vec::new();
            d.poll_due(cx, |id| ids.push(id));
            if ids.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(ids)
            }
        });
        let started = Instant::now();
        assert_eq!(due.await, [7]);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_of_ended_calls_do_not_pile_up() {
        let mut d = Deadlines::default();
        let mut live = HashSet::new();
        let at = Instant::now() + Duration::from_secs(30);
        for id in 0..10_000u64 {
            live.insert(id);
            d.insert(at, id, live.len(), |id| live.contains(&id));
            assert!(d.len() <= 2 * live.len() + SWEEP_SLACK, "{} entries", d.len());
            // Three calls stay in flight; the others end at once.
            if id >= 3 {
                live.remove(&(id - 3));
            }
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        let due: HashSet<u64> = poll(&mut d).into_iter().filter(|id| live.contains(id)).collect();
        assert_eq!(due, live, "every live call comes due");
    }
}
