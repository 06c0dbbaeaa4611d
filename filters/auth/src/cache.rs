//! Tokens already validated, so a client that sends the same token again
//! (most clients do, until it expires) costs a lookup and a clock check
//! instead of a signature and two JSON parses: Envoy's `jwt_authn` does the
//! same (`jwt_cache_config`). The key is the whole token, signature
//! included, so a changed byte is a miss. Only valid tokens are kept, and
//! on a hit only time is checked again (`exp` and `nbf` move with the
//! clock; keys, issuers, audiences and required claims do not, and a new
//! config gets new instances with empty caches). Bounded twice: at most
//! `cache_size` tokens of at most [`MAX_CACHED_TOKEN`] bytes each, and at
//! most [`MAX_CACHE_BYTES`] of the instance's memory, each token counted
//! [`CLAIMS_FACTOR`] times its length for its parsed claims; the oldest go
//! first. Looked up by a 64-bit fingerprint of the token, then the token
//! itself is compared in full, eight bytes at a time and without stopping
//! at the first difference: a `BTreeMap` of whole tokens compared them
//! byte by byte (wasi-libc's `memcmp`), which cost more than the rest of
//! a cached check, and its early exit told a client how much of its token
//! matched a cached one. (A `BTreeMap`, not a `HashMap`: std's `HashMap`
//! seeds itself from WASI's random source, which wasp does not give
//! filters; tokens that share a fingerprint just take each other's place.)

use crate::jwt::Claims;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Longest token kept, in bytes (Envoy's `jwt_max_token_size` default).
pub const MAX_CACHED_TOKEN: usize = 4096;
/// The most memory one instance's cache may hold, as counted below.
pub const MAX_CACHE_BYTES: usize = 1 << 20;
/// What a kept token is counted as: its length this many times (the token,
/// and its claims parsed into JSON values, which take more room than their
/// text).
pub const CLAIMS_FACTOR: usize = 4;

/// Valid tokens and their claims, oldest first out.
pub struct TokenCache {
    capacity: usize,
    bytes: usize,
    claims: BTreeMap<u64, (Rc<str>, Rc<Claims>)>,
    order: VecDeque<u64>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: nothing is kept).
    pub fn new(capacity: usize) -> Self {
        TokenCache { capacity, bytes: 0, claims: BTreeMap::new(), order: VecDeque::new() }
    }

    /// The claims of `token`, if it was valid when it was kept.
    pub fn get(&self, token: &str) -> Option<Rc<Claims>> {
        let (kept, claims) = self.claims.get(&fingerprint(token))?;
        same(kept, token).then(|| claims.clone())
    }

    /// Keeps a valid token (one not kept yet), evicting the oldest beyond
    /// the bounds.
    pub fn insert(&mut self, token: &str, claims: Rc<Claims>) {
        if self.capacity == 0 || token.len() > MAX_CACHED_TOKEN {
            return;
        }
        let key = fingerprint(token);
        match self.claims.insert(key, (token.into(), claims)) {
            // Another token with the same fingerprint: this one takes its place.
            Some((old, _)) => self.bytes -= old.len() * CLAIMS_FACTOR,
            None => self.order.push_back(key),
        }
        self.bytes += token.len() * CLAIMS_FACTOR;
        while self.order.len() > self.capacity || self.bytes > MAX_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some((token, _)) = self.claims.remove(&old) {
                self.bytes -= token.len() * CLAIMS_FACTOR;
            }
        }
    }

    /// Forgets `token` (it expired).
    pub fn remove(&mut self, token: &str) {
        let key = fingerprint(token);
        if self.claims.get(&key).is_some_and(|(kept, _)| same(kept, token)) {
            self.claims.remove(&key);
            self.order.retain(|&k| k != key);
            self.bytes -= token.len() * CLAIMS_FACTOR;
        }
    }

    /// Tokens kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.claims.len()
    }
}

/// A 64-bit fingerprint of `token`, eight bytes at a time (FxHash's mix).
fn fingerprint(token: &str) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let (words, rest) = token.as_bytes().as_chunks::<8>();
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let h = words.iter().fold(token.len() as u64, |h, w| mix(h, u64::from_le_bytes(*w)));
    rest.iter().fold(h, |h, &b| mix(h, u64::from(b)))
}

/// Whether `a` and `b` are the same token, looking at every byte whatever
/// the first difference.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let ((aw, ar), (bw, br)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    let words = aw.iter().zip(bw).fold(0, |d, (x, y)| d | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y)));
    let rest = ar.iter().zip(br).fold(0, |d, (x, y)| d | (x ^ y));
    (words | u64::from(rest)) == 0
}

#[cfg(test)]
mod tests {
    use super::{TokenCache, fingerprint, same};
    use std::rc::Rc;

    #[test]
    fn a_token_differing_in_any_byte_is_a_miss() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        let mut cache = TokenCache::new(4);
        cache.insert(token, Rc::new(Default::default()));
        assert!(cache.get(token).is_some());
        for i in 0..token.len() {
            let mut other = token.as_bytes().to_vec();
            other[i] ^= 1;
            let other = String::from_utf8(other).expect("ascii");
            assert!(!same(token, &other), "byte {i}");
            assert!(cache.get(&other).is_none(), "byte {i}");
        }
        assert!(cache.get(&token[..token.len() - 1]).is_none(), "a prefix");
        assert!(cache.get(&format!("{token}x")).is_none(), "a longer token");
        assert_ne!(fingerprint("ab"), fingerprint("ab\0"), "the length is part of the fingerprint");
    }

    #[test]
    fn the_oldest_token_goes_first_and_an_expired_one_is_forgotten() {
        let mut cache = TokenCache::new(2);
        for t in ["t1.a.b", "t2.a.b", "t3.a.b"] {
            cache.insert(t, Rc::new(Default::default()));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("t1.a.b").is_none());
        cache.remove("t2.a.b");
        assert!(cache.get("t2.a.b").is_none());
        assert!(cache.get("t3.a.b").is_some());
        assert_eq!(cache.len(), 1);
    }
}
