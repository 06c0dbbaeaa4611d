//! HTTP/1.1 keep-alive pool for one endpoint, of wasp's own client
//! connections ([`super::h1`]). A connection is checked out for one exchange
//! and comes back to the pool when its response body has been read to the
//! end; a body dropped early, an upgrade or an error means it is not reused.
//! Idle connections are reused newest first and closed after [`IDLE_FOR`]
//! (by a sweeper that runs only while some are idle, and also closes within
//! [`PROBE_EVERY`] those the upstream closed).
//! At most `max_connections_per_endpoint` are open at once: a request that
//! finds none idle and none to open waits in line for one to come back
//! (handed to the longest waiter first) or close, so a flood of requests
//! queues in wasp, in order, instead of in the endpoint's accept backlog
//! (where it would time out and trip the breaker).

use super::Dialer;
use super::body::RequestBody;
use super::h1::{self, Conn, H1Body};
use super::wait::Wait;
use crate::error::ProxyError;
use hyper::{Request, Response};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// How long an idle connection is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(90);
/// How often idle connections are checked for having been closed by the upstream.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 1024;

/// Idle HTTP/1.1 connections to one endpoint, and the cap on open ones.
pub struct H1Pool {
    idle: Mutex<Idle>,
    /// One permit per connection that may be open; a connection's task holds its permit.
    open: Arc<Semaphore>,
    /// A task will close the idle connections that expire.
    sweeping: AtomicBool,
}

/// Connections not in use, and the requests waiting for one (oldest first).
#[derive(Default)]
struct Idle {
    conns: Vec<(Box<Conn>, Instant)>,
    waiters: VecDeque<oneshot::Sender<Box<Conn>>>,
}

/// What a request gets to send on.
enum Slot {
    /// A connection that was idle, or handed over by the request before.
    Conn(Box<Conn>),
    /// Room to open a new one.
    Open(OwnedSemaphorePermit),
}

impl H1Pool {
    /// A pool that opens at most `max_connections` at once.
    pub fn new(max_connections: usize) -> Self {
        H1Pool {
            idle: Mutex::default(),
            open: Arc::new(Semaphore::new(max_connections)),
            sweeping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection comes back: to the request that has waited longest, if
    /// any (so that newer requests cannot take it first), else to the pool.
    pub(super) fn give_back(self: &Arc<Self>, mut conn: Box<Conn>) {
        let mut idle = self.lock();
        while let Some(waiter) = idle.waiters.pop_front() {
            match waiter.send(conn) {
                Ok(()) => return,
                Err(unsent) => conn = unsent, // that request is gone
            }
        }
        // Expired ones are the sweeper's (within PROBE_EVERY): one clock read per request.
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push((conn, Instant::now()));
            drop(idle);
            self.sweep_later();
        }
    }

    /// An idle connection, or room to open one, or else a place in line for
    /// the first connection given back or room freed (with `queued` set
    /// meanwhile: a timeout then is not the endpoint's failure).
    async fn slot(&self, queued: &mut bool, wait: &mut Wait<'_>) -> Slot {
        let mut handed = {
            let mut idle = self.lock();
            // Newest first; one past IDLE_FOR by less than PROBE_EVERY is
            // still checked for being closed before it carries a request.
            if let Some((conn, _)) = idle.conns.pop() {
                return Slot::Conn(conn);
            }
            if let Ok(permit) = self.open.clone().try_acquire_owned() {
                return Slot::Open(permit);
            }
            let (tx, rx) = oneshot::channel();
            // Requests that gave up (timed out, or got room to open instead)
            // leave; connections that close are never given back to prune them.
            idle.waiters.retain(|w| !w.is_closed());
            idle.waiters.push_back(tx);
            rx
        };
        *queued = true;
        wait.start();
        // `open` is never closed, so the second branch always stays enabled.
        let slot = tokio::select! {
            Ok(conn) = &mut handed => Slot::Conn(conn),
            Ok(permit) = self.open.clone().acquire_owned() => {
                // A connection handed over meanwhile is used, not lost.
                handed.close();
                match handed.try_recv() {
                    Ok(conn) => Slot::Conn(conn),
                    Err(_) => Slot::Open(permit),
                }
            }
        };
        *queued = false;
        slot
    }

    /// Closes idle connections once they have been idle for [`IDLE_FOR`],
    /// and every [`PROBE_EVERY`] those the upstream closed (or wrote to
    /// unasked), even when no request comes to notice: one task per pool,
    /// and only while the pool holds idle connections (an idle proxy stays
    /// asleep). Probing a quiet connection costs no system call.
    fn sweep_later(self: &Arc<Self>) {
        // Read first: one runs nearly always, and a load is no atomic write.
        // A sweeper that stopped did so under the lock the caller took
        // since, so its `false` is seen here.
        if self.sweeping.load(AtomicOrdering::Acquire) || self.sweeping.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = PROBE_EVERY;
            loop {
                tokio::time::sleep(wait).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.lock();
                let now = Instant::now();
                idle.conns.retain_mut(|(conn, since)| now.duration_since(*since) < IDLE_FOR && conn.usable());
                match idle.conns.first() {
                    Some((_, oldest)) => {
                        wait = PROBE_EVERY.min(IDLE_FOR.saturating_sub(oldest.elapsed()) + Duration::from_millis(10))
                    }
                    None => {
                        // Under the lock: a connection given back after this starts a new sweeper.
                        pool.sweeping.store(false, AtomicOrdering::Release);
                        return;
                    }
                }
            }
        });
    }

    /// Sends `req` over a pooled or new connection to `address`, timing
    /// the wait for that connection in `wait`.
    pub async fn send(
        self: &Arc<Self>,
        address: &str,
        dialer: &Dialer,
        req: Box<Request<RequestBody>>,
        wait: &mut Wait<'_>,
        queued: &mut bool,
    ) -> Result<Response<H1Body>, ProxyError> {
        let conn = loop {
            match self.slot(queued, wait).await {
                // Closed by the upstream while idle: the request is untouched, try another.
                Slot::Conn(mut conn) => {
                    if conn.usable() {
                        break conn;
                    }
                }
                Slot::Open(permit) => {
                    wait.start();
                    // Boxed: dialing (TCP, TLS) is rare, and its state
                    // would otherwise make every request's future larger.
                    let (stream, own) = Box::pin(dialer.connect(address)).await?;
                    break Conn::new(stream, permit, own);
                }
            }
        };
        wait.end();
        h1::send(conn, req, self).await
    }
}
