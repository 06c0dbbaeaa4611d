//! What a filter instance's store holds and the host side of every import:
//! the `message` resource over the proxy's own request/response head and
//! body, logs, filter-defined metrics, clocks, the shared key-value store and
//! outbound HTTP calls.

use super::bindings::wasp::filter::{host, types};
use super::call::{Pending, prepare};
use super::kv::Kv;
use crate::config::model::Capability;
use crate::metrics::Metrics;
use crate::upstream::Cluster;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{Resource, ResourceTable};
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
}

/// A store's data: the resource table, the memory limiter and the filter.
pub struct HostState {
    /// Resources lent to the guest during a call.
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
}

/// A call's time limit counts the CPU time the call used, not the time it
/// waited for a CPU: on a busy machine (a reload compiling, a load spike) a
/// cheap call preempted for 10 ms is not a slow filter. Reading a thread's
/// CPU clock costs a system call, so it is read only from the epoch tick
/// callback, i.e. only for calls that last past a tick. A running guest
/// sees the first tick within about one tick of its start, so the time
/// before it counts as at most two ticks (more means the thread was waiting,
/// not running); after it, the thread's CPU time counts. A call also ends
/// after [`WALL_FACTOR`] times its limit in wall time, whatever happened.
#[derive(Debug)]
pub struct CallClock {
    start: Instant,
    limit: Duration,
    first_tick: Option<(Instant, Duration)>,
}

/// Wall-clock bound of a call, in multiples of its CPU limit.
pub const WALL_FACTOR: u32 = 10;

impl Default for CallClock {
    fn default() -> Self {
        CallClock { start: Instant::now(), limit: Duration::ZERO, first_tick: None }
    }
}

impl CallClock {
    /// Starts timing a call allowed `limit`; returns the start time.
    pub fn start(&mut self, limit: Duration) -> Instant {
        let now = Instant::now();
        (self.start, self.limit, self.first_tick) = (now, limit, None);
        now
    }

    /// At an epoch tick during the call: go on for another tick, or
    /// interrupt the call (a `timeout`).
    pub fn on_tick(&mut self) -> wasmtime::Result<wasmtime::UpdateDeadline> {
        let now = Instant::now();
        let cpu = cpu_time::ThreadTime::try_now().map(|t| t.as_duration()).ok();
        let used = match (cpu, *self.first_tick.get_or_insert((now, cpu.unwrap_or_default()))) {
            (Some(cpu), (t0, cpu0)) => (t0 - self.start).min(2 * super::runtime::TICK) + cpu.saturating_sub(cpu0),
            (None, _) => now - self.start,
        };
        if used >= self.limit || now - self.start >= self.limit * WALL_FACTOR {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(wasmtime::UpdateDeadline::Continue(1))
    }
}

impl HostState {
    /// The limiter wasmtime consults on memory growth.
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }
}

/// The head a phase works on, moved (not copied) in for the call.
pub enum Head {
    /// A request head.
    Request(http::request::Parts),
    /// A response head.
    Response(http::response::Parts),
    /// Already sent (streamed body phases): nothing to read or change.
    Sent,
}

/// What a filter asked to see of a body.
pub use types::BodyMode;

/// The body a body phase works on: the whole body or one chunk.
#[derive(Default)]
pub struct Chunk {
    /// The bytes.
    pub data: Bytes,
    /// Whether this is the end of the body.
    pub end: bool,
    /// Trailers, at the end.
    pub trailers: Option<HeaderMap>,
}

/// Host side of the `message` resource.
pub struct MessageState {
    /// The head.
    pub head: Head,
    /// Facts of the exchange.
    pub facts: Facts,
    /// The body of a body phase (empty in headers phases).
    pub body: Chunk,
    /// What the filter asked for with `read-body`.
    pub wants: Option<BodyMode>,
}

impl MessageState {
    /// A message for a headers phase.
    pub fn head(head: Head, facts: &Facts) -> Self {
        MessageState { head, facts: facts.clone(), body: Chunk::default(), wants: None }
    }
}

/// What a filter may ask about the exchange.
#[derive(Clone)]
pub struct Facts {
    /// `x-request-id`.
    pub request_id: HeaderValue,
    /// Client address.
    pub peer: SocketAddr,
    /// Route name.
    pub route: Arc<str>,
    /// The client's verified certificate identity (mTLS), if any.
    pub identity: Option<Arc<str>>,
}

impl MessageState {
    fn headers(&self) -> Option<&HeaderMap> {
        match &self.head {
            Head::Request(p) => Some(&p.headers),
            Head::Response(p) => Some(&p.headers),
            Head::Sent => None,
        }
    }

