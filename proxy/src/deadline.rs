//! Route deadlines of an HTTP/1.1 connection's requests, kept by the
//! connection's own check ([`crate::conn`]'s `drive`, which runs anyway, at
//! least every `header_read_timeout`) instead of a timer entry registered
//! and cancelled under the timer driver's lock for each request. A request
//! whose deadline falls after the check's next run leaves it here; the check,
//! when it runs, comes back at the deadline and marks the request expired,
//! and the request path, polled right after in the same task, ends with the
//! route timeout. A sooner deadline gets a timer of its own (the caller's).
//! Only for a connection that handles one request at a time in its own
//! task: the state is one deadline, read and written without
//! read-modify-writes.

use crate::io::{clock_ms, ms_at};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

const NO_CHECK: u64 = u64::MAX;
const NO_DEADLINE: u64 = u64::MAX;
const EXPIRED: u64 = u64::MAX - 1;

/// `timeout` after `from`; a timeout too large for the clock is ~30 years.
pub fn after(from: Instant, timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    from.checked_add(timeout).or_else(|| from.checked_add(FAR)).unwrap_or(from)
}

/// The deadline of a connection's request in flight, and when its check runs next.
pub struct Deadlines {
    /// When the connection's check runs next ([`clock_ms`]; [`NO_CHECK`]:
    /// no check keeps deadlines).
    check_at_ms: AtomicU64,
    /// [`NO_DEADLINE`], [`EXPIRED`], or when ([`clock_ms`]).
    deadline_ms: AtomicU64,
}

/// No check yet: every deadline is the caller's to keep.
impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { check_at_ms: AtomicU64::new(NO_CHECK), deadline_ms: AtomicU64::new(NO_DEADLINE) }
    }
}

impl Deadlines {
    /// The connection's check runs next in `after`; it calls
    /// [`Deadlines::left`] then, and comes back at the deadline if that is sooner.
    pub fn check_runs_in(&self, after: Duration) {
        let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.check_at_ms.store(clock_ms().saturating_add(after).min(NO_CHECK - 1), Ordering::Relaxed);
    }

    /// Leaves `deadline` to the connection's check if the check runs before
    /// it: `None` if not (the caller keeps a timer of its own).
    pub fn keep(&self, deadline: Instant) -> Option<KeptDeadline<'_>> {
        // Rounded up: the check never ends a request before its deadline.
        let at_ms = ms_at(deadline).saturating_add(1).min(EXPIRED - 1);
        if at_ms < self.check_at_ms.load(Ordering::Relaxed) {
            return None;
        }
        self.deadline_ms.store(at_ms, Ordering::Relaxed);
        Some(KeptDeadline { deadlines: self })
    }

    /// For the check at `now_ms`: how long until the deadline of the request
    /// in flight (`None`: there is none, or it passed and is now marked expired).
    pub fn left(&self, now_ms: u64) -> Option<Duration> {
        match self.deadline_ms.load(Ordering::Relaxed) {
            NO_DEADLINE | EXPIRED => None,
            at if at <= now_ms => {
                self.deadline_ms.store(EXPIRED, Ordering::Relaxed);
                None
            }
            at => Some(Duration::from_millis(at - now_ms)),
        }
    }

    fn expired(&self) -> bool {
        self.deadline_ms.load(Ordering::Relaxed) == EXPIRED
    }
}

/// A request's route deadline left to its connection's check; forgotten when dropped.
pub struct KeptDeadline<'a> {
    deadlines: &'a Deadlines,
}

impl KeptDeadline<'_> {
    /// `fut`'s output, or `Err(())` once the check found the deadline passed
    /// (as tokio's timeout: an output ready at the deadline still counts).
    pub async fn run<F: Future>(&self, mut fut: Pin<&mut F>) -> Result<F::Output, ()> {
        std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Ok(output)),
            Poll::Pending if self.deadlines.expired() => Poll::Ready(Err(())),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

impl Drop for KeptDeadline<'_> {
    fn drop(&mut self) {
        self.deadlines.deadline_ms.store(NO_DEADLINE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_before_the_check_is_not_kept() {
        let d = Deadlines::default();
        assert!(d.keep(Instant::now() + Duration::from_secs(60)).is_none(), "no check runs yet");
        d.check_runs_in(Duration::from_secs(10));
        assert!(d.keep(Instant::now() + Duration::from_secs(1)).is_none(), "sooner than the check");
        assert!(d.keep(Instant::now() + Duration::from_secs(15)).is_some(), "after the check");
    }

    #[test]
    fn the_check_comes_back_at_the_deadline_and_marks_it_expired() {
        let d = Deadlines::default();
        d.check_runs_in(Duration::ZERO);
        let start = Instant::now();
        let kept = d.keep(start + Duration::from_millis(500)).expect("kept");
        let now = ms_at(start);
        let left = d.left(now).expect("a deadline ahead");
        assert!(left > Duration::from_millis(500) && left <= Duration::from_millis(502), "{left:?}: rounded up");
        assert!(!d.expired());
        assert_eq!(d.left(now + 502), None, "passed: marked");
        assert!(d.expired());
        drop(kept);
        assert!(!d.expired(), "forgotten with its request");
        assert_eq!(d.left(now + 600), None, "no deadline");
    }

    #[tokio::test]
    async fn an_expired_deadline_ends_a_pending_future_but_not_a_ready_one() {
        let d = Deadlines::default();
        d.check_runs_in(Duration::ZERO);
        let kept = d.keep(Instant::now()).expect("kept");
        d.left(u64::MAX - 2);
        let ready = std::pin::pin!(async { 7 });
        assert_eq!(kept.run(ready).await, Ok(7));
        let pending = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(kept.run(pending).await, Err(()));
    }
}
