//! TCP listeners: each connection is copied both ways to an endpoint of the
//! listener's cluster. A half-close (FIN) on one side is passed to the other
//! and the opposite direction keeps flowing; an error on either side closes
//! both. Bytes are counted live and the connection gets one access-log line.
//!
//! With `tls` the listener terminates TLS (and the upstream sees plain
//! bytes, or TLS the cluster originates); with `sni_routes` and no `tls`
//! it passes TLS through untouched, choosing the cluster by the
//! ClientHello's server name, which it reads without consuming.

use crate::access_log::{AccessLog, timestamp};
use crate::config::server_name_matches;
use crate::edge::Edge;
use crate::tls::{Stream, sni};
use crate::upstream::Cluster;
use prometheus::{IntCounter, IntCounterVec};
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Shared state of one TCP listener.
pub struct TcpProxy {
    /// Name from the config.
    pub name: Arc<str>,
    /// Where connections go.
    pub routes: TcpRoutes,
    /// TLS termination and connection filters.
    pub edge: Edge,
    /// `wasp_tls_handshake_errors_total`, for ClientHellos that SNI routing cannot read.
    pub tls_errors: IntCounterVec,
    /// `wasp_tcp_bytes_total{direction="upstream"}`
    pub bytes_up: IntCounter,
    /// `wasp_tcp_bytes_total{direction="downstream"}`
    pub bytes_down: IntCounter,
    /// Access log.
    pub access_log: AccessLog,
}

/// Clusters by SNI, and the one for the rest.
pub struct TcpRoutes {
    by_sni: Vec<(Vec<String>, Arc<Cluster>)>,
    default: Option<Arc<Cluster>>,
}

impl TcpRoutes {
    /// The validated routes over `clusters`.
    pub fn new(cfg: &crate::config::TcpRoutes, clusters: &HashMap<String, Arc<Cluster>>) -> Self {
        TcpRoutes {
            by_sni: cfg.by_sni.iter().filter_map(|(n, c)| Some((n.clone(), clusters.get(c)?.clone()))).collect(),
            default: cfg.default.as_ref().and_then(|c| clusters.get(c).cloned()),
        }
    }

    fn pick(&self, sni: Option<&str>) -> Option<&Arc<Cluster>> {
        let by_name = sni
            .and_then(|n| self.by_sni.iter().find(|(patterns, _)| patterns.iter().any(|p| server_name_matches(p, n))));
        by_name.map(|(_, c)| c).or(self.default.as_ref())
    }
}

/// How long a passthrough client has to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize)]
struct TcpLine<'a> {
    ts: String,
    kind: &'static str,
    listener: &'a str,
    cluster: Option<&'a str>,
    upstream: Option<&'a str>,
    peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    sni: Option<&'a str>,
    identity: Option<&'a str>,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    reason: Option<&'a str>,
}

impl TcpProxy {
    /// Proxies one accepted connection until both directions end.
    /// `destination`: where the client was headed before a redirect
    /// (listeners with `original_destination`).
    pub async fn serve(self: Arc<Self>, mut client: TcpStream, peer: SocketAddr, destination: Option<SocketAddr>) {
        let start = Instant::now();
        // TLS terminated here, or the ClientHello read for SNI passthrough, or neither.
        let (stream, hello, session) = if self.edge.tls.is_some() {
            let edge = Edge { tls: self.edge.tls.clone(), ..Edge::default() };
            let Some((stream, session)) = edge.admit(client, peer).await else { return };
            (stream, Vec::new(), session)
        } else if !self.routes.by_sni.is_empty() {
            match sni::peek(&mut client, HELLO_TIMEOUT).await {
                Ok((hello, name)) => {
                    let session = crate::tls::Session { sni: name.map(Into::into), ..Default::default() };
                    (Stream::Plain(client), hello, Some(session))
                }
                Err(reason) => {
                    self.tls_errors.with_label_values(&[&self.name, reason]).inc();
                    tracing::debug!(%peer, reason, "no ClientHello to route by");
                    return;
                }
            }
        } else {
            (Stream::Plain(client), Vec::new(), None)
        };
        let sni = session.as_ref().and_then(|s| s.sni.clone());
        let identity = session.as_ref().and_then(|s| s.identity().cloned());
        if !self.edge.allows(peer, &stream, session.as_ref()).await {
            return;
        }
        let cluster = self.routes.pick(sni.as_deref()).cloned();
        let (mut up, mut down) = (0u64, 0u64);
        let (endpoint, reason) = match &cluster {
            None => (None, Some("wasp_no_sni_route".to_string())),
            Some(cluster) => match self.copy(cluster, destination, stream, &hello, &mut up, &mut down).await {
                Ok(ep) => (Some(ep), None),
                Err((ep, reason)) => (ep, Some(reason)),
            },
        };
        if self.access_log.enabled() {
            let line = TcpLine {
                ts: timestamp(),
                kind: "tcp",
                listener: &self.name,
                cluster: cluster.as_ref().map(|c| &*c.name),
                upstream: endpoint.as_deref(),
                peer: peer.to_string(),
                destination: destination.map(|d| d.to_string()),
                sni: sni.as_deref(),
                identity: identity.as_deref(),
                duration_ms: (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                bytes_in: up,
                bytes_out: down,
                reason: reason.as_deref(),
            };
            if let Ok(bytes) = serde_json::to_vec(&line) {
                self.access_log.write(bytes);
            }
        }
    }

    async fn copy(
        &self,
        cluster: &Cluster,
        destination: Option<SocketAddr>,
        client: Stream,
        hello: &[u8],
        up: &mut u64,
        down: &mut u64,
    ) -> Result<Arc<str>, (Option<Arc<str>>, String)> {
        let mut slot = None;
        let (endpoint, record) = match cluster.pick_for_tcp(destination, &mut slot) {
            Ok(picked) => picked,
            Err(kind) => return Err((None, kind.reason().into())),
        };
        let address = endpoint.address.clone();
        let (mut server, _own) = match cluster.dialer.connect(&address).await {
            Ok(s) => s,
            Err(e) => {
                record(false);
                cluster.count_error(e.kind);
                return Err((Some(address), e.kind.reason().into()));
            }
        };
        record(true);
        // SNI passthrough: the ClientHello read to route by goes first, as it came.
        if !hello.is_empty() {
            if let Err(e) = server.write_all(hello).await {
                return Err((Some(address), format!("wasp_tcp_io_error: {e}")));
            }
            self.bytes_up.inc_by(hello.len() as u64);
            *up += hello.len() as u64;
        }
        let (cr, cw) = tokio::io::split(client);
        let (sr, sw) = tokio::io::split(server);
        let result = tokio::try_join!(pump(cr, sw, &self.bytes_up, up), pump(sr, cw, &self.bytes_down, down));
        match result {
            Ok(_) => Ok(address),
            Err(e) => Err((Some(address), format!("wasp_tcp_io_error: {e}"))),
        }
    }
}

/// Copies `from` to `to` until EOF, then half-closes `to`.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counter: &IntCounter,
    total: &mut u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        counter.inc_by(n as u64);
        *total += n as u64;
    }
}
