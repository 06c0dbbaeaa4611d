//! Listeners: bind, then accept connections up to `max_connections` and hand
//! each to its HTTP or TCP handler. On drain the accept loop stops, so new
//! clients are refused while accepted connections finish.

use crate::conn::{self, HttpListener};
use crate::metrics::GaugeGuard;
use crate::tcp::TcpProxy;
use prometheus::{IntCounter, IntGauge};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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

/// An accept loop's settings and counters.
pub struct Acceptor {
    /// Name for logs.
    pub name: Arc<str>,
    /// The bound socket.
    pub socket: TcpListener,
    /// Connection handler.
    pub handler: Handler,
    /// Open connections allowed at once.
    pub max_connections: usize,
    /// `wasp_active_connections{listener}`
    pub active: IntGauge,
    /// `wasp_connections_total{listener}`
    pub accepted: IntCounter,
}

impl Acceptor {
    /// Accepts until `drain` fires; connections run on `tracker`.
    pub async fn run(self, drain: CancellationToken, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                () = drain.cancelled() => return,
            };
            let (stream, peer) = tokio::select! {
                r = self.socket.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = drain.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            self.accepted.inc();
            let active = GaugeGuard::new(self.active.clone());
            let drain = drain.clone();
            match &self.handler {
                Handler::Http(l) => {
                    let l = l.clone();
                    tracker.spawn(async move {
                        conn::serve(stream, peer, l, drain).await;
                        drop((permit, active));
                    });
                }
                Handler::Tcp(t) => {
                    let t = t.clone();
                    tracker.spawn(async move {
                        t.serve(stream, peer).await;
                        drop((permit, active));
                    });
                }
            }
        }
    }
}
