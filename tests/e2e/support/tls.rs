//! Test PKI and TLS peers: a CA made with rcgen that issues leaf
//! certificates (DNS and URI SANs, any validity window), PEM files on disk
//! for wasp to read, a rustls client that speaks HTTP/1.1 or HTTP/2 by
//! ALPN, and the rustls server config of a TLS upstream.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Makes aws-lc-rs the provider for the test process's rustls configs.
pub fn install() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    /// Certificate, PEM.
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
}

/// What a leaf is for.
#[derive(Default)]
pub struct Names<'a> {
    /// Subject CN.
    pub cn: &'a str,
    /// DNS SANs.
    pub dns: &'a [&'a str],
    /// URI SANs.
    pub uri: &'a [&'a str],
    /// Validity (not_before, not_after) years; default: now-ish to far away.
    pub years: Option<(i32, i32)>,
    /// Serial number (random when absent).
    pub serial: Option<u64>,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        install();
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Ca { params, key, pem }
    }

    /// A leaf certificate signed by this CA.
    pub fn issue(&self, names: Names<'_>) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let dns: Vec<String> = names.dns.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(dns).expect("params");
        params.distinguished_name.push(DnType::CommonName, names.cn);
        for u in names.uri {
            params.subject_alt_names.push(SanType::URI(u.to_string().try_into().expect("URI SAN")));
        }
        if let Some((from, to)) = names.years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        if let Some(n) = names.serial {
            params.serial_number = Some(rcgen::SerialNumber::from(n));
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign").pem();
        Leaf { cert, key: key.serialize_pem() }
    }
}

impl Ca {
    /// A revocation list of this CA revoking `serials`, PEM.
    pub fn crl(&self, serials: &[u64]) -> String {
        let revoked = serials.iter().map(|n| rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(*n),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        });
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(4000, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked.collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(&issuer).expect("sign CRL").pem().expect("CRL PEM")
    }
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME-key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&cert, &self.cert).expect("write cert");
        std::fs::write(&key, &self.key).expect("write key");
        (cert, key)
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert.as_bytes()).collect::<Result<_, _>>().expect("cert PEM")
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).expect("key PEM")
    }

    /// The SHA-256 of its DER, hex (as `/certs` and `x-forwarded-client-cert` show it).
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        super::upstream::hex(&sha2::Sha256::digest(self.chain()[0].as_ref()))
    }
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("add root");
    }
    roots
}

/// A client trusting `ca_pem`, presenting `identity` if given, offering `alpn`.
pub fn client(ca_pem: &str, identity: Option<&Leaf>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    install();
    let b = rustls::ClientConfig::builder().with_root_certificates(roots(ca_pem));
    let mut c = match identity {
        Some(l) => b.with_client_auth_cert(l.chain(), l.private_key()).expect("client cert"),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(c)
}

/// A server config presenting `leaf`, requiring client certificates from
/// `client_ca` if given, offering `alpn`.
pub fn server(leaf: &Leaf, client_ca: Option<&str>, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
    install();
    let b = rustls::ServerConfig::builder();
    let b = match client_ca {
        Some(ca) => b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder(Arc::new(roots(ca))).build().expect("verifier"),
        ),
        None => b.with_no_client_auth(),
    };
    let mut c = b.with_single_cert(leaf.chain(), leaf.private_key()).expect("server cert");
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(c)
}

/// A TLS connection to `addr` with server name `sni`.
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// What an HTTPS request got.
pub struct Got {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// ALPN agreed.
    pub alpn: Option<String>,
    /// The server's certificate (leaf), DER.
    pub server_cert: Vec<u8>,
}

impl Got {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// GET `path` over a new TLS connection (HTTP/2 if ALPN agreed on `h2`),
/// with extra request `headers`; an `Err` says how it failed.
pub async fn get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    let tls = connect(addr, sni, config).await.map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).to_string());
    let server_cert = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let h2 = alpn.as_deref() == Some("h2");
    let mut req = Request::get(if h2 { format!("https://{sni}{path}") } else { path.to_string() });
    if !h2 {
        req = req.header("host", sni);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).expect("request");
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req).await
    };
    let resp = resp.map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(Got { status: parts.status, body, alpn, server_cert })
}
