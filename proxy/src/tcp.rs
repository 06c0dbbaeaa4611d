//! TCP listeners: each connection is copied both ways to an endpoint of the
//! listener's cluster. A half-close (FIN) on one side is passed to the other
//! and the opposite direction keeps flowing; an error on either side closes
//! both. Bytes are counted live and the connection gets one access-log line.

use crate::access_log::{AccessLog, timestamp};
use crate::error::Kind;
use crate::upstream::{Cluster, dial};
use prometheus::IntCounter;
use serde::Serialize;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Shared state of one TCP listener.
pub struct TcpProxy {
    /// Name from the config.
    pub name: Arc<str>,
    /// Where connections go.
    pub cluster: Arc<Cluster>,
    /// `wasp_tcp_bytes_total{direction="upstream"}`
    pub bytes_up: IntCounter,
    /// `wasp_tcp_bytes_total{direction="downstream"}`
    pub bytes_down: IntCounter,
    /// Access log.
    pub access_log: AccessLog,
    /// Asked before a connection is served (`None`: no connection filters).
    pub connection_filters: Option<Arc<crate::filter::ConnectionFilters>>,
}

#[derive(Serialize)]
struct TcpLine<'a> {
    ts: String,
    kind: &'static str,
    listener: &'a str,
    cluster: &'a str,
    upstream: Option<&'a str>,
    peer: String,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    reason: Option<&'a str>,
}

impl TcpProxy {
    /// Proxies one accepted connection until both directions end.
    pub async fn serve(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        let start = Instant::now();
        let (mut up, mut down) = (0u64, 0u64);
        let (endpoint, reason) = match self.copy(client, &mut up, &mut down).await {
            Ok(ep) => (Some(ep), None),
            Err((ep, reason)) => (ep, Some(reason)),
        };
        if self.access_log.enabled() {
            let line = TcpLine {
                ts: timestamp(),
                kind: "tcp",
                listener: &self.name,
                cluster: &self.cluster.name,
                upstream: endpoint.as_deref(),
                peer: peer.to_string(),
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
        client: TcpStream,
        up: &mut u64,
        down: &mut u64,
    ) -> Result<Arc<str>, (Option<Arc<str>>, String)> {
        let Some((endpoint, record)) = self.cluster.pick_for_tcp() else {
            self.cluster.count_error(Kind::CircuitOpen);
            return Err((None, Kind::CircuitOpen.reason().into()));
        };
        let address = endpoint.address.clone();
        let server = match dial(&address, self.cluster.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                record(false);
                self.cluster.count_error(e.kind);
                return Err((Some(address), e.kind.reason().into()));
            }
        };
        record(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
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
