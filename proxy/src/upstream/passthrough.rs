//! The `original_destination` cluster's endpoints: one per address a
//! redirected client was headed for, made when first needed, each with its
//! own connection pool and breaker. Their breaker gauges are not exported
//! (one series per destination would be unbounded).

use super::breaker::Breaker;
use super::endpoint::Endpoint;
use crate::config::BreakerConfig;
use crate::config::model::UpstreamProtocol;
use crate::error::{Kind, ProxyError};
use crate::original_dst;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Destinations remembered at once; beyond, unused ones are forgotten
/// (their idle connections close).
const MAX_DESTINATIONS: usize = 1024;

/// Endpoints made from original destinations.
pub struct Passthrough {
    breaker: BreakerConfig,
    protocol: UpstreamProtocol,
    /// `wasp_circuit_breaker_opened_total{cluster}`
    opened: IntCounter,
    max_connections: usize,
    endpoints: Mutex<HashMap<SocketAddr, Arc<Endpoint>>>,
}

impl Passthrough {
    /// Endpoints speaking `protocol`, with these breaker settings and connection cap.
    pub fn new(breaker: BreakerConfig, protocol: UpstreamProtocol, max_connections: usize, opened: IntCounter) -> Self {
        Passthrough { breaker, protocol, opened, max_connections, endpoints: Mutex::default() }
    }

    /// The endpoint for `destination`; a loop error when it is wasp itself.
    pub fn endpoint(&self, destination: Option<SocketAddr>) -> Result<Arc<Endpoint>, ProxyError> {
        // Validation lets only listeners that recover destinations name this cluster.
        let dst = destination.ok_or(ProxyError::new(Kind::NoRoute))?;
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        if original_dst::is_wasp(dst, &original_dst::own_ports()) {
            return Err(ProxyError::new(Kind::Loop));
        }
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = endpoints.get(&dst) {
            return Ok(e.clone());
        }
        if endpoints.len() >= MAX_DESTINATIONS {
            endpoints.retain(|_, e| Arc::strong_count(e) > 1 || e.in_flight() > 0);
        }
        let unexported = prometheus::IntGauge::new("unexported", "-").expect("valid metric");
        let breaker =
            Breaker::new(self.breaker.consecutive_failures, self.breaker.open_for, unexported, self.opened.clone());
        let endpoint = Arc::new(Endpoint::new(&dst.to_string(), breaker, self.protocol, self.max_connections));
        if endpoints.len() < MAX_DESTINATIONS {
            endpoints.insert(dst, endpoint.clone());
        }
        Ok(endpoint)
    }
}
