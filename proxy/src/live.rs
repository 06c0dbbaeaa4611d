//! The serving configuration and its replacement. A config is built whole
//! beside the serving one: clusters (an unchanged cluster keeps its pools,
//! balancer and breakers), filters (an unchanged filter keeps its version; a
//! changed one is compiled and initialised with its new config), routes, and
//! the sockets of new listeners. Only when all of it is ready is it swapped
//! in: listeners that stay keep their socket and their connections and take
//! the new routes and limits, listeners that are gone stop accepting and
//! drain, new ones start. Anything wrong (an invalid file, a filter that
//! rejects its config, an address that cannot be bound) keeps the serving
//! config, and every error is logged.

use crate::access_log::AccessLog;
use crate::config::{self, Config, ConfigError, ConfigErrors, ListenerConfig, ListenerKind};
use crate::edge::Edge;
use crate::filter::registry::sha256_hex;
use crate::filter::{Chain, ConnectionFilters, Registry, Runtime};
use crate::handler::{Handler, HttpListener};
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::route::{Route, Router};
use crate::tcp::{TcpProxy, TcpRoutes};
use crate::tls::{ClientTls, Reloadable, ServerTls};
use crate::upstream::Cluster;
use crate::watch::folder;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One config generation, as the admin endpoints and new requests see it.
pub struct Snapshot {
    /// 1 at start, +1 per reload.
    pub generation: u64,
    /// The config.
    pub config: Config,
    /// The effective config, rendered for `/config`.
    pub config_json: Bytes,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// The filters, if any are configured.
    pub filters: Option<Arc<Registry>>,
    /// Every listener's and cluster's TLS material.
    pub tls: Materials,
}

/// Listeners' and clusters' TLS material.
pub type Materials = Vec<Arc<dyn Reloadable>>;

/// The running proxy's configuration: the serving [`Snapshot`] and what it
/// takes to replace it.
pub struct Live {
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    tracker: TaskTracker,
    drain: CancellationToken,
    path: Option<PathBuf>,
    current: ArcSwap<Snapshot>,
    /// Held by whoever is changing the configuration.
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The filter engine, started when a config first has filters.
    runtime: Option<Runtime>,
    listeners: Vec<Bound>,
    /// SHA-256 of the config file serving.
    sha256: String,
    /// SHA-256 of the content that last failed validation, not tried again until it changes.
    failed_sha256: Option<String>,
    /// Module files of a valid config that could not be applied (one not
    /// there yet, say): watched, so that the config is tried again when they change.
    pending: Vec<PathBuf>,
    /// The file was found missing (logged once).
    missing: bool,
}

/// A listener that is accepting.
struct Bound {
    /// As configured (port 0 stays 0).
    address: SocketAddr,
    socket: Arc<TcpListener>,
    listener: Arc<Listener>,
    accept: JoinHandle<()>,
}

/// A listener of a config being prepared.
struct Next {
    name: String,
    address: SocketAddr,
    handler: Handler,
    max_connections: usize,
    socket: Socket,
}

/// Where a prepared listener will accept.
enum Socket {
    /// It is serving listener number N, updated in place.
    Kept(usize),
    /// A new listener on this socket (new, or taken over from a listener that goes).
    New(Arc<TcpListener>),
}

impl Live {
    /// Builds `config` and starts serving it; `file` is where it came from,
    /// watched for changes (`None` for the embedded demo).
    pub async fn start(
        config: Config,
        file: Option<ConfigFile>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
        tracker: TaskTracker,
        drain: CancellationToken,
    ) -> Result<Arc<Live>, ConfigErrors> {
        let mut state = State::default();
        let path = file.map(|f| {
            state.sha256 = f.sha256;
            f.path
        });
        let (snapshot, next) = prepare(&metrics, &access_log, &tracker, &mut state, config, None).await?;
        let live = Arc::new(Live {
            metrics,
            access_log,
            tracker,
            drain,
            path,
            current: ArcSwap::from_pointee(snapshot),
            state: tokio::sync::Mutex::new(state),
        });
        live.commit(&mut *live.state.lock().await, next).await;
        publish(&live.current(), None, &live.metrics);
        live.metrics.config_generation.set(1);
        for result in ["ok", "error"] {
            live.metrics.config_reloads.with_label_values(&[result]);
        }
        Ok(live)
    }

