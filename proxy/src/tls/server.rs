//! TLS termination for one listener: the certificates (a default and more
//! chosen by SNI), client-certificate verification (mTLS, CRLs), ALPN,
//! resumption (session IDs and tickets), and the handshake itself with its
//! deadline. A failed handshake is counted by reason in
//! `wasp_tls_handshake_errors_total{listener,reason}`. The material is
//! rebuilt from its files when they change (see [`super::material`]).

use super::material::{self, Material, Reloadable};
use super::peer::{Peer, Session};
use super::pem::{self, Pair};
use super::{Loaded, TlsMetrics, provider};
use crate::config::{ConfigError, ServerTlsConfig, TlsVersion, server_name_matches};
use prometheus::IntCounterVec;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig};
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// ALPN offered by HTTP listeners, preferred first.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One listener's TLS.
pub struct ServerTls {
    listener: Arc<str>,
    cfg: ServerTlsConfig,
    material: Arc<Material<Built>>,
    errors: IntCounterVec,
    metrics: Arc<TlsMetrics>,
}

/// What the files give: the rustls config and the certificates by SNI.
pub struct Built {
    config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
    loaded: Loaded,
}

impl material::Built for Built {
    fn loaded(&self) -> &Loaded {
        &self.loaded
    }
}

/// Certificates by server name, and the default.
#[derive(Debug)]
struct Resolver {
    default: Option<Arc<Pair>>,
    by_sni: Vec<(Vec<String>, Arc<Pair>)>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.leaf.subject)
    }
}

impl Resolver {
    fn find(&self, sni: Option<&str>) -> Option<&Arc<Pair>> {
        let by_name = sni.and_then(|name| {
            self.by_sni.iter().find(|(patterns, _)| patterns.iter().any(|p| server_name_matches(p, name)))
        });
        by_name.map(|(_, pair)| pair).or(self.default.as_ref())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        self.find(sni.as_deref()).map(|p| p.certified.clone())
    }
}

impl ServerTls {
    /// Loads listener `listener`'s TLS material; `alpn` is what it offers
    /// (HTTP listeners: [`HTTP_ALPN`]; TCP listeners: nothing).
    pub fn load(
        listener: &str,
        cfg: &ServerTlsConfig,
        alpn: &[&[u8]],
        metrics: &Arc<TlsMetrics>,
    ) -> Result<Arc<Self>, Vec<ConfigError>> {
        let sessions: Arc<dyn StoresServerSessions> = rustls::server::ServerSessionMemoryCache::new(4096);
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| vec![ConfigError { path: cfg.at.clone(), message: format!("session tickets: {e}") }])?;
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        // The session cache and ticket keys are kept across rebuilds, so
        // that rotating a certificate does not end resumption.
        let build = {
            let cfg = cfg.clone();
            Box::new(move |print| build(&cfg, &alpn, &sessions, &ticketer, print))
        };
        let files = cfg.files().map(Path::to_path_buf).collect();
        let material = Material::load("listener", listener, files, metrics, build)?;
        let errors = metrics.handshake_errors.clone();
        Ok(Arc::new(ServerTls {
            listener: listener.into(),
            cfg: cfg.clone(),
            material,
            errors,
            metrics: metrics.clone(),
        }))
    }

    /// The handshake deadline.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.cfg.handshake_timeout
    }

    /// Counts a failed handshake.
    pub fn failed(&self, reason: &str) {
        self.errors.with_label_values(&[&self.listener, reason]).inc();
    }

    /// Completes the handshake on `tcp` within the deadline, or says why it
    /// failed (already counted).
    pub async fn accept(&self, tcp: TcpStream) -> Result<(TlsStream<TcpStream>, Session), &'static str> {
        let handshake = async {
            let start =
                LazyConfigAcceptor::new(Acceptor::default(), tcp).await.map_err(|e| match rustls_error(&e) {
                    Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => "not_tls",
                    _ => reason(&e),
                })?;
            let built = self.material.current().clone();
            let sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
            let Some(pair) = built.resolver.find(sni.as_deref()).cloned() else {
                return Err("unknown_sni");
            };
            let stream = start.into_stream(built.config.clone()).await.map_err(|e| reason(&e))?;
            Ok((stream, sni, pair))
        };
        let result = match tokio::time::timeout(self.cfg.handshake_timeout, handshake).await {
            Err(_) => Err("timeout"),
            Ok(r) => r,
        };
        let (stream, sni, pair) = result.inspect_err(|r| self.failed(r))?;
        let conn = stream.get_ref().1;
        let peer = conn.peer_certificates().and_then(|c| c.first()).and_then(Peer::from_der);
        let xfcc = peer.as_ref().filter(|_| self.cfg.forward_client_cert).and_then(|p| p.xfcc(pair.uri.as_deref()));
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into());
        let session = Session { sni: sni.map(Into::into), alpn, version, peer, xfcc };
        self.metrics.handshakes.with_label_values(&[&self.listener, version]).inc();
        Ok((stream, session))
    }

    /// Its material, for the live config to refresh and report on.
    pub fn material(&self) -> Arc<dyn Reloadable> {
        self.material.clone()
    }
}

