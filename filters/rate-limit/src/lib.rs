//! rate-limit: a token bucket per key, shared by every instance of the
//! filter through wasp's key-value store (compare-and-swap, so concurrent
//! requests never over-spend). Over the limit: 429 with `Retry-After`.
//! Every answer carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset`. See README.md for the config.

use serde::Deserialize;
use wasp_sdk::host::{clock, kv, log, metrics};
use wasp_sdk::{Decision, Facts, Filter, Phases, Registration, Reply, Request};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size: the most requests allowed in a burst.
    burst: u32,
    /// What identifies a client: `peer` (its IP), `header:<name>`, or
    /// `subject` (the header the auth filter sets, `x-auth-subject`).
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "peer".into()
}

enum Key {
    Peer,
    Header(String),
}

struct RateLimit {
    rate: f64,
    burst: f64,
    key: Key,
}

/// Bucket state as stored: tokens and the time they were counted.
fn parse(v: &[u8]) -> Option<(f64, u64)> {
    let text = std::str::from_utf8(v).ok()?;
    let (tokens, at) = text.split_once(':')?;
    Some((tokens.parse().ok()?, at.parse().ok()?))
}

impl RateLimit {
    fn key_of(&self, req: &Request<'_>) -> String {
        let by_header = match &self.key {
            Key::Header(name) => req.header(name).filter(|v| !v.is_empty()),
            Key::Peer => None,
        };
        match by_header {
            Some(v) => format!("h:{v}"),
            // No key header: the client's address identifies it.
            None => {
                let peer = req.peer();
                let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
                format!("ip:{ip}")
            }
        }
    }

    /// Takes one token; `Err(seconds)` when the bucket is empty.
    fn take(&self, key: &str) -> Result<f64, f64> {
        let ttl_ms = ((self.burst / self.rate) * 1000.0).ceil() as u64 + 1000;
        for _ in 0..16 {
            let now = clock::now_ms();
            let current = kv::get(key);
            let (tokens, at) = current.as_ref().and_then(|(v, _)| parse(v)).unwrap_or((self.burst, now));
            let elapsed = now.saturating_sub(at) as f64 / 1000.0;
            let available = (tokens + elapsed * self.rate).min(self.burst);
            if available < 1.0 {
                return Err((1.0 - available) / self.rate);
            }
            let left = available - 1.0;
            let stored = format!("{left}:{now}");
            if kv::compare_and_swap(key, current.map(|(_, version)| version), stored.as_bytes(), ttl_ms) {
                return Ok(left);
            }
        }
        // Heavy contention on one key: let the request through rather than stall it.
        log::warn(&format!("rate-limit: contention on {key}; allowing"));
        Ok(0.0)
    }

    fn reset_secs(&self, left: f64) -> u64 {
        ((self.burst - left) / self.rate).ceil() as u64
    }
}

impl Filter for RateLimit {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = wasp_sdk::parse_config(config)?;
        if !(c.rate > 0.0 && c.rate.is_finite()) {
            return Err("rate must be a positive number of requests per second".into());
        }
        if c.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        let key = match c.key.as_str() {
            "peer" => Key::Peer,
            "subject" => Key::Header("x-auth-subject".into()),
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Key::Header(name.to_ascii_lowercase()),
                _ => return Err(format!("key {other:?}: expected \"peer\", \"subject\" or \"header:<name>\"")),
            },
        };
        Ok(RateLimit { rate: c.rate, burst: f64::from(c.burst), key })
    }

    /// The request headers phase only (the `ratelimit-*` response headers
    /// go back as response edits), the client's address, and the key header.
    fn registration(&self) -> Registration {
        let registration = Registration::new().phases(Phases::REQUEST_HEADERS).facts(Facts::PEER);
        match &self.key {
            Key::Header(name) => registration.request_headers([name]),
            Key::Peer => registration,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        let key = self.key_of(req);
        match self.take(&key) {
            Ok(left) => {
                let _ = req.set_response_header("ratelimit-limit", (self.burst as u64).to_string());
                let _ = req.set_response_header("ratelimit-remaining", (left.floor() as u64).to_string());
                let _ = req.set_response_header("ratelimit-reset", self.reset_secs(left).to_string());
                Decision::Continue
            }
            Err(wait) => {
                metrics::counter_add("rate_limited", 1);
                let retry = wait.ceil().max(1.0) as u64;
                Decision::Reply(
                    Reply::new(429)
                        .header("retry-after", retry.to_string())
                        .header("ratelimit-limit", (self.burst as u64).to_string())
                        .header("ratelimit-remaining", "0")
                        .header("ratelimit-reset", retry.to_string())
                        .header("content-type", "text/plain; charset=utf-8")
                        .body("rate limit exceeded\n"),
                )
            }
        }
    }
}

wasp_sdk::export!(RateLimit);
