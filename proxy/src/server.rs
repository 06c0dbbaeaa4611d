//! Assembles a running proxy from a validated [`Config`]: clusters, routes,
//! listeners and the admin endpoint; binds every socket before serving any
//! (a bind failure aborts start-up cleanly), then runs until SIGTERM/SIGINT
//! and drains: stop accepting, let in-flight requests finish up to
//! `drain_timeout`, flush the access log, exit.

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::{Config, ListenerKind};
use crate::conn::HttpListener;
use crate::listener::{Acceptor, Handler};
use crate::metrics::Metrics;
use crate::route::{Route, Router};
use crate::tcp::TcpProxy;
use crate::upstream::Cluster;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener {name:?}: cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        address: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The access log could not be opened.
    #[error("{0}")]
    AccessLog(std::io::Error),
    /// A filter could not be loaded.
    #[error("{0}")]
    Filters(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Builds a runtime sized by `config.workers` and serves until a signal.
pub fn run_blocking(config: Config) -> Result<(), StartError> {
    let runtime = runtime(config.workers)?;
    let result = runtime.block_on(serve(config, shutdown_signal()));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// A Tokio runtime with `workers` threads (0: one per CPU; 1: single-threaded).
pub fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, StartError> {
    let workers = if workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { workers };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build().map_err(StartError::Runtime)
}

/// The config's clusters, by name.
pub fn clusters<'a>(config: &'a Config, metrics: &Arc<Metrics>) -> HashMap<&'a str, Arc<Cluster>> {
    config.clusters.iter().map(|c| (c.name.as_str(), Arc::new(Cluster::new(c, metrics)))).collect()
}

/// Serves `config` until `stop` completes, then drains.
pub async fn serve(config: Config, stop: impl Future<Output = ()>) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    let access_log =
        AccessLog::start(&config.access_log, metrics.access_log_dropped.clone(), metrics.access_log_errors.clone())
            .await
            .map_err(StartError::AccessLog)?;
    let clusters = clusters(&config, &metrics);
    let filters = crate::filter::Registry::load(&config, &metrics, &clusters)
        .map_err(|errors| StartError::Filters(crate::config::ConfigErrors(errors).to_string()))?;
    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();

    let mut acceptors = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.address).await.map_err(|source| StartError::Bind {
            name: l.name.clone(),
            address: l.address,
            source,
        })?;
        let handler = match &l.kind {
            ListenerKind::Http(routes) => {
                let routes = routes
                    .iter()
                    .map(|r| {
                        let cluster = clusters[r.cluster.as_str()].clone();
                        let chain = filters.as_ref().filter(|_| !r.filters.is_empty()).map(|registry| {
                            crate::filter::Chain::new(r.filters.iter().filter_map(|f| registry.get(f)).collect())
                        });
                        Arc::new(Route::new(r, cluster, metrics.route(&l.name, &r.name, &r.cluster), chain))
                    })
                    .collect();
                Handler::Http(Arc::new(HttpListener::new(
                    &l.name,
                    Router::new(routes),
                    l.limits.clone(),
                    access_log.clone(),
                    metrics.route(&l.name, "", ""),
                    tracker.clone(),
                )))
            }
            ListenerKind::Tcp(cluster) => {
                let cluster = clusters[cluster.as_str()].clone();
                Handler::Tcp(Arc::new(TcpProxy {
                    name: l.name.as_str().into(),
                    cluster,
                    bytes_up: metrics.tcp_bytes.with_label_values(&[&l.name, "upstream"]),
                    bytes_down: metrics.tcp_bytes.with_label_values(&[&l.name, "downstream"]),
                    access_log: access_log.clone(),
                }))
            }
        };
        acceptors.push(Acceptor {
            name: l.name.as_str().into(),
            socket,
            handler,
            max_connections: l.limits.max_connections,
            active: metrics.active_connections.with_label_values(&[&l.name]),
            accepted: metrics.connections.with_label_values(&[&l.name]),
        });
    }
    let admin_socket = TcpListener::bind(config.admin.address).await.map_err(|source| StartError::Bind {
        name: "admin".into(),
        address: config.admin.address,
        source,
    })?;

    for a in &acceptors {
        let protocol = if matches!(a.handler, Handler::Http(_)) { "http" } else { "tcp" };
        let address = a.socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listener = %a.name, %address, protocol, "listening");
    }
    let admin_address = admin_socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = "admin", address = %admin_address, protocol = "admin", "listening");

    let admin = Arc::new(Admin {
        config_json: serde_json::to_vec_pretty(&config.raw).unwrap_or_default().into(),
        metrics: metrics.clone(),
        ready_cluster: config.admin.ready_cluster.as_deref().map(|n| clusters[n].clone()),
        filters: filters.clone(),
        draining: drain.clone(),
    });
    tokio::spawn(admin.run(admin_socket));
    if let Some(registry) = filters {
        crate::filter::watch::spawn(registry).map_err(StartError::Filters)?;
    }
    let accept_loops: Vec<_> =
        acceptors.into_iter().map(|a| tokio::spawn(a.run(drain.clone(), tracker.clone()))).collect();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "wasp started");

    stop.await;
    tracing::info!(deadline = ?config.drain_timeout, connections = tracker.len(), "draining");
    drain.cancel();
    for l in accept_loops {
        let _ = l.await;
    }
    tracker.close();
    if tokio::time::timeout(config.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "drain deadline passed; closing remaining connections");
    }
    access_log.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}