fn build(
    cfg: &ServerTlsConfig,
    alpn: &[Vec<u8>],
    sessions: &Arc<dyn StoresServerSessions>,
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
    print: [u8; 32],
) -> Result<Built, Vec<ConfigError>> {
    let provider = provider();
    let now = pem::now();
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    let mut load = |files| match pem::pair(files, &provider, now) {
        Ok(p) => {
            certs.push(("server", p.leaf.clone()));
            Some(Arc::new(p))
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let default = cfg.default.as_ref().and_then(&mut load);
    let by_sni: Vec<_> = cfg.by_sni.iter().filter_map(|(names, files)| Some((names.clone(), load(files)?))).collect();
    let verifier = match &cfg.client_ca {
        None => None,
        Some(ca) => {
            let at = format!("{}.client_ca", cfg.at);
            let mut crls = Vec::new();
            for (k, path) in cfg.crls.iter().enumerate() {
                match pem::crls(&format!("{}.crl[{k}]", cfg.at), path) {
                    Ok(list) => crls.extend(list),
                    Err(e) => errors.push(e),
                }
            }
            match pem::roots(&at, ca, now) {
                Ok((roots, infos)) => {
                    certs.extend(infos.into_iter().map(|i| ("client_ca", i)));
                    let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .with_crls(crls)
                        .only_check_end_entity_revocation();
                    if cfg.client_cert_optional {
                        b = b.allow_unauthenticated();
                    }
                    match b.build() {
                        Ok(v) => Some(v),
                        Err(e) => {
                            errors
                                .push(ConfigError { path: at, message: format!("cannot verify clients with it: {e}") });
                            None
                        }
                    }
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let resolver = Arc::new(Resolver { default, by_sni });
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![ConfigError { path: cfg.at.clone(), message: e.to_string() }])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = alpn.to_vec();
    config.session_storage = sessions.clone();
    config.ticketer = ticketer.clone();
    Ok(Built { config: Arc::new(config), resolver, loaded: Loaded { certs, fingerprint: print } })
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Why a handshake failed, as the `reason` label.
fn reason(e: &io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match rustls_error(e) {
        Some(rustls::Error::NoCertificatesPresented) => "no_client_cert",
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer => "untrusted",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::Revoked => "revoked",
            _ => "bad_certificate",
        },
        Some(rustls::Error::AlertReceived(_)) => "alert_received",
        Some(rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol) => "incompatible",
        Some(_) => "protocol_error",
        // Gone before finishing: a TCP health check, or a client cut off mid-handshake.
        None if e.kind() == io::ErrorKind::UnexpectedEof => "client_closed",
        None => "io",
    }
}
