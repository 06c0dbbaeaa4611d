//! The clock of one guest call: how long it has run against its limit.
//!
//! A call's time limit counts the CPU time the call used, not the time it
//! waited for a CPU: on a busy machine (a reload compiling, a load spike) a
//! cheap call preempted for 10 ms is not a slow filter. Reading a thread's
//! CPU clock costs a system call, so it is read only from the epoch tick
//! callback, i.e. only for calls that last past a tick. A running guest
//! sees the first tick within about one tick of its start, so the time
//! before it counts as at most two ticks (more means the thread was waiting,
//! not running); after it, the thread's CPU time counts. A call also ends
//! after [`WALL_FACTOR`] times its limit in wall time, whatever happened.

use std::time::{Duration, Instant};

/// Time spent in the current call, against its limit.
#[derive(Debug)]
pub struct CallClock {
    start: Instant,
    limit: Duration,
    first_tick: Option<(Instant, Duration)>,
}

/// Wall-clock bound of a call, in multiples of its CPU limit.
pub const WALL_FACTOR: u32 = 10;

impl Default for CallClock {
    fn default() -> Self {
        CallClock { start: Instant::now(), limit: Duration::ZERO, first_tick: None }
    }
}

impl CallClock {
    /// Starts timing a call allowed `limit`; returns the start time.
    pub fn start(&mut self, limit: Duration) -> Instant {
        let now = Instant::now();
        (self.start, self.limit, self.first_tick) = (now, limit, None);
        now
    }

    /// At an epoch tick during the call: go on for another tick, or
    /// interrupt the call (a `timeout`).
    pub fn on_tick(&mut self) -> wasmtime::Result<wasmtime::UpdateDeadline> {
        let now = Instant::now();
        let cpu = cpu_time::ThreadTime::try_now().map(|t| t.as_duration()).ok();
        let used = match (cpu, *self.first_tick.get_or_insert((now, cpu.unwrap_or_default()))) {
            (Some(cpu), (t0, cpu0)) => (t0 - self.start).min(2 * super::runtime::TICK) + cpu.saturating_sub(cpu0),
            (None, _) => now - self.start,
        };
        if used >= self.limit || now - self.start >= self.limit * WALL_FACTOR {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(wasmtime::UpdateDeadline::Continue(1))
    }
}
