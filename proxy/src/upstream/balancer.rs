//! Endpoint selection: round-robin or least-request, skipping endpoints whose
//! circuit breaker is open.

use super::breaker::Permit;
use super::endpoint::Endpoint;
use crate::config::model::LbPolicy;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Picks endpoints for one cluster.
pub struct Balancer {
    policy: LbPolicy,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer with the given policy.
    pub fn new(policy: LbPolicy) -> Self {
        Balancer { policy, next: AtomicUsize::new(0) }
    }

    /// An endpoint whose breaker admits a request, or `None` if all are open.
    pub fn pick<'a>(&self, endpoints: &'a [Arc<Endpoint>]) -> Option<(&'a Arc<Endpoint>, Permit<'a>)> {
        let n = endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        match self.policy {
            LbPolicy::RoundRobin => (0..n).find_map(|i| {
                let ep = &endpoints[(start + i) % n];
                ep.breaker.try_acquire().map(|p| (ep, p))
            }),
            LbPolicy::LeastRequest => {
                let best = (0..n)
                    .map(|i| &endpoints[(start + i) % n])
                    .filter(|ep| ep.breaker.is_closed())
                    .min_by_key(|ep| ep.in_flight());
                if let Some(permit) = best.and_then(|ep| ep.breaker.try_acquire().map(|p| (ep, p))) {
                    return Some(permit);
                }
                // Every breaker is open: one may be due for its half-open probe.
                (0..n).find_map(|i| {
                    let ep = &endpoints[(start + i) % n];
                    ep.breaker.try_acquire().map(|p| (ep, p))
                })
            }
        }
    }
}
