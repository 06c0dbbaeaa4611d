//! `wasp_upstream_wait_seconds`: how long an upstream attempt waited for a
//! connection to send on — in line at `max_connections_per_endpoint`,
//! dialing a new connection, or for HTTP/2 stream capacity. The clock starts
//! only when the attempt has to wait, so reusing an idle connection records
//! 0 without reading it.

use crate::metrics::Histogram;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

/// One attempt's wait; the sample is taken when it has a connection
/// ([`Wait::end`]) or when it is dropped (the attempt failed or was cancelled
/// by the route timeout while waiting).
pub struct Wait<'a> {
    histogram: &'a Histogram,
    since: Option<Instant>,
    ended: bool,
}

impl<'a> Wait<'a> {
    /// An attempt that has not waited yet.
    pub fn new(histogram: &'a Histogram) -> Self {
        Wait { histogram, since: None, ended: false }
    }

    /// The attempt has to wait: start the clock (once).
    pub fn start(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// The attempt has its connection: records the wait (once).
    pub fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.histogram.observe(self.since.map_or(0.0, |s| s.elapsed().as_secs_f64()));
        }
    }

    /// Waits until `poll_ready` is ready, starting the clock if it is not at once.
    pub async fn until<E>(&mut self, mut poll_ready: impl FnMut(&mut std::task::Context<'_>) -> Poll<E>) -> E {
        poll_fn(|cx| match poll_ready(cx) {
            Poll::Pending => {
                self.start();
                Poll::Pending
            }
            ready => ready,
        })
        .await
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.end();
    }
}
