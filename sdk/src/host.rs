//! What wasp offers a filter: logs, metrics, clocks, a shared key-value
//! store and HTTP calls to clusters. Each call goes to the proxy and none
//! blocks on the network: HTTP calls are sent when the phase returns.

use crate::bindings::wasp::filter::host as wit;
use crate::bindings::wasp::filter::types::Level;

/// Structured logs, written by wasp with the filter's name (and the
/// route and request id when the call is about a request).
pub mod log {
    use super::*;

    /// Logs at trace level.
    pub fn trace(message: &str) {
        wit::log(Level::Trace, message);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        wit::log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        wit::log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        wit::log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        wit::log(Level::Error, message);
    }
}

/// Filter-defined metrics, exported on wasp's `/metrics` with a `filter` label.
pub mod metrics {
    use super::*;

    /// Adds `value` to counter `name` (`wasp_filter_<name>_total`).
    pub fn counter_add(name: &str, value: u64) {
        wit::counter_add(name, value);
    }
    /// Records `value` in histogram `name` (`wasp_filter_<name>`).
    pub fn histogram_observe(name: &str, value: f64) {
        wit::histogram_observe(name, value);
    }
}

/// Time.
pub mod clock {
    use super::*;

    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        wit::now_ms()
    }
    /// Monotonic nanoseconds, for intervals.
    pub fn monotonic_ns() -> u64 {
        wit::monotonic_ns()
    }
}

/// The filter's key-value store, shared by all its instances in the proxy.
pub mod kv {
    use super::*;

    /// The value at `key` and its version.
    pub fn get(key: &str) -> Option<(Vec<u8>, u64)> {
        wit::kv_get(key)
    }
    /// Stores `value` at `key`; a `ttl_ms` of 0 keeps it until overwritten.
    pub fn set(key: &str, value: &[u8], ttl_ms: u64) {
        wit::kv_set(key, value, ttl_ms);
    }
    /// Stores `value` only if the version at `key` is still `expected`
    /// (`None`: only if absent); returns whether it was stored.
    pub fn compare_and_swap(key: &str, expected: Option<u64>, value: &[u8], ttl_ms: u64) -> bool {
        wit::kv_compare_and_swap(key, expected, value, ttl_ms)
    }
    /// Adds `delta` to the integer at `key` (absent is 0) and returns the result.
    pub fn increment(key: &str, delta: i64, ttl_ms: u64) -> i64 {
        wit::kv_increment(key, delta, ttl_ms)
    }
}

/// HTTP calls to clusters the filter's config lists in `http_clusters`
/// (e.g. an authorization service). A call is prepared here and sent when
/// the phase returns [`crate::Decision::Wait`]; its answer arrives in
/// [`crate::Filter::on_call_response`].
pub mod http {
    use crate::bindings::wasp::filter::host as wit;
    use crate::bindings::wasp::filter::types as t;

    /// A request to a cluster.
    #[derive(Debug, Clone)]
    pub struct CallRequest {
        method: String,
        path: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        timeout_ms: u32,
    }

    impl CallRequest {
        /// A request with `method` for `path` (path and query, starting with `/`).
        pub fn new(method: &str, path: &str) -> Self {
            CallRequest {
                method: method.to_string(),
                path: path.to_string(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout_ms: 0,
            }
        }

        /// A `GET` for `path`.
        pub fn get(path: &str) -> Self {
            Self::new("GET", path)
        }

        /// A `POST` for `path`.
        pub fn post(path: &str) -> Self {
            Self::new("POST", path)
        }

        /// Adds a header.
        pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
            self.headers.push((name.to_string(), value.as_ref().to_vec()));
            self
        }

        /// Sets the body.
        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
            self.body = body.into();
            self
        }

        /// Time limit for the whole call (default 1 s).
        pub fn timeout_ms(mut self, ms: u32) -> Self {
            self.timeout_ms = ms;
            self
        }
    }

    /// A cluster's answer (bodies over 1 MiB fail the call).
    #[derive(Debug, Clone)]
    pub struct CallResponse {
        /// Status code.
        pub status: u16,
        /// Headers, lower-case names, in order.
        pub headers: Vec<(String, Vec<u8>)>,
        /// Body.
        pub body: Vec<u8>,
    }

    impl CallResponse {
        #[doc(hidden)]
        pub fn from_wit(r: t::CallResponse) -> Self {
            CallResponse {
                status: r.status,
                headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                body: r.body,
            }
        }

        /// The first value of header `name` (lower-case) as text.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
        }
    }

    /// Prepares `request` to `cluster` and returns its id. Fails on an invalid
    /// request or when too many calls are pending; calling a cluster the
    /// config does not list traps.
    pub fn call(cluster: &str, request: CallRequest) -> Result<u64, String> {
        let headers = request.headers.into_iter().map(|(name, value)| t::Header { name, value }).collect();
        wit::http_call(
            cluster,
            &t::CallRequest {
                method: request.method,
                path: request.path,
                headers,
                body: request.body,
                timeout_ms: request.timeout_ms,
            },
        )
    }
}
