//! A filter's shared key-value store: one per filter, shared by all its
//! instances, with per-key TTL, versions for compare-and-swap, and integer
//! increment. Bounded: past [`MAX_ENTRIES`] expired keys go first, then the
//! oldest-written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys a filter may hold at once.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest key accepted.
pub const MAX_KEY: usize = 1024;
/// Largest value accepted.
pub const MAX_VALUE: usize = 64 * 1024;

struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// One filter's store.
#[derive(Default)]
pub struct Kv {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    next_version: u64,
}

fn expiry(ttl_ms: u64) -> Option<Instant> {
    (ttl_ms > 0).then(|| Instant::now() + Duration::from_millis(ttl_ms))
}

impl Kv {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live value at `key` and its version.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let inner = self.lock();
        let e = inner.map.get(key)?;
        e.live(Instant::now()).then(|| (e.value.clone(), e.version))
    }

    /// Stores `value` (a `ttl_ms` of 0 never expires).
    pub fn set(&self, key: &str, value: Vec<u8>, ttl_ms: u64) {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return;
        }
        self.lock().put(key, value, ttl_ms);
    }

    /// Stores `value` only if the live version is `expected` (`None`: absent).
    pub fn compare_and_swap(&self, key: &str, expected: Option<u64>, value: Vec<u8>, ttl_ms: u64) -> bool {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return false;
        }
        let mut inner = self.lock();
        let now = Instant::now();
        let current = inner.map.get(key).filter(|e| e.live(now)).map(|e| e.version);
        if current != expected {
            return false;
        }
        inner.put(key, value, ttl_ms);
        true
    }

    /// Adds `delta` to the decimal integer at `key` (absent, expired or not
    /// an integer counts as 0) and returns the new value. A `ttl_ms` of 0
    /// keeps the key's current expiry.
    pub fn increment(&self, key: &str, delta: i64, ttl_ms: u64) -> i64 {
        if key.len() > MAX_KEY {
            return 0;
        }
        let mut inner = self.lock();
        let now = Instant::now();
        let (current, expires) = match inner.map.get(key).filter(|e| e.live(now)) {
            Some(e) => (std::str::from_utf8(&e.value).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0), e.expires),
            None => (0, None),
        };
        let next = current.saturating_add(delta);
        let expires = if ttl_ms > 0 { expiry(ttl_ms) } else { expires };
        inner.put_with(key, next.to_string().into_bytes(), expires);
        next
    }

    /// Keys held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn put(&mut self, key: &str, value: Vec<u8>, ttl_ms: u64) {
        self.put_with(key, value, expiry(ttl_ms));
    }

    fn put_with(&mut self, key: &str, value: Vec<u8>, expires: Option<Instant>) {
        if !self.map.contains_key(key) && self.map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.map.retain(|_, e| e.live(now));
            if self.map.len() >= MAX_ENTRIES {
                let oldest = self.map.iter().min_by_key(|(_, e)| e.version).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.map.remove(&k);
                }
            }
        }
        self.next_version += 1;
        let version = self.next_version;
        self.map.insert(key.to_string(), Entry { value, version, expires });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_cas_and_increment() {
        let kv = Kv::default();
        assert!(kv.get("a").is_none());
        assert!(kv.compare_and_swap("a", None, b"1".to_vec(), 0), "absent: create");
        let (v, version) = kv.get("a").expect("value");
        assert_eq!(v, b"1");
        assert!(!kv.compare_and_swap("a", None, b"2".to_vec(), 0), "present: not absent");
        assert!(!kv.compare_and_swap("a", Some(version + 1), b"2".to_vec(), 0), "stale version");
        assert!(kv.compare_and_swap("a", Some(version), b"2".to_vec(), 0));
        assert_eq!(kv.increment("a", 5, 0), 7);
        assert_eq!(kv.increment("n", -3, 0), -3);
        kv.set("s", b"text".to_vec(), 0);
        assert_eq!(kv.increment("s", 1, 0), 1, "non-integers count as 0");
    }

    #[test]
    fn ttl_expires_values() {
        let kv = Kv::default();
        kv.set("t", b"x".to_vec(), 1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(kv.get("t").is_none());
        assert!(kv.compare_and_swap("t", None, b"y".to_vec(), 0), "an expired key counts as absent");
    }
}
