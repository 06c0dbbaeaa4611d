//! A future that is polled only after its own waker fired. A connection's
//! task waits on its connection and, beside it, on signals that almost never
//! fire (drain, abuse, its idle/stall check): polled together in a
//! `select!`, every wake-up of the connection (a few per request) would poll
//! each signal again. [`Gated`] gives its future a waker of its own and
//! skips the poll unless that waker was woken since the last one.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

pin_project_lite::pin_project! {
    /// `F`, polled only when it asked to be (and on its first poll).
    pub struct Gated<F> {
        #[pin]
        inner: F,
        task: Task,
        waker: Waker,
    }
}

/// Set when the inner future's waker fires; wakes the task polling [`Gated`].
struct Flag {
    woken: AtomicBool,
    /// The waker of the task polling [`Gated`]. It stays until that task's
    /// waker changes (never, for a task that keeps its future): a poll that
    /// finds its own waker already here takes no lock and no atomic
    /// read-modify-write, only a load of `woken`. A wake-up does not take it
    /// out, so no wake can leave the slot empty while the task thinks it is
    /// registered.
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken: the poll that wake causes sees it.
        // The task's waker is called under the lock: tokio's schedules the
        // task, it never polls it in place (which would take the lock again).
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(PoisonError::into_inner) {
            task.wake_by_ref();
        }
    }
}

/// The task registered in the flag, as this side last stored it; the
/// registration ends with the [`Gated`] (the task's waker is not kept alive by
/// a waker the inner future left somewhere).
struct Task {
    flag: Arc<Flag>,
    stored: Option<Waker>,
}

impl Task {
    #[inline]
    fn register(&mut self, waker: &Waker) {
        if self.stored.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return;
        }
        *self.flag.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.stored = Some(waker.clone());
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.stored.is_some() {
            self.flag.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }
}

impl<F> Gated<F> {
    /// `inner`, to be polled on the first poll and then when it wakes.
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag { woken: AtomicBool::new(true), task: Mutex::new(None) });
        Gated { inner, waker: Waker::from(flag.clone()), task: Task { flag, stored: None } }
    }

    /// The inner future, which must be polled on the next poll (e.g. after a
    /// timer's deadline changed).
    pub fn inner_mut(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        this.task.flag.woken.store(true, Ordering::Release);
        this.inner
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake that sets it after the
        // read finds this task's waker and wakes it.
        this.task.register(cx.waker());
        // A load while nothing fired (almost every poll); the swap, which
        // synchronises with the wake that set it, only when something did.
        if !this.task.flag.woken.load(Ordering::Relaxed) || !this.task.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set and it was woken. A
    /// pending poll leaves its waker in `waker` before it is counted.
    #[derive(Default)]
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let ready = self.ready.load(Ordering::Acquire);
            if !ready {
                *self.waker.lock().expect("lock") = Some(cx.waker().clone());
            }
            self.polls.fetch_add(1, Ordering::Release);
            if ready { Poll::Ready(()) } else { Poll::Pending }
        }
    }

    #[test]
    fn the_inner_future_is_polled_first_and_then_only_when_it_woke() {
        let probe = Probe::default();
        let (polls, ready, inner_waker) = (probe.polls.clone(), probe.ready.clone(), probe.waker.clone());
        let mut gated = std::pin::pin!(Gated::new(probe));
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, then only on its own wake-ups");
        ready.store(true, Ordering::Relaxed);
        assert!(gated.as_mut().poll(&mut cx).is_pending(), "not woken yet");
        inner_waker.lock().expect("lock").take().expect("registered").wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    /// Counts its wake-ups.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_wake_up_reaches_the_waker_of_the_latest_poll() {
        let probe = Probe::default();
        let (polls, ready, inner_waker) = (probe.polls.clone(), probe.ready.clone(), probe.waker.clone());
        let mut gated = std::pin::pin!(Gated::new(probe));
        let (first, second) = (Arc::new(Counting(AtomicUsize::new(0))), Arc::new(Counting(AtomicUsize::new(0))));
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert!(gated.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(gated.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        // The future moved to another task: its waker replaces the first.
        assert!(gated.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        inner_waker.lock().expect("lock").take().expect("registered").wake();
        assert_eq!((first.0.load(Ordering::Relaxed), second.0.load(Ordering::Relaxed)), (0, 1));
        // Woken: polled again, and it registers again for the next wake-up.
        assert!(gated.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        inner_waker.lock().expect("lock").take().expect("registered again").wake();
        assert_eq!(second.0.load(Ordering::Relaxed), 2);
        ready.store(true, Ordering::Relaxed);
        assert!(gated.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
    }

    const STEPS: usize = 500;

    #[test]
    fn every_wake_up_from_another_thread_arrives() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        for _ in 0..10 {
            let probe = Probe::default();
            let (polls, ready, slot) = (probe.polls.clone(), probe.ready.clone(), probe.waker.clone());
            // One step at a time, each only once the last one reached the
            // inner future (ready at the last): a wake-up lost anywhere stops the walk.
            let stepper = std::thread::spawn(move || {
                for step in 0..STEPS {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                    while polls.load(Ordering::Acquire) <= step {
                        if std::time::Instant::now() > deadline {
                            return Err(step);
                        }
                        std::thread::yield_now();
                    }
                    ready.store(step == STEPS - 1, Ordering::Release);
                    let waker = slot.lock().expect("lock").clone();
                    waker.expect("registered").wake();
                }
                Ok(())
            });
            // Polled by a task of its own, whose waker stays the same.
            let gated = Gated::new(probe);
            let done = runtime.block_on(async {
                tokio::spawn(tokio::time::timeout(std::time::Duration::from_secs(10), gated)).await.expect("task")
            });
            assert_eq!(stepper.join().expect("stepper"), Ok(()), "a wake-up did not reach the inner future");
            assert!(done.is_ok());
        }
    }

    #[tokio::test]
    async fn a_gated_notification_still_arrives() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let gated = Gated::new(notify.notified());
        let n = notify.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            n.notify_waiters();
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), gated).await.expect("notified");
    }
}
