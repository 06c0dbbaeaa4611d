//! One upstream endpoint: its address, breaker, in-flight count and (for
//! HTTP/2 clusters) its shared multiplexed connection.

use super::breaker::Breaker;
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
    /// Idle HTTP/1.1 connections, when the cluster speaks HTTP/1.1.
    pub h1: Arc<super::pool::H1Pool>,
    /// HTTP/2 connection, when the cluster speaks HTTP/2.
    pub h2: super::client::H2Slot,
}

impl Endpoint {
    /// A new endpoint with at most `max_connections` HTTP/1.1 connections
    /// open; `address` must already be validated.
    pub fn new(address: &str, breaker: Breaker, max_connections: usize) -> Self {
        let authority = address.parse().unwrap_or_else(|_| Authority::from_static("invalid.endpoint"));
        Endpoint {
            address: address.into(),
            authority,
            breaker,
            in_flight: AtomicUsize::new(0),
            h1: Arc::new(super::pool::H1Pool::new(max_connections)),
            h2: Default::default(),
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
