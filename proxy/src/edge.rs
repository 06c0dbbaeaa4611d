//! The edge of a listener: what happens to an accepted connection before it
//! is served — the TLS handshake (if the listener terminates TLS), then its
//! connection filters. Shared by the HTTP and TCP handlers.

use crate::filter::{ConnectionFacts, ConnectionFilters};
use crate::tls::{ServerTls, Session, Stream};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// What a listener does with a connection before serving it: the TLS
/// handshake (if it terminates TLS), then its connection filters.
#[derive(Clone, Default)]
pub struct Edge {
    /// TLS termination.
    pub tls: Option<Arc<ServerTls>>,
    /// Filters asked whether to serve the connection.
    pub connection_filters: Option<Arc<ConnectionFilters>>,
    /// Connections arrive redirected (`wasp iptables`): recover where they were headed.
    pub original_destination: bool,
}

impl Edge {
    /// The connection ready to serve, with what its handshake settled; `None`
    /// when the handshake failed (counted) or a filter refused it.
    pub async fn admit(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(Stream, Option<Session>)> {
        let (stream, session) = match &self.tls {
            None => (Stream::Plain(tcp), None),
            Some(tls) => match tls.accept(tcp).await {
                Ok((s, session)) => (Stream::Server(Box::new(s)), Some(session)),
                Err(reason) => {
                    tracing::debug!(%peer, reason, "TLS handshake failed");
                    return None;
                }
            },
        };
        self.allows(peer, &stream, session.as_ref()).await.then_some((stream, session))
    }

    /// Whether every connection filter allows `stream` from `peer` with what
    /// its TLS handshake (if any) settled. Its local address is read only
    /// for filters (a system call per connection otherwise saved).
    pub async fn allows(&self, peer: SocketAddr, stream: &Stream, session: Option<&Session>) -> bool {
        let Some(filters) = &self.connection_filters else { return true };
        let Ok(local) = stream.local_addr() else { return false };
        let facts = ConnectionFacts {
            peer,
            local,
            sni: session.and_then(|s| s.sni.clone()),
            alpn: session.and_then(|s| s.alpn.clone()),
            identity: session.and_then(|s| s.identity().cloned()),
        };
        match filters.decide(&facts).await {
            Ok(()) => true,
            Err(filter) => {
                tracing::debug!(peer = %facts.peer, %filter, "connection refused by a filter");
                false
            }
        }
    }
}
