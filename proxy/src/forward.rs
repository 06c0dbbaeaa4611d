//! The request path of an HTTP listener: limits → route → forwarding headers
//! → filter request phases → cluster (LB, breaker, timeout, retries) → response, with WebSocket and
//! other HTTP/1.1 upgrades tunnelled once the upstream agrees (101).

use crate::conn::{ConnState, HttpListener};
use crate::error::{Kind, ProxyError};
use crate::filter::{Facts, Verdict};
use crate::headers::{add_forwarding, is_upgrade, strip_hop_by_hop};
use crate::respond::{Exchange, ResponseBody, filter_reply, local_reply};
use crate::upstream::{RequestBody, RequestHead, Upstreamed};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

/// hyper's service entry point for every request on an HTTP listener.
pub async fn handle(
    req: Request<Incoming>,
    listener: Arc<HttpListener>,
    conn: Arc<ConnState>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut exchange = Exchange::begin(&req, listener.clone(), conn.clone());
    match proxy(req, &listener, &conn, &mut exchange).await {
        Ok(Answer::Filter { head, body }) => Ok(filter_reply(head, body, exchange)),
        Ok(Answer::Upstream(up)) => {
            exchange.status = up.response.status().as_u16();
            exchange.held = Some(up.guard);
            let (mut parts, body) = up.response.into_parts();
            parts.version = Version::HTTP_11;
            Ok(Response::from_parts(parts, ResponseBody::upstream(body, exchange)))
        }
        Err(e) => {
            tracing::debug!(listener = %listener.name, error = %e, "local reply");
            Ok(local_reply(e.kind, exchange))
        }
    }
}

/// How a request was answered.
enum Answer {
    /// By the upstream (possibly with headers changed by filters).
    Upstream(Upstreamed),
    /// By a filter's local reply.
    Filter { head: http::response::Parts, body: Bytes },
}

async fn proxy(
    mut req: Request<Incoming>,
    listener: &HttpListener,
    conn: &ConnState,
    exchange: &mut Exchange,
) -> Result<Answer, ProxyError> {
    let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
    strip_hop_by_hop(req.headers_mut(), upgrade);
    let request_id = add_forwarding(req.headers_mut(), &conn.peer_header, "http");
    exchange.request_id = Some(request_id.clone());
    if target_len(&req) > listener.limits.max_uri_bytes {
        return Err(ProxyError::new(Kind::UriTooLong));
    }
    let route = listener.router.route(&req).ok_or(ProxyError::new(Kind::NoRoute))?.clone();
    exchange.route = Some(route.clone());
    if upgrade && !route.cluster.supports_upgrade() {
        return Err(ProxyError::new(Kind::UpgradeUnsupported));
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    let filters =
        route.chain.as_ref().map(|chain| (chain, Facts { request_id, peer: conn.peer, route: route.name.clone() }));
    let mut leases = Vec::new();
    if let Some((chain, facts)) = &filters {
        let (verdict, leased) = chain.on_request(&mut parts, facts);
        leases = leased;
        if let Some((mut head, body)) = settle(verdict, exchange)? {
            let replaced = settle(chain.on_response(&mut leases, &mut head, facts), exchange)?;
            let (head, body) = replaced.unwrap_or((head, body));
            return Ok(Answer::Filter { head, body });
        }
    }

    let head = RequestHead {
        method: parts.method,
        path: parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        authority: parts.uri.authority().cloned(),
        headers: parts.headers,
    };
    let (body, shared) = RequestBody::new(body);
    exchange.request_body = shared;
    let policy = if upgrade { None } else { route.retries.as_ref() };
    let mut up = route.cluster.forward(head, body, policy, route.timeout, &mut exchange.attempts).await?;
    let switching = up.response.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(up.response.headers_mut(), switching && upgrade);
    if let (Some((chain, facts)), false) = (&filters, switching) {
        let (mut head, body) = up.response.into_parts();
        if let Some((head, body)) = settle(chain.on_response(&mut leases, &mut head, facts), exchange)? {
            return Ok(Answer::Filter { head, body });
        }
        up.response = Response::from_parts(head, body);
    }
    if let (Some(client), true) = (client_upgrade, switching) {
        let upstream = hyper::upgrade::on(&mut up.response);
        listener.tracker.spawn(tunnel(client, upstream));
    }
    Ok(Answer::Upstream(up))
}

/// Turns a chain verdict into: go on (`None`), a filter's local reply, or an error.
fn settle(verdict: Verdict, exchange: &mut Exchange) -> Result<Option<(http::response::Parts, Bytes)>, ProxyError> {
    match verdict {
        Verdict::Continue => Ok(None),
        Verdict::Reply { head, body, filter } => {
            exchange.filter = Some(filter);
            Ok(Some((head, body)))
        }
        Verdict::Fail { kind, filter } => {
            exchange.filter = Some(filter);
            Err(ProxyError::new(kind))
        }
    }
}

/// Length of the request target as the client sent it.
fn target_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
}

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended with error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
