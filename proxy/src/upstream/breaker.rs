//! Per-endpoint circuit breaker. `consecutive_failures` failures in a row
//! open it for `open_for`; then exactly one request goes through as a probe
//! (half-open): success closes it, failure opens it again. A closed breaker
//! costs one atomic load per request.

use prometheus::{IntCounter, IntGauge};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// One endpoint's breaker.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    consecutive: AtomicU32,
    tripped: AtomicBool,
    state: Mutex<State>,
    gauge: IntGauge,
    opened: IntCounter,
}

/// Permission to send one request; report its outcome with [`Permit::record`].
/// A permit dropped without an outcome (the client went away, or its own
/// request failed) says nothing about the endpoint: a probe's turn passes to
/// the next request. A route timeout is reported by [`Breaker::note_failure`].
#[must_use]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    /// A closed breaker reporting its state to `gauge` (from [`Breaker::publish`] on)
    /// and counting each time it opens in `opened`.
    pub fn new(threshold: u32, open_for: Duration, gauge: IntGauge, opened: IntCounter) -> Self {
        Breaker {
            threshold,
            open_for,
            consecutive: AtomicU32::new(0),
            tripped: AtomicBool::new(false),
            state: Mutex::new(State::Closed),
            gauge,
            opened,
        }
    }

    /// Whether a request may go to this endpoint now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        if !self.tripped.load(Ordering::Acquire) {
            return Some(Permit { breaker: self, probe: false, recorded: false });
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            State::Closed => Some(Permit { breaker: self, probe: false, recorded: false }),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                self.gauge.set(2);
                Some(Permit { breaker: self, probe: true, recorded: false })
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    /// Puts the state on the gauge: once the breaker serves (a config that
    /// is built but never applied must not reset a serving breaker's series).
    pub fn publish(&self) {
        self.gauge.set(match *self.lock() {
            State::Closed => 0,
            State::Open { .. } => 1,
            State::HalfOpen => 2,
        });
    }

    /// Whether the breaker is letting normal traffic through.
    pub fn is_closed(&self) -> bool {
        !self.tripped.load(Ordering::Acquire)
    }

    /// Counts a failure that no permit reported (the attempt was cancelled, e.g. by a route timeout).
    pub fn note_failure(&self) {
        self.record(false, false);
    }

    /// A probe ended without an outcome: the next request probes.
    fn release_probe(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            *state = State::Open { until: Instant::now() };
            self.gauge.set(1);
        }
    }

    fn record(&self, ok: bool, probe: bool) {
        if ok {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            if probe {
                *self.lock() = State::Closed;
                self.tripped.store(false, Ordering::Release);
                self.gauge.set(0);
            }
            return;
        }
        let failures = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let mut state = self.lock();
        // A failure while a probe may go (e.g. a probe cancelled by the route
        // timeout) counts as the probe's.
        let probing =
            matches!(*state, State::HalfOpen) || matches!(*state, State::Open { until } if until <= Instant::now());
        if probe || probing || (failures >= self.threshold && *state == State::Closed) {
            *state = State::Open { until: Instant::now() + self.open_for };
            self.consecutive.store(0, Ordering::Relaxed);
            self.tripped.store(true, Ordering::Release);
            self.gauge.set(1);
            self.opened.inc();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Permit<'_> {
    /// Reports the outcome of the request this permit allowed.
    pub fn record(mut self, ok: bool) {
        self.recorded = true;
        self.breaker.record(ok, self.probe);
    }

    /// Reports no outcome: the request failed for reasons that are not the endpoint's.
    pub fn forget(self) {}
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(3, open_for, IntGauge::new("g", "g").expect("gauge"), IntCounter::new("c", "c").expect("counter"))
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = breaker(Duration::from_secs(60));
        for _ in 0..2 {
            b.try_acquire().expect("closed").record(false);
        }
        b.try_acquire().expect("closed").record(true);
        for _ in 0..2 {
            b.try_acquire().expect("closed").record(false);
        }
        assert!(b.is_closed());
        b.try_acquire().expect("closed").record(false);
        assert!(!b.is_closed());
        assert!(b.try_acquire().is_none());
        assert_eq!(b.gauge.get(), 1);
        assert_eq!(b.opened.get(), 1);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let b = breaker(Duration::ZERO);
        for _ in 0..3 {
            b.try_acquire().expect("closed").record(false);
        }
        let probe = b.try_acquire().expect("probe after open_for");
        assert_eq!(b.gauge.get(), 2);
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        probe.record(false);
        assert_eq!(b.gauge.get(), 1);
        assert_eq!(b.opened.get(), 2, "a failed probe opens it again");
        let probe = b.try_acquire().expect("next probe");
        probe.record(true);
        assert!(b.is_closed());
        assert_eq!(b.gauge.get(), 0);
        assert_eq!(b.opened.get(), 2);
    }

    #[test]
    fn an_abandoned_probe_passes_its_turn_and_a_timeout_then_counts() {
        let b = breaker(Duration::ZERO);
        for _ in 0..3 {
            b.try_acquire().expect("closed").record(false);
        }
        drop(b.try_acquire().expect("probe"));
        assert!(!b.is_closed());
        assert_eq!(b.gauge.get(), 1);
        assert_eq!(b.opened.get(), 1, "a probe passing its turn does not open it again");
        drop(b.try_acquire().expect("the next request probes"));
        b.note_failure();
        assert!(!b.is_closed(), "a probe's route timeout keeps it open");
        b.try_acquire().expect("probe").record(true);
        assert!(b.is_closed());
    }
}
