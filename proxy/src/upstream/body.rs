//! The request body sent upstream. It can be handed to a second attempt as
//! long as the first never started reading it: a retry never re-sends a body
//! that was already (partly) streamed. A body a filter buffered whole can be
//! sent any number of times. It also counts the bytes it carried.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

pub use crate::h1::BoxError;

/// The client's request body failed (malformed chunked framing, a reset)
/// while it was being sent upstream: the client's fault (400), never the
/// upstream's, and never counted against the upstream's breaker.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyError(pub BoxError);

/// Where a streamed request body comes from: the client, or the client
/// through streaming filters.
#[derive(Default)]
pub enum Source {
    /// None yet: a request is boxed where its head is parsed, before its
    /// body is set.
    #[default]
    Empty,
    /// An HTTP/2 client's body as it arrives.
    Incoming(Incoming),
    /// An HTTP/1.1 client's body, read from its connection as it is polled.
    H1(crate::h1::wire::RequestBody),
    /// Any other body (e.g. passed through filters chunk by chunk).
    Boxed(BoxBody<Bytes, BoxError>),
}

impl Body for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Source::Empty => Poll::Ready(None),
            Source::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(|e| ClientBodyError(e.into()).into()),
            Source::H1(b) => Pin::new(b).poll_frame(cx).map_err(|e| ClientBodyError(e).into()),
            Source::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Empty => true,
            Source::Incoming(b) => b.is_end_stream(),
            Source::H1(b) => b.is_end_stream(),
            Source::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Empty => SizeHint::with_exact(0),
            Source::Incoming(b) => b.size_hint(),
            Source::H1(b) => b.size_hint(),
            Source::Boxed(b) => b.size_hint(),
        }
    }
}

/// A body held whole: its data, then its trailers (a body filters buffered,
/// a local reply). A clone sends it again. The trailers, rare, are boxed:
/// a body is moved several times on its way, and an inline `HeaderMap`
/// would triple what each move copies.
#[derive(Clone, Default)]
pub struct Whole {
    data: Option<Bytes>,
    trailers: Option<Box<HeaderMap>>,
}

impl Whole {
    /// `data`, then `trailers` if any.
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Whole { data: Some(data), trailers: trailers.map(Box::new) }
    }

    /// Whether nothing has been read from it yet.
    fn unread(&self) -> bool {
        self.data.is_some()
    }
}

impl Body for Whole {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        Poll::Ready(match this.data.take().filter(|d| !d.is_empty()) {
            Some(d) => Some(Ok(Frame::data(d))),
            None => this.trailers.take().map(|t| Ok(Frame::trailers(*t))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, &self.trailers) {
            (data, None) => SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64)),
            // Trailers need chunked framing: no length.
            (_, Some(_)) => SizeHint::default(),
        }
    }
}

/// What the attempts of one request share: the unread body, a byte count,
/// whether the client's side of the body failed, and whether it was read
/// to its end.
pub struct Shared {
    unread: Mutex<Option<Source>>,
    bytes: AtomicU64,
    client_failed: AtomicBool,
    complete: AtomicBool,
}

/// A downstream request body, shareable between attempts until first read.
/// The default is an empty body (what a request's writer leaves behind).
pub struct RequestBody {
    state: State,
    hint: SizeHint,
}

enum State {
    Empty,
    Unread(Arc<Shared>),
    Streaming(Source, Arc<Shared>),
    /// A whole body: data, then trailers.
    Full(Whole),
    Gone,
}

/// Error for an attempt that finds its body already taken (never expected).
#[derive(Debug, thiserror::Error)]
#[error("request body was already consumed by an earlier attempt")]
pub struct BodyConsumed;

impl Default for RequestBody {
    fn default() -> Self {
        RequestBody { state: State::Empty, hint: SizeHint::with_exact(0) }
    }
}

