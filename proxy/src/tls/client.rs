//! TLS origination for one cluster: the endpoints' certificates verified
//! against the cluster's CA (or the system's roots), by server name or, with
//! `verify_identity`, by the URI SAN identity the endpoint must carry; an
//! optional client certificate (mTLS to the upstream); ALPN `h2` or
//! `http/1.1` as the cluster speaks. Rebuilt from its files when they
//! change, like a listener's (see [`super::material`]).

use super::material::{self, Material, Reloadable};
use super::pem;
use super::{Loaded, TlsMetrics, provider};
use crate::config::{ClientTlsConfig, ConfigError, TlsVersion, identity_matches};
use crate::error::{Kind, ProxyError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One cluster's TLS.
pub struct ClientTls {
    cluster: Arc<str>,
    sni: Option<String>,
    material: Arc<Material<Built>>,
}

/// What the files give: a connector with the roots and client certificate.
pub struct Built {
    connector: TlsConnector,
    loaded: Loaded,
}

impl material::Built for Built {
    fn loaded(&self) -> &Loaded {
        &self.loaded
    }
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
        let build = {
            let cfg = cfg.clone();
            Box::new(move |print| build(&cfg, &alpn, print))
        };
        let files = cfg.files().map(Path::to_path_buf).collect();
        let material = Material::load("cluster", cluster, files, metrics, build)?;
        Ok(Arc::new(ClientTls { cluster: cluster.into(), sni: cfg.sni.clone(), material }))
    }

    /// The TLS handshake over `tcp` to endpoint `address` (`host:port`).
    pub async fn connect(&self, tcp: TcpStream, address: &str) -> Result<TlsStream<TcpStream>, ProxyError> {
        let host = match self.sni.as_deref() {
            Some(sni) => sni,
            None => address.rsplit_once(':').map_or(address, |(h, _)| h).trim_start_matches('[').trim_end_matches(']'),
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| ProxyError::with(Kind::TlsFailure, e))?;
        let connector = self.material.current().connector.clone();
        connector.connect(name, tcp).await.map_err(|e| {
            tracing::debug!(cluster = %self.cluster, endpoint = address, error = %e, "upstream TLS handshake failed");
            ProxyError::with(Kind::TlsFailure, e)
        })
    }

    /// Its material, for the live config to refresh and report on.
    pub fn material(&self) -> Arc<dyn Reloadable> {
        self.material.clone()
    }
}

fn build(cfg: &ClientTlsConfig, alpn: &[Vec<u8>], print: [u8; 32]) -> Result<Built, Vec<ConfigError>> {
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
