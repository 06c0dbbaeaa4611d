//! The operator contract: the config file as plain serde structs.
//!
//! Durations, sizes and addresses stay strings here so that a bad value is
//! reported by [`super::validate`] together with every other error, with its
//! path, instead of stopping the parse at the first one. Unknown fields are
//! collected by [`super::load`] the same way. Every default lives here, so
//! the effective config served on `/config` shows exactly what runs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::tls::{ClientCert, RawClientTls, RawServerTls, RawSniCert, RawSniRoute};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawConfig {
    /// Admin listener (health, readiness, metrics, effective config).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Where access-log lines go: `stdout`, `off`, or a file path.
    #[serde(default = "default_access_log")]
    pub access_log: String,
    /// Runtime worker threads; 0 means one per available CPU.
    #[serde(default)]
    pub workers: usize,
    /// Filter instances alive at once, across all filters (the pooling
    /// allocator's slots); a request that finds none gets 503.
    #[serde(default = "default_filter_instances")]
    pub filter_instances: u32,
    /// Where compiled filters are kept between runs: `auto` (the user's
    /// cache folder, `$XDG_CACHE_HOME/wasp` or `~/.cache/wasp`), `off`, or a
    /// folder.
    #[serde(default = "default_filter_cache")]
    pub filter_cache: String,
    /// How long compiling one filter module may take before it is stopped
    /// (it runs in a child process when there is a cache).
    #[serde(default = "default_filter_compile_timeout")]
    pub filter_compile_timeout: String,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
    /// Ingress and egress listeners.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// Upstream clusters that routes and TCP listeners forward to.
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    /// Wasm filters that routes refer to by name.
    #[serde(default)]
    pub filters: Vec<RawFilter>,
}

/// `admin:`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawAdmin {
    /// Address of the admin listener.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Cluster of the local app: `/readyz` is ready only when it accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cluster: Option<String>,
    /// `/config` shows filters' `config` as written instead of a hash of it.
    #[serde(default)]
    pub show_secrets: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { address: default_admin_address(), ready_cluster: None, show_secrets: false }
    }
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge), routed by `routes`.
    #[default]
    Http,
    /// Raw TCP, copied to `cluster`.
    Tcp,
}

/// `listeners[i]`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawListener {
    /// Unique listener name, used in metrics and logs.
    pub name: String,
    /// `ip:port` to bind; port 0 picks a free port (logged at start).
    pub address: String,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// TLS termination (see README, "TLS and identity").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawServerTls>,
    /// Filters asked about each connection (`on-connection`) before it is
    /// served, in order; any of them can close it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_filters: Vec<String>,
    /// HTTP listeners: routes, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    /// TCP listeners: the cluster to copy bytes to (with `sni_routes`:
    /// for connections whose SNI matches none of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// TCP listeners: clusters chosen by the ClientHello's server name.
    /// Without `tls` the TLS stream passes through untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_routes: Vec<RawSniRoute>,
    /// Protective limits.
    #[serde(default)]
    pub limits: RawListenerLimits,
    /// What an encoded slash or backslash (`%2F`, `%5C`) in a request path
    /// becomes: `keep` (default), `reject` (400) or `unescape`.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// Proxies in front of this listener whose forwarding headers are
    /// believed (`x-forwarded-for`, `x-forwarded-proto`, `x-request-id`);
    /// 0 (default): the peer is the client, and its forwarding headers are replaced.
    #[serde(default)]
    pub trusted_hops: u32,
    /// HTTP/2 limits for downstream connections.
    #[serde(default)]
    pub http2: RawHttp2,
    /// Connections arrive redirected by `wasp iptables` (NAT): recover each
    /// one's original destination (`SO_ORIGINAL_DST`), match it with
    /// `match.destination` and forward to it with `cluster: original_destination`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_destination: bool,
}

/// `listeners[i].escaped_slashes`, as Envoy's `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EscapedSlashes {
    /// Forward `%2F` and `%5C` as they are (not path separators).
    #[default]
    Keep,
    /// Answer 400.
    Reject,
    /// Decode them into `/`, then normalise.
    Unescape,
}

