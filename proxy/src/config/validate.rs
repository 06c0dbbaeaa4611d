//! Validation of the raw model into the compiled [`Config`]: every field is
//! checked, every error collected with its path, and only a fully valid
//! config comes out. The running proxy never sees a raw string it must parse.

use super::model::*;
use super::units::{parse_duration, parse_size};
use super::{ConfigError, ConfigErrors, ORIGINAL_DESTINATION, listeners};
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The effective config (defaults filled in), served on `/config`.
    pub raw: RawConfig,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Access-log destination.
    pub access_log: AccessLogTarget,
    /// Runtime worker threads (0: one per CPU).
    pub workers: usize,
    /// Drain deadline after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// Filter instances alive at once, process-wide.
    pub filter_instances: u32,
    /// Folder of the compiled-filter cache (`None`: off).
    pub filter_cache: Option<PathBuf>,
    /// The longest a filter module may take to compile (in a child process).
    pub filter_compile_timeout: Duration,
    /// Listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Clusters, in file order.
    pub clusters: Vec<ClusterConfig>,
    /// Filters, in file order.
    pub filters: Vec<FilterConfig>,
}

/// A validated filter entry (the module itself is checked when it is loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// Name routes refer to.
    pub name: String,
    /// Component file.
    pub module: PathBuf,
    /// The module path as written in the config, for messages.
    pub module_name: String,
    /// Config handed to the filter's `init`, as JSON text.
    pub config_json: String,
    /// Failure policy.
    pub on_error: FailurePolicy,
    /// Memory cap per instance, bytes.
    pub memory: usize,
    /// Time limit per call.
    pub timeout: Duration,
    /// Granted host capabilities.
    pub allow: Vec<Capability>,
    /// The largest body the filter may see whole, bytes.
    pub max_body: usize,
    /// Clusters the filter may call.
    pub http_clusters: Vec<String>,
}

/// Admin listener settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Bind address.
    pub address: SocketAddr,
    /// Cluster whose reachability gates `/readyz`.
    pub ready_cluster: Option<String>,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Nowhere.
    Off,
    /// Appended to a file.
    File(PathBuf),
}

/// A validated listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Name for metrics and logs.
    pub name: String,
    /// Bind address.
    pub address: SocketAddr,
    /// What it serves.
    pub kind: ListenerKind,
    /// Protective limits.
    pub limits: Limits,
    /// How HTTP requests are read and trusted.
    pub http: HttpSettings,
    /// TLS termination.
    pub tls: Option<super::ServerTlsConfig>,
    /// Filters that decide on each connection, in order.
    pub connection_filters: Vec<String>,
    /// Connections arrive redirected: recover where they were headed.
    pub original_destination: bool,
}

/// How an HTTP listener reads requests and which of their claims it believes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// What `%2F` / `%5C` in a path become.
    pub escaped_slashes: EscapedSlashes,
    /// Proxies in front whose forwarding headers are believed (0: none).
    pub trusted_hops: u32,
    /// Downstream HTTP/2 limits.
    pub http2: Http2Limits,
}

/// Downstream HTTP/2 limits (hyper/h2 enforce them).
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Limits {
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Initial per-stream flow-control window.
    pub initial_stream_window: u32,
    /// Initial connection flow-control window.
    pub initial_connection_window: u32,
    /// Client resets of unserved streams tolerated before GOAWAY.
    pub max_pending_resets: usize,
    /// Resets wasp sends for client protocol errors before GOAWAY.
    pub max_error_resets: usize,
    /// SETTINGS/PING frames a client may send per second.
    pub max_control_frames: u32,
}

/// What a listener serves.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    /// HTTP/1.1 + HTTP/2 with routes.
    Http(Vec<RouteConfig>),
    /// Raw TCP to a cluster, or to one chosen by SNI.
    Tcp(TcpRoutes),
}

/// Where a TCP listener sends a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRoutes {
    /// Server name patterns and their cluster, first match wins.
    pub by_sni: Vec<(Vec<String>, String)>,
    /// For connections no SNI route takes (`None`: they are closed).
    pub default: Option<String>,
}

