//! One downstream HTTP connection: HTTP/1.1 or HTTP/2 (prior knowledge)
//! served by hyper with the listener's limits, closed when idle or when the
//! client stops reading (write stall: its socket stays full, or an HTTP/2
//! stream gets no window, see [`crate::stall`]), and shut down gracefully
//! (HTTP/2 GOAWAY, HTTP/1 close after the in-flight response) when the
//! proxy drains.

use crate::access_log::AccessLog;
use crate::config::{HttpSettings, Limits};
use crate::h2_guard::{ControlFrames, Guard};
use crate::io::{Progress, Watched, clock_ms};
use crate::listener::Edge;
use crate::listener::{Listener, Slot};
use crate::metrics::{ConnectionEnds, RouteMetrics};
use crate::route::Router;
use crate::stall::Streams;
use crate::tls::{Session, Stream};
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared state of one HTTP listener.
pub struct HttpListener {
    /// Name from the config.
    pub name: Arc<str>,
    /// Routes.
    pub router: Router,
    /// Protective limits.
    pub limits: Limits,
    /// How requests are read and which of their claims are believed.
    pub http: HttpSettings,
    /// Why this listener ends connections (timeouts, HTTP/2 abuse).
    pub ends: ConnectionEnds,
    /// Access log.
    pub access_log: AccessLog,
    /// Metrics for requests that matched no route.
    pub no_route_metrics: RouteMetrics,
    /// Tracks upgraded (WebSocket) tunnels so drain waits for them.
    pub tracker: TaskTracker,
    /// TLS and connection filters.
    pub edge: Edge,
    builder: auto::Builder<TokioExecutor>,
}

impl HttpListener {
    /// Builds a listener's shared state; the hyper server is configured here, once.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        router: Router,
        limits: Limits,
        http: HttpSettings,
        ends: ConnectionEnds,
        access_log: AccessLog,
        no_route_metrics: RouteMetrics,
        tracker: TaskTracker,
        edge: Edge,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            // A client that shuts down its side after the request still gets
            // the response (as from nginx), instead of wasp forwarding the
            // request and dropping the answer.
            .half_close(true)
            .keep_alive(true);
        let h2 = &http.http2;
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(h2.max_concurrent_streams)
            .initial_stream_window_size(h2.initial_stream_window)
            .initial_connection_window_size(h2.initial_connection_window)
            .max_pending_accept_reset_streams(h2.max_pending_resets)
            .max_local_error_reset_streams(h2.max_error_resets)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        HttpListener {
            name: name.into(),
            router,
            limits,
            http,
            ends,
            access_log,
            no_route_metrics,
            tracker,
            edge,
            builder,
        }
    }
}

/// Who a connection is from, and where it was headed.
pub struct Ends {
    /// The client's address.
    pub peer: SocketAddr,
    /// Where the client connected before `wasp iptables` redirected it
    /// (listeners with `original_destination`).
    pub destination: Option<SocketAddr>,
}

/// What the request path knows about its connection.
pub struct ConnState {
    /// The client's address.
    pub peer: SocketAddr,
    /// Where the client was headed (listeners with `original_destination`).
    pub destination: Option<SocketAddr>,
    /// The client's IP as a header value, for `x-forwarded-for` (formatted once per connection).
    pub peer_header: HeaderValue,
    /// The listener that accepted it: an upgraded connection's tunnel is
    /// held by it (see [`Listener::hold`]).
    pub accepted_by: Arc<Listener>,
    /// The connection's place under `max_connections`: a tunnel the
    /// connection becomes keeps it until the tunnel closes.
    pub slot: Slot,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
    /// Requests begun on this connection, and how many of them the client
    /// reset before their response (HTTP/2 rapid reset).
    streams: AtomicU32,
    early_resets: AtomicU32,
    /// Fires when the client resets most of its streams early (`true`) or
    /// floods control frames (`false`).
    abusive: Notify,
    abuse_was_resets: AtomicBool,
    /// HTTP/2 responses waiting for the client to grant window.
    pub waiting: Streams,
    /// What the TLS handshake settled, on a TLS listener.
    pub tls: Option<Session>,
}

/// A connection where the client reset more than half of its streams before
/// their response, after at least this many, is ended (rapid reset,
/// CVE-2023-44487, when wasp keeps up and h2's own pending-reset limit never
/// sees it), as Envoy's premature-reset check does.
const RESET_CHECK_AFTER: u32 = 100;

impl ConnState {
    fn new(ends: Ends, tls: Option<Session>, accepted_by: Arc<Listener>, slot: Slot, max_streams: u32) -> Self {
        let Ends { peer, destination } = ends;
        let peer_header = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        let (in_flight, idle_since_ms) = (AtomicUsize::new(0), AtomicU64::new(clock_ms()));
        ConnState {
            peer,
            destination,
            peer_header,
            accepted_by,
            slot,
            in_flight,
            idle_since_ms,
            streams: AtomicU32::new(0),
            early_resets: AtomicU32::new(0),
            abusive: Notify::new(),
            abuse_was_resets: AtomicBool::new(false),
            waiting: Streams::new(max_streams as usize),
            tls,
        }
    }

    /// The client's verified certificate identity (mTLS).
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.tls.as_ref().and_then(Session::identity)
    }

    /// A request began on this connection.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response ended; `reset` if the client reset it before
    /// its response (an HTTP/2 stream cancelled early).
    pub fn request_finished(&self, reset: bool) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since_ms.store(clock_ms(), Ordering::Relaxed);
        }
        if reset {
            let resets = self.early_resets.fetch_add(1, Ordering::Relaxed) + 1;
            let streams = self.streams.load(Ordering::Relaxed);
            if streams >= RESET_CHECK_AFTER && resets * 2 > streams {
                self.abuse_was_resets.store(true, Ordering::Relaxed);
                self.abusive.notify_one();
            }
        }
    }

    /// How long the connection has had no request in flight (`None` while one is).
    /// Bytes without a request (a client still sending headers) do not count as
    /// activity: `header_read_timeout` governs those.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(Duration::from_millis(clock_ms().saturating_sub(self.idle_since_ms.load(Ordering::Relaxed))))
    }
}

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
    live: Arc<Listener>,
    drain: CancellationToken,
    slot: Slot,
) {
    let peer = ends.peer;
    let state = Arc::new(ConnState::new(ends, tls, live, slot, listener.http.http2.max_concurrent_streams));
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
            crate::forward::handle(req, current, state.clone())
        })
    };
    let conn = listener.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let (idle, stall) = (listener.limits.idle_timeout, listener.limits.write_timeout);
    let check = tokio::time::sleep(idle.min(stall));
    tokio::pin!(check);
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
            () = drain.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = state.abusive.notified(), if !abusive => {
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
                check.as_mut().reset(tokio::time::Instant::now() + ABUSE_GRACE);
            }
            () = &mut check => {
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
                check.as_mut().reset(tokio::time::Instant::now() + next);
            }
        }
    }
}