    fn headers_mut(&mut self) -> Result<&mut HeaderMap, String> {
        match &mut self.head {
            Head::Request(p) => Ok(&mut p.headers),
            Head::Response(p) => Ok(&mut p.headers),
            Head::Sent => Err("the headers were already sent (streamed body phase)".into()),
        }
    }
}

/// Makes `authority` the request's one host: `Host`, and the URI's
/// authority where it has one, so that what the upstream gets agrees.
fn set_host(p: &mut http::request::Parts, authority: &str) -> Result<(), String> {
    let parsed = authority
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|_| crate::identity::is_valid_host(authority.as_bytes()))
        .ok_or_else(|| format!("invalid authority {authority:?}"))?;
    let value = HeaderValue::from_str(authority).map_err(|_| format!("invalid authority {authority:?}"))?;
    if p.uri.authority().is_some() {
        let mut parts = p.uri.clone().into_parts();
        parts.authority = Some(parsed);
        p.uri = http::Uri::from_parts(parts).map_err(|e| format!("invalid authority {authority:?}: {e}"))?;
    }
    p.headers.insert(http::header::HOST, value);
    Ok(())
}

/// A header map as the guest's header list.
pub fn header_list(map: &HeaderMap) -> Vec<types::Header> {
    map.iter().map(|(n, v)| types::Header { name: n.as_str().to_string(), value: v.as_bytes().to_vec() }).collect()
}

/// A guest's header list as a header map; fails on the first invalid name
/// or value. Framing and hop-by-hop fields are left out (wasp owns them) and
/// returned separately, for the caller to report.
pub fn header_map(headers: &[types::Header]) -> Result<(HeaderMap, Vec<HeaderName>), String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    let mut dropped = Vec::new();
    for h in headers {
        let (name, value) = header_pair(&h.name, &h.value)?;
        if is_framing(&name) {
            dropped.push(name);
        } else {
            map.append(name, value);
        }
    }
    Ok((map, dropped))
}

/// Fields a filter may not set, append, remove or put in a reply or
/// trailers: the message's framing and hop-by-hop fields, which wasp sets
/// from the body it actually sends. A filter setting `content-length` on a
/// response whose body it did not change would otherwise desynchronise the
/// client's connection (response splitting).
pub fn is_framing(name: &HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH || name == http::header::TRAILER || crate::headers::is_hop_by_hop(name)
}

/// Reports a framing field a filter tried to change (and did not): a
/// warning, `wasp_filter_errors_total{reason="invalid_output"}`, and the
/// error the guest gets back.
pub fn refuse_framing(filter: &str, metrics: &Metrics, name: &HeaderName) -> String {
    tracing::warn!(filter, header = %name, "a filter may not change framing or hop-by-hop headers; ignored");
    metrics.filter_errors.with_label_values(&[filter, "invalid_output"]).inc();
    format!("header {name:?} is managed by wasp (framing or hop-by-hop); not changed")
}

type Res<T> = wasmtime::Result<T>;

/// A guest's header name and value, checked.
fn header_pair(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
    let v = HeaderValue::from_bytes(value).map_err(|_| format!("invalid value for header {name:?}"))?;
    Ok((n, v))
}

impl types::Host for HostState {}

impl types::HostMessage for HostState {
    fn method(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(match &self.table.get(&m)?.head {
            Head::Request(p) => p.method.as_str().to_string(),
            Head::Response(_) | Head::Sent => String::new(),
        })
    }

    fn set_method(&mut self, m: Resource<MessageState>, method: String) -> Res<Result<(), String>> {
        let parsed = Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method {method:?}"));
        Ok(match (&mut self.table.get_mut(&m)?.head, parsed) {
            (Head::Request(p), Ok(method)) => {
                p.method = method;
                Ok(())
            }
            (Head::Response(_), _) => Err("a response has no method".into()),
            (Head::Sent, _) => Err("the headers were already sent".into()),
            (_, Err(e)) => Err(e),
        })
    }

    fn path(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(match &self.table.get(&m)?.head {
            Head::Request(p) => p.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
            Head::Response(_) | Head::Sent => String::new(),
        })
    }