/// `listeners[i].http2`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawHttp2 {
    /// Streams a client may have open at once on one connection.
    #[serde(default = "default_h2_max_streams")]
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one stream before wasp reads them.
    #[serde(default = "default_h2_stream_window")]
    pub initial_stream_window: String,
    /// Bytes a client may send on a connection before wasp reads them.
    #[serde(default = "default_h2_connection_window")]
    pub initial_connection_window: String,
    /// Streams a client may reset before wasp has served them; more in a
    /// short time (a rapid-reset attack) ends the connection with GOAWAY.
    #[serde(default = "default_h2_max_resets")]
    pub max_pending_resets: usize,
    /// Streams wasp may reset for a client's protocol errors before it ends
    /// the connection with GOAWAY (ENHANCE_YOUR_CALM).
    #[serde(default = "default_h2_max_error_resets")]
    pub max_error_resets: usize,
    /// SETTINGS and PING frames a client may send in one second; more ends
    /// the connection (a control-frame flood).
    #[serde(default = "default_h2_max_control_frames")]
    pub max_control_frames: u32,
}

impl Default for RawHttp2 {
    fn default() -> Self {
        RawHttp2 {
            max_concurrent_streams: default_h2_max_streams(),
            initial_stream_window: default_h2_stream_window(),
            initial_connection_window: default_h2_connection_window(),
            max_pending_resets: default_h2_max_resets(),
            max_error_resets: default_h2_max_error_resets(),
            max_control_frames: default_h2_max_control_frames(),
        }
    }
}

/// `listeners[i].limits`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawListenerLimits {
    /// Open connections accepted at once; further clients wait in the backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Total size of the request line and headers (over it: 431).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: String,
    /// Number of request headers (over it: 431).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Length of the request target (over it: 414).
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: String,
    /// Time a client has to send a request's headers; slower connections are closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// A client that accepts no response bytes for this long is disconnected.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: String,
    /// An upgraded (WebSocket) tunnel with no bytes either way for this long is closed.
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout: String,
}

impl Default for RawListenerLimits {
    fn default() -> Self {
        RawListenerLimits {
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            write_timeout: default_write_timeout(),
            tunnel_idle_timeout: default_tunnel_idle_timeout(),
        }
    }
}

/// `listeners[i].routes[j]`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawRoute {
    /// Unique (per listener) route name, used in metrics and logs.
    pub name: String,
    /// What requests this route takes; empty matches everything.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    /// Cluster to forward to.
    pub cluster: String,
    /// Filters to run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// Time from receiving the request to the upstream's response headers, retries included (over it: 504).
    #[serde(default = "default_route_timeout")]
    pub timeout: String,
    /// Retry policy; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RawRetries>,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to on this route; any
    /// other `Upgrade` is removed and the request forwarded as a plain one.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
}

/// `routes[j].match`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawMatch {
    /// Path prefix (plain string prefix, like Envoy's `prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Exact path (query string excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Host (port ignored, case-insensitive); `*.example.com` matches subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Allowed methods; empty allows all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The client's verified certificate identity (mTLS), e.g.
    /// `spiffe://cluster.local/ns/*/sa/frontend` (`*`: one path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Listeners with `original_destination`: the address the client
    /// connected to before the redirect, as `ip`, `ip/prefix` or `*`, each
    /// with an optional `:port` (IPv6 in brackets: `[fd00::/8]:443`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// `routes[j].retries`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawRetries {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Conditions: `connect-failure`, `reset`, or an HTTP status code.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Base backoff; attempt n waits a random time up to `backoff * 2^n` (capped at 10x).
    #[serde(default = "default_backoff")]
    pub backoff: String,
}

/// One retry condition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RetryOn {
    /// An upstream status code.
    Status(u16),
    /// `connect-failure` or `reset`.
    Named(String),
}

/// Upstream HTTP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge), one multiplexed connection per endpoint.
    Http2,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbPolicy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight.
    LeastRequest,
}

/// `clusters[k]`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawCluster {
    /// Unique cluster name.
    pub name: String,
    /// `host:port` endpoints (none for `original_destination`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `http1` (default) or `http2`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// `round-robin` (default) or `least-request`.
    #[serde(default)]
    pub lb: LbPolicy,
    /// TCP connect timeout per attempt.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Per-endpoint circuit breaking and the cluster's pending-request cap.
    #[serde(default)]
    pub circuit_breaker: RawCircuitBreaker,
    /// Connections open at once to one endpoint; requests beyond wait for
    /// one (within `max_pending` and the route timeout).
    #[serde(default = "default_max_connections_per_endpoint")]
    pub max_connections_per_endpoint: usize,
    /// TLS origination to the endpoints (see README, "TLS and identity").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawClientTls>,
}