    /// Waits until every listener has stopped accepting (after the drain began).
    pub async fn stopped(&self) {
        let mut state = self.state.lock().await;
        for b in state.listeners.drain(..) {
            b.listener.stop();
            let _ = b.accept.await;
        }
    }

    /// The configuration serving now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The files to watch: the config file, the filter modules, and those
    /// of a config waiting to be applied.
    pub async fn watched_files(&self) -> Vec<PathBuf> {
        let pending = self.state.lock().await.pending.clone();
        let current = self.current();
        let modules = current.filters.iter().flat_map(|r| r.modules().map(Path::to_path_buf));
        let tls = current.tls.iter().flat_map(|t| t.files().iter().cloned());
        self.path.iter().cloned().chain(modules).chain(tls).chain(pending).collect()
    }

    /// Applies what changed on disk: the config file if its content changed,
    /// then every filter module and TLS file whose content changed.
    pub async fn reload(&self) {
        let mut state = self.state.lock().await;
        if self.drain.is_cancelled() {
            return;
        }
        if let Some(path) = &self.path {
            self.reload_config(&mut state, path).await;
        }
        for tls in &self.current().tls {
            tls.refresh();
        }
        if let Some(registry) = self.current().filters.clone()
            && let Err(e) = tokio::task::spawn_blocking(move || registry.refresh()).await
        {
            tracing::error!(error = %e, "filter reload task failed");
        }
    }

    async fn reload_config(&self, state: &mut State, path: &Path) {
        let (parsed, sha) = match read(path) {
            Ok((config, file)) => (Ok(config), file.sha256),
            Err(Unread::Io(e)) => {
                if !state.missing {
                    state.missing = true;
                    self.metrics.config_reloads.with_label_values(&["error"]).inc();
                    tracing::warn!(config = %path.display(), error = %e, "config file unreadable; the serving config stays");
                }
                return;
            }
            Err(Unread::Invalid(errors, sha)) => (Err(errors), sha),
        };
        state.missing = false;
        if sha == state.sha256 || state.failed_sha256.as_deref() == Some(sha.as_str()) {
            return;
        }
        let serving = self.current();
        let mut config = match parsed {
            Ok(config) => config,
            Err(errors) => {
                // Not read again until it changes.
                state.failed_sha256 = Some(sha);
                return self.rejected(path, &errors, &serving);
            }
        };
        keep_restart_only(&mut config, &serving.config);
        // A valid config that cannot be applied (yet) is tried again when a
        // file it names changes, or on SIGHUP.
        state.pending = config.filters.iter().map(|f| f.module.clone()).collect();
        let (m, log, t) = (&self.metrics, &self.access_log, &self.tracker);
        let (mut snapshot, next) = match prepare(m, log, t, state, config, Some(&serving)).await {
            Ok(prepared) => prepared,
            Err(errors) => return self.rejected(path, &errors, &serving),
        };
        let generation = serving.generation + 1;
        snapshot.generation = generation;
        self.current.store(Arc::new(snapshot));
        self.commit(state, next).await;
        publish(&self.current(), Some(&serving), &self.metrics);
        (state.sha256, state.failed_sha256, state.pending) = (sha, None, Vec::new());
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        self.metrics.config_generation.set(generation as i64);
        tracing::info!(config = %path.display(), generation, sha256 = %state.sha256, "config reloaded");
    }

    /// Logs every error of a config that will not serve, and counts it.
    fn rejected(&self, path: &Path, errors: &ConfigErrors, serving: &Snapshot) {
        for e in &errors.0 {
            tracing::warn!(config = %path.display(), path = %e.path, error = %e.message, "invalid config");
        }
        tracing::warn!(config = %path.display(), errors = errors.0.len(), serving = serving.generation,
            "config reload failed; the serving config stays");
        self.metrics.config_reloads.with_label_values(&["error"]).inc();
    }

