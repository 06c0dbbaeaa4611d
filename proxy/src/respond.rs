//! What goes back to the client: the upstream's streaming body or a local
//! reply, wrapped in [`ResponseBody`], which records the finished exchange
//! (metrics and one access-log line) when the body ends or is dropped.
//! [`local_reply`] is the one place a [`Kind`] becomes a response.

use crate::access_log::timestamp;
use crate::conn_state::ConnState;
use crate::error::Kind;
use crate::filter::body::{Aborted, Filtered};
use crate::handler::HttpListener;
use crate::metrics::Answered;
use crate::route::Route;
use crate::stall::Slot;
use crate::upstream::body::{BoxError, ClientBodyError, Shared as BodyShared, Whole};
use crate::upstream::{Attempts, Held, UpstreamBody};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Everything known about one request, completed as it goes and recorded when it ends.
pub struct Exchange {
    start: Instant,
    listener: Arc<HttpListener>,
    conn: Arc<ConnState>,
    /// The request line for the access log (`None` while the log is off).
    line: Option<(Method, Uri)>,
    version: Version,
    /// The matched route.
    pub route: Option<Arc<Route>>,
    /// The request id sent upstream.
    pub request_id: Option<HeaderValue>,
    /// The original client, as trusted proxies in front reported it.
    pub client: Option<String>,
    /// Upstream attempts.
    pub attempts: Attempts,
    /// The request body's shared state, for its byte count.
    pub request_body: Option<Arc<BodyShared>>,
    /// Upstream counts held until the response ends.
    pub held: Option<Held>,
    /// Status sent (499 until a response exists: the client went away first).
    pub status: u16,
    /// Who answered (the client, by leaving, until a response exists).
    pub answered: Answered,
    /// Why wasp answered or cut the exchange short.
    pub reason: Option<&'static str>,
    /// The filter that answered or failed the request, if one did.
    pub filter: Option<Arc<str>>,
    /// The version (generation) of each filter that handled the request.
    pub generations: Vec<(Arc<str>, u64)>,
    bytes_out: u64,
    complete: bool,
}

impl Exchange {
    /// When the request arrived.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Starts recording a request that just arrived on `conn`.
    pub fn begin<B>(req: &http::Request<B>, listener: Arc<HttpListener>, conn: Arc<ConnState>) -> Box<Self> {
        conn.request_started(req.version() == Version::HTTP_2);
        let line = listener.access_log.enabled().then(|| (req.method().clone(), req.uri().clone()));
        crate::boxed::in_place!(Exchange {
            start: Instant::now(),
            listener,
            conn,
            line,
            version: req.version(),
            route: None,
            request_id: None,
            client: None,
            attempts: Attempts::default(),
            request_body: None,
            held: None,
            status: 499,
            answered: Answered::Client,
            reason: Some("wasp_client_disconnect"),
            filter: None,
            generations: Vec::new(),
            bytes_out: 0,
            complete: false,
        })
    }

    fn finish(&mut self) {
        let now = Instant::now();
        let seconds = now.saturating_duration_since(self.start).as_secs_f64();
        match &self.route {
            Some(route) => route.metrics.observe(self.status, self.answered, seconds),
            None => self.listener.no_route_metrics.observe(self.status, self.answered, seconds),
        }
        if self.listener.access_log.enabled() {
            self.write_log(seconds);
        }
        // A stream the client reset early (within a second, as Envoy counts
        // them): a cancelled slow request or long poll is not rapid reset.
        let reset = self.status == 499 && self.version == Version::HTTP_2 && seconds < 1.0;
        self.conn.request_finished(self.version == Version::HTTP_2, reset, now);
    }

    fn write_log(&self, seconds: f64) {
        let line = HttpLine {
            ts: timestamp(),
            kind: "http",
            listener: &self.listener.name,
            route: self.route.as_ref().map(|r| &*r.name),
            cluster: self.route.as_ref().map(|r| &*r.cluster.name),
            upstream: self.attempts.endpoint.as_ref().map(|e| &*e.address),
            attempts: self.attempts.count,
            method: self.line.as_ref().map_or("", |(m, _)| m.as_str()),
            path: self.line.as_ref().and_then(|(_, u)| u.path_and_query()).map_or("/", |p| p.as_str()),
            protocol: version_name(self.version),
            status: self.status,
            duration_ms: (seconds * 1e6).round() / 1e3,
            bytes_in: self.request_body.as_ref().map_or(0, |b| b.bytes()),
            bytes_out: self.bytes_out,
            request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()),
            peer: self.conn.peer.to_string(),
            destination: self.conn.destination.map(|d| d.to_string()),
            client: self.client.as_deref(),
            sni: self.conn.tls.as_ref().and_then(|t| t.sni.as_deref()),
            identity: self.conn.identity().map(|i| &**i),
            reason: self.reason,
            filter: self.filter.as_deref(),
            filters: Generations(&self.generations),
        };
        match serde_json::to_vec(&line) {
            Ok(bytes) => self.listener.access_log.write(bytes),
            Err(e) => tracing::warn!(error = %e, "cannot format access-log line"),
        }
    }
}

