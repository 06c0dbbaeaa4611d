//! Validation of listeners and their routes: addresses, limits, HTTP/2
//! limits, how requests are read and trusted, and each route's match,
//! cluster, filters, timeout, retries and upgrades.

use super::destination::{DestinationMatch, ORIGINAL_DESTINATION};
use super::model::*;
use super::validate::*;
use crate::identity::path::normalize;
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashSet;
use std::path::Path;

/// Most fields a listener may allow in a request head.
const MAX_HEADERS: usize = 10_000;

pub(super) fn listener(
    c: &mut Checker,
    i: usize,
    l: &RawListener,
    clusters: &HashSet<String>,
    filters: &HashSet<String>,
    base: &Path,
) -> ListenerConfig {
    let at = format!("listeners[{i}]");
    let address = c.socket_addr(format!("{at}.address"), &l.address);
    let tls = l.tls.as_ref().map(|t| super::tls::server(c, &format!("{at}.tls"), t, base));
    c.all_known(&format!("{at}.connection_filters"), &l.connection_filters, filters, "filter");
    let kind = match l.protocol {
        ListenerProtocol::Http => {
            if l.cluster.is_some() {
                c.error(format!("{at}.cluster"), "http listeners forward by routes; `cluster` is for tcp listeners");
            }
            if l.routes.is_empty() {
                c.error(format!("{at}.routes"), "an http listener needs at least one route");
            }
            if !l.sni_routes.is_empty() {
                c.error(format!("{at}.sni_routes"), "http listeners route by `routes` (match on `host`)");
            }
            c.unique(
                "route",
                l.routes.iter().enumerate().map(|(j, r)| (format!("{at}.routes[{j}].name"), r.name.as_str())),
            );
            let routes = l.routes.iter().enumerate();
            ListenerKind::Http(
                routes.map(|(j, r)| route(c, &format!("{at}.routes[{j}]"), r, l, clusters, filters)).collect(),
            )
        }
        ListenerProtocol::Tcp => {
            if !l.routes.is_empty() {
                c.error(format!("{at}.routes"), "tcp listeners have no routes; set `cluster`");
            }
            // Redirected connections go where they were headed unless told otherwise.
            let default = match &l.cluster {
                None if l.original_destination && l.sni_routes.is_empty() => Some(ORIGINAL_DESTINATION.to_string()),
                None if l.sni_routes.is_empty() => {
                    c.error(format!("{at}.cluster"), "a tcp listener needs a cluster (or `sni_routes`)");
                    None
                }
                Some(name) => {
                    known_cluster(c, &format!("{at}.cluster"), name, l, clusters);
                    Some(name.clone())
                }
                None => None,
            };
            let mut by_sni = Vec::new();
            for (j, r) in l.sni_routes.iter().enumerate() {
                let here = format!("{at}.sni_routes[{j}]");
                known_cluster(c, &format!("{here}.cluster"), &r.cluster, l, clusters);
                if r.sni.is_empty() {
                    c.error(format!("{here}.sni"), "list at least one server name");
                }
                for (k, name) in r.sni.iter().enumerate() {
                    if let Err(m) = super::tls::check_server_name_pattern(name) {
                        c.error(format!("{here}.sni[{k}]"), m);
                    }
                }
                by_sni.push((r.sni.iter().map(|n| n.to_ascii_lowercase()).collect(), r.cluster.clone()));
            }
            ListenerKind::Tcp(TcpRoutes { by_sni, default })
        }
    };
    let lim = &l.limits;
    let limits = Limits {
        max_connections: lim.max_connections,
        max_header_bytes: c.size(format!("{at}.limits.max_header_bytes"), &lim.max_header_bytes),
        max_headers: lim.max_headers,
        max_uri_bytes: c.size(format!("{at}.limits.max_uri_bytes"), &lim.max_uri_bytes),
        header_read_timeout: c.positive_duration(format!("{at}.limits.header_read_timeout"), &lim.header_read_timeout),
        idle_timeout: c.positive_duration(format!("{at}.limits.idle_timeout"), &lim.idle_timeout),
        write_timeout: c.positive_duration(format!("{at}.limits.write_timeout"), &lim.write_timeout),
        tunnel_idle_timeout: c.positive_duration(format!("{at}.limits.tunnel_idle_timeout"), &lim.tunnel_idle_timeout),
    };
    if lim.max_connections == 0 || lim.max_connections > 10_000_000 {
        c.error(format!("{at}.limits.max_connections"), "must be between 1 and 10000000");
    }
    // A head's fields are kept in one `HeaderMap`, which holds at most 32,768.
    if lim.max_headers == 0 || lim.max_headers > MAX_HEADERS {
        c.error(format!("{at}.limits.max_headers"), format!("must be between 1 and {MAX_HEADERS}"));
    }
    if limits.max_header_bytes != 0 && limits.max_header_bytes < 8192 {
        c.error(format!("{at}.limits.max_header_bytes"), "must be at least 8KiB");
    }
    let http = HttpSettings {
        escaped_slashes: l.escaped_slashes,
        trusted_hops: l.trusted_hops,
        http2: http2(c, &format!("{at}.http2"), &l.http2),
    };
    if l.trusted_hops > 10 {
        c.error(format!("{at}.trusted_hops"), "at most 10");
    }
    let connection_filters = l.connection_filters.clone();
    let original_destination = l.original_destination;
    ListenerConfig { name: l.name.clone(), address, kind, limits, http, tls, connection_filters, original_destination }
}

