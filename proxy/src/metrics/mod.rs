//! Prometheus metrics, all prefixed `wasp_` (plus the standard `process_*`
//! ones on Linux). Families are registered once; the request path holds
//! pre-resolved children ([`RouteMetrics`], and per cluster in
//! [`crate::upstream`]) so that a request costs a few atomic adds, not label
//! lookups.

mod histogram;
mod route;

pub use histogram::{Histogram, HistogramVec};
pub use route::{Answered, RouteMetrics};

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family wasp exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    local_replies: IntCounterVec,
    duration: HistogramVec,
    /// `wasp_upstream_errors_total{cluster,kind}`
    pub upstream_errors: IntCounterVec,
    /// `wasp_upstream_retries_total{cluster}`
    pub retries: IntCounterVec,
    /// `wasp_upstream_wait_seconds{cluster}`
    pub upstream_wait: HistogramVec,
    /// `wasp_circuit_breaker_state{cluster,endpoint}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    /// `wasp_circuit_breaker_opened_total{cluster}`
    pub breaker_opened: IntCounterVec,
    /// `wasp_active_connections{listener}`
    pub active_connections: IntGaugeVec,
    /// `wasp_connections_total{listener}`
    pub connections: IntCounterVec,
    /// `wasp_tcp_bytes_total{listener,direction}`
    pub tcp_bytes: IntCounterVec,
    /// `wasp_access_log_dropped_total`
    pub access_log_dropped: IntCounter,
    /// `wasp_access_log_errors_total`
    pub access_log_errors: IntCounter,
    /// `wasp_filter_errors_total{filter,reason}`
    pub filter_errors: IntCounterVec,
    /// `wasp_filter_standing_values_left_out_total{filter}`
    pub filter_values_left_out: IntCounterVec,
    /// `wasp_filter_duration_seconds{filter,phase}`
    pub filter_duration: HistogramVec,
    /// `wasp_filter_reloads_total{filter,result}`
    pub filter_reloads: IntCounterVec,
    /// `wasp_filter_connections_denied_total{filter}`
    pub filter_connections_denied: IntCounterVec,
    /// `wasp_filter_generation{filter}`
    pub filter_generation: IntGaugeVec,
    /// `wasp_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `wasp_config_generation`
    pub config_generation: IntGauge,
    /// `wasp_timeouts_total{listener,kind}`
    timeouts: IntCounterVec,
    /// `wasp_http2_abuse_total{listener,kind}`
    abuse: IntCounterVec,
    /// TLS handshakes, certificate expiry, TLS reloads.
    pub tls: std::sync::Arc<crate::tls::TlsMetrics>,
    /// `wasp_redirect_loops_total{listener}`
    pub redirect_loops: IntCounterVec,
    filter_counters: Mutex<HashMap<String, IntCounterVec>>,
    filter_histograms: Mutex<HashMap<String, prometheus::HistogramVec>>,
}

/// Filter-defined metric names a proxy accepts in all (beyond them, samples are dropped).
const MAX_FILTER_METRICS: usize = 256;

