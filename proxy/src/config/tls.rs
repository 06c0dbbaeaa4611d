//! TLS settings: a listener's termination (`listeners[].tls`), a TCP
//! listener's SNI routes, a cluster's origination (`clusters[].tls`), and
//! the identity patterns routes and clusters match peers against. Files are
//! only named here; [`crate::tls`] reads them (and `wasp check` reports
//! what is wrong with them at these paths).

use super::validate::Checker;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `listeners[i].tls`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawServerTls {
    /// Certificate chain (PEM) served to clients whose SNI matches no
    /// `certificates` entry, or that send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// More certificates, chosen by the client's SNI (exact or `*.suffix`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<RawSniCert>,
    /// CA bundle (PEM) that client certificates must chain to (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// With `client_ca`: `required` (default) or `optional` (a client
    /// without a certificate is served with no identity; one with a bad
    /// certificate is still refused).
    #[serde(default)]
    pub client_cert: ClientCert,
    /// Certificate revocation lists (PEM) checked for client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl: Vec<String>,
    /// Oldest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// Time a client has to complete the handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: String,
    /// HTTP listeners with `client_ca`: send the verified client
    /// certificate to the app in `x-forwarded-client-cert` (Envoy's
    /// format). A client's own such header is always removed.
    #[serde(default = "yes")]
    pub forward_client_cert: bool,
}

/// `listeners[i].tls.certificates[j]`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawSniCert {
    /// Server names this certificate is for: `api.example.com`, `*.example.com`.
    pub sni: Vec<String>,
    /// Certificate chain (PEM).
    pub cert: String,
    /// Its private key (PEM).
    pub key: String,
}

/// `listeners[i].tls.client_cert`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCert {
    /// The handshake fails without a valid client certificate.
    #[default]
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

/// `listeners[i].sni_routes[j]`: TCP listeners route by the ClientHello's SNI.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawSniRoute {
    /// Server names (exact or `*.suffix`).
    pub sni: Vec<String>,
    /// Cluster that connections for them go to.
    pub cluster: String,
}

/// `clusters[i].tls`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct RawClientTls {
    /// CA bundle (PEM) the endpoints' certificates must chain to; the
    /// system's roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Client certificate chain (PEM), for mTLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Server name sent and verified; the endpoint's host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The identity the endpoint's certificate must carry as a URI SAN
    /// (e.g. `spiffe://cluster.local/ns/db/sa/postgres`; `*` matches one
    /// path segment). When set, it is checked instead of the server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_identity: Option<String>,
    /// Oldest TLS version spoken: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
}

fn default_min_version() -> String {
    "1.2".into()
}

fn default_handshake_timeout() -> String {
    "10s".into()
}

fn yes() -> bool {
    true
}

/// Oldest TLS version a side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Config path of the certificate, for messages (`listeners[0].tls.cert`).
    pub at: String,
}

/// A validated `listeners[i].tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTlsConfig {
    /// Served when no SNI entry matches (none: such handshakes fail).
    pub default: Option<CertFiles>,
    /// Certificates by server name pattern, in config order.
    pub by_sni: Vec<(Vec<String>, CertFiles)>,
    /// CA bundle for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// A client may present no certificate.
    pub client_cert_optional: bool,
    /// Revocation lists.
    pub crls: Vec<PathBuf>,
    /// Oldest version accepted.
    pub min_version: TlsVersion,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Send `x-forwarded-client-cert` to the app.
    pub forward_client_cert: bool,
    /// Config path (`listeners[0].tls`).
    pub at: String,
}

impl ServerTlsConfig {
    /// Every file this config reads.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        let pairs = self.default.iter().chain(self.by_sni.iter().map(|(_, f)| f));
        pairs
            .flat_map(|f| [f.cert.as_path(), f.key.as_path()])
            .chain(self.client_ca.as_deref())
            .chain(self.crls.iter().map(PathBuf::as_path))
    }
}

/// A validated `clusters[i].tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTlsConfig {
    /// CA bundle (`None`: system roots).
    pub ca: Option<PathBuf>,
    /// Client certificate for mTLS.
    pub client: Option<CertFiles>,
    /// Server name to send and verify.
    pub sni: Option<String>,
    /// Identity pattern the server's URI SAN must match.
    pub verify_identity: Option<String>,
    /// Oldest version spoken.
    pub min_version: TlsVersion,
    /// Config path (`clusters[0].tls`).
    pub at: String,
}

impl ClientTlsConfig {
    /// Every file this config reads.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        let pair = self.client.iter().flat_map(|f| [f.cert.as_path(), f.key.as_path()]);
        self.ca.as_deref().into_iter().chain(pair)
    }
}

/// Validates `listeners[i].tls` (`at`), with file names relative to `base`.
pub(super) fn server(c: &mut Checker, at: &str, t: &RawServerTls, base: &Path) -> ServerTlsConfig {
    let default = pair(c, at, t.cert.as_deref(), t.key.as_deref(), base);
    if default.is_none() && t.certificates.is_empty() && t.cert.is_none() && t.key.is_none() {
        c.error(format!("{at}.cert"), "a TLS listener needs `cert` and `key`, or `certificates`");
    }
    let mut by_sni = Vec::new();
    for (j, s) in t.certificates.iter().enumerate() {
        let here = format!("{at}.certificates[{j}]");
        if s.sni.is_empty() {
            c.error(format!("{here}.sni"), "list at least one server name");
        }
        for (k, name) in s.sni.iter().enumerate() {
            if let Err(m) = check_server_name_pattern(name) {
                c.error(format!("{here}.sni[{k}]"), m);
            }
        }
        if let Some(files) = pair(c, &here, Some(&s.cert), Some(&s.key), base) {
            by_sni.push((s.sni.iter().map(|n| n.to_ascii_lowercase()).collect(), files));
        }
    }
    if t.client_ca.is_none() && t.client_cert != ClientCert::Required {
        c.error(format!("{at}.client_cert"), "needs `client_ca` to verify client certificates with");
    }
    if t.client_ca.is_none() && !t.crl.is_empty() {
        c.error(format!("{at}.crl"), "needs `client_ca`: revocation lists apply to client certificates");
    }
    ServerTlsConfig {
        default,
        by_sni,
        client_ca: t.client_ca.as_ref().map(|p| base.join(p)),
        client_cert_optional: t.client_cert == ClientCert::Optional,
        crls: t.crl.iter().map(|p| base.join(p)).collect(),
        min_version: version(c, &format!("{at}.min_version"), &t.min_version),
        handshake_timeout: c.positive_duration(format!("{at}.handshake_timeout"), &t.handshake_timeout),
        forward_client_cert: t.forward_client_cert,
        at: at.to_string(),
    }
}