#[derive(Serialize)]
struct HttpLine<'a> {
    ts: String,
    kind: &'static str,
    listener: &'a str,
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    upstream: Option<&'a str>,
    attempts: u32,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    request_id: Option<&'a str>,
    peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    reason: Option<&'static str>,
    filter: Option<&'a str>,
    #[serde(skip_serializing_if = "Generations::is_empty")]
    filters: Generations<'a>,
}

/// `"filters": {"name": generation, ...}` in the access log.
struct Generations<'a>(&'a [(Arc<str>, u64)]);

impl Generations<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Generations<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, generation)| (&**name, generation)))
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// What a response body carries.
pub enum Payload {
    /// The upstream's body, streamed as it comes.
    Upstream(UpstreamBody),
    /// The upstream's body through streaming filters.
    Filtered(Box<Filtered<UpstreamBody>>),
    /// A whole body (a local reply, or one filters buffered), then trailers.
    Whole(Whole),
}

/// A response body that records its exchange when it ends.
pub struct ResponseBody {
    inner: Payload,
    exchange: Box<Exchange>,
    /// HTTP/2: the stream's slot for the write-stall check.
    slot: Option<Slot>,
}

impl ResponseBody {
    /// The upstream's answer, possibly through filters.
    pub fn upstream(body: Payload, mut exchange: Box<Exchange>) -> Self {
        exchange.reason = None;
        let slot = (exchange.version == Version::HTTP_2).then(|| exchange.conn.waiting.claim()).flatten();
        ResponseBody { inner: body, exchange, slot }
    }
}

/// The response wasp sends itself for `kind`: its status, a one-line body
/// saying what happened, and the request id.
pub fn local_reply(kind: Kind, mut exchange: Box<Exchange>) -> Response<ResponseBody> {
    let status = kind.status();
    exchange.status = status.as_u16();
    exchange.answered = Answered::Wasp(kind);
    exchange.reason = Some(kind.reason());
    let id = exchange.request_id.clone();
    let body = Bytes::from(format!("wasp: {}\n", kind.message()));
    let mut resp = Response::new(ResponseBody { inner: Payload::Whole(Whole::new(body, None)), exchange, slot: None });
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(id) = id {
        resp.headers_mut().insert(crate::headers::X_REQUEST_ID.clone(), id);
    }
    resp
}

/// A filter's local reply.
pub fn filter_reply(head: http::response::Parts, body: Bytes, mut exchange: Box<Exchange>) -> Response<ResponseBody> {
    exchange.status = head.status.as_u16();
    exchange.answered = Answered::Filter;
    exchange.reason = Some("wasp_filter_reply");
    Response::from_parts(head, ResponseBody { inner: Payload::Whole(Whole::new(body, None)), exchange, slot: None })
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(slot) = this.slot {
            this.exchange.conn.waiting.moving(slot);
        }
        let polled = match &mut this.inner {
            Payload::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Payload::Filtered(body) => Pin::new(body.as_mut()).poll_frame(cx),
            Payload::Whole(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.exchange.bytes_out += data.len() as u64;
                    if let Some(slot) = this.slot {
                        this.exchange.conn.waiting.waiting(slot);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.exchange.reason = Some(if e.is::<Aborted>() {
                    "wasp_filter_aborted_body"
                } else if e.is::<ClientBodyError>() {
                    // The request body, still streaming upstream, failed on the client's side.
                    "wasp_request_body_error"
                } else {
                    "wasp_upstream_reset_mid_body"
                })
            }
            Poll::Ready(None) => this.exchange.complete = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Payload::Upstream(b) => b.is_end_stream(),
            Payload::Filtered(b) => b.is_end_stream(),
            Payload::Whole(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Payload::Upstream(b) => b.size_hint(),
            Payload::Filtered(b) => b.size_hint(),
            Payload::Whole(b) => b.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.exchange.conn.waiting.release(slot);
        }
        if !self.exchange.complete && self.exchange.reason.is_none() && !self.is_end_stream() {
            self.exchange.reason = Some("wasp_client_disconnect");
        }
    }
}

/// Every exchange is recorded exactly once, when it is dropped: with its
/// response body, or earlier if the client went away before a response existed.
impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish();
    }
}
