//! Outbound HTTP calls from filters (`host.http-call`): a filter prepares a
//! request to a cluster its config lists; wasp sends the prepared calls of a
//! phase together when the phase returns `wait`, through the cluster's own
//! balancer, breakers and pool, and hands each answer to `on-call-response`.

use super::message::header_map;
use crate::error::Kind;
use crate::upstream::{Attempts, Cluster, RequestBody, RequestHead};
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body_util::{BodyExt, Limited};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls one instance may have prepared at once.
pub const MAX_PENDING: usize = 8;
/// The largest response body a call returns.
pub const MAX_BODY: usize = 1 << 20;
/// Time limit of a call whose request sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// A request a filter prepared, as either ABI passes it.
pub struct CallRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, unchecked.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
    /// Time limit; 0 means [`DEFAULT_TIMEOUT`].
    pub timeout_ms: u32,
}

/// A cluster's answer to a call.
pub struct CallResponse {
    /// Status.
    pub status: u16,
    /// Headers, lower-case names, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

/// A call's answer, or why there is none.
pub type Answer = Result<CallResponse, String>;

/// A prepared call: sent when awaited.
pub struct Pending {
    /// The id the filter got.
    pub id: u64,
    /// The call.
    pub future: Pin<Box<dyn Future<Output = Answer> + Send>>,
}

/// Checks a filter's request and turns it into a call to `cluster`.
pub fn prepare(
    cluster: Arc<Cluster>,
    request: CallRequest,
) -> Result<Pin<Box<dyn Future<Output = Answer> + Send>>, String> {
    let method =
        Method::from_bytes(request.method.as_bytes()).map_err(|_| format!("invalid method {:?}", request.method))?;
    if !request.path.starts_with('/') {
        return Err(format!("path {:?} must start with '/'", request.path));
    }
    let path = request.path.parse().map_err(|_| format!("invalid path {:?}", request.path))?;
    let (mut headers, framing) = header_map(request.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())))?;
    if let Some(name) = framing.first() {
        return Err(format!("header {name:?} is managed by wasp (framing or hop-by-hop); not allowed in a call"));
    }
    let timeout = match request.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms.into()),
    };
    // Without a host of its own, the request is for the cluster by name (as Envoy does).
    if !headers.contains_key(http::header::HOST)
        && let Ok(name) = HeaderValue::from_str(&cluster.name)
    {
        headers.insert(http::header::HOST, name);
    }
    let authority = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()?.parse().ok());
    let head = RequestHead { method, path, authority, headers, destination: None };
    let body = Bytes::from(request.body);
    Ok(Box::pin(async move {
        let name = cluster.name.clone();
        tokio::time::timeout(timeout, send(cluster, head, body, timeout))
            .await
            .unwrap_or_else(|_| Err(format!("call to cluster {name:?} timed out after {timeout:?}")))
    }))
}

async fn send(cluster: Arc<Cluster>, mut head: RequestHead, body: Bytes, timeout: Duration) -> Answer {
    let mut attempts = Attempts::default();
    let up = cluster
        .forward(
            &mut head,
            RequestBody::full(body, None).0,
            None,
            crate::deadline::after(Instant::now(), timeout),
            None,
            &mut attempts,
        )
        .await
        .map_err(|e| match e.kind {
            Kind::Timeout => format!("call to cluster {:?} timed out after {timeout:?}", cluster.name),
            kind => format!("call to cluster {:?} failed: {}", cluster.name, kind.message()),
        })?;
    let (parts, body) = up.response.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
        format!("call to cluster {:?}: response body failed or is over {MAX_BODY} bytes: {e}", cluster.name)
    })?;
    let headers = parts.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
    Ok(CallResponse { status: parts.status.as_u16(), headers, body: body.to_bytes().to_vec() })
}
