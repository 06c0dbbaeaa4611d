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
//! first. A `BTreeMap`: std's `HashMap` seeds itself from WASI's random
//! source, which wasp does not give filters.

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
    claims: BTreeMap<Rc<str>, Rc<Claims>>,
    order: VecDeque<Rc<str>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: nothing is kept).
    pub fn new(capacity: usize) -> Self {
        TokenCache { capacity, bytes: 0, claims: BTreeMap::new(), order: VecDeque::new() }
    }

    /// The claims of `token`, if it was valid when it was kept.
    pub fn get(&self, token: &str) -> Option<Rc<Claims>> {
        self.claims.get(token).cloned()
    }

    /// Keeps a valid token (one not kept yet), evicting the oldest beyond
    /// the bounds.
    pub fn insert(&mut self, token: &str, claims: Rc<Claims>) {
        if self.capacity == 0 || token.len() > MAX_CACHED_TOKEN || self.claims.contains_key(token) {
            return;
        }
        let token: Rc<str> = token.into();
        self.bytes += token.len() * CLAIMS_FACTOR;
        self.order.push_back(token.clone());
        self.claims.insert(token, claims);
        while self.order.len() > self.capacity || self.bytes > MAX_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            self.claims.remove(&old);
            self.bytes -= old.len() * CLAIMS_FACTOR;
        }
    }

    /// Forgets `token` (it expired).
    pub fn remove(&mut self, token: &str) {
        if self.claims.remove(token).is_some() {
            self.order.retain(|t| &**t != token);
            self.bytes -= token.len() * CLAIMS_FACTOR;
        }
    }

    /// Tokens kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.claims.len()
    }
}
