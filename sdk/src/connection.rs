//! The connection (L4) hook: what a filter is told about a new connection
//! and what it answers (see [`crate::Filter::on_connection`]).

use crate::bindings::wasp::filter::types as wit;

/// A connection wasp accepted, before any request on it: who is on the
/// other end and what they asked for.
pub struct Connection {
    info: wit::ConnectionInfo,
}

impl Connection {
    #[doc(hidden)]
    pub fn from_wit(info: wit::ConnectionInfo) -> Self {
        Connection { info }
    }

    /// The client's address, `ip:port`.
    pub fn peer(&self) -> &str {
        &self.info.peer
    }

    /// The address the client connected to, `ip:port`.
    pub fn local(&self) -> &str {
        &self.info.local
    }

    /// The server name the client asked for (TLS SNI), if any.
    pub fn sni(&self) -> Option<&str> {
        self.info.sni.as_deref()
    }

    /// The application protocol negotiated (TLS ALPN, e.g. `h2`), if any.
    pub fn alpn(&self) -> Option<&str> {
        self.info.alpn.as_deref()
    }

    /// The client's verified identity (mTLS): its certificate's URI SAN
    /// (e.g. `spiffe://cluster.local/ns/shop/sa/web`), else its DNS SAN,
    /// else its subject CN. `None` on plaintext connections and without a
    /// verified client certificate.
    pub fn identity(&self) -> Option<&str> {
        self.info.identity.as_deref()
    }
}

/// Whether a connection is served.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionDecision {
    /// Serve it (after asking the listener's next connection filter).
    Allow,
    /// Close it before anything is read from it. The reason goes to wasp's
    /// debug log, never to the client.
    Deny(String),
}

impl ConnectionDecision {
    #[doc(hidden)]
    pub fn into_wit(self) -> wit::ConnectionDecision {
        match self {
            ConnectionDecision::Allow => wit::ConnectionDecision::Allow,
            ConnectionDecision::Deny(reason) => wit::ConnectionDecision::Deny(reason),
        }
    }
}
