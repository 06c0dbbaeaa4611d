//! Connection filters (`listeners[].connection_filters`): each filter's
//! `on-connection` export decides whether a new connection is served, from
//! what is known before the first byte of a request: addresses, SNI, ALPN
//! and the client's verified identity.
//!
//! The filters are asked in order, each on the version serving when the
//! connection arrives, on a pooled instance, with the filter's limits. The
//! first `deny` closes the connection (counted in
//! `wasp_filter_connections_denied_total{filter}`); a filter that fails
//! (trap, timeout, memory) gets its failure policy: `fail-closed` denies
//! (and is counted as a denial too), `fail-open` skips it. A listener
//! without connection filters does no work per connection.

use super::registry::Versioned;
use super::v02::types::{ConnectionDecision, ConnectionInfo};
use crate::config::model::FailurePolicy;
use prometheus::IntCounter;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a connection filter is told about a connection.
#[derive(Clone, Debug)]
pub struct ConnectionFacts {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// The server name it asked for (TLS SNI).
    pub sni: Option<Arc<str>>,
    /// The application protocol negotiated (TLS ALPN).
    pub alpn: Option<Arc<str>>,
    /// The client's verified certificate identity (mTLS).
    pub identity: Option<Arc<str>>,
}

impl ConnectionFacts {
    /// The facts of a plaintext connection: addresses only.
    pub fn plain(peer: SocketAddr, local: SocketAddr) -> Self {
        ConnectionFacts { peer, local, sni: None, alpn: None, identity: None }
    }

    /// The facts as a filter gets them, with the addresses as text.
    fn info<'a>(&'a self, peer: &'a str, local: &'a str) -> ConnectionInfo<'a> {
        ConnectionInfo {
            peer,
            local,
            sni: self.sni.as_deref(),
            alpn: self.alpn.as_deref(),
            identity: self.identity.as_deref(),
        }
    }
}

/// A listener's connection filters, in order.
pub struct ConnectionFilters {
    /// Each filter with its `wasp_filter_connections_denied_total{filter}`.
    filters: Vec<(Arc<Versioned>, IntCounter)>,
}

impl ConnectionFilters {
    /// The filters `filters`, asked in order.
    pub fn new(filters: Vec<Arc<Versioned>>) -> Self {
        let filters = filters
            .into_iter()
            .map(|f| {
                let denied = f.current().metrics().filter_connections_denied.with_label_values(&[&f.name]);
                (f, denied)
            })
            .collect();
        ConnectionFilters { filters }
    }

    /// Whether there is no filter to ask (every connection is served).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// `Ok` when every filter allows the connection; `Err(filter name)` for
    /// the first that denies it.
    pub async fn decide(&self, facts: &ConnectionFacts) -> Result<(), Arc<str>> {
        if self.filters.is_empty() {
            return Ok(());
        }
        let (peer, local) = (facts.peer.to_string(), facts.local.to_string());
        let info = facts.info(&peer, &local);
        for (versioned, denied) in &self.filters {
            let f = versioned.current();
            let outcome = f.lease().and_then(|mut lease| lease.on_connection(&info));
            let reason = match outcome {
                Ok(ConnectionDecision::Allow) => continue,
                Ok(ConnectionDecision::Deny(reason)) => reason,
                Err(failure) => match f.policy {
                    FailurePolicy::FailOpen => continue,
                    FailurePolicy::FailClosed => format!("the filter failed ({}); fail-closed", failure.label()),
                },
            };
            denied.inc();
            // Debug only: a client that reconnects would otherwise turn each
            // denied connection into a log line.
            tracing::debug!(filter = %f.name, peer = %facts.peer, identity = ?facts.identity,
                reason = %truncate(&reason, 256), "connection denied by a filter");
            return Err(f.name.clone());
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
