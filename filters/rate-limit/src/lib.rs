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
    /// The bucket key of the request at hand (kept: no allocation a request).
    bucket: String,
}

/// Bucket state as stored: a 0 byte (never in the text older versions
/// stored, `<tokens>:<ms>`, whatever its length), then the tokens left
/// (`f64`) and the time they were counted (ms, `u64`), little-endian: 17
/// bytes. Binary, not text: printing and parsing a float on every request
/// cost more than the rest of the bucket. Any other value, or one that is
/// not a finite number of tokens, counts as a full bucket.
fn parse(v: &[u8]) -> Option<(f64, u64)> {
    let (&TAG, rest) = v.split_first()? else { return None };
    let (tokens, at) = rest.split_first_chunk::<8>()?;
    let at: &[u8; 8] = at.try_into().ok()?;
    let tokens = f64::from_le_bytes(*tokens);
    tokens.is_finite().then_some((tokens, u64::from_le_bytes(*at)))
}

/// The first byte of a stored bucket.
const TAG: u8 = 0;

fn encode(tokens: f64, at: u64) -> [u8; 17] {
    let mut v = [TAG; 17];
    v[1..9].copy_from_slice(&tokens.to_le_bytes());
    v[9..].copy_from_slice(&at.to_le_bytes());
    v
}

/// `n` in decimal, written into `buf` (three numbers on every answer: no
/// `String` for each).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

impl Key {
    /// Writes the bucket key of `req` into `key`.
    fn write(&self, req: &Request<'_>, key: &mut String) {
        let by_header = match self {
            Key::Header(name) => req.header(name).filter(|v| !v.is_empty()),
            Key::Peer => None,
        };
        let (prefix, id) = match by_header {
            Some(v) => ("h:", v),
            // No key header: the client's address identifies it.
            None => {
                let peer = req.peer();
                ("ip:", peer.rsplit_once(':').map_or(peer, |(ip, _)| ip))
            }
        };
        key.clear();
        key.push_str(prefix);
        key.push_str(id);
    }
}

impl RateLimit {
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
            if kv::compare_and_swap(key, current.map(|(_, version)| version), &encode(left, now), ttl_ms) {
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
        Ok(RateLimit { rate: c.rate, burst: f64::from(c.burst), key, bucket: String::new() })
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
        self.key.write(req, &mut self.bucket);
        match self.take(&self.bucket) {
            Ok(left) => {
                let mut buf = [0; 20];
                let _ = req.set_response_header("ratelimit-limit", decimal(self.burst as u64, &mut buf));
                let _ = req.set_response_header("ratelimit-remaining", decimal(left.floor() as u64, &mut buf));
                let _ = req.set_response_header("ratelimit-reset", decimal(self.reset_secs(left), &mut buf));
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

#[cfg(test)]
mod tests {
    use super::{decimal, encode, parse};

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut buf = [0; 20];
        for n in [0, 7, 10, 1_000_000_000, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn bucket_state_round_trips_and_anything_else_is_a_full_bucket() {
        assert_eq!(parse(&encode(2.5, 1_700_000_000_123)), Some((2.5, 1_700_000_000_123)));
        assert_eq!(parse(b"2.5:1700000000123"), None, "an older version's text");
        assert_eq!(parse(b"19:1764780000000"), None, "old text of 16 bytes, the old binary length");
        assert_eq!(parse(b"9:1764780000000.0"), None, "old text of 17 bytes");
        assert_eq!(parse(&encode(f64::NAN, 1)), None);
        assert_eq!(parse(&encode(f64::INFINITY, 1)), None);
        assert_eq!(parse(&[0; 16]), None);
    }
}
