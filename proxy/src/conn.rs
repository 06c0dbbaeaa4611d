//! One downstream HTTP connection: HTTP/1.1 or HTTP/2 (prior knowledge)
//! served by hyper with the listener's limits, closed when idle or when the
//! client stops reading (write stall: its socket stays full, or an HTTP/2
//! stream gets no window, see [`crate::stall`]), and shut down gracefully
//! (HTTP/2 GOAWAY, HTTP/1 close after the in-flight response) when the
//! proxy drains.

use crate::conn_state::{ConnState, Ends};
use crate::gated::Gated;
use crate::h2_guard::{ControlFrames, Guard};
use crate::handler::{HttpListener, Serving, Slot};
use crate::io::{Progress, Watched};
use crate::tls::{Session, Stream};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
    let peer = ends.peer;
    let state = Arc::new(ConnState::new(ends, tls, serving, slot, listener.http.http2.max_concurrent_streams));
    let progress = Progress::new();
    let frames = ControlFrames::new(listener.http.http2.max_control_frames);
    let io = {
        let state = state.clone();
        let guard = Guard::new(frames, move || state.abusive.notify_one());
        TokioIo::new(Watched::with_hook(stream, progress.clone(), guard))
    };
    let svc = {
        let (listener, state) = (listener.clone(), state.clone());
        service_fn(move |req| {
            let current = state.accepted_by.http().unwrap_or_else(|| listener.clone());
            // Boxed: hyper spawns a task per HTTP/2 stream and moves its
            // future there, and a small future is cheap to move.
            Box::pin(crate::forward::handle(req, current, state.clone()))
        })
    };
    let conn = listener.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let (idle, stall) = (listener.limits.idle_timeout, listener.limits.write_timeout);
    // The signals beside the connection are gated: polled when they fire,
    // not on each of the connection's wake-ups.
    let check = Gated::new(tokio::time::sleep(idle.min(stall)));
    let draining = Gated::new(drain.cancelled());
    let abuse = Gated::new(state.abusive.notified());
    tokio::pin!(check, draining, abuse);
    let (mut closing, mut abusive) = (false, false);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                        listener.ends.header_read.inc();
                    }
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
                return;
            }
            () = draining.as_mut(), if !closing => {
                conn.as_mut().graceful_shutdown();
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
                conn.as_mut().graceful_shutdown();
                (closing, abusive) = (true, true);
                check.as_mut().inner_mut().reset(tokio::time::Instant::now() + ABUSE_GRACE);
            }
            () = check.as_mut() => {
                if abusive {
                    return;
                }
                // A client that takes no response bytes is cut off, in-flight
                // responses and all: that frees their upstream connections and
                // pending slots for clients that read.
                // The socket is full, or an HTTP/2 stream waits for window.
                let stalled = progress.write_stalled_for().max(state.waiting.longest_wait());
                if stalled.is_some_and(|d| d >= stall) {
                    tracing::debug!(%peer, "closing a connection whose client stopped reading");
                    listener.ends.write_stall.inc();
                    return;
                }
                let mut next = stall - stalled.unwrap_or_default();
                match state.idle_for().filter(|_| !closing) {
                    Some(d) if d >= idle => {
                        tracing::debug!(%peer, "closing idle connection");
                        listener.ends.idle.inc();
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Some(d) => next = next.min(idle - d),
                    None => next = next.min(idle),
                }
                check.as_mut().inner_mut().reset(tokio::time::Instant::now() + next);
            }
        }
    }
}