    /// Puts prepared listeners to work: kept ones are updated in place, the
    /// ones no longer wanted stop (before a new one may take over their
    /// socket), new ones start accepting.
    async fn commit(&self, state: &mut State, next: Vec<Next>) {
        let mut old: Vec<Option<Bound>> = std::mem::take(&mut state.listeners).into_iter().map(Some).collect();
        let kept: Vec<usize> = next
            .iter()
            .filter_map(|n| match n.socket {
                Socket::Kept(i) => Some(i),
                Socket::New(_) => None,
            })
            .collect();
        for (i, slot) in old.iter_mut().enumerate() {
            if !kept.contains(&i)
                && let Some(gone) = slot.take()
            {
                gone.listener.stop();
                let _ = gone.accept.await;
                tracing::info!(listener = %gone.listener.name, address = %gone.address, "listener removed; draining its connections");
                let deadline = self.current().config.drain_timeout;
                tokio::spawn(async move { gone.listener.remove(deadline).await });
            }
        }
        for n in next {
            let bound = match n.socket {
                Socket::Kept(i) => {
                    let Some(b) = old[i].take() else { continue };
                    b.listener.update(n.handler, n.max_connections);
                    b
                }
                Socket::New(socket) => {
                    let listener = Listener::new(&n.name, n.handler, n.max_connections, &self.drain, &self.metrics);
                    let accept = tokio::spawn(listener.clone().accept(socket.clone(), self.tracker.clone()));
                    let protocol = if listener.http().is_some() { "http" } else { "tcp" };
                    let address = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    tracing::info!(listener = %n.name, %address, protocol, "listening");
                    Bound { address: n.address, socket, listener, accept }
                }
            };
            state.listeners.push(bound);
        }
    }
}

/// A config file as read.
pub struct ConfigFile {
    /// Where it is.
    pub path: PathBuf,
    /// SHA-256 of its content, to tell whether it changed.
    pub sha256: String,
}

/// Why a config file gave no config.
pub enum Unread {
    /// It could not be read.
    Io(std::io::Error),
    /// Its content (of this SHA-256) is not a valid config.
    Invalid(ConfigErrors, String),
}

impl Unread {
    /// The errors to report for the file at `path`.
    pub fn into_errors(self, path: &Path) -> ConfigErrors {
        match self {
            Unread::Io(e) => ConfigErrors(vec![ConfigError {
                path: path.display().to_string(),
                message: format!("cannot read config file: {e}"),
            }]),
            Unread::Invalid(errors, _) => errors,
        }
    }
}

/// Reads and validates the config file at `path`.
pub fn read(path: &Path) -> Result<(Config, ConfigFile), Unread> {
    let bytes = std::fs::read(path).map_err(Unread::Io)?;
    let sha256 = sha256_hex(&bytes);
    let parsed = String::from_utf8(bytes)
        .map_err(|_| {
            ConfigErrors(vec![ConfigError { path: path.display().to_string(), message: "not UTF-8 text".into() }])
        })
        .and_then(|text| config::parse(&text, &folder(path)));
    match parsed {
        Ok(config) => Ok((config, ConfigFile { path: path.to_path_buf(), sha256 })),
        Err(errors) => Err(Unread::Invalid(errors, sha256)),
    }
}