/// Reports `name` (at `path`) unless it is a cluster listener `l` can send to:
/// `original_destination` only from a listener that recovers it.
fn known_cluster(c: &mut Checker, path: &str, name: &str, l: &RawListener, clusters: &HashSet<String>) {
    if name == ORIGINAL_DESTINATION && !l.original_destination {
        c.error(
            path,
            "`original_destination` forwards to the address a redirected client connected to; \
             set `original_destination: true` on this listener",
        );
    } else if !clusters.contains(name) {
        c.error(path, format!("no cluster named {name:?}"));
    }
}

fn http2(c: &mut Checker, at: &str, h: &RawHttp2) -> Http2Limits {
    // RFC 9113 §6.9.1: windows are 31-bit; the protocol's floor is 65,535.
    let mut window = |field: &str, text: &str| {
        let size = c.size(format!("{at}.{field}"), text);
        if size != 0 && !(65_535..=(1 << 31) - 1).contains(&size) {
            c.error(format!("{at}.{field}"), "must be between 65535 bytes and 2GiB - 1");
        }
        u32::try_from(size).unwrap_or(u32::MAX >> 1)
    };
    let initial_stream_window = window("initial_stream_window", &h.initial_stream_window);
    let initial_connection_window = window("initial_connection_window", &h.initial_connection_window);
    if h.max_concurrent_streams == 0 {
        c.error(format!("{at}.max_concurrent_streams"), "must be greater than zero");
    }
    // 0 would end a connection at the first cancelled stream; a huge value
    // would switch the rapid-reset protection off.
    let control = h.max_control_frames as usize;
    for (field, n) in [
        ("max_pending_resets", h.max_pending_resets),
        ("max_error_resets", h.max_error_resets),
        ("max_control_frames", control),
    ] {
        if !(1..=100_000).contains(&n) {
            c.error(format!("{at}.{field}"), "must be between 1 and 100000");
        }
    }
    Http2Limits {
        max_concurrent_streams: h.max_concurrent_streams,
        initial_stream_window,
        initial_connection_window,
        max_pending_resets: h.max_pending_resets,
        max_error_resets: h.max_error_resets,
        max_control_frames: h.max_control_frames,
    }
}

