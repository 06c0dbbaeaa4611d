//! The request path of an HTTP listener: the request's one identity
//! (normalised path, one host, strict framing) → limits → route → forwarding
//! headers → filter request phases (and request body, if filters asked for it) →
//! cluster (LB, breaker, timeout, retries) → filter response phases (and
//! response body) → client, with WebSocket and other HTTP/1.1 upgrades
//! tunnelled once the upstream agrees (101).

use crate::conn_state::ConnState;
use crate::error::{Kind, ProxyError};
use crate::filter::body::{BufferError, Filtered, buffer, set_length};
use crate::filter::{BodyMode, Facts, Run, Side, Verdict};
use crate::h1::wire::OnUpgrade;
use crate::handler::HttpListener;
use crate::headers::{X_FORWARDED_CLIENT_CERT, add_forwarding, is_upgrade, strip_hop_by_hop, strip_upgrade};
use crate::identity;
use crate::io::{Progress, Watched};
use crate::metrics::Answered;
use crate::respond::{Exchange, Payload, ResponseBody, filter_reply, local_reply};
use crate::upstream::body::{Shared as BodyShared, Source, Whole};
use crate::upstream::{Held, RequestBody, RequestHead, Upgraded, UpstreamBody};
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

/// The entry point of every request on an HTTP listener (HTTP/1.1 from
/// [`crate::conn::h1`], HTTP/2 from hyper). The request comes boxed, and
/// stays in its box down to the upstream call: an async fn's arguments are
/// copied into its state when it starts, and a request is 272 bytes.
pub async fn handle(
    mut req: Box<Request<Source>>,
    listener: Arc<HttpListener>,
    conn: Arc<ConnState>,
) -> Result<Response<ResponseBody>, Infallible> {
    // Checked on the target as the client sent it, before normalising.
    let too_long = target_len(&req) > listener.limits.max_uri_bytes;
    let identity = identity::establish(&mut req, listener.http.escaped_slashes);
    let mut exchange = Exchange::begin(&req, listener.clone(), conn.clone());
    let result = match identity {
        _ if too_long => Err(ProxyError::new(Kind::UriTooLong)),
        Err(refused) => Err(refused.into()),
        Ok(()) => proxy(req, &listener, &conn, &mut exchange).await,
    };
    match result {
        Ok(Answer::Filter { head, body }) => Ok(filter_reply(head, body, exchange)),
        Ok(Answer::Upstream { mut head, body, guard }) => {
            exchange.status = head.status.as_u16();
            exchange.answered = Answered::Upstream;
            exchange.held = Some(guard);
            head.version = Version::HTTP_11;
            Ok(Response::from_parts(head, ResponseBody::upstream(body, exchange)))
        }
        Err(e) => {
            tracing::debug!(listener = %listener.name, error = %e, "local reply");
            Ok(local_reply(e.kind, exchange))
        }
    }
}

/// How a request was answered.
enum Answer {
    /// By the upstream (possibly changed by filters).
    Upstream { head: http::response::Parts, body: Payload, guard: Held },
    /// By a filter's local reply.
    Filter { head: http::response::Parts, body: Bytes },
}

/// Go on with `T`, or answer now.
enum Flow<T> {
    Go(T),
    Answer(Box<Answer>),
}