/// A listener's protective limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Request line + headers size.
    pub max_header_bytes: usize,
    /// Header count.
    pub max_headers: usize,
    /// Request-target length.
    pub max_uri_bytes: usize,
    /// Deadline for a request's headers.
    pub header_read_timeout: Duration,
    /// Idle connection lifetime.
    pub idle_timeout: Duration,
    /// How long a client may accept no response bytes before it is disconnected.
    pub write_timeout: Duration,
    /// Idle lifetime of an upgraded (WebSocket) tunnel.
    pub tunnel_idle_timeout: Duration,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Name for metrics and logs.
    pub name: String,
    /// Match conditions.
    pub matcher: MatchConfig,
    /// Target cluster name (known to exist).
    pub cluster: String,
    /// Filter names (known to exist).
    pub filters: Vec<String>,
    /// Deadline for upstream response headers.
    pub timeout: Duration,
    /// Retry policy.
    pub retries: Option<RetryConfig>,
    /// Upgrade protocols (lower case) the route tunnels.
    pub upgrades: Vec<String>,
}

/// How a route's path is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// String prefix.
    Prefix(String),
    /// Whole path.
    Exact(String),
}

/// A route's match conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Path condition.
    pub path: PathMatch,
    /// Lower-cased host; a leading `*.` matches any subdomain.
    pub host: Option<String>,
    /// Required header values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Allowed methods (empty: all).
    pub methods: Vec<Method>,
    /// Identity pattern the client's verified certificate must match.
    pub peer: Option<String>,
    /// Original destinations (listeners with `original_destination`).
    pub destination: Option<super::DestinationMatch>,
}

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Retry when the connection could not be made.
    pub on_connect_failure: bool,
    /// Retry when the upstream reset before answering (idempotent requests only).
    pub on_reset: bool,
    /// Retry on these statuses (idempotent requests only).
    pub on_status: Vec<u16>,
    /// Base backoff.
    pub backoff: Duration,
}

/// A validated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Name for routes, metrics and logs.
    pub name: String,
    /// `host:port` endpoints.
    pub endpoints: Vec<String>,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Balancing policy.
    pub lb: LbPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Connections open at once to one endpoint.
    pub max_connections_per_endpoint: usize,
    /// TLS origination.
    pub tls: Option<super::ClientTlsConfig>,
}

/// Circuit-breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open an endpoint.
    pub consecutive_failures: u32,
    /// Time an endpoint stays open before a probe.
    pub open_for: Duration,
    /// Requests in flight to the cluster.
    pub max_pending: usize,
}

