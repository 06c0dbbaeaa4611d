//! Every configured filter's serving version, swapped atomically when its
//! module file changes. A request takes the current version of each filter
//! of its route when it starts and keeps it to the end, so every request is
//! handled entirely by one version; a new version is compiled, linked and
//! initialised off the request path before it is swapped in, and a bad file
//! keeps the previous version serving. A filter that a listener uses as a
//! connection filter must export `on-connection`, at load and in every new
//! version.

use super::kv::Kv;
use super::loaded::{Failure, LoadedFilter};
use super::runtime::Runtime;
use crate::config::{Config, ConfigError, FilterConfig};
use crate::metrics::Metrics;
use crate::upstream::Cluster;
use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::Component;

/// What loading a filter needs besides its config.
pub struct LoadContext {
    /// The engine and linker.
    pub runtime: Runtime,
    /// Where filter metrics go.
    pub metrics: Arc<Metrics>,
    /// Clusters filters may call, by name.
    pub clusters: HashMap<String, Arc<Cluster>>,
}

/// One configured filter: its serving version and its reload history.
pub struct Versioned {
    /// Name from the config.
    pub name: Arc<str>,
    config: FilterConfig,
    current: ArcSwap<LoadedFilter>,
    /// Kept across versions: rate-limit buckets and caches survive a reload.
    kv: Arc<Kv>,
    status: Mutex<Status>,
    /// A listener of the config being served (or last prepared) uses it as
    /// a connection filter: a new version without `on-connection` is refused.
    connection_hook_required: AtomicBool,
}

/// What `/filters` shows about a filter.
#[derive(Clone, Serialize)]
pub struct Status {
    name: String,
    module: String,
    sha256: String,
    generation: u64,
    /// The `wasp:filter` version the serving component was built for.
    abi: &'static str,
    /// When the serving version was loaded (RFC 3339).
    loaded_at: String,
    /// Why the last reload failed, until one succeeds.
    last_error: Option<String>,
    /// Content hash of the file that last failed to load, so it is not retried until it changes.
    #[serde(skip)]
    failed_sha256: Option<String>,
    /// Whether the module file was found missing (logged once).
    #[serde(skip)]
    missing: bool,
}

/// All configured filters.
pub struct Registry {
    ctx: LoadContext,
    filters: Vec<Arc<Versioned>>,
}

impl Versioned {
    /// The version serving now; a request keeps the one it got.
    pub fn current(&self) -> Arc<LoadedFilter> {
        self.current.load_full()
    }

    /// Why `loaded` cannot serve as this filter's connection filter, if it cannot.
    fn lacks_connection_hook(&self, loaded: &LoadedFilter) -> Option<String> {
        (!loaded.has_connection_hook()).then(|| {
            format!(
                "filter {:?} has no on-connection export (its component was built without the connection hook), \
                 so it cannot be a connection filter; rebuild it with a current wasp-sdk or list it only on routes",
                &*self.name
            )
        })
    }
}

