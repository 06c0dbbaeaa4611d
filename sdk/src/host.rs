//! What wasp offers a filter: logs, metrics, clocks and a shared key-value
//! store. Each call goes to the proxy; none blocks on the network.

use crate::bindings::wasp::filter::host as wit;
use crate::bindings::wasp::filter::types::Level;

/// Structured logs, written by wasp with the filter's name.
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
