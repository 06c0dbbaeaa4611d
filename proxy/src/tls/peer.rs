//! Who a TLS connection is with: the SNI and ALPN the client asked for,
//! and the identity in its verified certificate — its first URI SAN
//! (`spiffe://…`), else its first DNS SAN, else its subject CN — with the
//! `x-forwarded-client-cert` value that carries it to the app.

use super::pem::{hex, sans};
use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A verified client certificate.
#[derive(Debug)]
pub struct Peer {
    /// First URI SAN, else first DNS SAN, else subject CN.
    pub identity: Arc<str>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// Subject distinguished name.
    pub subject: String,
    /// SHA-256 of the certificate's DER, hex.
    pub hash: String,
}

impl Peer {
    /// The identity in a (verified) leaf certificate; `None` if it names
    /// nothing (no SAN, no CN) or cannot be parsed.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<Peer> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        for (kind, value) in sans(&cert) {
            match kind {
                "URI" => uris.push(value),
                "DNS" => dns.push(value),
                _ => {}
            }
        }
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
        let identity = uris.first().or(dns.first()).cloned().or(cn)?;
        Some(Peer {
            identity: identity.into(),
            uris,
            dns,
            subject: cert.subject().to_string(),
            hash: hex(&Sha256::digest(der.as_ref())),
        })
    }

    /// `x-forwarded-client-cert` in Envoy's format: `By` (wasp's own URI
    /// SAN), `Hash`, `Subject` (always quoted), then each `URI` and `DNS`.
    pub fn xfcc(&self, by: Option<&str>) -> Option<HeaderValue> {
        let mut v = String::new();
        if let Some(by) = by {
            let _ = write!(v, "By={};", quote(by));
        }
        let _ = write!(v, "Hash={};Subject=\"{}\"", self.hash, self.subject.replace('\\', "\\\\").replace('"', "\\\""));
        for u in &self.uris {
            let _ = write!(v, ";URI={}", quote(u));
        }
        for d in &self.dns {
            let _ = write!(v, ";DNS={}", quote(d));
        }
        HeaderValue::from_str(&v).ok()
    }
}

/// A value quoted when it holds a separator (`,`, `;`, `=`, `"`).
fn quote(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

/// What a TLS handshake settled.
#[derive(Debug, Default)]
pub struct Session {
    /// Server name the client asked for (lower case).
    pub sni: Option<Arc<str>>,
    /// Application protocol agreed (`h2`, `http/1.1`).
    pub alpn: Option<Arc<str>>,
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The client's verified certificate (mTLS).
    pub peer: Option<Peer>,
    /// `x-forwarded-client-cert` for the app, when the listener sends it.
    pub xfcc: Option<HeaderValue>,
}

impl Session {
    /// The client's verified identity.
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.peer.as_ref().map(|p| &p.identity)
    }
}