impl Registry {
    /// Loads every filter in `config` (`None` when it has none: no engine is
    /// started); all failures are reported, each at its config path
    /// (`filters[0].module: ...`). `runtime` is the process's engine, started
    /// here the first time a config has filters.
    ///
    /// On a config reload `previous` is the serving registry: a filter whose
    /// entry and granted clusters are unchanged is kept as it is; a changed
    /// one gets a new version (generation + 1, same key-value store), and if
    /// that fails the error is also recorded on the serving filter.
    pub fn load(
        config: &Config,
        metrics: &Arc<Metrics>,
        clusters: &HashMap<String, Arc<Cluster>>,
        runtime: &mut Option<Runtime>,
        previous: Option<&Registry>,
    ) -> Result<Option<Arc<Registry>>, Vec<ConfigError>> {
        if config.filters.is_empty() {
            return Ok(None);
        }
        let runtime = match runtime {
            Some(r) => r.clone(),
            None => runtime
                .insert(
                    Runtime::new(
                        config.filter_instances,
                        config.filters.iter().map(|f| f.memory).max().unwrap_or_default(),
                        config.filter_cache.as_deref(),
                        config.filter_compile_timeout,
                    )
                    .map_err(|message| vec![ConfigError { path: "filters".into(), message }])?,
                )
                .clone(),
        };
        let ctx = LoadContext { runtime, metrics: metrics.clone(), clusters: clusters.clone() };
        let (mut filters, mut errors) = (Vec::new(), Vec::new());
        // A new version of a filter whose module did not change reuses its compiled code.
        let mut compiled: HashMap<String, Component> = previous
            .iter()
            .flat_map(|r| &r.filters)
            .map(|f| (lock(&f.status).sha256.clone(), f.current().component().clone()))
            .collect();
        for (i, cfg) in config.filters.iter().enumerate() {
            if cfg.memory > ctx.runtime.max_memory {
                let message = format!(
                    "{} MiB is more than the {} MiB per instance this process reserved at start (the largest \
                     limits.memory of the config it started with); restart wasp to raise it",
                    cfg.memory.div_ceil(1 << 20),
                    ctx.runtime.max_memory >> 20
                );
                errors.push(ConfigError { path: format!("filters[{i}].limits.memory"), message });
                continue;
            }
            let before = previous.and_then(|r| r.get(&cfg.name));
            if let (Some(r), Some(f)) = (previous, &before)
                && f.config == *cfg
                && cfg.http_clusters.iter().all(|c| same(r.ctx.clusters.get(c), clusters.get(c)))
            {
                filters.push(f.clone());
                continue;
            }
            let kv = before.as_ref().map_or_else(|| Arc::new(Kv::default()), |f| f.kv.clone());
            let generation = before.as_ref().map_or(1, |f| lock(&f.status).generation + 1);
            let file = read(cfg).map_err(|e| format!("cannot read {}: {e}", cfg.module_name));
            let loaded = file.and_then(|(bytes, sha)| {
                let f = LoadedFilter::load(&ctx, cfg, (&bytes, &sha), kv.clone(), generation, &mut compiled)?;
                Ok((f, sha))
            });
            match loaded {
                Ok((f, sha256)) => {
                    let status = Status {
                        name: cfg.name.clone(),
                        module: cfg.module.display().to_string(),
                        sha256,
                        generation,
                        abi: f.wit_version(),
                        loaded_at: crate::access_log::timestamp(),
                        last_error: None,
                        failed_sha256: None,
                        missing: false,
                    };
                    filters.push(Arc::new(Versioned {
                        name: cfg.name.as_str().into(),
                        config: cfg.clone(),
                        current: ArcSwap::from_pointee(f),
                        kv,
                        status: Mutex::new(status),
                        connection_hook_required: AtomicBool::new(false),
                    }));
                }
                Err(message) => {
                    if let Some(f) = before {
                        lock(&f.status).last_error = Some(message.clone());
                        metrics.filter_reloads.with_label_values(&[&cfg.name, "error"]).inc();
                    }
                    errors.push(ConfigError { path: format!("filters[{i}].module"), message })
                }
            }
        }
        let registry = Registry { ctx, filters };
        errors.extend(registry.check_connection_filters(config));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Arc::new(registry)))
    }

    /// Updates the filter metrics once `next` serves instead of `previous`:
    /// generations of new versions, reloads counted, series of removed
    /// filters dropped.
    pub fn publish(next: Option<&Registry>, previous: Option<&Registry>, metrics: &Metrics) {
        let before = |name: &str| previous.and_then(|r| r.get(name));
        for f in next.iter().flat_map(|r| &r.filters) {
            let old = before(&f.name);
            if old.as_ref().is_some_and(|o| Arc::ptr_eq(o, f)) {
                continue;
            }
            metrics.filter_generation.with_label_values(&[&f.name]).set(lock(&f.status).generation as i64);
            if old.is_some() {
                metrics.filter_reloads.with_label_values(&[&f.name, "ok"]).inc();
            }
            // Series that alerts watch exist at 0 from the filter's load on.
            for result in ["ok", "error"] {
                metrics.filter_reloads.with_label_values(&[&f.name, result]);
            }
            for failure in Failure::ALL {
                metrics.filter_errors.with_label_values(&[&f.name, failure.label()]);
            }
        }
        for gone in previous.iter().flat_map(|r| &r.filters).filter(|f| next.and_then(|n| n.get(&f.name)).is_none()) {
            let _ = metrics.filter_generation.remove_label_values(&[&gone.name]);
        }
    }

    /// Checks that every filter listed in a listener's `connection_filters`
    /// exports `on-connection`, and marks it as needing the export in its
    /// later versions. Filters that failed to load are left out (their
    /// error is reported already).
    fn check_connection_filters(&self, config: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for f in &self.filters {
            f.connection_hook_required.store(false, Ordering::Relaxed);
        }
        for (i, l) in config.listeners.iter().enumerate() {
            for (k, name) in l.connection_filters.iter().enumerate() {
                let Some(f) = self.get(name) else { continue };
                f.connection_hook_required.store(true, Ordering::Relaxed);
                if let Some(message) = f.lacks_connection_hook(&f.current()) {
                    errors.push(ConfigError { path: format!("listeners[{i}].connection_filters[{k}]"), message });
                }
            }
        }
        errors
    }

    /// The filter named `name` (validated configs name only existing ones).
    pub fn get(&self, name: &str) -> Option<Arc<Versioned>> {
        self.filters.iter().find(|f| &*f.name == name).cloned()
    }

    /// The module files, to watch.
    pub fn modules(&self) -> impl Iterator<Item = &Path> {
        self.filters.iter().map(|f| f.config.module.as_path())
    }

    /// Every filter's state, for `/filters`.
    pub fn statuses(&self) -> Vec<Status> {
        self.filters.iter().map(|f| lock(&f.status).clone()).collect()
    }

    /// Reloads every filter whose module file changed since its version was
    /// loaded. Blocking: compiles. A file that fails keeps the serving
    /// version and is not tried again until its content changes.
    pub fn refresh(&self) {
        let mut compiled = HashMap::new();
        for f in &self.filters {
            self.refresh_one(f, &mut compiled);
        }
    }

    fn refresh_one(&self, f: &Versioned, compiled: &mut HashMap<String, Component>) {
        let name = &*f.name;
        let (bytes, sha) = match read(&f.config) {
            Ok(file) => file,
            Err(e) => {
                let mut st = lock(&f.status);
                if !st.missing {
                    st.missing = true;
                    tracing::warn!(filter = name, module = %f.config.module.display(), error = %e,
                        generation = st.generation, "filter module unreadable; the loaded version keeps serving");
                }
                return;
            }
        };
        let generation = {
            let mut st = lock(&f.status);
            st.missing = false;
            if st.sha256 == sha || st.failed_sha256.as_deref() == Some(sha.as_str()) {
                return;
            }
            st.generation + 1
        };
        let metrics = &self.ctx.metrics;
        let loaded = LoadedFilter::load(&self.ctx, &f.config, (&bytes, &sha), f.kv.clone(), generation, compiled)
            .and_then(|loaded| match f.connection_hook_required.load(Ordering::Relaxed) {
                true => f.lacks_connection_hook(&loaded).map_or(Ok(loaded), Err),
                false => Ok(loaded),
            });
        match loaded {
            Ok(loaded) => {
                let abi = loaded.wit_version();
                f.current.store(Arc::new(loaded));
                let mut st = lock(&f.status);
                st.abi = abi;
                (st.sha256, st.generation, st.loaded_at) = (sha, generation, crate::access_log::timestamp());
                (st.last_error, st.failed_sha256) = (None, None);
                metrics.filter_reloads.with_label_values(&[name, "ok"]).inc();
                metrics.filter_generation.with_label_values(&[name]).set(generation as i64);
                tracing::info!(filter = name, generation, sha256 = %st.sha256, "filter reloaded");
            }
            Err(e) => {
                let mut st = lock(&f.status);
                tracing::warn!(filter = name, error = %e, serving = st.generation,
                    "filter reload failed; the previous version keeps serving");
                (st.last_error, st.failed_sha256) = (Some(e), Some(sha));
                metrics.filter_reloads.with_label_values(&[name, "error"]).inc();
            }
        }
    }
}

/// Whether two cluster lookups found the same cluster object.
fn same(a: Option<&Arc<Cluster>>, b: Option<&Arc<Cluster>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Reads a filter's module file and its SHA-256 (hex).
fn read(cfg: &FilterConfig) -> std::io::Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(&cfg.module)?;
    let sha = sha256_hex(&bytes);
    Ok((bytes, sha))
}

/// SHA-256 of `bytes`, in hex: how wasp tells whether a file changed.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn lock(m: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
