//! Listeners: accept connections up to `max_connections` and hand each to
//! the listener's current HTTP or TCP handler. A config reload swaps the
//! handler and the connection cap in place, so the socket and established
//! connections stay; a listener that is removed stops accepting and drains
//! its connections (in-flight requests finish), and closes the ones still
//! open when the drain timeout passes.

use crate::conn::{self, HttpListener};
use crate::filter::{ConnectionFacts, ConnectionFilters};
use crate::metrics::GaugeGuard;
use crate::original_dst;
use crate::tcp::TcpProxy;
use crate::tls::{ServerTls, Session, Stream};
use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntGauge};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// What a listener does with a connection before serving it: the TLS
/// handshake (if it terminates TLS), then its connection filters.
#[derive(Clone, Default)]
pub struct Edge {
    /// TLS termination.
    pub tls: Option<Arc<ServerTls>>,
    /// Filters asked whether to serve the connection.
    pub connection_filters: Option<Arc<ConnectionFilters>>,
    /// Connections arrive redirected (`wasp iptables`): recover where they were headed.
    pub original_destination: bool,
}

impl Edge {
    /// The connection ready to serve, with what its handshake settled; `None`
    /// when the handshake failed (counted) or a filter refused it.
    pub async fn admit(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(Stream, Option<Session>)> {
        let (stream, session) = match &self.tls {
            None => (Stream::Plain(tcp), None),
            Some(tls) => match tls.accept(tcp).await {
                Ok((s, session)) => (Stream::Server(Box::new(s)), Some(session)),
                Err(reason) => {
                    tracing::debug!(%peer, reason, "TLS handshake failed");
                    return None;
                }
            },
        };
        self.allows(peer, &stream, session.as_ref()).await.then_some((stream, session))
    }

    /// Whether every connection filter allows `stream` from `peer` with what
    /// its TLS handshake (if any) settled. Its local address is read only
    /// for filters (a system call per connection otherwise saved).
    pub async fn allows(&self, peer: SocketAddr, stream: &Stream, session: Option<&Session>) -> bool {
        let Some(filters) = &self.connection_filters else { return true };
        let Ok(local) = stream.local_addr() else { return false };
        let facts = ConnectionFacts {
            peer,
            local,
            sni: session.and_then(|s| s.sni.clone()),
            alpn: session.and_then(|s| s.alpn.clone()),
            identity: session.and_then(|s| s.identity().cloned()),
        };
        match filters.decide(&facts).await {
            Ok(()) => true,
            Err(filter) => {
                tracing::debug!(peer = %facts.peer, %filter, "connection refused by a filter");
                false
            }
        }
    }
}

impl Handler {
    fn edge(&self) -> &Edge {
        match self {
            Handler::Http(l) => &l.edge,
            Handler::Tcp(t) => &t.edge,
        }
    }
}

/// Connections the kernel may queue for a listener before wasp accepts them
/// (capped by `net.core.somaxconn`): clients beyond `max_connections` wait
/// here. mio's default, 128, made clients past it see their SYNs dropped.
const BACKLOG: u32 = 1024;

/// A listening socket on `address` with a backlog of `BACKLOG` (1024).
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// A connection's place under its listener's `max_connections` (and in
/// `wasp_active_connections`), held until every holder is gone: the
/// connection, and the tunnel an upgraded connection becomes.
pub type Slot = Arc<(OwnedSemaphorePermit, GaugeGuard)>;

/// A listener's live state, shared by its accept loop and its connections.
pub struct Listener {
    /// Name for logs.
    pub name: Arc<str>,
    handler: ArcSwap<Handler>,
    permits: Arc<Semaphore>,
    max_connections: Mutex<usize>,
    /// Fires when the listener is removed or the proxy drains.
    stop: CancellationToken,
    /// Fires when a removed listener's drain timeout passes: its connections close.
    kill: CancellationToken,
    /// This listener's connections.
    connections: TaskTracker,
    /// `wasp_active_connections{listener}`
    active: IntGauge,
    /// `wasp_connections_total{listener}`
    accepted: IntCounter,
    /// `wasp_redirect_loops_total{listener}`
    loops: IntCounter,
}

impl Listener {
    /// A listener named `name`; it stops with `drain`.
    pub fn new(
        name: &str,
        handler: Handler,
        max_connections: usize,
        drain: &CancellationToken,
        metrics: &crate::metrics::Metrics,
    ) -> Arc<Self> {
        Arc::new(Listener {
            name: name.into(),
            handler: ArcSwap::from_pointee(handler),
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections: Mutex::new(max_connections),
            stop: drain.child_token(),
            kill: CancellationToken::new(),
            connections: TaskTracker::new(),
            active: metrics.active_connections.with_label_values(&[name]),
            accepted: metrics.connections.with_label_values(&[name]),
            loops: metrics.redirect_loops.with_label_values(&[name]),
        })
    }