impl Metrics {
    /// Registers every family in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets =
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "wasp_requests_total",
                    "HTTP requests completed, by listener, route, cluster, status class and code, and who answered \
                     (source: upstream, wasp, filter, client for 499 when the client left first)",
                ),
                &["listener", "route", "cluster", "class", "code", "source"],
            )
            .expect("valid metric"),
            local_replies: IntCounterVec::new(
                Opts::new(
                    "wasp_local_replies_total",
                    "Responses wasp generated itself instead of the upstream's, by status code and reason \
                     (the access log's reason, e.g. wasp_no_route, wasp_upstream_connect_failure, wasp_circuit_open)",
                ),
                &["listener", "route", "cluster", "code", "reason"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                "wasp_request_duration_seconds",
                "Time from request headers to the end of the response",
                &["listener", "route", "cluster"],
                &latency_buckets,
            )
            .expect("valid metric"),
            upstream_errors: IntCounterVec::new(
                Opts::new("wasp_upstream_errors_total", "Failed upstream attempts, by cluster and kind"),
                &["cluster", "kind"],
            )
            .expect("valid metric"),
            retries: IntCounterVec::new(
                Opts::new("wasp_upstream_retries_total", "Retried upstream attempts, by cluster"),
                &["cluster"],
            )
            .expect("valid metric"),
            upstream_wait: HistogramVec::new(
                "wasp_upstream_wait_seconds",
                "Time an upstream attempt waited for a connection to send on: ~0 for an idle pooled one, \
                 the dial for a new one, plus the queue at max_connections_per_endpoint",
                &["cluster"],
                &[
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .expect("valid metric"),
            breaker_opened: IntCounterVec::new(
                Opts::new(
                    "wasp_circuit_breaker_opened_total",
                    "Times an endpoint's circuit breaker opened (after consecutive failures, or again after a \
                     failed half-open probe), by cluster",
                ),
                &["cluster"],
            )
            .expect("valid metric"),
            breaker_state: IntGaugeVec::new(
                Opts::new("wasp_circuit_breaker_state", "Circuit breaker per endpoint: 0 closed, 1 open, 2 half-open"),
                &["cluster", "endpoint"],
            )
            .expect("valid metric"),
            active_connections: IntGaugeVec::new(
                Opts::new("wasp_active_connections", "Downstream connections open now"),
                &["listener"],
            )
            .expect("valid metric"),
            connections: IntCounterVec::new(
                Opts::new("wasp_connections_total", "Downstream connections accepted"),
                &["listener"],
            )
            .expect("valid metric"),
            tcp_bytes: IntCounterVec::new(
                Opts::new(
                    "wasp_tcp_bytes_total",
                    "Bytes copied by TCP listeners; direction is upstream (client to server) or downstream",
                ),
                &["listener", "direction"],
            )
            .expect("valid metric"),
            access_log_dropped: IntCounter::new(
                "wasp_access_log_dropped_total",
                "Access-log lines dropped because the sink fell behind",
            )
            .expect("valid metric"),
            access_log_errors: IntCounter::new("wasp_access_log_errors_total", "Access-log writes that failed")
                .expect("valid metric"),
            filter_errors: IntCounterVec::new(
                Opts::new(
                    "wasp_filter_errors_total",
                    "Filter failures: trap, timeout, memory, stack_overflow, invalid_output, unavailable",
                ),
                &["filter", "reason"],
            )
            .expect("valid metric"),
            filter_values_left_out: IntCounterVec::new(
                Opts::new(
                    "wasp_filter_standing_values_left_out_total",
                    "Standing edits a filter registered that were left out of one request: \
                     their value filled in was not a valid header value (or host) for it",
                ),
                &["filter"],
            )
            .expect("valid metric"),
            filter_duration: HistogramVec::new(
                "wasp_filter_duration_seconds",
                "Time spent in one filter call, by phase",
                &["filter", "phase"],
                &[0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05],
            )
            .expect("valid metric"),
            filter_reloads: IntCounterVec::new(
                Opts::new(
                    "wasp_filter_reloads_total",
                    "Filter reloads after a module file changed, by result (ok, error)",
                ),
                &["filter", "result"],
            )
            .expect("valid metric"),
            filter_connections_denied: IntCounterVec::new(
                Opts::new(
                    "wasp_filter_connections_denied_total",
                    "Connections closed by a connection filter: it denied them, or failed with on_error fail-closed",
                ),
                &["filter"],
            )
            .expect("valid metric"),
            filter_generation: IntGaugeVec::new(
                Opts::new(
                    "wasp_filter_generation",
                    "Generation of the filter version serving (1 at start, +1 per reload)",
                ),
                &["filter"],
            )
            .expect("valid metric"),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "wasp_config_reloads_total",
                    "Config reloads after the config file changed, by result (ok, error)",
                ),
                &["result"],
            )
            .expect("valid metric"),
            config_generation: IntGauge::new(
                "wasp_config_generation",
                "Generation of the config serving (1 at start, +1 per reload)",
            )
            .expect("valid metric"),
            timeouts: IntCounterVec::new(
                Opts::new(
                    "wasp_timeouts_total",
                    "Downstream connections ended by a timeout: header_read, idle, write_stall, tunnel_idle",
                ),
                &["listener", "kind"],
            )
            .expect("valid metric"),
            abuse: IntCounterVec::new(
                Opts::new(
                    "wasp_http2_abuse_total",
                    "HTTP/2 connections ended for abuse: early_resets (rapid reset), control_frames (SETTINGS/PING flood)",
                ),
                &["listener", "kind"],
            )
            .expect("valid metric"),
            tls: Default::default(),
            redirect_loops: IntCounterVec::new(
                Opts::new(
                    "wasp_redirect_loops_total",
                    "Connections refused because they were wasp's own upstream connections, redirected back to it",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            filter_counters: Mutex::default(),
            filter_histograms: Mutex::default(),
            registry,
        };
        let build = IntGaugeVec::new(Opts::new("wasp_build_info", "wasp version"), &["version"]).expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let r = &m.registry;
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.local_replies.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.upstream_errors.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.upstream_wait.clone()),
            Box::new(m.breaker_state.clone()),
            Box::new(m.breaker_opened.clone()),
            Box::new(m.active_connections.clone()),
            Box::new(m.connections.clone()),
            Box::new(m.tcp_bytes.clone()),
            Box::new(m.redirect_loops.clone()),
            Box::new(m.access_log_dropped.clone()),
            Box::new(m.access_log_errors.clone()),
            Box::new(m.filter_errors.clone()),
            Box::new(m.filter_values_left_out.clone()),
            Box::new(m.filter_duration.clone()),
            Box::new(m.filter_reloads.clone()),
            Box::new(m.filter_connections_denied.clone()),
            Box::new(m.filter_generation.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.config_generation.clone()),
            Box::new(m.timeouts.clone()),
            Box::new(m.abuse.clone()),
            Box::new(build),
        ] {
            r.register(c).expect("metric names are unique");
        }
        for c in m.tls.collectors() {
            r.register(c).expect("metric names are unique");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_start_time_seconds...: read from /proc
        // when scraped, nothing on the request path.
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("metric names are unique");
        m
    }

    /// Pre-resolved children for one (listener, route, cluster).
    pub fn route(&self, listener: &str, route: &str, cluster: &str) -> RouteMetrics {
        let duration = self.duration.with_label_values(&[listener, route, cluster]);
        RouteMetrics::new(&self.requests, &self.local_replies, duration, [listener, route, cluster])
    }

    /// Pre-resolved children for the requests that match no route on
    /// `listener` (`route=""`, `cluster=""`); their `wasp_no_route` count
    /// exists at 0 from the start.
    pub fn no_route(&self, listener: &str) -> RouteMetrics {
        let metrics = self.route(listener, "", "");
        metrics.expect(crate::error::Kind::NoRoute);
        metrics
    }

    /// Pre-resolved counters of why one listener ended connections.
    pub fn connection_ends(&self, listener: &str) -> ConnectionEnds {
        let timeout = |k| self.timeouts.with_label_values(&[listener, k]);
        let abuse = |k| self.abuse.with_label_values(&[listener, k]);
        ConnectionEnds {
            header_read: timeout("header_read"),
            idle: timeout("idle"),
            write_stall: timeout("write_stall"),
            tunnel_idle: timeout("tunnel_idle"),
            early_resets: abuse("early_resets"),
            control_frames: abuse("control_frames"),
        }
    }

    /// `filter`'s series of a filter-defined counter
    /// `wasp_filter_<name>_total{filter}`; `None` for an invalid name, or one
    /// past the proxy-wide cap.
    pub fn filter_counter(&self, filter: &str, name: &str) -> Option<IntCounter> {
        let family = self.filter_family(&self.filter_counters, name, |n| {
            IntCounterVec::new(
                Opts::new(format!("wasp_filter_{n}_total"), format!("Filter-defined counter {n}")),
                &["filter"],
            )
        });
        family.map(|f| f.with_label_values(&[filter]))
    }

    /// Records a sample in a filter-defined histogram `wasp_filter_<name>{filter}`.
    pub fn filter_histogram(&self, filter: &str, name: &str, value: f64) {
        let family = self.filter_family(&self.filter_histograms, name, |n| {
            prometheus::HistogramVec::new(
                HistogramOpts::new(format!("wasp_filter_{n}"), format!("Filter-defined histogram {n}")),
                &["filter"],
            )
        });
        if let Some(f) = family {
            f.with_label_values(&[filter]).observe(value);
        }
    }

    fn filter_family<V: Clone + prometheus::core::Collector + 'static>(
        &self,
        families: &Mutex<HashMap<String, V>>,
        name: &str,
        make: impl FnOnce(&str) -> prometheus::Result<V>,
    ) -> Option<V> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return None;
        }
        let mut map = families.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(name) {
            return Some(f.clone());
        }
        if map.len() >= MAX_FILTER_METRICS {
            return None;
        }
        let family = make(name).ok()?;
        self.registry.register(Box::new(family.clone())).ok()?;
        map.insert(name.to_string(), family.clone());
        Some(family)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Why one listener ended connections: `wasp_timeouts_total` and
/// `wasp_http2_abuse_total`, by kind.
#[derive(Clone)]
pub struct ConnectionEnds {
    /// A client did not send its request headers in time.
    pub header_read: IntCounter,
    /// A connection had nothing in flight for `idle_timeout`.
    pub idle: IntCounter,
    /// A client accepted no response bytes for `write_timeout`.
    pub write_stall: IntCounter,
    /// An upgraded tunnel carried nothing for `tunnel_idle_timeout`.
    pub tunnel_idle: IntCounter,
    /// An HTTP/2 client reset most of its streams early.
    pub early_resets: IntCounter,
    /// An HTTP/2 client sent more SETTINGS/PING frames than allowed.
    pub control_frames: IntCounter,
}

/// Keeps a gauge raised while alive (e.g. an open connection).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard drops.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
