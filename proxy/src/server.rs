//! Starts a proxy from a validated [`Config`]: the admin endpoint, the
//! [`Live`] configuration (clusters, filters, routes, listeners; every
//! socket is bound before any serves, and a bind failure aborts start-up
//! cleanly) and the watcher that reloads it; then runs until SIGTERM/SIGINT
//! and drains: stop accepting, let in-flight requests finish up to
//! `drain_timeout`, flush the access log, exit.

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::{Config, ConfigErrors};
use crate::live::{ConfigFile, Live};
use crate::metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config could not be put to work (a filter, a listener address...).
    #[error("{0}")]
    Config(ConfigErrors),
    /// The admin address could not be bound.
    #[error("admin: cannot bind {address}: {source}")]
    Admin {
        /// Address.
        address: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The access log could not be opened.
    #[error("{0}")]
    AccessLog(std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Builds a runtime sized by `config.workers` and serves until a signal;
/// `file` is where the config came from, reloaded when it changes.
pub fn run_blocking(config: Config, file: Option<ConfigFile>) -> Result<(), StartError> {
    let runtime = runtime(config.workers)?;
    let result = runtime.block_on(serve(config, file, shutdown_signal()));
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

/// Serves `config` until `stop` completes, then drains.
pub async fn serve(config: Config, file: Option<ConfigFile>, stop: impl Future<Output = ()>) -> Result<(), StartError> {
    let began = std::time::Instant::now();
    let metrics = Arc::new(Metrics::new());
    let access_log =
        AccessLog::start(&config.access_log, metrics.access_log_dropped.clone(), metrics.access_log_errors.clone())
            .await
            .map_err(StartError::AccessLog)?;
    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Every listener is bound (or start-up fails) before any serves.
    let admin_address = config.admin.address;
    let admin_socket = TcpListener::bind(admin_address)
        .await
        .map_err(|source| StartError::Admin { address: admin_address, source })?;
    let live = Live::start(config, file, metrics.clone(), access_log.clone(), tracker.clone(), drain.clone())
        .await
        .map_err(StartError::Config)?;
    let admin_address = admin_socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = "admin", address = %admin_address, protocol = "admin", "listening");
    let admin = Arc::new(Admin { live: live.clone(), metrics: metrics.clone(), draining: drain.clone() });
    tokio::spawn(admin.run(admin_socket));
    crate::watch::spawn(live.clone()).await;
    let cache = live.current().config.filter_cache.as_ref().map(|d| d.display().to_string());
    let startup_ms = began.elapsed().as_millis() as u64;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), startup_ms, filter_cache = cache, "wasp started");

    stop.await;
    let deadline = live.current().config.drain_timeout;
    tracing::info!(?deadline, connections = tracker.len(), "draining");
    drain.cancel();
    live.stopped().await;
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait()).await.is_err() {
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