impl RequestBody {
    /// Wraps the downstream body; an empty body needs no sharing at all.
    pub fn new(body: Source) -> (Self, Option<Arc<Shared>>) {
        let hint = body.size_hint();
        if body.is_end_stream() {
            return (RequestBody { state: State::Empty, hint }, None);
        }
        let shared = Arc::new(Shared {
            unread: Mutex::new(Some(body)),
            bytes: AtomicU64::new(0),
            client_failed: AtomicBool::new(false),
            complete: AtomicBool::new(false),
        });
        (RequestBody { state: State::Unread(shared.clone()), hint }, Some(shared))
    }

    /// A whole body (buffered by a filter, or a filter's own call): it can be
    /// sent again on every attempt; the shared count is its length.
    pub fn full(data: Bytes, trailers: Option<HeaderMap>) -> (Self, Arc<Shared>) {
        let whole = Whole::new(data, trailers);
        let hint = whole.size_hint();
        let data_len = whole.data.as_ref().map_or(0, |d| d.len() as u64);
        let shared = Arc::new(Shared {
            unread: Mutex::new(None),
            bytes: AtomicU64::new(data_len),
            client_failed: AtomicBool::new(false),
            complete: AtomicBool::new(true),
        });
        (RequestBody { state: State::Full(whole), hint }, shared)
    }

    /// Whether the client's side of the body failed (broken framing, a
    /// reset): an attempt that failed then failed because of the client.
    pub fn client_failed(&self) -> bool {
        self.streamed().is_some_and(|s| s.client_failed.load(Ordering::Relaxed))
    }

    /// The shared state of a body still coming from the client (`None`:
    /// empty or held whole), e.g. to ask later whether it all arrived.
    pub fn streamed(&self) -> Option<&Arc<Shared>> {
        match &self.state {
            State::Unread(s) | State::Streaming(_, s) => Some(s),
            _ => None,
        }
    }

    /// A body for another attempt, if no attempt has read this one yet.
    pub fn replay(&self) -> Option<RequestBody> {
        let state = match &self.state {
            State::Empty => State::Empty,
            State::Full(whole) if whole.unread() => State::Full(whole.clone()),
            State::Unread(s) | State::Streaming(_, s) if s.is_unread() => State::Unread(s.clone()),
            _ => return None,
        };
        Some(RequestBody { state, hint: self.hint })
    }
}

impl Shared {
    fn is_unread(&self) -> bool {
        self.unread.lock().map(|b| b.is_some()).unwrap_or(false)
    }

    /// Whether the client has sent the whole body: until then an upstream
    /// that has not answered may just be waiting for it, and a timeout is
    /// not the upstream's failure.
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }

    /// Bytes of request body read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Empty => return Poll::Ready(None),
                State::Full(whole) => return Pin::new(whole).poll_frame(cx).map_err(|never| match never {}),
                State::Gone => return Poll::Ready(Some(Err(Box::new(BodyConsumed)))),
                State::Unread(shared) => {
                    let taken = shared.unread.lock().ok().and_then(|mut b| b.take());
                    this.state = match taken {
                        Some(body) => State::Streaming(body, shared.clone()),
                        None => State::Gone,
                    };
                }
                State::Streaming(body, shared) => {
                    let mut polled = Pin::new(&mut *body).poll_frame(cx);
                    if let Poll::Ready(Some(Ok(frame))) = &mut polled
                        && let Some(trailers) = frame.trailers_mut()
                    {
                        crate::headers::strip_trailers(trailers);
                    }
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(data) = frame.data_ref() {
                                shared.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            if body.is_end_stream() {
                                shared.complete.store(true, Ordering::Relaxed);
                            }
                        }
                        Poll::Ready(None) => shared.complete.store(true, Ordering::Relaxed),
                        Poll::Ready(Some(Err(e))) if e.is::<ClientBodyError>() => {
                            shared.client_failed.store(true, Ordering::Relaxed)
                        }
                        _ => {}
                    }
                    return polled;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Empty => true,
            State::Streaming(body, _) => body.is_end_stream(),
            State::Full(whole) => whole.is_end_stream(),
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
