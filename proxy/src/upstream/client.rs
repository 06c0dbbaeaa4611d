//! Upstream HTTP clients. HTTP/1.1 uses each endpoint's keep-alive pool
//! ([`super::pool`]); HTTP/2 keeps one multiplexed connection per endpoint
//! and re-dials when it closes. Both apply the cluster's connect timeout.

use super::Dialer;
use super::body::RequestBody;
use super::endpoint::Endpoint;
use super::pool::UpstreamBody;
use crate::error::{Kind, ProxyError};
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Mutex;
use std::time::Duration;

/// Flow-control windows of an upstream HTTP/2 connection. Every client of
/// the endpoint shares it, and a stream's unread data holds the connection's
/// window too: with hyper's defaults (2 MiB per stream, 5 MiB per
/// connection) three clients that stop reading stall everyone else's
/// responses. A stream may buffer 256 KiB; the connection has room for 128
/// such stalled streams at once (32 MiB, the most one connection can hold
/// in memory), and `write_timeout` cuts the stalled clients off.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 128 * STREAM_WINDOW;

/// How a cluster talks to its endpoints.
#[derive(Clone, Copy)]
pub enum Client {
    /// HTTP/1.1 with keep-alive pools.
    Http1,
    /// HTTP/2, one connection per endpoint.
    Http2,
}

/// An endpoint's HTTP/2 connection, shared by all requests to it.
#[derive(Default)]
pub struct H2Slot {
    sender: Mutex<Option<http2::SendRequest<RequestBody>>>,
    dialing: tokio::sync::Mutex<()>,
}

impl Client {
    /// Sends `req` (URI already absolute, pointing at the right authority)
    /// to `endpoint`; `queued` is set while it waits for a connection.
    pub async fn send(
        self,
        dialer: &Dialer,
        endpoint: &Endpoint,
        req: Request<RequestBody>,
        queued: &mut bool,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        match self {
            Client::Http1 => endpoint.h1.send(&endpoint.address, dialer, req, queued).await,
            Client::Http2 => {
                let mut sender = h2_sender(endpoint, dialer).await?;
                sender.ready().await.map_err(ProxyError::from_hyper)?;
                let resp = sender.send_request(req).await.map_err(ProxyError::from_hyper)?;
                Ok(resp.map(UpstreamBody::unpooled))
            }
        }
    }
}

async fn h2_sender(endpoint: &Endpoint, dialer: &Dialer) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
    if let Some(s) = live(&endpoint.h2) {
        return Ok(s);
    }
    let _dialing = endpoint.h2.dialing.lock().await;
    if let Some(s) = live(&endpoint.h2) {
        return Ok(s);
    }
    let (stream, own) = dialer.connect(&endpoint.address).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::with(Kind::ConnectFailure, e))?;
    let address = endpoint.address.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %address, error = %e, "upstream HTTP/2 connection ended");
        }
        drop(own);
    });
    *endpoint.h2.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
    Ok(sender)
}

fn live(slot: &H2Slot) -> Option<http2::SendRequest<RequestBody>> {
    let guard = slot.sender.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_ref().filter(|s| !s.is_closed()).cloned()
}
