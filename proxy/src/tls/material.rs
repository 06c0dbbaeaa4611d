//! TLS material that serves until its files change: a listener's or a
//! cluster's certificates, built from files and rebuilt when their content
//! changes ([`Material::refresh`]). New handshakes use the new material,
//! established connections keep theirs, and files that do not load leave
//! the serving material in place (logged and counted, and not tried again
//! until they change once more).

use super::pem::{self, CertInfo};
use super::{Loaded, TlsMetrics, fingerprint};
use crate::config::ConfigError;
use arc_swap::{ArcSwap, Guard};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a listener or cluster builds from its files.
pub trait Built: Send + Sync + 'static {
    /// The certificates it loaded and the fingerprint of the files.
    fn loaded(&self) -> &Loaded;
}

/// Builds from the files whose fingerprint is given.
type Build<B> = Box<dyn Fn([u8; 32]) -> Result<B, Vec<ConfigError>> + Send + Sync>;

/// A listener's or a cluster's serving TLS material and how to rebuild it.
pub struct Material<B> {
    /// `listener` or `cluster`.
    scope: &'static str,
    name: Arc<str>,
    files: Vec<PathBuf>,
    build: Build<B>,
    current: ArcSwap<B>,
    /// Fingerprint of files that failed to load.
    rejected: Mutex<Option<[u8; 32]>>,
    metrics: Arc<TlsMetrics>,
}

impl<B: Built> Material<B> {
    /// Builds `scope` `name`'s material from `files` with `build`.
    pub fn load(
        scope: &'static str,
        name: &str,
        files: Vec<PathBuf>,
        metrics: &Arc<TlsMetrics>,
        build: Build<B>,
    ) -> Result<Arc<Self>, Vec<ConfigError>> {
        let built = build(fingerprint(files.iter().map(PathBuf::as_path)))?;
        Ok(Arc::new(Material {
            scope,
            name: name.into(),
            files,
            build,
            current: ArcSwap::from_pointee(built),
            rejected: Mutex::default(),
            metrics: metrics.clone(),
        }))
    }

    /// The material serving now.
    pub fn current(&self) -> Guard<Arc<B>> {
        self.current.load()
    }
}

/// What the live config does with any TLS material: refresh it, watch its
/// files, report its certificates.
pub trait Reloadable: Send + Sync {
    /// Rebuilds it if its files' content changed.
    fn refresh(&self);
    /// Its files, to watch.
    fn files(&self) -> &[PathBuf];
    /// Its certificates, for `/certs`.
    fn report(&self) -> Vec<CertReport>;
    /// Puts its certificates on the expiry gauge (`on`), or takes them off.
    fn publish(&self, on: bool);
}

impl<B: Built> Reloadable for Material<B> {
    fn refresh(&self) {
        let serving = self.current.load();
        let print = fingerprint(self.files.iter().map(PathBuf::as_path));
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        // Unchanged, or the same content that failed already: not tried (nor counted) again.
        if print == serving.loaded().fingerprint || *rejected == Some(print) {
            return;
        }
        let labels = [self.scope, &*self.name];
        match (self.build)(print) {
            Ok(built) => {
                self.metrics.rotated(labels, serving.loaded(), built.loaded());
                tracing::info!(scope = self.scope, name = %self.name, "TLS material reloaded; new handshakes use it");
                self.current.store(Arc::new(built));
            }
            Err(errors) => {
                *rejected = Some(print);
                self.metrics.rejected(labels, &errors);
            }
        }
    }

    fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn report(&self) -> Vec<CertReport> {
        let now = pem::now();
        let report = |(role, cert): &(&'static str, CertInfo)| CertReport {
            scope: self.scope,
            name: self.name.to_string(),
            role,
            expires_in_seconds: cert.not_after - now,
            cert: cert.clone(),
        };
        self.current.load().loaded().certs.iter().map(report).collect()
    }

    fn publish(&self, on: bool) {
        let labels = [self.scope, &*self.name];
        let serving = self.current.load();
        match on {
            true => self.metrics.publish(labels, serving.loaded()),
            false => self.metrics.unpublish(labels, serving.loaded()),
        }
    }
}

/// One certificate as `/certs` shows it.
#[derive(serde::Serialize)]
pub struct CertReport {
    /// `listener` or `cluster`.
    pub scope: &'static str,
    /// Its name.
    pub name: String,
    /// `server`, `client_ca`, `client` or `ca`.
    pub role: &'static str,
    /// Seconds until `not_after` (negative once expired).
    pub expires_in_seconds: i64,
    /// The certificate.
    #[serde(flatten)]
    pub cert: CertInfo,
}
