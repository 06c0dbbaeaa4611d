//! One client's HTTP/1.1 connection, served by wasp itself: request heads
//! are parsed from the connection's buffer ([`crate::h1::request`]), each
//! request goes down the request path in this connection's task (its body
//! read from the connection as the path polls it), and its response is
//! written as its body arrives. One request at a time; pipelined requests
//! wait in the buffer. What hyper's server did with a task hand-over, a
//! channel per body and a second copy of every head, this does in place.
//!
//! Keep-alive follows RFC 9112 §9.3: HTTP/1.1 unless either side says
//! `close`, HTTP/1.0 only when asked. A connection is closed after a
//! response whose request body was not read to its end (unless the rest is
//! already buffered), after a request framed by both `Transfer-Encoding`
//! and `Content-Length`, and when draining. A connection that opens with
//! the HTTP/2 preface is handed back to be served as HTTP/2.

use crate::conn_state::ConnState;
use crate::h1::request::{self, Head, Refusal};
use crate::h1::wire::{INTERIM, OnUpgrade, RequestBody, Wire};
use crate::h1::write::{Answering, Writer};
use crate::h2_guard::PREFACE;
use crate::handler::HttpListener;
use crate::io::clock_ms;
use crate::respond::ResponseBody;
use crate::upstream::body::Source;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode, Version};
use http_body_util::Full;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

/// After a response whose request body was left unread, the rest is read
/// and dropped for this long (or this much) before the connection closes,
/// so the client sees the response rather than a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// How a connection ended.
pub enum Ended {
    /// Closed (or handed to a tunnel).
    Closed,
    /// It opened with the HTTP/2 preface: to be served as HTTP/2, from the
    /// preface on.
    Http2(Wire),
}

type Handling = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// What the connection is doing. Large, and kept so: the connection is
/// pinned once and never moved, and boxing the writer would cost an
/// allocation per response.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// Reading a request head.
    Head,
    /// The request path has the request.
    Handling(Handling, Asked),
    /// Writing the response.
    Writing(Writer<ResponseBody>, Then),
    /// Answering a request refused before routing, then closing.
    Refusing(Writer<Full<Bytes>>),
    /// Closing: the response is out; `linger` while an unread body drains.
    Closing {
        shut: bool,
        linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    },
    Done,
}

/// What the client's request asked of its response (taken from its stage
/// when the response is ready, the default left behind).
#[derive(Default)]
struct Asked {
    head_request: bool,
    http10: bool,
    keep_alive: bool,
    upgrade: Option<oneshot::Sender<Wire>>,
}

/// What follows a response (taken from its stage like [`Asked`]).
#[derive(Default)]
struct Then {
    close: bool,
    upgrade: Option<oneshot::Sender<Wire>>,
}

/// A client's HTTP/1.1 connection being served.
pub struct Connection {
    wire: Wire,
    /// The handler routing requests: the one serving when the last request
    /// arrived, as of `generation` (the one that accepted, before the first).
    listener: Arc<HttpListener>,
    generation: u64,
    state: Arc<ConnState>,
    limits: request::Limits,
    stage: Stage,
    /// Drain: the connection closes after the request in progress.
    closing: bool,
    /// No request yet (the HTTP/2 preface may still come).
    first: bool,
    /// When the head being read began (ms, [`clock_ms`]).
    head_since: Option<u64>,
    /// How much of the buffer was looked at for the end of a head without
    /// finding it: a head arriving a byte at a time is parsed once, not
    /// once a byte.
    scanned: usize,
    /// The connection went on as a tunnel or as HTTP/2.
    handed_off: bool,
    /// A response was just written (whether the connection closes after
    /// it): what follows is settled under the next head read's lock.
    after_response: Option<bool>,
}

impl Connection {
    /// Serves `wire` with `listener`'s settings; requests are routed by the
    /// handler serving when each arrives.
    pub fn new(wire: Wire, listener: Arc<HttpListener>, state: Arc<ConnState>) -> Self {
        let limits =
            request::Limits { max_bytes: listener.limits.max_header_bytes, max_fields: listener.limits.max_headers };
        Connection {
            wire,
            listener,
            // Loaded again for the first request (a reload may have come since the accept).
            generation: u64::MAX,
            state,
            limits,
            stage: Stage::Head,
            closing: false,
            first: true,
            head_since: Some(clock_ms()),
            scanned: 0,
            handed_off: false,
            after_response: None,
        }
    }

    /// Since when a request head has been arriving (from the accept for the
    /// first one, from its first byte after that); `None` unless the
    /// connection is waiting for the rest of one.
    pub fn reading_head_since(&self) -> Option<u64> {
        matches!(self.stage, Stage::Head).then_some(self.head_since).flatten()
    }

