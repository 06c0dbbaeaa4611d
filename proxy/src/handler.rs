//! What a listener serves connections with: its [`Handler`] (an
//! [`HttpListener`]'s routes and limits, or a TCP proxy), swapped in place by
//! a config reload, and [`Serving`], the part of a listener its connections
//! keep: the handler serving now, and the tracker its drain waits on. Shared
//! by [`crate::listener`] (which owns it) and the connections it accepts;
//! it imports neither.

use crate::access_log::AccessLog;
use crate::config::{HttpSettings, Limits};
use crate::edge::Edge;
use crate::gated::Gated;
use crate::metrics::{ConnectionEnds, GaugeGuard, RouteMetrics};
use crate::route::Router;
use crate::tcp::TcpProxy;
use arc_swap::ArcSwap;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a listener does with a connection.
#[derive(Clone)]
pub enum Handler {
    /// HTTP/1.1 + HTTP/2.
    Http(Arc<HttpListener>),
    /// Raw TCP.
    Tcp(Arc<TcpProxy>),
}

impl Handler {
    /// Its TLS termination and connection filters.
    pub fn edge(&self) -> &Edge {
        match self {
            Handler::Http(l) => &l.edge,
            Handler::Tcp(t) => &t.edge,
        }
    }
}

/// A connection's place under its listener's `max_connections` (and in
/// `wasp_active_connections`), held until every holder is gone: the
/// connection, and the tunnel an upgraded connection becomes.
pub type Slot = Arc<(OwnedSemaphorePermit, GaugeGuard)>;

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
    /// The HTTP/2 server (hyper), configured once.
    pub(crate) h2: http2::Builder<TokioExecutor>,
}

impl HttpListener {
    /// Builds a listener's shared state; the HTTP/2 server is configured here, once.
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
        let h2 = &http.http2;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
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
            h2: builder,
        }
    }
}

/// What a listener's connections keep of it: the handler serving now (a
/// reload swaps it, and each new request on an established connection is
/// routed by it), and the tracker of its connections and the tunnels they
/// become, which its drain waits for and its removal cuts off.
pub struct Serving {
    handler: ArcSwap<Handler>,
    /// Moves on with each [`Serving::store`]: an HTTP connection keeps the
    /// handler it last loaded and loads again only once this moved (a plain
    /// load a request instead of an `ArcSwap` load and a reference count).
    generation: AtomicU64,
    /// This listener's connections.
    connections: TaskTracker,
    /// Fires when a removed listener's drain timeout passes: its connections close.
    kill: CancellationToken,
}

impl Serving {
    /// Serving with `handler`.
    pub fn new(handler: Handler) -> Self {
        Serving {
            handler: ArcSwap::from_pointee(handler),
            generation: AtomicU64::new(0),
            connections: TaskTracker::new(),
            kill: CancellationToken::new(),
        }
    }

    /// The handler serving now.
    pub fn handler(&self) -> arc_swap::Guard<Arc<Handler>> {
        self.handler.load()
    }

    /// Serves new connections, and new requests on established HTTP connections, with `handler`.
    pub fn store(&self, handler: Handler) {
        self.handler.store(Arc::new(handler));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Which [`Serving::store`] is serving: read before [`Serving::http`], a
    /// store between the two is noticed on the next read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The HTTP handler serving now, if the listener is still HTTP.
    pub fn http(&self) -> Option<Arc<HttpListener>> {
        match &**self.handler.load() {
            Handler::Http(l) => Some(l.clone()),
            Handler::Tcp(_) => None,
        }
    }

    /// `work` as one of this listener's connections (a connection, or the
    /// tunnel an upgraded one became): waited for by its drain, and cut off
    /// when a removed listener's drain timeout passes.
    pub fn hold(&self, work: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = ()> + Send + 'static {
        let kill = self.kill.clone();
        self.connections.track_future(async move {
            // Gated: polled when the kill fires, not on each of the connection's wake-ups.
            let killed = Gated::new(kill.cancelled());
            tokio::select! {
                biased;
                () = work => {}
                () = killed => {}
            }
        })
    }

    /// Waits up to `deadline` for its connections to finish after the
    /// listener stopped accepting; closes those still open then (returns
    /// how many).
    pub async fn drain(&self, deadline: Duration) -> Option<usize> {
        self.connections.close();
        if tokio::time::timeout(deadline, self.connections.wait()).await.is_err() {
            let remaining = self.connections.len();
            self.kill.cancel();
            return Some(remaining);
        }
        None
    }
}
