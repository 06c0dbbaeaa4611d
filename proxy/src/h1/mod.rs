//! HTTP/1.1 on the wire, for both of wasp's sides: requests read from
//! clients ([`request`], [`wire`]) and responses written to them, requests
//! written to upstreams ([`write`]) and their responses read back
//! (`upstream::h1`), with one body decoder ([`body`]) and one encoder.
//! Parsing is httparse, strict by RFC 9112; nothing here knows routes,
//! filters or pools.

pub mod body;
pub mod date;
pub mod request;
pub mod wire;
pub mod write;

/// Errors of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