    /// Serves new connections, and new requests on established HTTP
    /// connections, with `handler`; allows `max_connections` at once.
    pub fn update(&self, handler: Handler, max_connections: usize) {
        self.handler.store(Arc::new(handler));
        let mut max = self.max_connections.lock().unwrap_or_else(|p| p.into_inner());
        if max_connections > *max {
            self.permits.add_permits(max_connections - *max);
        } else if max_connections < *max {
            // Take the surplus out of circulation: free permits now, the rest as connections close.
            let surplus = *max - max_connections;
            let rest = surplus - self.permits.forget_permits(surplus);
            if rest > 0 {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(rest as u32).await {
                        p.forget();
                    }
                });
            }
        }
        *max = max_connections;
    }

    /// The HTTP handler serving now, if the listener is still HTTP.
    pub fn http(&self) -> Option<Arc<HttpListener>> {
        match &**self.handler.load() {
            Handler::Http(l) => Some(l.clone()),
            Handler::Tcp(_) => None,
        }
    }

    /// Stops accepting and drains this listener's connections (the process is stopping).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops accepting and drains this listener's connections, closing
    /// those still open after `deadline` (the listener was removed).
    pub async fn remove(&self, deadline: Duration) {
        self.stop();
        self.connections.close();
        if tokio::time::timeout(deadline, self.connections.wait()).await.is_err() {
            tracing::warn!(listener = %self.name, remaining = self.connections.len(),
                "removed listener: drain timeout passed; closing its remaining connections");
            self.kill.cancel();
        }
    }

    /// `work` as one of this listener's connections (a connection, or the
    /// tunnel an upgraded one became): waited for by its drain, and cut off
    /// when a removed listener's drain timeout passes.
    pub fn hold(&self, work: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = ()> + Send + 'static {
        let kill = self.kill.clone();
        self.connections.track_future(async move {
            tokio::select! {
                () = work => {}
                () = kill.cancelled() => {}
            }
        })
    }

    /// Accepts on `socket` until the listener stops; connections run on `tracker`.
    pub async fn accept(self: Arc<Self>, socket: Arc<TcpListener>, tracker: TaskTracker) {
        loop {
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                () = self.stop.cancelled() => return,
            };
            let (stream, peer) = tokio::select! {
                r = socket.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = self.stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            self.accepted.inc();
            let handler = self.handler.load();
            let destination = match handler.edge().original_destination {
                false => None,
                // wasp's own upstream connection, redirected back to it: wasp
                // does not run as the uid `wasp iptables` exempts.
                true if original_dst::from_wasp(peer) => {
                    self.loops.inc();
                    tracing::warn!(listener = %self.name, %peer, "refused a connection from wasp itself (a redirect \
                        loop: run wasp as the uid `wasp iptables --proxy-uid` exempts)");
                    continue;
                }
                true => stream.local_addr().ok().map(|local| original_dst::recover(&stream, local)),
            };
            let active = GaugeGuard::new(self.active.clone());
            let drain = self.stop.clone();
            match &**handler {
                Handler::Http(l) => {
                    let (l, listener) = (l.clone(), self.clone());
                    let slot = Arc::new((permit, active));
                    tracker.spawn(self.hold(async move {
                        if let Some((io, session)) = l.edge.admit(stream, peer).await {
                            let ends = conn::Ends { peer, destination };
                            conn::serve(io, ends, session, l, listener, drain, slot).await;
                        }
                    }))
                }
                Handler::Tcp(t) => {
                    let t = t.clone();
                    tracker.spawn(self.hold(async move {
                        t.serve(stream, peer, destination).await;
                        drop((permit, active));
                    }))
                }
            };
        }
    }
}
