//! Upstream clusters: endpoint choice (LB + circuit breakers), the pending
//! cap, the route timeout and retries. [`Cluster::forward`] sends one request
//! and returns the upstream's response head with its body still streaming.

mod balancer;
pub mod body;
mod breaker;
mod client;
mod endpoint;
mod h1;
mod passthrough;
mod pool;
mod wait;

pub use body::RequestBody;
pub use client::UpstreamBody;
pub use endpoint::{Endpoint, InFlight};
pub use h1::Upgraded;

use crate::config::model::UpstreamProtocol;
use crate::config::{ClusterConfig, ORIGINAL_DESTINATION, RetryConfig};
use crate::deadline::Deadlines;
use crate::error::{Kind, ProxyError, UPSTREAM_ERRORS};
use crate::metrics::{Histogram, Metrics};
use crate::original_dst::{self, OwnDial};
use crate::tls::{ClientTls, Stream};
use balancer::Balancer;
use breaker::Breaker;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use passthrough::Passthrough;
use prometheus::IntCounter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A named group of endpoints and how to reach them.
pub struct Cluster {
    /// Name from the config.
    pub name: Arc<str>,
    /// Endpoints, in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// TCP connect timeout per attempt.
    pub connect_timeout: Duration,
    /// How connections to the endpoints are opened (TCP, TLS).
    pub dialer: Dialer,
    protocol: UpstreamProtocol,
    balancer: Balancer,
    pending: AtomicUsize,
    max_pending: usize,
    /// `wasp_upstream_errors_total{cluster,kind}` in [`UPSTREAM_ERRORS`] order.
    errors: [IntCounter; UPSTREAM_ERRORS.len()],
    retries: IntCounter,
    /// `original_destination`: endpoints made from where each client was headed.
    passthrough: Option<Passthrough>,
    /// `wasp_upstream_wait_seconds{cluster}`
    wait: Histogram,
}

/// The request as it goes upstream, minus its body.
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: PathAndQuery,
    /// The host the client asked for, if any.
    pub authority: Option<Authority>,
    /// Headers, hop-by-hop ones already removed.
    pub headers: HeaderMap,
    /// Where the client connected before a redirect (listeners with `original_destination`).
    pub destination: Option<SocketAddr>,
}

/// What an exchange learned about its upstream attempts (for the access log).
#[derive(Default)]
pub struct Attempts {
    /// The endpoint of the latest attempt.
    pub endpoint: Option<Arc<Endpoint>>,
    /// Attempts made.
    pub count: u32,
    /// The latest attempt is waiting for a connection to its endpoint
    /// (`max_connections_per_endpoint`): a timeout then is not the endpoint's failure.
    pub queued: bool,
}

/// An upstream response whose body is still streaming, with the counts it holds.
pub struct Upstreamed {
    /// The response.
    pub response: Response<UpstreamBody>,
    /// Keeps the request counted against its endpoint and cluster until dropped.
    pub guard: Held,
}

