//! Upstream HTTP clients. HTTP/1.1 uses each endpoint's keep-alive pool
//! ([`super::pool`]) of wasp's own connections ([`super::h1`]); HTTP/2
//! keeps one multiplexed hyper connection per endpoint and re-dials when it
//! closes. Both apply the cluster's connect timeout.

use super::Dialer;
use super::body::{BoxError, RequestBody};
use super::endpoint::{Endpoint, Transport};
use super::h1::{H1Body, Upgraded};
use super::wait::Wait;
use crate::error::{Kind, ProxyError};
use crate::metrics::Histogram;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// An endpoint's HTTP/2 connection, shared by all requests to it.
#[derive(Default)]
pub struct H2Slot {
    sender: Mutex<Option<http2::SendRequest<RequestBody>>>,
    dialing: tokio::sync::Mutex<()>,
}

/// Sends `req` (URI already absolute, pointing at the right authority)
/// to `endpoint` over its transport; `queued` is set while it waits for a
/// connection, and `waits` gets how long it waited. Boxed: each async
/// call it goes through would otherwise copy its ~300 bytes, twice.
pub async fn send(
    dialer: &Dialer,
    endpoint: &Endpoint,
    req: Box<Request<RequestBody>>,
    waits: &Histogram,
    queued: &mut bool,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let mut wait = Wait::new(waits);
    match &endpoint.transport {
        Transport::Http1(pool) => {
            let resp = pool.send(&endpoint.address, dialer, req, &mut wait, queued).await?;
            Ok(resp.map(UpstreamBody::Http1))
        }
        Transport::Http2(slot) => {
            let mut sender = match live(slot) {
                Some(sender) => sender,
                None => {
                    wait.start();
                    // Boxed: dialing is rare, and its state would otherwise
                    // make every request's future larger.
                    Box::pin(h2_sender(slot, &endpoint.address, dialer)).await?
                }
            };
            wait.until(|cx| sender.poll_ready(cx)).await.map_err(ProxyError::from_hyper)?;
            wait.end();
            let resp = sender.send_request(*req).await.map_err(ProxyError::from_hyper)?;
            Ok(resp.map(UpstreamBody::Http2))
        }
    }
}

async fn h2_sender(
    slot: &H2Slot,
    address: &Arc<str>,
    dialer: &Dialer,
) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
    if let Some(s) = live(slot) {
        return Ok(s);
    }
    let _dialing = slot.dialing.lock().await;
    if let Some(s) = live(slot) {
        return Ok(s);
    }
    let (stream, own) = dialer.connect(address).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::with(Kind::ConnectFailure, e))?;
    let address = address.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %address, error = %e, "upstream HTTP/2 connection ended");
        }
        drop(own);
    });
    *slot.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
    Ok(sender)
}

fn live(slot: &H2Slot) -> Option<http2::SendRequest<RequestBody>> {
    let guard = slot.sender.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_ref().filter(|s| !s.is_closed()).cloned()
}

/// An upstream response body, as its transport reads it.
pub enum UpstreamBody {
    /// From an HTTP/1.1 connection of the endpoint's pool.
    Http1(H1Body),
    /// A stream of the endpoint's HTTP/2 connection.
    Http2(Incoming),
}

impl UpstreamBody {
    /// The upstream's side of a switched (101) HTTP/1.1 connection.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        match self {
            UpstreamBody::Http1(b) => b.take_upgraded(),
            UpstreamBody::Http2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(b) => b.is_end_stream(),
            UpstreamBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(b) => b.size_hint(),
            UpstreamBody::Http2(b) => b.size_hint(),
        }
    }
}