/// Builds everything `config` needs beside the serving `previous`, without
/// touching what serves: the snapshot and the listeners to put to work.
async fn prepare(
    metrics: &Arc<Metrics>,
    access_log: &AccessLog,
    tracker: &TaskTracker,
    state: &mut State,
    config: Config,
    previous: Option<&Snapshot>,
) -> Result<(Snapshot, Vec<Next>), ConfigErrors> {
    let (clusters, mut tls, tls_errors) = match clusters(&config, metrics, previous) {
        Ok((c, t)) => (c, t, Vec::new()),
        Err(e) => (HashMap::new(), Vec::new(), e),
    };
    if !tls_errors.is_empty() {
        return Err(ConfigErrors(tls_errors));
    }

    // Compiling and initialising filters blocks: do it off the runtime's threads.
    let (metrics2, clusters2) = (metrics.clone(), clusters.clone());
    let before = previous.and_then(|p| p.filters.clone());
    let mut runtime = state.runtime.clone();
    let (config, runtime, filters) = tokio::task::spawn_blocking(move || {
        let filters = Registry::load(&config, &metrics2, &clusters2, &mut runtime, before.as_deref());
        (config, runtime, filters)
    })
    .await
    .map_err(|e| ConfigErrors(vec![ConfigError { path: "filters".into(), message: format!("loading failed: {e}") }]))?;
    state.runtime = runtime;
    // Every error is reported: the listeners' too when the filters failed.
    let (filters, mut errors) = match filters {
        Ok(f) => (f, Vec::new()),
        Err(errors) => (None, errors),
    };

    let mut next = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        // A listener is kept when its name, address and protocol stay; one
        // switching protocol is replaced (its connections drain) on the same socket.
        let http = matches!(l.kind, ListenerKind::Http(_));
        let same_name = state
            .listeners
            .iter()
            .position(|b| *b.listener.name == l.name && b.address == l.address && b.listener.http().is_some() == http);
        let same_address = state.listeners.iter().find(|b| b.address == l.address && l.address.port() != 0);
        let socket = match (same_name, same_address) {
            (Some(i), _) => Socket::Kept(i),
            (None, Some(b)) => Socket::New(b.socket.clone()),
            (None, None) => match crate::listener::bind(l.address) {
                Ok(s) => Socket::New(Arc::new(s)),
                Err(e) => {
                    let message = format!("cannot bind {}: {e}", l.address);
                    errors.push(ConfigError { path: format!("listeners[{i}].address"), message });
                    continue;
                }
            },
        };
        let terminate = match &l.tls {
            None => None,
            Some(cfg) => {
                let alpn: &[&[u8]] = if http { &crate::tls::server::HTTP_ALPN } else { &[] };
                match ServerTls::load(&l.name, cfg, alpn, &metrics.tls) {
                    Ok(t) => {
                        tls.push(t.material());
                        Some(t)
                    }
                    Err(e) => {
                        errors.extend(e);
                        continue;
                    }
                }
            }
        };
        if !errors.is_empty() {
            continue;
        }
        let handler = handler(l, &clusters, filters.as_ref(), metrics, access_log, tracker, terminate);
        let (name, address, max_connections) = (l.name.clone(), l.address, l.limits.max_connections);
        next.push(Next { name, address, handler, max_connections, socket });
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let config_json = config::effective_json(&config.raw).into();
    Ok((Snapshot { generation: 1, config, config_json, clusters, filters, tls }, next))
}

/// Clusters by name.
pub type Clusters = HashMap<String, Arc<Cluster>>;

/// The clusters of `config` by name, with their TLS material; one
/// unchanged from `previous` is kept (its pools, balancer, breakers and TLS).
pub fn clusters(
    config: &Config,
    metrics: &Metrics,
    previous: Option<&Snapshot>,
) -> Result<(Clusters, Materials), Vec<ConfigError>> {
    let (mut clusters, mut tls, mut errors) = (HashMap::new(), Vec::new(), Vec::new());
    for c in &config.clusters {
        let same = previous.and_then(|p| {
            let before = p.config.clusters.iter().find(|b| b.name == c.name)?;
            (before == c).then(|| p.clusters.get(&c.name).cloned())?
        });
        let cluster = match same {
            Some(kept) => kept,
            None => {
                let origination = match &c.tls {
                    None => None,
                    Some(t) => match ClientTls::load(&c.name, t, Cluster::alpn(c.protocol), &metrics.tls) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            errors.extend(e);
                            continue;
                        }
                    },
                };
                Arc::new(Cluster::new(c, metrics, origination))
            }
        };
        if let Some(t) = cluster.tls() {
            tls.push(t.material());
        }
        clusters.insert(c.name.clone(), cluster);
    }
    if errors.is_empty() { Ok((clusters, tls)) } else { Err(errors) }
}