/// Counts held for a request until its response ends.
pub struct Held {
    _in_flight: InFlight,
    cluster: Arc<Cluster>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cluster.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    /// Builds a cluster from validated config. Its counters and wait
    /// histogram exist (at 0) from now on, so that alerts see them before
    /// the first failure.
    pub fn new(cfg: &ClusterConfig, metrics: &Metrics, tls: Option<Arc<ClientTls>>) -> Self {
        let opened = metrics.breaker_opened.with_label_values(&[&cfg.name]);
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|address| {
                let gauge = metrics.breaker_state.with_label_values(&[&cfg.name, address]);
                let breaker =
                    Breaker::new(cfg.breaker.consecutive_failures, cfg.breaker.open_for, gauge, opened.clone());
                Arc::new(Endpoint::new(address, breaker, cfg.protocol, cfg.max_connections_per_endpoint))
            })
            .collect();
        let dialer = Dialer { connect_timeout: cfg.connect_timeout, tls };
        Cluster {
            name: cfg.name.as_str().into(),
            endpoints,
            connect_timeout: cfg.connect_timeout,
            dialer,
            protocol: cfg.protocol,
            balancer: Balancer::new(cfg.lb),
            pending: AtomicUsize::new(0),
            max_pending: cfg.breaker.max_pending,
            errors: UPSTREAM_ERRORS.map(|(_, kind)| metrics.upstream_errors.with_label_values(&[&cfg.name, kind])),
            retries: metrics.retries.with_label_values(&[&cfg.name]),
            passthrough: (cfg.name == ORIGINAL_DESTINATION).then(|| {
                Passthrough::new(cfg.breaker.clone(), cfg.protocol, cfg.max_connections_per_endpoint, opened.clone())
            }),
            wait: metrics.upstream_wait.with_label_values(&[&cfg.name]),
        }
    }

    /// The ALPN protocol a cluster speaking `protocol` offers over TLS.
    pub fn alpn(protocol: UpstreamProtocol) -> &'static [u8] {
        match protocol {
            UpstreamProtocol::Http1 => b"http/1.1",
            UpstreamProtocol::Http2 => b"h2",
        }
    }

    /// Its TLS origination, if it has one.
    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.dialer.tls.as_ref()
    }

    /// Whether the cluster can carry an HTTP/1.1 upgrade (WebSocket).
    pub fn supports_upgrade(&self) -> bool {
        self.protocol == UpstreamProtocol::Http1
    }

    /// Puts its breakers' states on their gauges (when it starts serving).
    pub fn publish(&self) {
        for e in &self.endpoints {
            e.breaker.publish();
        }
    }

    /// The endpoints for a request or connection headed for `destination`
    /// (before a redirect): the cluster's own, or for `original_destination`
    /// the one for that address (kept in `slot`), or a loop error.
    fn targets<'a>(
        &'a self,
        destination: Option<SocketAddr>,
        slot: &'a mut Option<Arc<Endpoint>>,
    ) -> Result<&'a [Arc<Endpoint>], ProxyError> {
        match &self.passthrough {
            None => Ok(&self.endpoints),
            Some(p) => {
                let endpoint = p.endpoint(destination).inspect_err(|e| self.count_error(e.kind))?;
                Ok(std::slice::from_ref(slot.insert(endpoint)))
            }
        }
    }

    /// An endpoint for a plain TCP connection headed for `destination`,
    /// honouring LB and breakers, and a callback recording whether
    /// connecting to it worked.
    pub fn pick_for_tcp<'a>(
        &'a self,
        destination: Option<SocketAddr>,
        slot: &'a mut Option<Arc<Endpoint>>,
    ) -> Result<(Arc<Endpoint>, impl FnOnce(bool) + 'a), Kind> {
        let endpoints = self.targets(destination, slot).map_err(|e| e.kind)?;
        let Some((ep, permit)) = self.balancer.pick(endpoints) else {
            self.count_error(Kind::CircuitOpen);
            return Err(Kind::CircuitOpen);
        };
        Ok((ep.clone(), move |ok| permit.record(ok)))
    }

    /// Counts an upstream error of `kind` (for callers outside `forward`, e.g. TCP).
    pub fn count_error(&self, kind: Kind) {
        if let Some(i) = kind.upstream_error() {
            self.errors[i].inc();
        }
    }

    /// Sends a request upstream by `deadline`, retrying per `policy` (its
    /// head borrowed, not copied into the attempts' state: its headers are
    /// taken for the last attempt);
    /// `kept_by`: an HTTP/1.1 client connection's deadlines, whose check
    /// may keep this one (see [`Deadlines::keep`]).
    pub async fn forward(
        self: &Arc<Self>,
        head: &mut RequestHead,
        body: RequestBody,
        policy: Option<&RetryConfig>,
        deadline: std::time::Instant,
        kept_by: Option<&Deadlines>,
        attempts: &mut Attempts,
    ) -> Result<Upstreamed, ProxyError> {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.count_error(Kind::Overflow);
            return Err(ProxyError::new(Kind::Overflow));
        }
        // Kept to ask, after a timeout, whether the client had sent its whole body.
        let streamed = body.streamed().cloned();
        // The attempts' future (a few KB) is built in place in this future's
        // own state and the timeout holds only the pinned reference: no box,
        // and no copy into the `Timeout`.
        let outcome = {
            let attempt = std::pin::pin!(self.attempt_all(head, body, policy, attempts));
            match kept_by.and_then(|d| d.keep(deadline)) {
                Some(kept) => kept.run(attempt).await,
                None => tokio::time::timeout_at(deadline.into(), attempt).await.map_err(|_| ()),
            }
        };
        let result = match outcome {
            Ok(r) => r,
            Err(_) => {
                // Only the endpoint's own slowness counts: not a wait for a
                // connection slot, nor for a client still sending its body.
                let client_done = streamed.as_ref().is_none_or(|s| s.complete());
                if let Some(ep) = attempts.endpoint.as_ref().filter(|_| !attempts.queued && client_done) {
                    ep.breaker.note_failure();
                }
                self.count_error(Kind::Timeout);
                Err(ProxyError::new(Kind::Timeout))
            }
        };
        match result {
            Ok((response, in_flight)) => {
                Ok(Upstreamed { response, guard: Held { _in_flight: in_flight, cluster: self.clone() } })
            }
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn attempt_all(
        &self,
        head: &mut RequestHead,
        body: RequestBody,
        policy: Option<&RetryConfig>,
        attempts: &mut Attempts,
    ) -> Result<(Response<UpstreamBody>, InFlight), ProxyError> {
        let max_retries = policy.map_or(0, |p| p.attempts);
        let idempotent = is_idempotent(&head.method);
        let mut slot = None;
        let endpoints = self.targets(head.destination, &mut slot)?;
        let mut retry = 0;
        loop {
            let Some((endpoint, permit)) = self.balancer.pick(endpoints) else {
                self.count_error(Kind::CircuitOpen);
                return Err(ProxyError::new(Kind::CircuitOpen));
            };
            attempts.endpoint = Some(endpoint.clone());
            attempts.count += 1;
            // The headers are copied only when this attempt may be followed
            // by another: the policy has retries left, and one of its
            // triggers can apply to this request.
            let last_chance = retry >= max_retries
                || !policy
                    .is_some_and(|p| p.on_connect_failure || (idempotent && (p.on_reset || !p.on_status.is_empty())));
            let headers = if last_chance { std::mem::take(&mut head.headers) } else { head.headers.clone() };
            let Some(attempt_body) = body.replay() else {
                return Err(ProxyError::new(Kind::UpstreamReset));
            };
            let req = self.build(head, headers, attempt_body, endpoint);
            let in_flight = endpoint.start();
            let outcome = match client::send(&self.dialer, endpoint, req, &self.wait, &mut attempts.queued).await {
                Err(e) if body.client_failed() => Err(ProxyError::with(Kind::ClientBody, e)),
                outcome => outcome,
            };
            let retryable = |p: &RetryConfig, kind: Option<Kind>, status: Option<u16>| {
                let wanted = match (kind, status) {
                    (Some(Kind::ConnectFailure | Kind::ConnectTimeout | Kind::TlsFailure), _) => p.on_connect_failure,
                    (Some(Kind::UpstreamReset), _) => p.on_reset && idempotent,
                    (None, Some(s)) => p.on_status.contains(&s) && idempotent,
                    _ => false,
                };
                wanted && body.replay().is_some()
            };
            let retry_wanted = match &outcome {
                Ok(resp) => {
                    let status = resp.status();
                    permit.record(!status.is_server_error());
                    !last_chance && policy.is_some_and(|p| retryable(p, None, Some(status.as_u16())))
                }
                // The client's own failure says nothing about the endpoint.
                Err(e) if e.kind == Kind::ClientBody => {
                    permit.forget();
                    false
                }
                Err(e) => {
                    permit.record(false);
                    self.count_error(e.kind);
                    !last_chance && policy.is_some_and(|p| retryable(p, Some(e.kind), None))
                }
            };
            if !retry_wanted {
                return outcome.map(|r| (r, in_flight));
            }
            drop(outcome);
            drop(in_flight);
            self.retries.inc();
            if let Some(p) = policy {
                tokio::time::sleep(backoff(p.backoff, retry)).await;
            }
            retry += 1;
        }
    }

    fn build(
        &self,
        head: &RequestHead,
        mut headers: HeaderMap,
        body: RequestBody,
        endpoint: &Endpoint,
    ) -> Box<Request<RequestBody>> {
        let (uri, version) = match self.protocol {
            // HTTP/1.1 origin-form (`GET /path`): the Host header names the
            // host; the pool already knows which endpoint to dial.
            UpstreamProtocol::Http1 => {
                join_cookies(&mut headers);
                if !headers.contains_key(http::header::HOST) {
                    let host = head.authority.as_ref().unwrap_or(&endpoint.authority);
                    if let Ok(v) = HeaderValue::from_str(host.as_str()) {
                        headers.insert(http::header::HOST, v);
                    }
                }
                (Uri::from(head.path.clone()), Version::HTTP_11)
            }
            // HTTP/2 carries the host in `:authority`, taken from the URI.
            UpstreamProtocol::Http2 => {
                let host = headers
                    .remove(http::header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .or_else(|| head.authority.clone())
                    .unwrap_or_else(|| endpoint.authority.clone());
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(if self.dialer.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP });
                parts.authority = Some(host);
                parts.path_and_query = Some(head.path.clone());
                (Uri::from_parts(parts).unwrap_or_else(|_| Uri::from(head.path.clone())), Version::HTTP_2)
            }
        };
        let mut req = crate::boxed::in_place!(Request::new(body));
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        req
    }
}