fn route(
    c: &mut Checker,
    at: &str,
    r: &RawRoute,
    l: &RawListener,
    clusters: &HashSet<String>,
    filters: &HashSet<String>,
) -> RouteConfig {
    let slashes = l.escaped_slashes;
    known_cluster(c, &format!("{at}.cluster"), &r.cluster, l, clusters);
    c.all_known(&format!("{at}.filters"), &r.filters, filters, "filter");
    let m = &r.matcher;
    let path = match (&m.prefix, &m.path) {
        (Some(_), Some(_)) => {
            c.error(format!("{at}.match"), "set either `prefix` or `path`, not both");
            PathMatch::Any
        }
        (Some(p), None) | (None, Some(p)) if !p.starts_with('/') => {
            let field = if m.prefix.is_some() { "prefix" } else { "path" };
            c.error(format!("{at}.match.{field}"), format!("{p:?} must start with \"/\""));
            PathMatch::Any
        }
        // Requests are matched after normalisation: a path that is not in
        // normal form could never match, and the route would silently go dead.
        (Some(p), None) | (None, Some(p)) if !is_normal(p, slashes) => {
            let field = if m.prefix.is_some() { "prefix" } else { "path" };
            let hint = match normalize(p, slashes) {
                Ok(n) if p.is_ascii() => format!("; write {n:?}"),
                _ if !p.is_ascii() => "; percent-encode non-ASCII characters (UTF-8, upper-case hex)".into(),
                Ok(_) | Err(_) => String::new(),
            };
            c.error(
                format!("{at}.match.{field}"),
                format!("{p:?} is not a normalised path, and requests are matched after normalisation{hint}"),
            );
            PathMatch::Any
        }
        (Some(p), None) => PathMatch::Prefix(p.clone()),
        (None, Some(p)) => PathMatch::Exact(p.clone()),
        (None, None) => PathMatch::Any,
    };
    let mut headers = Vec::new();
    for (name, value) in &m.headers {
        let n = HeaderName::from_bytes(name.as_bytes());
        let v = HeaderValue::from_str(value);
        match (n, v) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            (Err(_), _) => c.error(format!("{at}.match.headers.{name}"), "invalid header name"),
            (_, Err(_)) => c.error(format!("{at}.match.headers.{name}"), "invalid header value"),
        }
    }
    let mut methods = Vec::new();
    for (k, name) in m.methods.iter().enumerate() {
        match Method::from_bytes(name.as_bytes()) {
            Ok(method) if name.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(method),
            _ => c.error(format!("{at}.match.methods[{k}]"), format!("invalid method {name:?}; expected e.g. GET")),
        }
    }
    let host = m.host.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(p) = &m.peer
        && let Err(e) = super::tls::check_identity_pattern(p)
    {
        c.error(format!("{at}.match.peer"), e);
    }
    let destination = m.destination.as_ref().and_then(|d| {
        let parsed = DestinationMatch::parse(d).map_err(|e| c.error(format!("{at}.match.destination"), e)).ok();
        if !l.original_destination {
            c.error(format!("{at}.match.destination"), "only listeners with `original_destination: true` know it");
        }
        parsed
    });
    let timeout = c.positive_duration(format!("{at}.timeout"), &r.timeout);
    let retries = r.retries.as_ref().map(|x| retries(c, &format!("{at}.retries"), x));
    for (k, u) in r.upgrades.iter().enumerate() {
        if u.is_empty() || !u.bytes().all(|b| b.is_ascii_graphic() && b != b',' && b != b'/') {
            c.error(format!("{at}.upgrades[{k}]"), format!("invalid protocol name {u:?}; expected e.g. websocket"));
        } else if u.eq_ignore_ascii_case("h2c") {
            c.error(format!("{at}.upgrades[{k}]"), "h2c is never tunnelled: clients speak HTTP/2 to wasp directly");
        }
    }
    RouteConfig {
        name: r.name.clone(),
        matcher: MatchConfig { path, host, headers, methods, peer: m.peer.clone(), destination },
        cluster: r.cluster.clone(),
        filters: r.filters.clone(),
        timeout,
        retries,
        upgrades: r.upgrades.iter().map(|u| u.to_ascii_lowercase()).collect(),
    }
}

fn retries(c: &mut Checker, at: &str, r: &RawRetries) -> RetryConfig {
    let mut policy = RetryConfig {
        attempts: r.attempts,
        on_connect_failure: false,
        on_reset: false,
        on_status: Vec::new(),
        backoff: c.duration(format!("{at}.backoff"), &r.backoff),
    };
    if r.attempts > 10 {
        c.error(format!("{at}.attempts"), "at most 10 retries");
    }
    for (k, on) in r.on.iter().enumerate() {
        match on {
            RetryOn::Named(n) if n == "connect-failure" => policy.on_connect_failure = true,
            RetryOn::Named(n) if n == "reset" => policy.on_reset = true,
            RetryOn::Status(s) if (500..=599).contains(s) || *s == 429 || *s == 408 => policy.on_status.push(*s),
            RetryOn::Status(s) => {
                c.error(format!("{at}.on[{k}]"), format!("cannot retry on status {s}; use 408, 429 or 5xx"))
            }
            RetryOn::Named(n) => c.error(
                format!("{at}.on[{k}]"),
                format!("unknown retry condition {n:?}; expected connect-failure, reset or a status code"),
            ),
        }
    }
    policy
}

/// Whether `p` is what normalising it gives (and ASCII, as request paths are).
fn is_normal(p: &str, slashes: EscapedSlashes) -> bool {
    p.is_ascii() && normalize(p, slashes).is_ok_and(|n| n == p)
}
