//! TLS with rustls: termination on listeners ([`server`]), origination to
//! clusters ([`client`]), the peer identity a handshake establishes
//! ([`peer`]), certificate files ([`pem`]) and their rebuilding when they
//! change ([`material`]), and the ClientHello peek of SNI passthrough ([`sni`]).
//!
//! The crypto provider is aws-lc-rs, installed once at start
//! ([`install`]): measured beside ring on this project's machines it did a
//! TLS 1.3 server handshake in ~10% less CPU, TLS 1.2 in ~30% less, and
//! bulk AES-GCM 15–40% faster, for ~110 s more CPU on a clean build (see
//! README, "TLS and identity").

pub mod client;
pub mod material;
pub mod peer;
pub mod pem;
pub mod server;
pub mod sni;
mod stream;

pub use client::ClientTls;
pub use material::{CertReport, Reloadable};
pub use peer::{Peer, Session};
pub use server::ServerTls;
pub use stream::Stream;

use crate::config::ConfigError;
use pem::CertInfo;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Makes aws-lc-rs the process's rustls provider (idempotent).
pub fn install() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The provider every config is built with.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Loads every listener's TLS material, for `wasp check`: the errors.
pub fn check_listeners(config: &crate::config::Config, metrics: &crate::metrics::Metrics) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for l in &config.listeners {
        if let Some(cfg) = &l.tls
            && let Err(e) = ServerTls::load(&l.name, cfg, &server::HTTP_ALPN, &metrics.tls)
        {
            errors.extend(e);
        }
    }
    errors
}

/// What a TLS config loaded: its certificates (by role) and a hash of its
/// files' content, to tell whether they changed.
#[derive(Clone)]
pub struct Loaded {
    /// `(role, details)`: role is `server`, `client_ca`, `client` or `ca`.
    pub certs: Vec<(&'static str, CertInfo)>,
    /// SHA-256 over every file's content.
    pub fingerprint: [u8; 32],
}

/// SHA-256 over the content of `files` (an unreadable file counts as empty,
/// so that it changes the print when it comes back).
pub fn fingerprint<'a>(files: impl Iterator<Item = &'a Path>) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}

/// TLS metric families.
pub struct TlsMetrics {
    /// `wasp_tls_handshake_errors_total{listener,reason}`
    pub handshake_errors: IntCounterVec,
    /// `wasp_tls_handshakes_total{listener,version}`
    pub handshakes: IntCounterVec,
    /// `wasp_tls_certificate_expiry_seconds{scope,name,role,subject}`
    pub expiry: IntGaugeVec,
    /// `wasp_tls_reloads_total{scope,name,result}`
    pub reloads: IntCounterVec,
}

impl TlsMetrics {
    /// The families, to register.
    pub fn new() -> Self {
        TlsMetrics {
            handshake_errors: IntCounterVec::new(
                Opts::new(
                    "wasp_tls_handshake_errors_total",
                    "Failed TLS handshakes by listener and reason: not_tls, timeout, unknown_sni, no_client_cert, \
                     untrusted, expired, not_yet_valid, revoked, bad_certificate, alert_received, incompatible, \
                     protocol_error, client_closed, io",
                ),
                &["listener", "reason"],
            )
            .expect("valid metric"),
            handshakes: IntCounterVec::new(
                Opts::new("wasp_tls_handshakes_total", "Completed TLS handshakes by listener and version"),
                &["listener", "version"],
            )
            .expect("valid metric"),
            expiry: IntGaugeVec::new(
                Opts::new(
                    "wasp_tls_certificate_expiry_seconds",
                    "Unix time of not_after of each loaded certificate (role: server, client_ca, client, ca)",
                ),
                &["scope", "name", "role", "subject"],
            )
            .expect("valid metric"),
            reloads: IntCounterVec::new(
                Opts::new(
                    "wasp_tls_reloads_total",
                    "Reloads of TLS material after its files changed, by result (ok, error)",
                ),
                &["scope", "name", "result"],
            )
            .expect("valid metric"),
        }
    }

    /// The collectors, for the registry.
    pub fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 4] {
        [
            Box::new(self.handshake_errors.clone()),
            Box::new(self.handshakes.clone()),
            Box::new(self.expiry.clone()),
            Box::new(self.reloads.clone()),
        ]
    }

    fn publish(&self, [kind, name]: [&str; 2], loaded: &Loaded) {
        for (role, c) in &loaded.certs {
            self.expiry.with_label_values(&[kind, name, role, &c.subject]).set(c.not_after);
        }
        // At 0 from the start, so that an alert sees the first failed reload.
        for result in ["ok", "error"] {
            self.reloads.with_label_values(&[kind, name, result]);
        }
    }

    fn unpublish(&self, [kind, name]: [&str; 2], loaded: &Loaded) {
        for (role, c) in &loaded.certs {
            let _ = self.expiry.remove_label_values(&[kind, name, role, &c.subject]);
        }
    }

    fn rotated(&self, labels: [&str; 2], old: &Loaded, new: &Loaded) {
        self.unpublish(labels, old);
        self.publish(labels, new);
        let [kind, name] = labels;
        self.reloads.with_label_values(&[kind, name, "ok"]).inc();
    }

    fn rejected(&self, [kind, name]: [&str; 2], errors: &[ConfigError]) {
        for e in errors {
            tracing::warn!(%kind, %name, path = %e.path, error = %e.message, "TLS material not reloaded; the serving one stays");
        }
        self.reloads.with_label_values(&[kind, name, "error"]).inc();
    }
}

impl Default for TlsMetrics {
    fn default() -> Self {
        Self::new()
    }
}
