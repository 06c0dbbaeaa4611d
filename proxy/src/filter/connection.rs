//! Connection filters (`listeners[].connection_filters`): each filter's
//! `on-connection` export decides whether a new connection is served, from
//! what is known before the first byte of a request: addresses, SNI, ALPN
//! and the client's verified identity.
//!
//! STUB: allows every connection until the L4 hook lands.

use super::registry::Versioned;
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

/// A listener's connection filters, in order.
pub struct ConnectionFilters {
    filters: Vec<Arc<Versioned>>,
}

impl ConnectionFilters {
    /// The filters `filters`, asked in order.
    pub fn new(filters: Vec<Arc<Versioned>>) -> Self {
        ConnectionFilters { filters }
    }

    /// `Ok` when every filter allows the connection; `Err(filter name)` for
    /// the first that denies it.
    pub async fn decide(&self, facts: &ConnectionFacts) -> Result<(), Arc<str>> {
        let _ = (facts, &self.filters);
        Ok(())
    }
}
