//! HTTP/1.1 keep-alive pool for one endpoint, on hyper's connection-level
//! client. A connection is checked out for one exchange and comes back to
//! the pool when its response body has been read to the end; a body dropped
//! early, an upgrade or an error means the connection is not reused.
//! Idle connections are reused newest first and closed after [`IDLE_FOR`]
//! (by a sweeper that runs only while some are idle).
//! At most `max_connections_per_endpoint` are open at once: a request that
//! finds none idle and none to open waits in line for one to come back
//! (handed to the longest waiter first) or close, so a flood of requests
//! queues in wasp, in order, instead of in the endpoint's accept backlog
//! (where it would time out and trip the breaker).

use super::Dialer;
use super::body::RequestBody;
use super::wait::Wait;
use crate::error::{Kind, ProxyError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// How long an idle connection is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 1024;

type Sender = http1::SendRequest<RequestBody>;

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
    conns: Vec<(Sender, Instant)>,
    waiters: VecDeque<oneshot::Sender<Sender>>,
}

/// What a request gets to send on.
enum Slot {
    /// A connection that was idle, or handed over by the request before.
    Conn(Sender),
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
    fn give_back(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        while let Some(waiter) = idle.waiters.pop_front() {
            match waiter.send(sender) {
                Ok(()) => return,
                Err(unsent) => sender = unsent, // that request is gone
            }
        }
        let stale = idle.conns.iter().take_while(|(_, since)| since.elapsed() >= IDLE_FOR).count();
        idle.conns.drain(..stale);
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push((sender, Instant::now()));
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
            while let Some((sender, since)) = idle.conns.pop() {
                if !sender.is_closed() && since.elapsed() < IDLE_FOR {
                    return Slot::Conn(sender);
                }
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
            Ok(sender) = &mut handed => Slot::Conn(sender),
            Ok(permit) = self.open.clone().acquire_owned() => {
                // A connection handed over meanwhile is used, not lost.
                handed.close();
                match handed.try_recv() {
                    Ok(sender) => Slot::Conn(sender),
                    Err(_) => Slot::Open(permit),
                }
            }
        };
        *queued = false;
        slot
    }

    /// Closes idle connections once they have been idle for [`IDLE_FOR`]
    /// even when no request comes to notice: one task per pool, and only
    /// while the pool holds idle connections (an idle proxy stays asleep).
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = IDLE_FOR;
            loop {
                tokio::time::sleep(wait).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.lock();
                let stale = idle.conns.iter().take_while(|(_, since)| since.elapsed() >= IDLE_FOR).count();
                idle.conns.drain(..stale);
                match idle.conns.first() {
                    Some((_, oldest)) => wait = IDLE_FOR.saturating_sub(oldest.elapsed()) + Duration::from_millis(10),
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
        mut req: Request<RequestBody>,
        wait: &mut Wait<'_>,
        queued: &mut bool,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        loop {
            let (mut sender, reused) = match self.slot(queued, wait).await {
                Slot::Conn(sender) => (sender, true),
                Slot::Open(permit) => {
                    wait.start();
                    // Boxed: dialing (TCP, TLS, handshake) is rare, and its
                    // state would otherwise make every request's future larger.
                    (Box::pin(connect(address, dialer, permit)).await?, false)
                }
            };
            if wait.until(|cx| sender.poll_ready(cx)).await.is_err() {
                if reused {
                    continue;
                }
                return Err(ProxyError::new(Kind::UpstreamReset));
            }
            wait.end();
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // An upgraded (101) connection belongs to the tunnel, not the pool.
                    let pool = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| (sender, self.clone()));
                    return Ok(resp.map(|body| UpstreamBody::pooled(body, pool)));
                }
                Err(mut e) => match e.take_message() {
                    // Never written (the pooled connection had just closed): try another.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(ProxyError::from_hyper(e.into_error())),
                },
            }
        }
    }
}

/// Opens a connection that counts against the cap (`permit`) until it closes.
async fn connect(address: &str, dialer: &Dialer, permit: OwnedSemaphorePermit) -> Result<Sender, ProxyError> {
    let (stream, own) = dialer.connect(address).await?;
    let (sender, conn) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| ProxyError::with(Kind::ConnectFailure, e))?;
    let address = address.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(endpoint = %address, error = %e, "upstream connection ended");
        }
        drop((permit, own));
    });
    Ok(sender)
}

/// An upstream response body; an HTTP/1.1 connection returns to its pool when the body ends.
pub struct UpstreamBody {
    body: Incoming,
    pool: Option<(Sender, Arc<H1Pool>)>,
}

impl UpstreamBody {
    /// A body whose connection goes back to `pool` at its end.
    fn pooled(body: Incoming, pool: Option<(Sender, Arc<H1Pool>)>) -> Self {
        let mut b = UpstreamBody { body, pool };
        if b.body.is_end_stream() {
            b.release();
        }
        b
    }

    /// A body with no pool to return to (HTTP/2).
    pub fn unpooled(body: Incoming) -> Self {
        UpstreamBody { body, pool: None }
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.pool.take() {
            pool.give_back(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.pool = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