/// How a cluster opens connections: TCP within the connect timeout, then
/// TLS if the cluster originates it (the handshake inside the same timeout).
#[derive(Clone)]
pub struct Dialer {
    /// Time for TCP connect and TLS handshake together.
    pub connect_timeout: Duration,
    /// TLS origination.
    pub tls: Option<Arc<ClientTls>>,
}

impl Dialer {
    /// A connection to endpoint `address`, ready for bytes, and its place
    /// among wasp's own connections (keep it as long as the connection).
    pub async fn connect(&self, address: &str) -> Result<(Stream, OwnDial), ProxyError> {
        let open = async {
            let (tcp, own) = dial(address, self.connect_timeout).await?;
            match &self.tls {
                None => Ok((Stream::Plain(tcp), own)),
                Some(tls) => Ok((Stream::Client(Box::new(tls.connect(tcp, address).await?)), own)),
            }
        };
        match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::new(Kind::ConnectTimeout)),
        }
    }
}

/// Opens a TCP connection to an upstream `address` within `timeout`, with
/// Nagle off; failures are classified as connect timeout or connect failure.
pub async fn dial(address: &str, timeout: Duration) -> Result<(tokio::net::TcpStream, OwnDial), ProxyError> {
    match tokio::time::timeout(timeout, original_dst::connect(address)).await {
        Err(_) => Err(ProxyError::new(Kind::ConnectTimeout)),
        Ok(Err(e)) => Err(ProxyError::with(Kind::ConnectFailure, e)),
        Ok(Ok((stream, own))) => {
            let _ = stream.set_nodelay(true);
            Ok((stream, own))
        }
    }
}

/// RFC 9113 §8.2.3: the `cookie` fields of an HTTP/2 request become one
/// field, joined with `"; "`, for an HTTP/1.1 upstream (many servers read
/// only the first `Cookie` line).
fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(http::header::COOKIE).iter();
    if all.nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(http::header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Full-jitter exponential backoff: up to `base * 2^retry`, capped at ten times `base`.
fn backoff(base: Duration, retry: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << retry.min(16)).min(base.saturating_mul(10));
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_the_exponential_ceiling() {
        let base = Duration::from_millis(25);
        for retry in 0..20 {
            let d = backoff(base, retry);
            assert!(d <= base * 10, "{d:?}");
            assert!(d <= base * 2u32.pow(retry.min(4)), "{retry}: {d:?}");
        }
    }

    #[test]
    fn cookies_are_joined_for_http1() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(http::header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    #[test]
    fn only_idempotent_methods_are_retried_after_sending() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
