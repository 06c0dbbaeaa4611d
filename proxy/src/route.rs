//! The router: picks the first route whose match conditions (path prefix or
//! exact path, host, headers, methods, the client's verified identity) all hold.

use crate::config::{MatchConfig, PathMatch, RetryConfig, RouteConfig, identity_matches, server_name_matches};
use crate::filter::Chain;
use crate::metrics::RouteMetrics;
use crate::upstream::Cluster;
use http::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A compiled route.
pub struct Route {
    /// Name from the config.
    pub name: Arc<str>,
    matcher: MatchConfig,
    /// Where matching requests go.
    pub cluster: Arc<Cluster>,
    /// Deadline for the upstream's response headers.
    pub timeout: Duration,
    /// Retry policy.
    pub retries: Option<RetryConfig>,
    /// Pre-resolved metrics.
    pub metrics: RouteMetrics,
    /// Filters, when the route has any.
    pub chain: Option<Chain>,
    /// Upgrade protocols tunnelled (lower case).
    upgrades: Vec<String>,
}

impl Route {
    /// Compiles a validated route against its (existing) cluster.
    pub fn new(cfg: &RouteConfig, cluster: Arc<Cluster>, metrics: RouteMetrics, chain: Option<Chain>) -> Self {
        Route {
            name: cfg.name.as_str().into(),
            matcher: cfg.matcher.clone(),
            cluster,
            timeout: cfg.timeout,
            retries: cfg.retries.clone(),
            metrics,
            chain,
            upgrades: cfg.upgrades.clone(),
        }
    }

    /// Whether every protocol the request's `Upgrade` asks for is one this route tunnels.
    pub fn allows_upgrade(&self, headers: &http::HeaderMap) -> bool {
        let mut asked = crate::headers::upgrade_protocols(headers).peekable();
        asked.peek().is_some() && asked.all(|p| self.upgrades.iter().any(|u| u.as_bytes().eq_ignore_ascii_case(p)))
    }

    fn matches<B>(&self, req: &Request<B>, identity: Option<&str>, destination: Option<SocketAddr>) -> bool {
        let m = &self.matcher;
        let path = req.uri().path();
        let path_ok = match &m.path {
            PathMatch::Any => true,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
        };
        path_ok
            && (m.methods.is_empty() || m.methods.contains(req.method()))
            && m.host.as_deref().is_none_or(|want| host_matches(want, request_host(req)))
            && m.headers.iter().all(|(name, value)| req.headers().get_all(name).iter().any(|v| v == value))
            && m.peer.as_deref().is_none_or(|want| identity.is_some_and(|id| identity_matches(want, id)))
            && m.destination.is_none_or(|want| destination.is_some_and(|d| want.matches(d)))
    }
}

/// The routes of one HTTP listener, in order.
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// A router over `routes`, tried in order.
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        Router { routes }
    }

    /// The first route matching `req` from a client with verified
    /// `identity` that connected to `destination` (before a redirect).
    pub fn route<B>(
        &self,
        req: &Request<B>,
        identity: Option<&str>,
        destination: Option<SocketAddr>,
    ) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(req, identity, destination))
    }
}

/// The host a request is for, without port: the URI authority (HTTP/2,
/// absolute-form) or the `Host` header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    // `admin.local.` is `admin.local` to DNS and to most servers behind wasp.
    let host = strip_port(raw);
    Some(host.strip_suffix('.').unwrap_or(host))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn host_matches(want: &str, host: Option<&str>) -> bool {
    host.is_some_and(|h| server_name_matches(want, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_without_port_and_case() {
        assert!(host_matches("api.local", Some("API.local")));
        assert!(host_matches("*.example.com", Some("a.b.example.com")));
        assert!(!host_matches("*.example.com", Some("example.com")));
        assert!(!host_matches("*.example.com", Some("badexample.com")));
        assert!(!host_matches("api.local", None));
        assert_eq!(strip_port("api.local:8080"), "api.local");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("api.local"), "api.local");
    }
}
