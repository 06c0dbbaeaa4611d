//! One downstream HTTP connection: HTTP/1.1 served by wasp itself
//! ([`h1`]), or HTTP/2 (ALPN `h2`, or prior knowledge: the preface) served by
//! hyper, with the listener's limits; closed when its head does not arrive
//! in time, when idle, or when the client stops reading (write stall: its
//! socket stays full, or an HTTP/2 stream gets no window, see
//! [`crate::stall`]), and shut down gracefully (HTTP/2 GOAWAY, HTTP/1 close
//! after the in-flight response) when the proxy drains.

pub mod h1;

use crate::conn_state::{ConnState, Ends};
use crate::gated::Gated;
use crate::h1::wire::Wire;
use crate::h2_guard::{ControlFrames, Guard};
use crate::handler::{HttpListener, Serving, Slot};
use crate::io::{Progress, Watched, clock_ms};
use crate::tls::{Session, Stream};
use crate::upstream::body::Source;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long an abusive client's connection may take to wind down after GOAWAY.
const ABUSE_GRACE: Duration = Duration::from_millis(200);

/// Serves one accepted connection until it closes, idles out or drains.
/// The connection keeps the settings of `listener`, the handler it was
/// accepted with; each request is routed by the handler serving when it
/// arrives, so a config reload reaches established connections too.
pub async fn serve(
    stream: Stream,
    ends: Ends,
    tls: Option<Session>,
    listener: Arc<HttpListener>,
    serving: Arc<Serving>,
    drain: CancellationToken,
    slot: Slot,
) {
    let h2 = tls.as_ref().and_then(|t| t.alpn.as_deref()) == Some("h2");
    let state = Arc::new(ConnState::new(ends, tls, serving, slot, listener.http.http2.max_concurrent_streams));
    let progress = Progress::new();
    let connection = Connection { listener: &listener, state: &state, progress: &progress, drain: &drain };
    if h2 {
        return connection.http2(stream).await;
    }
    let wire = Wire::new(Watched::new(stream, progress.clone()));
    let http1 = h1::Connection::new(wire, listener.clone(), state.clone());
    if let Some(h1::Ended::Http2(wire)) = connection.drive(http1).await {
        connection.http2(wire).await;
    }
}

/// A connection being served, and what it is served with.
struct Connection<'a> {
    listener: &'a Arc<HttpListener>,
    state: &'a Arc<ConnState>,
    progress: &'a Arc<Progress>,
    drain: &'a CancellationToken,
}

/// What [`Connection::drive`] needs of a protocol's connection.
trait Protocol: Future {
    /// One request at a time, handled in the connection's task: the
    /// connection's check keeps its route deadline ([`crate::deadline`]).
    const SERIAL: bool;
    /// Finishes what is in flight, then closes.
    fn shut_down(self: Pin<&mut Self>);
    /// Since when a request head has been arriving ([`clock_ms`]), if one is.
    fn reading_head_since(&self) -> Option<u64>;
}

impl Protocol for h1::Connection {
    const SERIAL: bool = true;

    fn shut_down(self: Pin<&mut Self>) {
        self.get_mut().graceful_shutdown();
    }

    fn reading_head_since(&self) -> Option<u64> {
        h1::Connection::reading_head_since(self)
    }
}

impl<I, S, B> Protocol for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const SERIAL: bool = false;

    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }

    fn reading_head_since(&self) -> Option<u64> {
        None
    }
}

