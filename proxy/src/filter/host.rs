//! What a filter instance's store holds, and the host side of the imports
//! both ABIs share: logs, filter-defined metrics, clocks, the shared
//! key-value store and outbound HTTP calls, each behind the capability the
//! config grants. [`super::v01`] and [`super::v02`] bind these to their
//! versions of `wasp:filter/host`.

use super::call::{CallRequest, MAX_PENDING, Pending, prepare};
use super::clock::CallClock;
use super::kv::Kv;
use super::message::{Facts, MessageState};
use crate::config::model::Capability;
use crate::metrics::Metrics;
use crate::upstream::Cluster;
use http::{HeaderName, HeaderValue};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};

/// What every instance of one filter shares.
pub struct FilterShared {
    /// The filter's name (log tag, metric label).
    pub name: Arc<str>,
    /// Its key-value store (shared by its versions).
    pub kv: Arc<Kv>,
    /// The proxy's metrics, for filter-defined counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Capabilities the config grants.
    pub allow: Vec<Capability>,
    /// Clusters it may call, by name.
    pub clusters: HashMap<String, Arc<Cluster>>,
}

impl FilterShared {
    /// Traps the call unless the config granted `cap`; the message tells the operator how to grant it.
    fn require(&self, cap: Capability) -> wasmtime::Result<()> {
        if self.allow.contains(&cap) {
            return Ok(());
        }
        let name = match cap {
            Capability::Log => "log",
            Capability::Metrics => "metrics",
            Capability::Clock => "clock",
            Capability::Kv => "kv",
        };
        wasmtime::bail!(
            "capability `{name}` is not granted to filter {:?}; add it to the filter's `allow` list",
            &*self.name
        )
    }

    /// Reports a framing field a filter tried to change (and did not): a
    /// warning and `wasp_filter_errors_total{reason="invalid_output"}`.
    pub fn refuse_framing(&self, name: &HeaderName) {
        tracing::warn!(filter = %self.name, header = %name, "a filter may not change framing or hop-by-hop headers; ignored");
        self.metrics.filter_errors.with_label_values(&[&self.name, "invalid_output"]).inc();
    }
}

/// A store's data: the resource table, the memory limiter and the filter.
pub struct HostState {
    /// Resources lent to the guest during a call (0.1's `message`).
    pub table: ResourceTable,
    /// Memory cap of this instance.
    pub limits: StoreLimits,
    /// The filter this instance belongs to.
    pub shared: Arc<FilterShared>,
    /// HTTP calls prepared during the current phase, sent if it returns `wait`.
    pub calls: Vec<Pending>,
    /// Id of the next call.
    pub next_call: u64,
    /// Time spent in the current call, against its limit.
    pub clock: CallClock,
    /// The route and request id of the request the current call is about,
    /// which wasp adds to the filter's log lines.
    request: Option<(Arc<str>, HeaderValue)>,
    /// The counters this instance added to, by name, resolved once (a
    /// filter adds to the same few on every request).
    counters: Vec<(Box<str>, Option<IntCounter>)>,
}

/// The `message` resource of 0.1 is backed by this.
pub type Message = MessageState;

type Res<T> = wasmtime::Result<T>;

/// Counter names an instance keeps resolved.
const MAX_COUNTERS: usize = 32;

impl HostState {
    /// A fresh store's data for `shared`'s filter, with memory capped at `memory` bytes.
    pub fn new(shared: Arc<FilterShared>, memory: usize) -> Self {
        HostState {
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new().memory_size(memory).trap_on_grow_failure(true).build(),
            shared,
            calls: Vec::new(),
            next_call: 0,
            clock: CallClock::default(),
            request: None,
            counters: Vec::new(),
        }
    }

    /// Before a call: no HTTP calls prepared yet, and the request it is
    /// about (`None` for a connection).
    pub fn begin(&mut self, request: Option<&Facts>) {
        self.calls.clear();
        self.request = request.map(|f| (f.route.clone(), f.request_id.clone()));
    }