/// Validates `clusters[i].tls` (`at`).
pub(super) fn client(c: &mut Checker, at: &str, t: &RawClientTls, base: &Path) -> ClientTlsConfig {
    if let Some(sni) = &t.sni
        && (sni.starts_with("*.") || check_server_name_pattern(sni).is_err())
        && sni.parse::<std::net::IpAddr>().is_err()
    {
        c.error(format!("{at}.sni"), format!("{sni:?} is not a DNS name or IP address"));
    }
    if let Some(id) = &t.verify_identity
        && let Err(m) = check_identity_pattern(id)
    {
        c.error(format!("{at}.verify_identity"), m);
    }
    ClientTlsConfig {
        ca: t.ca.as_ref().map(|p| base.join(p)),
        client: pair(c, at, t.cert.as_deref(), t.key.as_deref(), base),
        sni: t.sni.clone(),
        verify_identity: t.verify_identity.clone(),
        min_version: version(c, &format!("{at}.min_version"), &t.min_version),
        at: at.to_string(),
    }
}

fn pair(c: &mut Checker, at: &str, cert: Option<&str>, key: Option<&str>, base: &Path) -> Option<CertFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Some(CertFiles { cert: base.join(cert), key: base.join(key), at: format!("{at}.cert") })
        }
        (Some(_), None) => {
            c.error(format!("{at}.key"), "`cert` needs its `key`");
            None
        }
        (None, Some(_)) => {
            c.error(format!("{at}.cert"), "`key` needs its `cert`");
            None
        }
        (None, None) => None,
    }
}

fn version(c: &mut Checker, at: &str, text: &str) -> TlsVersion {
    match text {
        "1.2" => TlsVersion::V1_2,
        "1.3" => TlsVersion::V1_3,
        other => {
            c.error(at, format!("{other:?}: expected \"1.2\" or \"1.3\" (older versions are not spoken)"));
            TlsVersion::V1_2
        }
    }
}

/// A server name, or `*.` followed by one (as route hosts are written).
pub(super) fn check_server_name_pattern(name: &str) -> Result<(), String> {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a server name (e.g. api.example.com or *.example.com)"));
    }
    Ok(())
}

/// An identity pattern: a URI such as `spiffe://td/ns/*/sa/web` (where `*`
/// is a whole path segment) or a DNS name.
pub(super) fn check_identity_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("{p:?} is not an identity (e.g. spiffe://cluster.local/ns/app/sa/web)"));
    }
    if p.contains('*') && !p.split('/').all(|seg| seg == "*" || !seg.contains('*')) {
        return Err(format!("{p:?}: `*` must be a whole path segment, as in spiffe://td/ns/*/sa/web"));
    }
    Ok(())
}

/// Whether `identity` matches `pattern`: equal, with each `*` segment of
/// the pattern matching exactly one non-empty segment.
pub fn identity_matches(pattern: &str, identity: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == identity;
    }
    let (mut p, mut i) = (pattern.split('/'), identity.split('/'));
    loop {
        match (p.next(), i.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether `name` matches a host or server name pattern, ignoring ASCII
/// case: equal, or `*.suffix` with at least one label before the suffix.
/// Route hosts, SNI certificates and SNI routes all match this way.
pub fn server_name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let (name, suffix) = (name.as_bytes(), suffix.as_bytes());
            name.len() > suffix.len() + 1
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && name[name.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_patterns_match_whole_segments() {
        let p = "spiffe://cluster.local/ns/*/sa/frontend";
        assert!(identity_matches(p, "spiffe://cluster.local/ns/shop/sa/frontend"));
        assert!(!identity_matches(p, "spiffe://cluster.local/ns/shop/sa/frontend2"));
        assert!(!identity_matches(p, "spiffe://cluster.local/ns//sa/frontend"));
        assert!(!identity_matches(p, "spiffe://cluster.local/ns/a/b/sa/frontend"));
        assert!(identity_matches("spiffe://td/x", "spiffe://td/x"));
        assert!(check_identity_pattern("spiffe://td/ns/fr*nt").is_err());
        assert!(check_identity_pattern(p).is_ok());
    }

    #[test]
    fn server_names_match_suffixes_on_a_label_boundary() {
        assert!(server_name_matches("*.example.com", "a.example.com"));
        assert!(server_name_matches("*.example.com", "a.b.example.com"));
        assert!(!server_name_matches("*.example.com", "example.com"));
        assert!(!server_name_matches("*.example.com", "badexample.com"));
        assert!(server_name_matches("db.local", "db.local"));
        assert!(check_server_name_pattern("*.ex-ample.com").is_ok());
        assert!(check_server_name_pattern("a..b").is_err());
        assert!(check_server_name_pattern("a_b.com").is_err());
    }
}