async fn proxy(
    mut req: Box<Request<Source>>,
    listener: &HttpListener,
    conn: &ConnState,
    exchange: &mut Exchange,
) -> Result<Answer, ProxyError> {
    let asks_upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
    strip_hop_by_hop(req.headers_mut(), asks_upgrade);
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    let forwarded = add_forwarding(req.headers_mut(), &conn.peer_header, scheme, listener.http.trusted_hops);
    let request_id = exchange.request_id.insert(forwarded.request_id);
    exchange.client = forwarded.client;
    // Only wasp vouches for a client certificate: a client's own claim is never passed on.
    req.headers_mut().remove(X_FORWARDED_CLIENT_CERT);
    if let Some(xfcc) = conn.tls.as_ref().and_then(|t| t.xfcc.clone()) {
        req.headers_mut().insert(X_FORWARDED_CLIENT_CERT, xfcc);
    }
    let identity = conn.identity().map(|i| &**i);
    // Borrowed from the listener for the request; the exchange keeps its own reference.
    let route = listener.router.route(&req, identity, conn.destination).ok_or(ProxyError::new(Kind::NoRoute))?;
    exchange.route = Some(route.clone());
    // Only the protocols the route allows are tunnelled; any other Upgrade
    // (h2c included) is removed and the request goes on as a plain one.
    let upgrade = asks_upgrade && route.allows_upgrade(req.headers());
    if asks_upgrade && !upgrade {
        strip_upgrade(req.headers_mut());
    }
    if upgrade && !route.cluster.supports_upgrade() {
        return Err(ProxyError::new(Kind::UpgradeUnsupported));
    }
    let client_upgrade = if upgrade { req.extensions_mut().remove::<OnUpgrade>() } else { None };
    let version = req.version();
    let (mut parts, body) = (*req).into_parts();

    let mut run = None;
    if let Some(chain) = &route.chain {
        let identity = conn.identity().cloned();
        let facts =
            Facts { request_id: request_id.clone(), peer: conn.peer_text(), route: route.name.clone(), identity };
        let (verdict, r) = chain.on_request(&mut parts, facts, &mut exchange.generations).await;
        if let Some(reply) = settle(verdict, exchange)? {
            return reply_through(&r, reply, exchange);
        }
        run = Some(r);
    }
    let (body, shared) = match &run {
        Some(run) => match filtered_request_body(run, &mut parts, body, exchange).await? {
            Flow::Go(body) => body,
            Flow::Answer(answer) => return Ok(*answer),
        },
        None => RequestBody::new(body),
    };
    exchange.request_body = shared;

    let mut head = RequestHead {
        method: parts.method,
        path: parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        authority: parts.uri.authority().cloned(),
        headers: parts.headers,
        destination: conn.destination,
    };
    let policy = if upgrade { None } else { route.retries.as_ref() };
    // The route's time runs from the upstream call: from the request's
    // arrival when nothing ran before it (the same moment, one clock read
    // less), from now after filters' request phases.
    let from = if run.is_none() { exchange.start() } else { Instant::now() };
    // An HTTP/1.1 connection's check can keep the deadline (no timer a request).
    let kept_by = (version != Version::HTTP_2).then_some(&conn.deadlines);
    let deadline = crate::deadline::after(from, route.timeout);
    let forwarded = route.cluster.forward(&mut head, body, policy, deadline, kept_by, &mut exchange.attempts).await;
    let mut up = match (forwarded, &run) {
        (Ok(up), _) => up,
        // A streamed request-body phase may have ended the request: answer as it decided.
        (Err(e), Some(run)) => match run.take_abort() {
            Some(verdict) => match settle(verdict, exchange)? {
                Some(reply) => return reply_through(run, reply, exchange),
                None => return Err(e),
            },
            None => return Err(e),
        },
        (Err(e), None) => return Err(e),
    };
    let switching = up.response.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(up.response.headers_mut(), switching && upgrade);
    if let (Some(client), true) = (client_upgrade, switching)
        && let Some(upstream) = up.response.body_mut().take_upgraded()
    {
        let tunnel = tunnel(client, upstream, listener.limits.tunnel_idle_timeout, listener.ends.tunnel_idle.clone());
        let slot = conn.slot.clone();
        listener.tracker.spawn(conn.accepted_by.hold(async move {
            tunnel.await;
            drop(slot);
        }));
    }
    let (head, body) = up.response.into_parts();
    match run {
        Some(run) if !switching => filtered_response(&run, head, body, up.guard, exchange).await,
        _ => Ok(Answer::Upstream { head, body: Payload::Upstream(body), guard: up.guard }),
    }
}