    fn set_path(&mut self, m: Resource<MessageState>, path: String) -> Res<Result<(), String>> {
        let Head::Request(p) = &mut self.table.get_mut(&m)?.head else {
            return Ok(Err("not a request head (a response, or already sent)".into()));
        };
        if !path.starts_with('/') {
            return Ok(Err(format!("path {path:?} must start with '/'")));
        }
        let mut parts = p.uri.clone().into_parts();
        match path.parse() {
            Ok(pq) => parts.path_and_query = Some(pq),
            Err(_) => return Ok(Err(format!("invalid path {path:?}"))),
        }
        Ok(match http::Uri::from_parts(parts) {
            Ok(uri) => {
                p.uri = uri;
                Ok(())
            }
            Err(e) => Err(format!("invalid path {path:?}: {e}")),
        })
    }

    fn authority(&mut self, m: Resource<MessageState>) -> Res<Option<String>> {
        let Head::Request(p) = &self.table.get(&m)?.head else { return Ok(None) };
        let from_uri = p.uri.authority().map(|a| a.as_str().to_string());
        Ok(from_uri.or_else(|| p.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string)))
    }

    fn set_authority(&mut self, m: Resource<MessageState>, authority: String) -> Res<Result<(), String>> {
        let Head::Request(p) = &mut self.table.get_mut(&m)?.head else {
            return Ok(Err("not a request head (a response, or already sent)".into()));
        };
        Ok(set_host(p, &authority))
    }

    fn status(&mut self, m: Resource<MessageState>) -> Res<u16> {
        Ok(match &self.table.get(&m)?.head {
            Head::Response(p) => p.status.as_u16(),
            Head::Request(_) | Head::Sent => 0,
        })
    }

    fn get_header(&mut self, m: Resource<MessageState>, name: String) -> Res<Option<Vec<u8>>> {
        Ok(self.table.get(&m)?.headers().and_then(|h| h.get(name.as_str())).map(|v| v.as_bytes().to_vec()))
    }

    fn get_header_all(&mut self, m: Resource<MessageState>, name: String) -> Res<Vec<Vec<u8>>> {
        let Some(headers) = self.table.get(&m)?.headers() else { return Ok(Vec::new()) };
        Ok(headers.get_all(name.as_str()).iter().map(|v| v.as_bytes().to_vec()).collect())
    }

    fn header_names(&mut self, m: Resource<MessageState>) -> Res<Vec<String>> {
        Ok(self.table.get(&m)?.headers().map_or_else(Vec::new, |h| h.keys().map(|k| k.as_str().to_string()).collect()))
    }

    fn set_header(&mut self, m: Resource<MessageState>, name: String, value: Vec<u8>) -> Res<Result<(), String>> {
        let state = self.table.get_mut(&m)?;
        let shared = &self.shared;
        Ok(header_pair(&name, &value).and_then(|(n, v)| {
            if is_framing(&n) {
                return Err(refuse_framing(&shared.name, &shared.metrics, &n));
            }
            // A request's host is one value, checked like the client's own.
            if let (true, Head::Request(p)) = (n == http::header::HOST, &mut state.head) {
                return set_host(p, v.to_str().map_err(|_| format!("invalid authority {v:?}"))?);
            }
            state.headers_mut()?.insert(n, v);
            Ok(())
        }))
    }

    fn append_header(&mut self, m: Resource<MessageState>, name: String, value: Vec<u8>) -> Res<Result<(), String>> {
        let state = self.table.get_mut(&m)?;
        let shared = &self.shared;
        Ok(header_pair(&name, &value).and_then(|(n, v)| {
            if is_framing(&n) {
                return Err(refuse_framing(&shared.name, &shared.metrics, &n));
            }
            if n == http::header::HOST && matches!(state.head, Head::Request(_)) {
                return Err("a request has one host: use set-header or set-authority".into());
            }
            state.headers_mut()?.append(n, v);
            Ok(())
        }))
    }

    fn remove_header(&mut self, m: Resource<MessageState>, name: String) -> Res<()> {
        let state = self.table.get_mut(&m)?;
        if let (Ok(n), Ok(headers)) = (HeaderName::from_bytes(name.as_bytes()), state.headers_mut()) {
            if is_framing(&n) {
                refuse_framing(&self.shared.name, &self.shared.metrics, &n);
            } else {
                headers.remove(n);
            }
        }
        Ok(())
    }

    fn request_id(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.facts.request_id.to_str().unwrap_or_default().to_string())
    }

    fn peer(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.facts.peer.to_string())
    }

    fn route(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.facts.route.to_string())
    }

    fn peer_identity(&mut self, m: Resource<MessageState>) -> Res<Option<String>> {
        Ok(self.table.get(&m)?.facts.identity.as_deref().map(str::to_string))
    }

    fn read_body(&mut self, m: Resource<MessageState>, mode: BodyMode) -> Res<()> {
        self.table.get_mut(&m)?.wants = Some(mode);
        Ok(())
    }

    fn body(&mut self, m: Resource<MessageState>) -> Res<Vec<u8>> {
        Ok(self.table.get(&m)?.body.data.to_vec())
    }

    fn set_body(&mut self, m: Resource<MessageState>, body: Vec<u8>) -> Res<()> {
        self.table.get_mut(&m)?.body.data = Bytes::from(body);
        Ok(())
    }

    fn end_of_stream(&mut self, m: Resource<MessageState>) -> Res<bool> {
        Ok(self.table.get(&m)?.body.end)
    }

    fn trailers(&mut self, m: Resource<MessageState>) -> Res<Vec<types::Header>> {
        Ok(self.table.get(&m)?.body.trailers.as_ref().map_or_else(Vec::new, header_list))
    }

    fn set_trailer(&mut self, m: Resource<MessageState>, name: String, value: Vec<u8>) -> Res<Result<(), String>> {
        let body = &mut self.table.get_mut(&m)?.body;
        if !body.end {
            return Ok(Err("trailers can only be set at the end of the body".into()));
        }
        let shared = &self.shared;
        Ok(header_pair(&name, &value).and_then(|(n, v)| {
            if is_framing(&n) {
                return Err(refuse_framing(&shared.name, &shared.metrics, &n));
            }
            body.trailers.get_or_insert_with(HeaderMap::new).insert(n, v);
            Ok(())
        }))
    }

    fn drop(&mut self, m: Resource<MessageState>) -> Res<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) -> Res<()> {
        self.shared.require(Capability::Log)?;
        let filter = &*self.shared.name;
        let message = truncate(&message, 4096);
        match level {
            types::Level::Trace => tracing::trace!(filter, "{message}"),
            types::Level::Debug => tracing::debug!(filter, "{message}"),
            types::Level::Info => tracing::info!(filter, "{message}"),
            types::Level::Warn => tracing::warn!(filter, "{message}"),
            types::Level::Error => tracing::error!(filter, "{message}"),
        }
        Ok(())
    }

    fn counter_add(&mut self, name: String, value: u64) -> Res<()> {
        self.shared.require(Capability::Metrics)?;
        self.shared.metrics.filter_counter(&self.shared.name, &name, value);
        Ok(())
    }

    fn histogram_observe(&mut self, name: String, value: f64) -> Res<()> {
        self.shared.require(Capability::Metrics)?;
        self.shared.metrics.filter_histogram(&self.shared.name, &name, value);
        Ok(())
    }

    fn now_ms(&mut self) -> Res<u64> {
        self.shared.require(Capability::Clock)?;
        Ok(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }

    fn monotonic_ns(&mut self) -> Res<u64> {
        self.shared.require(Capability::Clock)?;
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Ok(START.get_or_init(Instant::now).elapsed().as_nanos() as u64)
    }

    fn kv_get(&mut self, key: String) -> Res<Option<(Vec<u8>, u64)>> {
        self.shared.require(Capability::Kv)?;
        Ok(self.shared.kv.get(&key))
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Res<()> {
        self.shared.require(Capability::Kv)?;
        self.shared.kv.set(&key, value, ttl_ms);
        Ok(())
    }

    fn kv_compare_and_swap(&mut self, key: String, expected: Option<u64>, value: Vec<u8>, ttl_ms: u64) -> Res<bool> {
        self.shared.require(Capability::Kv)?;
        Ok(self.shared.kv.compare_and_swap(&key, expected, value, ttl_ms))
    }

    fn kv_increment(&mut self, key: String, delta: i64, ttl_ms: u64) -> Res<i64> {
        self.shared.require(Capability::Kv)?;
        Ok(self.shared.kv.increment(&key, delta, ttl_ms))
    }

    fn http_call(&mut self, cluster: String, request: types::CallRequest) -> Res<Result<u64, String>> {
        let Some(target) = self.shared.clusters.get(&cluster) else {
            wasmtime::bail!(
                "filter {:?} may not call cluster {cluster:?}; add it to the filter's `http_clusters`",
                &*self.shared.name
            )
        };
        if self.calls.len() >= super::call::MAX_PENDING {
            return Ok(Err(format!("at most {} calls may be pending at once", super::call::MAX_PENDING)));
        }
        Ok(prepare(target.clone(), request).map(|future| {
            self.next_call += 1;
            self.calls.push(Pending { id: self.next_call, future });
            self.next_call
        }))
    }
}

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
