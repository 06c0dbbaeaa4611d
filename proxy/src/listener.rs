//! Listeners: accept connections up to `max_connections` and hand each to
//! the listener's current HTTP or TCP handler. A config reload swaps the
//! handler and the connection cap in place, so the socket and established
//! connections stay; a listener that is removed stops accepting and drains
//! its connections (in-flight requests finish), and closes the ones still
//! open when the drain timeout passes.

use crate::conn;
use crate::conn_state::Ends;
use crate::handler::{Handler, HttpListener, Serving};
use crate::metrics::GaugeGuard;
use crate::original_dst;
use prometheus::{IntCounter, IntGauge};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// A listener's live state, shared by its accept loop and its connections.
pub struct Listener {
    /// Name for logs.
    pub name: Arc<str>,
    /// Its handler and connections, which the connections keep a handle on.
    serving: Arc<Serving>,
    permits: Arc<Semaphore>,
    max_connections: Mutex<usize>,
    /// Fires when the listener is removed or the proxy drains.
    stop: CancellationToken,
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
            serving: Arc::new(Serving::new(handler)),
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections: Mutex::new(max_connections),
            stop: drain.child_token(),
            active: metrics.active_connections.with_label_values(&[name]),
            accepted: metrics.connections.with_label_values(&[name]),
            loops: metrics.redirect_loops.with_label_values(&[name]),
        })
    }

    /// Serves new connections, and new requests on established HTTP
    /// connections, with `handler`; allows `max_connections` at once.
    pub fn update(&self, handler: Handler, max_connections: usize) {
        self.serving.store(handler);
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
        self.serving.http()
    }

    /// Stops accepting and drains this listener's connections (the process is stopping).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops accepting and drains this listener's connections, closing
    /// those still open after `deadline` (the listener was removed).
    pub async fn remove(&self, deadline: Duration) {
        self.stop();
        if let Some(remaining) = self.serving.drain(deadline).await {
            tracing::warn!(listener = %self.name, remaining,
                "removed listener: drain timeout passed; closing its remaining connections");
        }
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
            let handler = self.serving.handler();
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
                    let (l, serving) = (l.clone(), self.serving.clone());
                    let slot = Arc::new((permit, active));
                    tracker.spawn(self.serving.hold(async move {
                        if let Some((io, session)) = l.edge.admit(stream, peer).await {
                            let ends = Ends { peer, destination };
                            conn::serve(io, ends, session, l, serving, drain, slot).await;
                        }
                    }))
                }
                Handler::Tcp(t) => {
                    let t = t.clone();
                    tracker.spawn(self.serving.hold(async move {
                        t.serve(stream, peer, destination).await;
                        drop((permit, active));
                    }))
                }
            };
        }
    }
}
