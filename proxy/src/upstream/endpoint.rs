//! One upstream endpoint: its address, breaker, in-flight count and the one
//! transport its cluster speaks: a keep-alive pool of HTTP/1.1 connections,
//! or a shared multiplexed HTTP/2 connection.

use super::breaker::Breaker;
use super::client::H2Slot;
use super::pool::H1Pool;
use crate::config::model::UpstreamProtocol;
use http::uri::Authority;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An upstream `host:port`.
pub struct Endpoint {
    /// As written in the config; used in logs and metrics.
    pub address: Arc<str>,
    /// Parsed once for building request URIs.
    pub authority: Authority,
    /// Circuit breaker.
    pub breaker: Breaker,
    in_flight: AtomicUsize,
    /// How requests reach it.
    pub transport: Transport,
}

/// The connections of an endpoint, in the protocol its cluster speaks.
pub enum Transport {
    /// Idle HTTP/1.1 connections, and the cap on open ones.
    Http1(Arc<H1Pool>),
    /// The HTTP/2 connection every request shares.
    Http2(H2Slot),
}

impl Endpoint {
    /// A new endpoint speaking `protocol`, with at most `max_connections`
    /// HTTP/1.1 connections open; `address` must already be validated.
    pub fn new(address: &str, breaker: Breaker, protocol: UpstreamProtocol, max_connections: usize) -> Self {
        let authority = address.parse().unwrap_or_else(|_| Authority::from_static("invalid.endpoint"));
        Endpoint {
            address: address.into(),
            authority,
            breaker,
            in_flight: AtomicUsize::new(0),
            transport: match protocol {
                UpstreamProtocol::Http1 => Transport::Http1(Arc::new(H1Pool::new(max_connections))),
                UpstreamProtocol::Http2 => Transport::Http2(H2Slot::default()),
            },
        }
    }

    /// Requests in flight to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request until the returned guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight to an endpoint (for least-request balancing).
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
