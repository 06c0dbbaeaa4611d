//! TLS origination for one cluster: the endpoints' certificates verified
//! against the cluster's CA (or the system's roots), by server name or, with
//! `verify_identity`, by the URI SAN identity the endpoint must carry; an
//! optional client certificate (mTLS to the upstream); ALPN `h2` or
//! `http/1.1` as the cluster speaks. Rebuilt from its files when they
//! change, like a listener's ([`ClientTls::refresh`]).

use super::pem::{self, CertInfo};
use super::{Loaded, Scope, TlsMetrics, fingerprint, provider};
use crate::config::{ClientTlsConfig, ConfigError, TlsVersion, identity_matches};
use crate::error::{Kind, ProxyError};
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One cluster's TLS.
pub struct ClientTls {
    cluster: Arc<str>,
    cfg: ClientTlsConfig,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<Built>,
    metrics: Arc<TlsMetrics>,
    /// Fingerprint of files that failed to load.
    rejected: std::sync::Mutex<Option<[u8; 32]>>,
}

struct Built {
    connector: TlsConnector,
    loaded: Loaded,
}

impl ClientTls {
    /// Loads cluster `cluster`'s TLS material; `alpn` is what it offers.
    pub fn load(
        cluster: &str,
        cfg: &ClientTlsConfig,
        alpn: &[u8],
        metrics: &Arc<TlsMetrics>,
    ) -> Result<Arc<Self>, Vec<ConfigError>> {
        let alpn = vec![alpn.to_vec()];
        let built = build(cfg, &alpn)?;
        let current = ArcSwap::from_pointee(built);
        let metrics = metrics.clone();
        let rejected = Default::default();
        Ok(Arc::new(ClientTls { cluster: cluster.into(), cfg: cfg.clone(), alpn, current, metrics, rejected }))
    }

    /// The TLS handshake over `tcp` to endpoint `address` (`host:port`).
    pub async fn connect(&self, tcp: TcpStream, address: &str) -> Result<TlsStream<TcpStream>, ProxyError> {
        let host = match self.cfg.sni.as_deref() {
            Some(sni) => sni,
            None => address.rsplit_once(':').map_or(address, |(h, _)| h).trim_start_matches('[').trim_end_matches(']'),
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| ProxyError::with(Kind::TlsFailure, e))?;
        let connector = self.current.load().connector.clone();
        connector.connect(name, tcp).await.map_err(|e| {
            tracing::debug!(cluster = %self.cluster, endpoint = address, error = %e, "upstream TLS handshake failed");
            ProxyError::with(Kind::TlsFailure, e)
        })
    }

    /// Whose it is.
    pub fn name(&self) -> Arc<str> {
        self.cluster.clone()
    }

    /// Rebuilds from the files if any changed; see [`super::server::ServerTls::refresh`].
    pub fn refresh(&self) {
        let serving = self.current.load();
        let print = fingerprint(self.cfg.files());
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        // Unchanged, or the same content that failed already: not tried (nor counted) again.
        if print == serving.loaded.fingerprint || *rejected == Some(print) {
            return;
        }
        let scope = Scope::Cluster(&self.cluster);
        match build(&self.cfg, &self.alpn) {
            Ok(built) => {
                self.metrics.rotated(scope, &serving.loaded, &built.loaded);
                tracing::info!(cluster = %self.cluster, "TLS material reloaded; new connections use it");
                self.current.store(Arc::new(built));
            }
            Err(errors) => {
                *rejected = Some(print);
                self.metrics.rejected(scope, &errors);
            }
        }
    }

    /// The certificates in use, for `/certs`.
    pub fn certs(&self) -> Vec<(&'static str, CertInfo)> {
        self.current.load().loaded.certs.clone()
    }

    /// Puts them on the expiry gauge.
    pub fn publish(&self) {
        self.metrics.publish(Scope::Cluster(&self.cluster), &self.current.load().loaded);
    }

    /// Takes them off.
    pub fn unpublish(&self) {
        self.metrics.unpublish(Scope::Cluster(&self.cluster), &self.current.load().loaded);
    }
}

fn build(cfg: &ClientTlsConfig, alpn: &[Vec<u8>]) -> Result<Built, Vec<ConfigError>> {
    let print = fingerprint(cfg.files());
    let provider = provider();
    let now = pem::now();
    let mut certs = Vec::new();
    let roots = match &cfg.ca {
        Some(ca) => {
            let (roots, infos) = pem::roots(&format!("{}.ca", cfg.at), ca, now).map_err(|e| vec![e])?;
            certs.extend(infos.into_iter().map(|i| ("ca", i)));
            roots
        }
        None => system_roots(&cfg.at)?,
    };
    let client = match &cfg.client {
        Some(files) => {
            let pair = pem::pair(files, &provider, now).map_err(|e| vec![e])?;
            certs.push(("client", pair.leaf.clone()));
            Some(pair.certified)
        }
        None => None,
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let verifier = Arc::new(Verifier { roots, identity: cfg.verify_identity.clone(), provider: provider.clone() });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![ConfigError { path: cfg.at.clone(), message: e.to_string() }])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(certified) => builder.with_client_cert_resolver(Arc::new(Always(certified))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.to_vec();
    Ok(Built { connector: TlsConnector::from(Arc::new(config)), loaded: Loaded { certs, fingerprint: print } })
}

fn system_roots(at: &str) -> Result<RootCertStore, Vec<ConfigError>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        let message = format!("no `ca` given and no system CA certificates found{why}");
        return Err(vec![ConfigError { path: format!("{at}.ca"), message }]);
    }
    Ok(roots)
}

/// WebPKI chain verification, then either the server name (as browsers do)
/// or, with `verify_identity`, the URI SAN identity (as SPIFFE peers do:
/// their certificates carry no DNS name).
#[derive(Debug)]
struct Verifier {
    roots: RootCertStore,
    identity: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algs = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, algs)?;
        match &self.identity {
            None => verify_server_name(&cert, server_name)?,
            Some(want) => {
                let (_, x509) = X509Certificate::from_der(end_entity)
                    .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
                let uris: Vec<String> = pem::sans(&x509).filter(|(kind, _)| *kind == "URI").map(|(_, v)| v).collect();
                if !uris.iter().any(|u| identity_matches(want, u)) {
                    tracing::warn!(expected = %want, presented = ?uris, "upstream certificate has the wrong identity");
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ));
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The cluster's one client certificate, offered whenever a server asks.
#[derive(Debug)]
struct Always(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Always {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