/// The request body as the chain's filters asked for it: untouched, streamed
/// through their body phases, or buffered whole (413 over the smallest
/// limit) and given to their body phases, which may still change the head.
async fn filtered_request_body(
    run: &Run,
    parts: &mut http::request::Parts,
    body: Source,
    exchange: &mut Exchange,
) -> Result<Flow<(RequestBody, Option<Arc<BodyShared>>)>, ProxyError> {
    Ok(Flow::Go(match run.body_mode(Side::Request) {
        None => RequestBody::new(body),
        Some((BodyMode::Stream, _)) => {
            parts.headers.remove(CONTENT_LENGTH);
            let filtered = Filtered::new(body, run.clone(), Side::Request);
            RequestBody::new(Source::Boxed(BodyExt::boxed(filtered)))
        }
        Some((BodyMode::Buffer, limit)) => {
            let chunk = buffer(body, &parts.headers, limit).await.map_err(|e| match e {
                BufferError::TooLarge => ProxyError::new(Kind::RequestTooLarge),
                BufferError::Failed(cause) => ProxyError::with(Kind::ClientBody, cause),
            })?;
            let (verdict, chunk) = run.on_request_body(parts, chunk).await;
            if let Some(reply) = settle(verdict, exchange)? {
                return Ok(Flow::Answer(Box::new(reply_through(run, reply, exchange)?)));
            }
            set_length(&mut parts.headers, &chunk);
            let (body, shared) = RequestBody::full(chunk.data, chunk.trailers);
            (body, Some(shared))
        }
    }))
}

/// Runs the response phases over the upstream's answer, then its body as
/// the filters asked: untouched, streamed through them, or buffered whole
/// (502 over the smallest limit).
async fn filtered_response(
    run: &Run,
    mut head: http::response::Parts,
    body: UpstreamBody,
    guard: Held,
    exchange: &mut Exchange,
) -> Result<Answer, ProxyError> {
    if let Some((head, body)) = settle(run.on_response(&mut head), exchange)? {
        return Ok(Answer::Filter { head, body });
    }
    let body = match run.body_mode(Side::Response) {
        None => Payload::Upstream(body),
        Some((BodyMode::Stream, _)) => {
            head.headers.remove(CONTENT_LENGTH);
            Payload::Filtered(Box::new(Filtered::new(body, run.clone(), Side::Response)))
        }
        Some((BodyMode::Buffer, limit)) => {
            let chunk = buffer(body, &head.headers, limit).await.map_err(|e| match e {
                BufferError::TooLarge => ProxyError::new(Kind::ResponseTooLarge),
                BufferError::Failed(cause) => ProxyError::with(Kind::UpstreamReset, cause),
            })?;
            let (verdict, chunk) = run.on_response_body(&mut head, chunk);
            if let Some((head, body)) = settle(verdict, exchange)? {
                return Ok(Answer::Filter { head, body });
            }
            set_length(&mut head.headers, &chunk);
            Payload::Whole(Whole::new(chunk.data, chunk.trailers))
        }
    };
    Ok(Answer::Upstream { head, body, guard })
}

/// A filter's reply to a request, after the response phases of the filters
/// that already ran (which may replace it).
fn reply_through(
    run: &Run,
    (mut head, body): (http::response::Parts, Bytes),
    exchange: &mut Exchange,
) -> Result<Answer, ProxyError> {
    let replaced = settle(run.on_response(&mut head), exchange)?;
    let (head, body) = replaced.unwrap_or((head, body));
    Ok(Answer::Filter { head, body })
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

/// Copies bytes both ways between an upgraded client and upstream
/// connection, until either side closes or nothing moves for `idle`.
async fn tunnel(client: OnUpgrade, mut u: Upgraded, idle: std::time::Duration, idled: prometheus::IntCounter) {
    let Some(client) = client.wire().await else {
        return tracing::debug!("the client connection closed before its upgrade");
    };
    let progress = Progress::both_ways();
    let mut c = Watched::new(client, progress.clone());
    let quiet = async {
        loop {
            let d = progress.idle_for();
            if d >= idle {
                return;
            }
            tokio::time::sleep(idle - d).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut c, &mut u) => if let Err(e) = copied {
            tracing::debug!(error = %e, "upgraded connection ended with error");
        },
        () = quiet => {
            tracing::debug!("closing an idle upgraded connection");
            idled.inc();
        }
    }
}