/// `clusters[k].circuit_breaker`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawCircuitBreaker {
    /// Consecutive failures (connect errors, resets, timeouts, 5xx) that open an endpoint's breaker.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long an open breaker rejects before letting one probe through.
    #[serde(default = "default_open_for")]
    pub open_for: String,
    /// Requests in flight to the cluster at once; more get 503.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

impl Default for RawCircuitBreaker {
    fn default() -> Self {
        RawCircuitBreaker {
            consecutive_failures: default_consecutive_failures(),
            open_for: default_open_for(),
            max_pending: default_max_pending(),
        }
    }
}

/// `filters[f]`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawFilter {
    /// Unique filter name, referred to by routes.
    pub name: String,
    /// Path of the Wasm component (relative to the config file).
    pub module: String,
    /// The filter's own configuration, handed to its `init` as JSON (`{}` when omitted).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// What a failing filter (trap, timeout, memory cap, invalid output) does to the request.
    #[serde(default)]
    pub on_error: FailurePolicy,
    /// Resource limits of each instance.
    #[serde(default)]
    pub limits: RawFilterLimits,
    /// Host capabilities granted to the filter: `log`, `metrics`, `clock`, `kv`.
    #[serde(default = "default_allow")]
    pub allow: Vec<Capability>,
    /// Clusters the filter may send HTTP calls to (`http-call`); none by default.
    #[serde(default)]
    pub http_clusters: Vec<String>,
}

/// A host capability a filter may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Write to wasp's log.
    Log,
    /// Define counters and histograms.
    Metrics,
    /// Read the clocks.
    Clock,
    /// Use the filter's shared key-value store.
    Kv,
}

fn default_allow() -> Vec<Capability> {
    vec![Capability::Log, Capability::Metrics, Capability::Clock]
}

/// `filters[f].on_error`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Answer 500 (no guest text reaches the client).
    #[default]
    FailClosed,
    /// Skip the filter and go on; counted in `wasp_filter_errors_total`.
    FailOpen,
}

/// `filters[f].limits`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawFilterLimits {
    /// Linear memory an instance may grow to; growing past it traps.
    #[serde(default = "default_filter_memory")]
    pub memory: String,
    /// Time one call (one phase) may run.
    #[serde(default = "default_filter_timeout")]
    pub timeout: String,
    /// The largest body the filter may ask to see whole (`read-body(buffer)`).
    #[serde(default = "default_filter_body")]
    pub body: String,
}

impl Default for RawFilterLimits {
    fn default() -> Self {
        RawFilterLimits {
            memory: default_filter_memory(),
            timeout: default_filter_timeout(),
            body: default_filter_body(),
        }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn default_filter_memory() -> String {
    "32MiB".into()
}
fn default_filter_timeout() -> String {
    "10ms".into()
}
fn default_filter_body() -> String {
    "1MiB".into()
}
fn default_access_log() -> String {
    "stdout".into()
}
fn default_filter_instances() -> u32 {
    512
}
fn default_filter_cache() -> String {
    "auto".into()
}
fn default_filter_compile_timeout() -> String {
    "60s".into()
}
fn default_drain_timeout() -> String {
    "20s".into()
}
fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_bytes() -> String {
    "64KiB".into()
}
fn default_max_headers() -> usize {
    100
}
fn default_max_uri_bytes() -> String {
    "8KiB".into()
}
fn default_header_read_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_write_timeout() -> String {
    "30s".into()
}
fn default_tunnel_idle_timeout() -> String {
    "1h".into()
}
fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}
fn default_max_connections_per_endpoint() -> usize {
    1024
}
fn default_h2_max_streams() -> u32 {
    100
}
fn default_h2_stream_window() -> String {
    "256KiB".into()
}
fn default_h2_connection_window() -> String {
    "1MiB".into()
}
fn default_h2_max_resets() -> usize {
    20
}
fn default_h2_max_error_resets() -> usize {
    1024
}
fn default_h2_max_control_frames() -> u32 {
    100
}
fn default_route_timeout() -> String {
    "15s".into()
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Named("connect-failure".into()), RetryOn::Named("reset".into())]
}
fn default_backoff() -> String {
    "25ms".into()
}
fn default_connect_timeout() -> String {
    "1s".into()
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_open_for() -> String {
    "10s".into()
}
fn default_max_pending() -> usize {
    1024
}
