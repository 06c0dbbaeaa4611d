//! Certificate material read from PEM files (through rustls-pki-types'
//! `PemObject`): certificate chains with their keys, CA bundles and
//! revocation lists, each checked as an operator would want it checked
//! before it serves — readable, a key that matches its certificate, not
//! expired, not yet to come — with the error at its config path.

use crate::config::{CertFiles, ConfigError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What `/certs` shows about a loaded certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// The file it came from.
    pub file: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Subject alternative names (`URI:…`, `DNS:…`, `IP:…`).
    pub sans: Vec<String>,
    /// Serial number, hex.
    pub serial: String,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

/// A certificate chain with its key, ready to serve.
pub struct Pair {
    /// For rustls.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's details.
    pub leaf: CertInfo,
    /// The leaf's first URI SAN (its SPIFFE identity), for `By=` in `x-forwarded-client-cert`.
    pub uri: Option<String>,
}

fn error(at: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { path: at.to_string(), message: message.into() }
}

fn read(at: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| error(at, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(at: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(at, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(at, format!("{}: invalid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(at, format!("{}: no CERTIFICATE block", path.display())));
    }
    Ok(certs)
}

/// The revocation lists in a PEM file.
pub fn crls(at: &str, path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let bytes = read(at, path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(at, format!("{}: invalid PEM: {e}", path.display())))?;
    if crls.is_empty() {
        return Err(error(at, format!("{}: no X509 CRL block", path.display())));
    }
    Ok(crls)
}

/// A CA bundle as a root store, each root checked for validity.
pub fn roots(at: &str, path: &Path, now: i64) -> Result<(rustls::RootCertStore, Vec<CertInfo>), ConfigError> {
    let certs = certificates(at, path)?;
    let mut store = rustls::RootCertStore::empty();
    let mut infos = Vec::new();
    for der in certs {
        let info = describe(at, path, &der)?;
        valid_now(at, &info, now)?;
        store.add(der).map_err(|e| error(at, format!("{}: not a usable CA certificate: {e}", path.display())))?;
        infos.push(info);
    }
    Ok((store, infos))
}

/// A certificate chain and its key: the key must match the leaf, and the
/// leaf must be valid at `now` (Unix seconds).
pub fn pair(files: &CertFiles, provider: &CryptoProvider, now: i64) -> Result<Pair, ConfigError> {
    let at = files.at.as_str();
    let key_at = at.strip_suffix(".cert").map(|p| format!("{p}.key")).unwrap_or_else(|| at.to_string());
    let chain = certificates(at, &files.cert)?;
    let key_bytes = read(&key_at, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        error(&key_at, format!("{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}", files.key.display()))
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| error(&key_at, format!("{}: unsupported private key: {e}", files.key.display())))?;
    let leaf = describe(at, &files.cert, &chain[0])?;
    let uri = leaf.sans.iter().find_map(|s| s.strip_prefix("URI:")).map(str::to_string);
    let certified = CertifiedKey::new(chain, signer);
    if certified.keys_match().is_err() {
        return Err(error(
            &key_at,
            format!("{} does not match the certificate in {}", files.key.display(), files.cert.display()),
        ));
    }
    valid_now(at, &leaf, now)?;
    Ok(Pair { certified: Arc::new(certified), leaf, uri })
}

fn valid_now(at: &str, info: &CertInfo, now: i64) -> Result<(), ConfigError> {
    if now > info.not_after {
        return Err(error(
            at,
            format!("{}: certificate {:?} expired on {}", info.file, info.subject, date(info.not_after)),
        ));
    }
    if now < info.not_before {
        let when = date(info.not_before);
        return Err(error(at, format!("{}: certificate {:?} is not valid until {when}", info.file, info.subject)));
    }
    Ok(())
}

/// Details of one DER certificate.
pub fn describe(at: &str, path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, ConfigError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| error(at, format!("{}: not an X.509 certificate: {e}", path.display())))?;
    Ok(CertInfo {
        file: path.display().to_string(),
        subject: cert.subject().to_string(),
        sans: sans(&cert).map(|(kind, v)| format!("{kind}:{v}")).collect(),
        serial: cert.tbs_certificate.serial.to_str_radix(16),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256: hex(&Sha256::digest(der.as_ref())),
    })
}

/// The URI, DNS and IP subject alternative names of a certificate.
pub fn sans<'a>(cert: &'a X509Certificate<'_>) -> impl Iterator<Item = (&'static str, String)> + 'a {
    let names = cert.subject_alternative_name().ok().flatten().map(|ext| &ext.value.general_names);
    names.into_iter().flatten().filter_map(|n| match n {
        GeneralName::URI(u) => Some(("URI", u.to_string())),
        GeneralName::DNSName(d) => Some(("DNS", d.to_string())),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => Some(("IP", std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string())),
            16 => Some(("IP", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string())),
            _ => None,
        },
        _ => None,
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A Unix time as an RFC 3339 date.
fn date(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