impl Connection<'_> {
    /// Serves HTTP/2 over `io` (its preface first) with hyper.
    async fn http2<T>(&self, io: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let frames = ControlFrames::new(self.listener.http.http2.max_control_frames);
        let io = {
            let state = self.state.clone();
            let guard = Guard::new(frames, move || state.abusive.notify_one());
            TokioIo::new(Watched::with_hook(io, self.progress.clone(), guard))
        };
        let svc = {
            let (listener, state) = (self.listener.clone(), self.state.clone());
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let current = state.accepted_by.http().unwrap_or_else(|| listener.clone());
                // Boxed: hyper spawns a task per HTTP/2 stream and moves its
                // future there, and a small future is cheap to move.
                let req = crate::boxed::in_place!(req.map(Source::Incoming));
                crate::boxed::boxed!(crate::forward::handle(req, current, state.clone()))
            })
        };
        if let Some(Err(e)) = self.drive(self.listener.h2.serve_connection(io, svc)).await {
            tracing::debug!(peer = %self.state.peer, error = %e, "connection ended with error");
        }
    }

    /// Runs `conn` until it ends (its output) or is ended: a head that did
    /// not arrive in time, idle, a client that stopped reading, abuse
    /// (`None`). Drain shuts it down gracefully.
    async fn drive<C: Protocol>(&self, conn: C) -> Option<C::Output> {
        let (listener, state, progress) = (self.listener, self.state, self.progress);
        let peer = state.peer;
        tokio::pin!(conn);
        let limits = &listener.limits;
        let (idle, stall, head) = (limits.idle_timeout, limits.write_timeout, limits.header_read_timeout);
        // The signals beside the connection are gated: polled when they fire,
        // not on each of the connection's wake-ups.
        let first = idle.min(stall).min(head);
        let check = Gated::new(tokio::time::sleep(first));
        if C::SERIAL {
            state.deadlines.check_runs_in(first);
        }
        let draining = Gated::new(self.drain.cancelled());
        let abuse = Gated::new(state.abusive.notified());
        tokio::pin!(check, draining, abuse);
        let (mut closing, mut abusive) = (false, false);
        loop {
            // Biased: in this order, without drawing a random start each poll.
            tokio::select! {
                biased;
                output = conn.as_mut() => return Some(output),
                () = draining.as_mut(), if !closing => {
                    conn.as_mut().shut_down();
                    closing = true;
                }
                () = abuse.as_mut(), if !abusive => {
                    // Counted, and logged at debug only: an attacker that reconnects
                    // would otherwise turn each ended connection into a log line.
                    let (counter, why) = match state.abuse_was_resets.load(Ordering::Relaxed) {
                        true => (&listener.ends.early_resets, "resets most of its streams early"),
                        false => (&listener.ends.control_frames, "floods SETTINGS/PING frames"),
                    };
                    counter.inc();
                    tracing::debug!(%peer, "HTTP/2 client {why}; ending the connection");
                    conn.as_mut().shut_down();
                    (closing, abusive) = (true, true);
                    check.as_mut().inner_mut().reset(tokio::time::Instant::now() + ABUSE_GRACE);
                    if C::SERIAL {
                        state.deadlines.check_runs_in(ABUSE_GRACE);
                    }
                }
                () = check.as_mut() => {
                    if abusive {
                        return None;
                    }
                    // A client that takes no response bytes is cut off, in-flight
                    // responses and all: that frees their upstream connections and
                    // pending slots for clients that read.
                    // The socket is full, or an HTTP/2 stream waits for window.
                    let stalled = progress.write_stalled_for().max(state.waiting.longest_wait());
                    if stalled.is_some_and(|d| d >= stall) {
                        tracing::debug!(%peer, "closing a connection whose client stopped reading");
                        listener.ends.write_stall.inc();
                        return None;
                    }
                    // The check runs at least every `header_read_timeout`, so a
                    // head that begins at any time is cut off within twice that.
                    let mut next = (stall - stalled.unwrap_or_default()).min(head);
                    // A head still arriving after `header_read_timeout` (slow loris).
                    if let Some(since) = conn.reading_head_since() {
                        let waited = Duration::from_millis(clock_ms().saturating_sub(since));
                        if waited >= head {
                            tracing::debug!(%peer, "closing a connection whose request head did not arrive in time");
                            listener.ends.header_read.inc();
                            return None;
                        }
                        next = next.min(head - waited);
                    }
                    match state.idle_for().filter(|_| !closing) {
                        Some(d) if d >= idle => {
                            tracing::debug!(%peer, "closing idle connection");
                            listener.ends.idle.inc();
                            conn.as_mut().shut_down();
                            closing = true;
                        }
                        Some(d) => next = next.min(idle - d),
                        None => next = next.min(idle),
                    }
                    if C::SERIAL {
                        // A passed route deadline is marked here; the request
                        // path, polled next in this loop, ends with a timeout.
                        if let Some(left) = state.deadlines.left(clock_ms()) {
                            next = next.min(left);
                        }
                        state.deadlines.check_runs_in(next);
                    }
                    check.as_mut().inner_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        }
    }
}