    /// Closes the connection after the request in progress (now, if none is).
    pub fn graceful_shutdown(&mut self) {
        self.closing = true;
        if matches!(self.stage, Stage::Head) && self.wire.lock().buf.is_empty() {
            self.stage = Stage::Done;
        }
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<Ended>> {
        let mut inner = self.wire.lock();
        if let Some(close) = self.after_response.take() {
            // A rest of the request body already buffered is skipped; one
            // still on its way would have to be read: the connection closes instead.
            let unread = !inner.skip_buffered_body();
            if close || unread || inner.eof {
                drop(inner);
                let linger = unread.then(|| (Box::pin(tokio::time::sleep(LINGER)), 0));
                self.stage = Stage::Closing { shut: false, linger };
                return Poll::Ready(None);
            }
            if !inner.buf.is_empty() {
                self.head_since = Some(clock_ms());
            }
        }
        loop {
            if !inner.buf.is_empty() {
                if self.first && PREFACE.starts_with(&inner.buf[..inner.buf.len().min(PREFACE.len())]) {
                    if inner.buf.len() >= PREFACE.len() {
                        drop(inner);
                        self.stage = Stage::Done;
                        self.handed_off = true;
                        return Poll::Ready(Some(Ended::Http2(self.wire.clone())));
                    }
                } else if self.scanned == 0
                    || inner.buf.len() >= self.limits.max_bytes
                    || ends_head(&inner.buf[self.scanned.saturating_sub(3)..])
                {
                    match request::parse(&mut inner.buf, self.limits) {
                        Ok(Some(Head { request, body, keep_alive, expect_continue, upgrade })) => {
                            // The body's framing is set while the lock is held anyway.
                            let body = RequestBody::new(self.wire.clone(), &mut inner, body, expect_continue);
                            drop(inner);
                            self.begin(request, body, keep_alive, upgrade);
                            return Poll::Ready(None);
                        }
                        Ok(None) => self.scanned = inner.buf.len(),
                        Err(refusal) => {
                            drop(inner);
                            self.refuse(refusal);
                            return Poll::Ready(None);
                        }
                    }
                }
            } else if self.closing {
                self.stage = Stage::Done;
                return Poll::Ready(None);
            }
            if inner.eof {
                // Closed before (the rest of) a head: nothing to answer.
                self.stage = Stage::Done;
                return Poll::Ready(None);
            }
            let was_empty = inner.buf.is_empty();
            match std::task::ready!(inner.poll_fill(cx)) {
                // When the read that just returned moved its bytes (the stream
                // noted it): no second clock read.
                Ok(true) if was_empty && self.head_since.is_none() => self.head_since = Some(inner.io.read_ms()),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %self.state.peer, error = %e, "connection failed while reading a request");
                    self.stage = Stage::Done;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// Hands a request to the request path.
    fn begin(&mut self, mut request: Box<http::Request<Source>>, body: RequestBody, keep_alive: bool, upgrade: bool) {
        (self.head_since, self.first, self.scanned) = (None, false, 0);
        let upgrade = upgrade.then(|| {
            let (tx, rx) = OnUpgrade::pair();
            request.extensions_mut().insert(rx);
            tx
        });
        let asked = Asked {
            head_request: request.method() == Method::HEAD,
            http10: request.version() == Version::HTTP_10,
            keep_alive,
            upgrade,
        };
        *request.body_mut() = Source::H1(body);
        // Each request is routed by the handler serving when it arrives.
        let serving = &self.state.accepted_by;
        let generation = serving.generation();
        if generation != self.generation {
            self.generation = generation;
            // A listener reloaded as TCP leaves the last HTTP handler this
            // connection loaded in charge of it (the newest settings it saw).
            if let Some(current) = serving.http() {
                self.listener = current;
            }
        }
        let listener = self.listener.clone();
        let handling = crate::boxed::boxed!(crate::forward::handle(request, listener, self.state.clone()));
        self.stage = Stage::Handling(handling, asked);
    }

    /// Answers a request refused before routing, and closes.
    fn refuse(&mut self, refusal: Refusal) {
        let Refusal { status, why } = refusal;
        tracing::debug!(peer = %self.state.peer, %status, why, "refused a request");
        let text = format!("wasp: {}: {why}\n", status.canonical_reason().unwrap_or("refused").to_lowercase());
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        let (parts, body) = response.into_parts();
        let to = Answering { head_request: false, http10: false, close: true };
        let written = Writer::response(parts, body, &to, &mut self.wire.lock().out);
        self.stage = written.map_or(Stage::Done, Stage::Refusing);
    }

    /// Starts writing the request path's response (inlined into its one
    /// caller: the response is not copied again to be passed).
    #[inline(always)]
    fn respond(&mut self, response: Response<ResponseBody>, asked: Asked) {
        // A `100 Continue` not sent by now never is: it cannot follow the final
        // response's head. A client still waiting sends no body, and the
        // connection closes after the response (its body unread).
        let mut inner = self.wire.lock();
        if inner.interim.take().is_some_and(|rest| rest.len() < INTERIM.len()) {
            // Half of it went out, and the rest cannot.
            self.stage = Stage::Done;
            return;
        }
        // A request body not in by now (and not all in the buffer) will most
        // likely close the connection after the response: said so up front
        // (RFC 9112 §9.6), so the client sends nothing more on it.
        let unread = !inner.body_buffered();
        let (parts, body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS && asked.upgrade.is_some();
        let to = Answering {
            head_request: asked.head_request,
            http10: asked.http10,
            close: !switching && (self.closing || !asked.keep_alive || unread),
        };
        let written = Writer::response(parts, body, &to, &mut inner.out);
        drop(inner);
        self.stage = match written {
            Ok(writer) => {
                let close = to.close || writer.until_close();
                Stage::Writing(writer, Then { close, upgrade: asked.upgrade.filter(|_| switching) })
            }
            Err(e) => {
                tracing::debug!(peer = %self.state.peer, error = ?e, "response could not be written");
                Stage::Done
            }
        };
    }

    /// The response is out: the tunnel, or the next head's read, which
    /// settles first (under its lock: one lock a request less) whether the
    /// connection closes instead.
    fn written(&mut self, then: Then) {
        // The writer (and the exchange in its body) goes first.
        self.stage = Stage::Done;
        if let Some(tunnel) = then.upgrade {
            // The tunnel takes the connection from here (if it is still waiting for it).
            self.handed_off = tunnel.send(self.wire.clone()).is_ok();
            return;
        }
        self.after_response = Some(then.close);
        self.stage = Stage::Head;
    }

    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Stage::Closing { shut, linger } = &mut self.stage else { return Poll::Ready(()) };
        if !*shut {
            // Flushes what is buffered (TLS), then the FIN: the response is whole.
            let _ = std::task::ready!(Pin::new(&mut self.wire).poll_shutdown(cx));
            *shut = true;
        }
        let Some((timer, drained)) = linger else { return Poll::Ready(()) };
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut inner = self.wire.lock();
        loop {
            *drained += inner.buf.len();
            inner.buf.clear();
            if *drained >= LINGER_BYTES {
                return Poll::Ready(());
            }
            match std::task::ready!(inner.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) | Err(_) => return Poll::Ready(()),
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.handed_off {
            self.wire.close();
        }
    }
}

/// Whether `bytes` hold the end of a head (an empty line; httparse also
/// takes a bare LF as a line end).
fn ends_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

impl Future for Connection {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Head => {
                    if let Some(ended) = std::task::ready!(this.poll_head(cx)) {
                        return Poll::Ready(ended);
                    }
                }
                Stage::Handling(handling, asked) => match handling.as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        // Taken, not the stage moved out whole (160 bytes).
                        let asked = std::mem::take(asked);
                        this.respond(response, asked);
                    }
                    Poll::Ready(Err(never)) => match never {},
                    Poll::Pending => {
                        // A client that resets its connection while its request is
                        // handled cancels it. Its FIN is a half-close: the response
                        // still goes out. Noticed once its body is in; a quiet
                        // socket costs no system call.
                        let mut inner = this.wire.lock();
                        if inner.body.ended()
                            && inner.buf.is_empty()
                            && !inner.eof
                            && let Poll::Ready(Err(e)) = inner.poll_fill(cx)
                        {
                            tracing::debug!(peer = %this.state.peer, error = %e, "client went away mid-request");
                            drop(inner);
                            this.stage = Stage::Done;
                        }
                        if !matches!(this.stage, Stage::Done) {
                            return Poll::Pending;
                        }
                    }
                },
                Stage::Writing(writer, then) => match std::task::ready!(writer.poll_write(cx, &mut this.wire)) {
                    Ok(()) => {
                        let then = std::mem::take(then);
                        this.written(then);
                    }
                    Err(e) => {
                        // The body failed mid-way (or the client did): the
                        // response is cut off, never made to look whole.
                        tracing::debug!(peer = %this.state.peer, error = ?e, "response cut off");
                        this.stage = Stage::Done;
                    }
                },
                Stage::Refusing(writer) => {
                    this.stage = match std::task::ready!(writer.poll_write(cx, &mut this.wire)) {
                        // The rest of what the client sent is read and dropped for a while.
                        Ok(()) => {
                            Stage::Closing { shut: false, linger: Some((Box::pin(tokio::time::sleep(LINGER)), 0)) }
                        }
                        Err(_) => Stage::Done,
                    };
                }
                Stage::Closing { .. } => {
                    std::task::ready!(this.poll_closing(cx));
                    this.stage = Stage::Done;
                }
                Stage::Done => return Poll::Ready(Ended::Closed),
            }
        }
    }
}
