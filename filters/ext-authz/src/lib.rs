//! ext-authz: asks an authorization service (a wasp cluster) whether each
//! request may pass, like Envoy's HTTP `ext_authz`. The check carries the
//! request's method, its path under `path_prefix`, the configured headers
//! and, if asked, its body. A 2xx answer allows the request (copying the
//! configured headers onto it); any other answer below 500 is the client's
//! answer. A 5xx, a timeout or an unreachable service is a service error,
//! handled by `on_service_error`. Decisions can be cached in the filter's
//! key-value store, keyed by a hash of everything the check sent.

mod config;
mod verdict;

use config::{Config, OnError};
use sha2::{Digest, Sha256};
use verdict::Verdict;
use wasp_sdk::host::http::{CallRequest, CallResponse, call};
use wasp_sdk::host::{kv, log, metrics};
use wasp_sdk::{BodyMode, Decision, Facts, Filter, Phases, Registration, Reply, Request};

struct ExtAuthz {
    config: Config,
    /// Cache key of the check in flight for the current request.
    pending: Option<String>,
}

impl Filter for ExtAuthz {
    fn new(config: &str) -> Result<Self, String> {
        Ok(ExtAuthz { config: Config::parse(config)?, pending: None })
    }

    /// Request phases only (the body phase when the check carries the
    /// body), the facts the check sends, and the headers it forwards.
    fn registration(&self) -> Registration {
        let mut phases = Phases::REQUEST_HEADERS;
        if self.config.include_body {
            phases |= Phases::REQUEST_BODY;
        }
        Registration::new()
            .phases(phases)
            .facts(Facts::METHOD | Facts::PATH | Facts::REQUEST_ID)
            .request_headers(&self.config.headers_to_send)
    }

    fn on_request_headers(&mut self, request: &mut Request<'_>) -> Decision {
        self.pending = None;
        // The service's headers are the only source of these: drop what the client sent.
        for name in &self.config.upstream_headers {
            request.remove_header(name);
        }
        if self.config.include_body {
            request.read_body(BodyMode::Buffer);
            return Decision::Continue;
        }
        self.check(request, Vec::new())
    }

    fn on_request_body(&mut self, request: &mut Request<'_>) -> Decision {
        let body = request.body().to_vec();
        self.check(request, body)
    }

    fn on_call_response(
        &mut self,
        request: &mut Request<'_>,
        _id: u64,
        response: Result<CallResponse, String>,
    ) -> Decision {
        let key = self.pending.take();
        let verdict = match response {
            Ok(r) if r.status >= 500 => return self.service_error(&format!("service answered {}", r.status)),
            Ok(r) => Verdict::of(&r, &self.config),
            Err(e) => return self.service_error(&e),
        };
        if let (Some(key), Some(ttl)) = (key, self.config.cache_ttl_ms) {
            kv::set(&key, &verdict.encode(), ttl);
        }
        self.apply(request, verdict)
    }
}

impl ExtAuthz {
    /// Answers from the cache, or sends the check and waits for it.
    fn check(&mut self, request: &mut Request<'_>, body: Vec<u8>) -> Decision {
        let check = self.check_request(request, body);
        let key = self.config.cache_ttl_ms.map(|_| cache_key(&check.1));
        if let Some(key) = &key
            && let Some(verdict) = kv::get(key).and_then(|(v, _)| Verdict::decode(&v))
        {
            metrics::counter_add("ext_authz_cache_hits", 1);
            return self.apply(request, verdict);
        }
        match call(&self.config.cluster, check.0) {
            Ok(_) => {
                self.pending = key;
                Decision::Wait
            }
            Err(e) => self.service_error(&e),
        }
    }

    /// The check for `request`, and the bytes that identify it for the cache.
    fn check_request(&self, request: &Request<'_>, body: Vec<u8>) -> (CallRequest, Vec<u8>) {
        let method = request.method();
        let path = format!("{}{}", self.config.path_prefix, request.path());
        let mut identity = [method.as_bytes(), b"\0", path.as_bytes(), b"\0"].concat();
        let mut check = CallRequest::new(method, &path).timeout_ms(self.config.timeout_ms);
        for name in &self.config.headers_to_send {
            for value in request.header_all(name) {
                identity.extend([name.as_bytes(), b"=", value, b"\0"].concat());
                check = check.header(name, value);
            }
        }
        check = check.header("x-request-id", request.request_id());
        if !body.is_empty() {
            identity.extend(&body);
            check = check.body(body);
        }
        (check, identity)
    }

    fn apply(&self, request: &mut Request<'_>, verdict: Verdict) -> Decision {
        match verdict {
            Verdict::Allow { headers } => {
                metrics::counter_add("ext_authz_allowed", 1);
                for (name, value) in headers {
                    if let Err(e) = request.set_header(&name, &value) {
                        log::warn(&format!("cannot forward header {name} from the authorization service: {e}"));
                    }
                }
                Decision::Continue
            }
            Verdict::Deny { status, headers, body } => {
                metrics::counter_add("ext_authz_denied", 1);
                let reply = headers.iter().fold(Reply::new(status), |r, (n, v)| r.header(n, v));
                Decision::Reply(reply.body(body))
            }
        }
    }

    fn service_error(&self, why: &str) -> Decision {
        metrics::counter_add("ext_authz_errors", 1);
        match self.config.on_service_error {
            OnError::Allow => {
                log::warn(&format!("authorization service error, allowing (on_service_error: allow): {why}"));
                Decision::Continue
            }
            OnError::Deny => {
                log::warn(&format!("authorization service error, denying: {why}"));
                let status = self.config.status_on_error;
                Decision::Reply(Reply::new(status).body("authorization service unavailable\n"))
            }
        }
    }
}

/// The cache key: a hash of everything the check sent (so a different
/// credential, path or method never shares a decision).
fn cache_key(identity: &[u8]) -> String {
    let digest = Sha256::digest(identity);
    digest.iter().fold(String::from("check:"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

wasp_sdk::export!(ExtAuthz);
