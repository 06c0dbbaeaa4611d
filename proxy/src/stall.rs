//! HTTP/2 streams whose client stopped granting flow-control window. Such
//! a client keeps reading the socket (so the connection's write-stall check
//! never fires) but never lets a response finish, holding its upstream
//! connection and `max_pending` slot for ever. hyper polls a response body
//! only when the stream has window for it, so a body that handed out a chunk
//! and has not been polled again since is waiting for the client: each
//! response marks that moment in a slot of its connection, and the
//! connection's periodic check ends a connection whose client has kept a
//! stream waiting for `write_timeout` (counted as a write stall).
//!
//! Cost: one relaxed store per chunk; the slots (one `u64` per concurrent
//! stream) exist only on connections that carry HTTP/2.

use crate::io::clock_ms;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No response holds the slot.
const FREE: u64 = u64::MAX;
/// A response holds it and is not waiting for the client.
const MOVING: u64 = 0;

/// The slots of one connection's streams.
pub struct Streams {
    slots: OnceLock<Box<[AtomicU64]>>,
    size: usize,
}

/// A response's slot (`None`: untracked, e.g. HTTP/1.1).
#[derive(Clone, Copy)]
pub struct Slot(usize);

impl Streams {
    /// Room for `size` concurrent streams (the listener's `max_concurrent_streams`).
    pub fn new(size: usize) -> Self {
        Streams { slots: OnceLock::new(), size }
    }

    /// A slot for a new response, if one is free.
    pub fn claim(&self) -> Option<Slot> {
        let slots = self.slots.get_or_init(|| (0..self.size).map(|_| AtomicU64::new(FREE)).collect());
        slots
            .iter()
            .position(|s| s.compare_exchange(FREE, MOVING, Ordering::Relaxed, Ordering::Relaxed).is_ok())
            .map(Slot)
    }

    /// The response was polled: the client has window (or it is starting).
    pub fn moving(&self, slot: Slot) {
        self.set(slot, MOVING);
    }

    /// The response handed out a chunk; until it is polled again it waits for the client.
    pub fn waiting(&self, slot: Slot) {
        self.set(slot, clock_ms() + 1);
    }

    /// The response ended.
    pub fn release(&self, slot: Slot) {
        self.set(slot, FREE);
    }

    fn set(&self, slot: Slot, value: u64) {
        if let Some(s) = self.slots.get().and_then(|s| s.get(slot.0)) {
            s.store(value, Ordering::Relaxed);
        }
    }

    /// How long the stream that has waited longest for its client has waited.
    pub fn longest_wait(&self) -> Option<Duration> {
        let now = clock_ms();
        self.slots
            .get()?
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&v| v != FREE && v != MOVING)
            .map(|since| Duration::from_millis(now.saturating_sub(since - 1)))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_claimed_released_and_report_waits() {
        let streams = Streams::new(2);
        assert_eq!(streams.longest_wait(), None);
        let (a, b) = (streams.claim().expect("a"), streams.claim().expect("b"));
        assert!(streams.claim().is_none(), "two slots");
        assert_eq!(streams.longest_wait(), None, "claimed, not waiting");
        streams.waiting(a);
        assert!(streams.longest_wait().is_some());
        streams.moving(a);
        assert_eq!(streams.longest_wait(), None);
        streams.release(b);
        assert!(streams.claim().is_some(), "a released slot is claimed again");
    }
}