pub(super) struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { path: path.into(), message: message.into() });
    }

    pub(super) fn duration(&mut self, path: String, text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|m| {
            self.error(path, m);
            Duration::ZERO
        })
    }

    pub(super) fn positive_duration(&mut self, path: String, text: &str) -> Duration {
        let d = self.duration(path.clone(), text);
        if d.is_zero() && parse_duration(text).is_ok() {
            self.error(path, "must be greater than zero");
        }
        d
    }

    /// Reports each of `names` (the list at `path`) that is not a known `what`.
    pub(super) fn all_known(&mut self, path: &str, names: &[String], known: &HashSet<String>, what: &str) {
        for (k, name) in names.iter().enumerate() {
            if !known.contains(name) {
                self.error(format!("{path}[{k}]"), format!("no {what} named {name:?}"));
            }
        }
    }

    pub(super) fn size(&mut self, path: String, text: &str) -> usize {
        match parse_size(text).map(usize::try_from) {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => {
                self.error(path, "must be greater than zero");
                0
            }
            Err(m) => {
                self.error(path, m);
                0
            }
        }
    }

    pub(super) fn socket_addr(&mut self, path: String, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.error(
                path,
                format!("invalid address {text:?}; expected ip:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    pub(super) fn unique<'a>(&mut self, what: &str, items: impl Iterator<Item = (String, &'a str)>) -> HashSet<String> {
        let mut seen = HashSet::new();
        for (path, name) in items {
            if name.is_empty() {
                self.error(path, format!("{what} name must not be empty"));
            } else if !seen.insert(name.to_string()) {
                self.error(path, format!("duplicate {what} name {name:?}"));
            }
        }
        seen
    }
}

/// Checks a raw config, adding to errors already found while parsing it.
pub(super) fn validate(raw: RawConfig, base: &Path, errors: Vec<ConfigError>) -> Result<Config, ConfigErrors> {
    let mut c = Checker { errors };
    let mut clusters_named = c.unique(
        "cluster",
        raw.clusters.iter().enumerate().map(|(i, x)| (format!("clusters[{i}].name"), x.name.as_str())),
    );
    // Listeners that recover original destinations can forward to them: the
    // cluster exists with default settings unless the config tunes it.
    let passthrough = raw.listeners.iter().any(|l| l.original_destination);
    let implicit_passthrough = passthrough && clusters_named.insert(ORIGINAL_DESTINATION.to_string());
    let filters_named = c
        .unique("filter", raw.filters.iter().enumerate().map(|(i, x)| (format!("filters[{i}].name"), x.name.as_str())));
    c.unique(
        "listener",
        raw.listeners.iter().enumerate().map(|(i, x)| (format!("listeners[{i}].name"), x.name.as_str())),
    );

    let admin = AdminConfig {
        address: c.socket_addr("admin.address".into(), &raw.admin.address),
        ready_cluster: raw.admin.ready_cluster.clone(),
    };
    match &admin.ready_cluster {
        Some(name) if name == ORIGINAL_DESTINATION => c.error(
            "admin.ready_cluster",
            "`original_destination` has no fixed endpoint to check; name another cluster",
        ),
        Some(name) if !clusters_named.contains(name) => {
            c.error("admin.ready_cluster", format!("no cluster named {name:?}"))
        }
        _ => {}
    }
    let access_log = match raw.access_log.as_str() {
        "stdout" | "-" => AccessLogTarget::Stdout,
        "off" => AccessLogTarget::Off,
        "" => {
            c.error("access_log", "expected \"stdout\", \"off\" or a file path");
            AccessLogTarget::Off
        }
        path => AccessLogTarget::File(base.join(path)),
    };
    let drain_timeout = c.duration("drain_timeout".into(), &raw.drain_timeout);
    if !(1..=10_000).contains(&raw.filter_instances) {
        c.error("filter_instances", "must be between 1 and 10000");
    }
    let filter_cache = filter_cache(&mut c, &raw.filter_cache, base);
    let filter_compile_timeout = c.duration("filter_compile_timeout".into(), &raw.filter_compile_timeout);
    if raw.listeners.is_empty() {
        c.error("listeners", "at least one listener is required");
    }
    let mut addresses = HashSet::new();
    let mut listeners = Vec::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let listener = listeners::listener(&mut c, i, l, &clusters_named, &filters_named, base);
        if listener.address.port() != 0 && !addresses.insert(listener.address) {
            c.error(format!("listeners[{i}].address"), format!("{} is used by another listener", listener.address));
        }
        listeners.push(listener);
    }
    let mut clusters: Vec<_> = raw.clusters.iter().enumerate().map(|(i, x)| cluster(&mut c, i, x, base)).collect();
    if implicit_passthrough {
        let raw: RawCluster = serde_json::from_value(serde_json::json!({ "name": ORIGINAL_DESTINATION }))
            .expect("every cluster field but the name has a default");
        clusters.push(cluster(&mut c, usize::MAX, &raw, base));
    }
    let filters = raw.filters.iter().enumerate().map(|(i, f)| filter(&mut c, i, f, base, &clusters_named)).collect();
    if admin.address.port() != 0 && addresses.contains(&admin.address) {
        c.error("admin.address", format!("{} is used by a listener", admin.address));
    }
    if c.errors.is_empty() {
        let (workers, filter_instances) = (raw.workers, raw.filter_instances);
        Ok(Config {
            raw,
            admin,
            access_log,
            workers,
            drain_timeout,
            filter_instances,
            filter_cache,
            filter_compile_timeout,
            listeners,
            clusters,
            filters,
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

fn cluster(c: &mut Checker, i: usize, x: &RawCluster, base: &Path) -> ClusterConfig {
    let at = format!("clusters[{i}]");
    if x.name == ORIGINAL_DESTINATION {
        if !x.endpoints.is_empty() {
            c.error(
                format!("{at}.endpoints"),
                "`original_destination` sends each connection where its client was headed: leave `endpoints` out",
            );
        }
    } else if x.endpoints.is_empty() {
        c.error(format!("{at}.endpoints"), "a cluster needs at least one endpoint");
    }
    for (k, e) in x.endpoints.iter().enumerate() {
        if let Err(m) = check_endpoint(e) {
            c.error(format!("{at}.endpoints[{k}]"), m);
        }
    }
    let tls = x.tls.as_ref().map(|t| super::tls::client(c, &format!("{at}.tls"), t, base));
    let b = &x.circuit_breaker;
    if b.consecutive_failures == 0 {
        c.error(format!("{at}.circuit_breaker.consecutive_failures"), "must be greater than zero");
    }
    if b.max_pending == 0 {
        c.error(format!("{at}.circuit_breaker.max_pending"), "must be greater than zero");
    }
    if x.max_connections_per_endpoint == 0 || x.max_connections_per_endpoint > 1_000_000 {
        c.error(format!("{at}.max_connections_per_endpoint"), "must be between 1 and 1000000");
    }
    ClusterConfig {
        name: x.name.clone(),
        endpoints: x.endpoints.clone(),
        protocol: x.protocol,
        lb: x.lb,
        connect_timeout: c.positive_duration(format!("{at}.connect_timeout"), &x.connect_timeout),
        breaker: BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            open_for: c.positive_duration(format!("{at}.circuit_breaker.open_for"), &b.open_for),
            max_pending: b.max_pending,
        },
        max_connections_per_endpoint: x.max_connections_per_endpoint,
        tls,
    }
}

/// `filter_cache:` as an absolute folder; `auto` is the user's cache folder
/// (none if neither `XDG_CACHE_HOME` nor `HOME` is set).
fn filter_cache(c: &mut Checker, raw: &str, base: &Path) -> Option<PathBuf> {
    let dir = match raw {
        "off" => return None,
        "auto" => {
            let env = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
            env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))?.join("wasp")
        }
        "" => {
            c.error("filter_cache", "expected \"auto\", \"off\" or a folder");
            return None;
        }
        dir => base.join(dir),
    };
    std::path::absolute(&dir).ok()
}

fn filter(c: &mut Checker, i: usize, f: &RawFilter, base: &Path, clusters: &HashSet<String>) -> FilterConfig {
    let at = format!("filters[{i}]");
    if f.module.is_empty() {
        c.error(format!("{at}.module"), "a filter needs a module path");
    }
    let memory = c.size(format!("{at}.limits.memory"), &f.limits.memory);
    if memory > crate::filter::runtime::MAX_MEMORY {
        c.error(format!("{at}.limits.memory"), "at most 1GiB");
    }
    let timeout = c.positive_duration(format!("{at}.limits.timeout"), &f.limits.timeout);
    let max_body = c.size(format!("{at}.limits.body"), &f.limits.body);
    if memory > 0 && max_body > memory / 2 {
        c.error(
            format!("{at}.limits.body"),
            format!(
                "a whole body is copied into the filter's memory: at most half of limits.memory ({})",
                f.limits.memory
            ),
        );
    }
    c.all_known(&format!("{at}.http_clusters"), &f.http_clusters, clusters, "cluster");
    if let Some(k) = f.http_clusters.iter().position(|n| n == ORIGINAL_DESTINATION) {
        c.error(format!("{at}.http_clusters[{k}]"), "a filter's call has no original destination to go to");
    }
    FilterConfig {
        name: f.name.clone(),
        module: base.join(&f.module),
        module_name: f.module.clone(),
        config_json: f.config.to_string(),
        on_error: f.on_error,
        memory,
        timeout,
        allow: f.allow.clone(),
        max_body,
        http_clusters: f.http_clusters.clone(),
    }
}

/// An endpoint is `ip:port`, `[ipv6]:port` or `hostname:port`.
fn check_endpoint(text: &str) -> Result<(), String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("invalid endpoint {text:?}; expected host:port, e.g. \"127.0.0.1:8080\"");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with('-');
    match port.parse::<u16>() {
        Ok(p) if p != 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}