    /// The limiter wasmtime consults on memory growth.
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// `log`.
    pub fn log(&mut self, level: tracing::Level, message: &str) -> Res<()> {
        self.shared.require(Capability::Log)?;
        let filter = &*self.shared.name;
        let message = truncate(message, 4096);
        let (route, request_id) = match &self.request {
            Some((route, id)) => (Some(&**route), id.to_str().ok()),
            None => (None, None),
        };
        match level {
            tracing::Level::TRACE => tracing::trace!(filter, route, request_id, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(filter, route, request_id, "{message}"),
            tracing::Level::INFO => tracing::info!(filter, route, request_id, "{message}"),
            tracing::Level::WARN => tracing::warn!(filter, route, request_id, "{message}"),
            tracing::Level::ERROR => tracing::error!(filter, route, request_id, "{message}"),
        }
        Ok(())
    }

    /// `counter-add`.
    pub fn counter_add(&mut self, name: &str, value: u64) -> Res<()> {
        self.shared.require(Capability::Metrics)?;
        let counter = match self.counters.iter().find(|(n, _)| **n == *name) {
            Some((_, counter)) => counter,
            None => {
                let counter = self.shared.metrics.filter_counter(&self.shared.name, name);
                if let Some(c) = &counter {
                    c.inc_by(value);
                }
                // Kept up to a bound: a filter cycling through names (or invalid ones) adds nothing here.
                if self.counters.len() < MAX_COUNTERS {
                    self.counters.push((name.into(), counter));
                }
                return Ok(());
            }
        };
        if let Some(c) = counter {
            c.inc_by(value);
        }
        Ok(())
    }

    /// `histogram-observe`.
    pub fn histogram_observe(&mut self, name: &str, value: f64) -> Res<()> {
        self.shared.require(Capability::Metrics)?;
        self.shared.metrics.filter_histogram(&self.shared.name, name, value);
        Ok(())
    }

    /// `now-ms`.
    pub fn now_ms(&mut self) -> Res<u64> {
        self.shared.require(Capability::Clock)?;
        Ok(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }

    /// `monotonic-ns`.
    pub fn monotonic_ns(&mut self) -> Res<u64> {
        self.shared.require(Capability::Clock)?;
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Ok(START.get_or_init(Instant::now).elapsed().as_nanos() as u64)
    }

    /// `kv-get`.
    pub fn kv_get(&mut self, key: &str) -> Res<Option<(Vec<u8>, u64)>> {
        self.shared.require(Capability::Kv)?;
        Ok(self.shared.kv.get(key))
    }

    /// `kv-set`.
    pub fn kv_set(&mut self, key: &str, value: Vec<u8>, ttl_ms: u64) -> Res<()> {
        self.shared.require(Capability::Kv)?;
        self.shared.kv.set(key, value, ttl_ms);
        Ok(())
    }

    /// `kv-compare-and-swap`.
    pub fn kv_compare_and_swap(&mut self, key: &str, expected: Option<u64>, value: Vec<u8>, ttl_ms: u64) -> Res<bool> {
        self.shared.require(Capability::Kv)?;
        Ok(self.shared.kv.compare_and_swap(key, expected, value, ttl_ms))
    }

    /// `kv-increment`.
    pub fn kv_increment(&mut self, key: &str, delta: i64, ttl_ms: u64) -> Res<i64> {
        self.shared.require(Capability::Kv)?;
        Ok(self.shared.kv.increment(key, delta, ttl_ms))
    }

    /// `http-call`: traps for a cluster the config does not list.
    pub fn http_call(&mut self, cluster: &str, request: CallRequest) -> Res<Result<u64, String>> {
        let Some(target) = self.shared.clusters.get(cluster) else {
            wasmtime::bail!(
                "filter {:?} may not call cluster {cluster:?}; add it to the filter's `http_clusters`",
                &*self.shared.name
            )
        };
        if self.calls.len() >= MAX_PENDING {
            return Ok(Err(format!("at most {MAX_PENDING} calls may be pending at once")));
        }
        Ok(prepare(target.clone(), request).map(|future| {
            self.next_call += 1;
            self.calls.push(Pending { id: self.next_call, future });
            self.next_call
        }))
    }
}

/// Binds one version's `wasp:filter/host` imports to the implementations
/// above. `$types` and `$host` are the version's generated `types` and `host`
/// modules (in scope where it is used): the two versions' interfaces are
/// the same, only their generated types differ.
macro_rules! bind_host_imports {
    ($types:ident, $host:ident) => {
        impl $host::Host for $crate::filter::host::HostState {
            fn log(&mut self, level: $types::Level, message: String) -> wasmtime::Result<()> {
                let level = match level {
                    $types::Level::Trace => tracing::Level::TRACE,
                    $types::Level::Debug => tracing::Level::DEBUG,
                    $types::Level::Info => tracing::Level::INFO,
                    $types::Level::Warn => tracing::Level::WARN,
                    $types::Level::Error => tracing::Level::ERROR,
                };
                Self::log(self, level, &message)
            }

            fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
                Self::counter_add(self, &name, value)
            }

            fn histogram_observe(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
                Self::histogram_observe(self, &name, value)
            }

            fn now_ms(&mut self) -> wasmtime::Result<u64> {
                Self::now_ms(self)
            }

            fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
                Self::monotonic_ns(self)
            }

            fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<(Vec<u8>, u64)>> {
                Self::kv_get(self, &key)
            }

            fn kv_set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
                Self::kv_set(self, &key, value, ttl_ms)
            }

            fn kv_compare_and_swap(
                &mut self,
                key: String,
                expected: Option<u64>,
                value: Vec<u8>,
                ttl_ms: u64,
            ) -> wasmtime::Result<bool> {
                Self::kv_compare_and_swap(self, &key, expected, value, ttl_ms)
            }

            fn kv_increment(&mut self, key: String, delta: i64, ttl_ms: u64) -> wasmtime::Result<i64> {
                Self::kv_increment(self, &key, delta, ttl_ms)
            }

            fn http_call(
                &mut self,
                cluster: String,
                request: $types::CallRequest,
            ) -> wasmtime::Result<Result<u64, String>> {
                let request = $crate::filter::call::CallRequest {
                    method: request.method,
                    path: request.path,
                    headers: request.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                    body: request.body,
                    timeout_ms: request.timeout_ms,
                };
                Self::http_call(self, &cluster, request)
            }
        }
    };
}
pub(super) use bind_host_imports;

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