/// A listener's handler: its routes (with their clusters and filter chains) or its TCP cluster.
fn handler(
    l: &ListenerConfig,
    clusters: &HashMap<String, Arc<Cluster>>,
    filters: Option<&Arc<Registry>>,
    metrics: &Metrics,
    access_log: &AccessLog,
    tracker: &TaskTracker,
    tls: Option<Arc<ServerTls>>,
) -> Handler {
    let connection_filters = filters.filter(|_| !l.connection_filters.is_empty()).map(|registry| {
        Arc::new(ConnectionFilters::new(l.connection_filters.iter().filter_map(|f| registry.get(f)).collect()))
    });
    match &l.kind {
        ListenerKind::Http(routes) => {
            let routes = routes
                .iter()
                .map(|r| {
                    let cluster = clusters[r.cluster.as_str()].clone();
                    let chain = filters
                        .filter(|_| !r.filters.is_empty())
                        .map(|registry| Chain::new(r.filters.iter().filter_map(|f| registry.get(f)).collect()));
                    Arc::new(Route::new(r, cluster, metrics.route(&l.name, &r.name, &r.cluster), chain))
                })
                .collect();
            Handler::Http(Arc::new(HttpListener::new(
                &l.name,
                Router::new(routes),
                l.limits.clone(),
                l.http.clone(),
                metrics.connection_ends(&l.name),
                access_log.clone(),
                metrics.no_route(&l.name),
                tracker.clone(),
                Edge { tls, connection_filters, original_destination: l.original_destination },
            )))
        }
        ListenerKind::Tcp(routes) => Handler::Tcp(Arc::new(TcpProxy {
            name: l.name.as_str().into(),
            routes: TcpRoutes::new(routes, clusters),
            edge: Edge { tls, connection_filters, original_destination: l.original_destination },
            tls_errors: metrics.tls.handshake_errors.clone(),
            bytes_up: metrics.tcp_bytes.with_label_values(&[&l.name, "upstream"]),
            bytes_down: metrics.tcp_bytes.with_label_values(&[&l.name, "downstream"]),
            access_log: access_log.clone(),
        })),
    }
}

/// Settings that shape the process itself (the admin socket, worker
/// threads, the access-log sink, the filter engine) take effect at restart:
/// a reload keeps the serving values, says so, and applies the rest.
fn keep_restart_only(new: &mut Config, serving: &Config) {
    let mut kept = Vec::new();
    // Each is the same field path in the validated config and in its raw form (`/config`).
    macro_rules! keep {
        ($($field:ident).+) => {
            if new.$($field).+ != serving.$($field).+ {
                new.$($field).+ = serving.$($field).+.clone();
                new.raw.$($field).+ = serving.raw.$($field).+.clone();
                kept.push(stringify!($($field).+).replace(' ', ""));
            }
        };
    }
    keep!(admin.address);
    keep!(workers);
    keep!(access_log);
    keep!(filter_instances);
    keep!(filter_cache);
    keep!(filter_compile_timeout);
    if !kept.is_empty() {
        tracing::warn!(fields = ?kept, "these settings take effect at restart; the serving values stay until then");
    }
}

/// Updates the metrics of what `next` built anew once it serves instead of `previous`.
fn publish(next: &Snapshot, previous: Option<&Snapshot>, metrics: &Metrics) {
    let config = &next.config;
    if config.listeners.iter().any(|l| l.original_destination) {
        crate::original_dst::watch_own_connections();
    }
    let listening = config.listeners.iter().map(|l| l.address.port()).chain([config.admin.address.port()]);
    crate::original_dst::set_own_ports(listening.filter(|p| *p != 0).collect());
    for (name, cluster) in &next.clusters {
        if !previous.and_then(|p| p.clusters.get(name)).is_some_and(|c| Arc::ptr_eq(c, cluster)) {
            cluster.publish();
        }
    }
    Registry::publish(next.filters.as_deref(), previous.and_then(|p| p.filters.as_deref()), metrics);
    // Material a new generation rebuilt: its old certificates leave the gauge.
    for old in previous.iter().flat_map(|p| &p.tls) {
        if !next.tls.iter().any(|t| std::ptr::addr_eq(Arc::as_ptr(t), Arc::as_ptr(old))) {
            old.publish(false);
        }
    }
    for t in &next.tls {
        t.publish(true);
    }
}
