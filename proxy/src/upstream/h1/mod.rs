//! HTTP/1.1 to an upstream, driven by the request's own task: the request
//! is written and the response read on the connection the request holds,
//! with no connection task, channel or wake-up in between (hyper's client
//! costs about 13k instructions a request in that hand-over; see README,
//! "Benchmarks"). A connection is held by one exchange at a time, from its
//! request head to the end of its response body, then goes back to its
//! pool ([`super::pool`]) if both sides ended cleanly.
//!
//! The request body is written while the response is read (an upstream
//! may answer early, or stream its answer as the body arrives): before the
//! response head by [`send`], after it by the response body's own polls.

mod read;

use super::body::{BoxError, ClientBodyError, RequestBody};
use super::pool::H1Pool;
use crate::error::{Kind, ProxyError};
use crate::h1::write::{WriteError, Writer};
use crate::original_dst::OwnDial;
use crate::tls::Stream;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Frame, SizeHint};
use read::{Framing, Parsed, Step};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Bytes asked of the socket per read of a body.
const READ_SIZE: usize = 16 * 1024;
/// Bytes asked of the socket per read of a response head: an idle pooled
/// connection holds this much, and most responses fit in it whole.
const HEAD_READ_SIZE: usize = 4 * 1024;

/// An open HTTP/1.1 connection to an endpoint, and what it holds.
pub struct Conn {
    io: Stream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// Where request heads are encoded (reused once each is written).
    out: BytesMut,
    /// The endpoint's `max_connections_per_endpoint` slot, released when
    /// the connection closes or leaves HTTP for a tunnel.
    slot: Option<OwnedSemaphorePermit>,
    /// wasp's own record of the dial, kept as long as the connection.
    _own: OwnDial,
}

impl Conn {
    /// A connection over `io`, counted by `permit` and `own`. Boxed: it is
    /// held by the pool, by the request's future and by the response body
    /// in turn, and a request's response is moved many times on its way.
    pub fn new(io: Stream, permit: OwnedSemaphorePermit, own: OwnDial) -> Box<Self> {
        Box::new(Conn { io, buf: BytesMut::new(), out: BytesMut::new(), slot: Some(permit), _own: own })
    }

    /// Whether an idle connection can carry a request: the upstream has
    /// neither closed it nor sent anything unasked. Never waits; costs no
    /// system call unless the socket became readable since it was last read.
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.buf.reserve(64);
        // Plain TCP: a read that neither registers a waker (a lock, a waker
        // stored and replaced) nor depends on the task's cooperative budget
        // (spent, a poll says Pending even for a socket the upstream closed);
        // no system call unless tokio saw the socket become readable. TLS may
        // hold bytes already read from the socket: read through it.
        if let Stream::Plain(tcp) = &self.io {
            return matches!(tcp.try_read_buf(&mut self.buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf), Poll::Pending)
    }

    /// Reads more into the buffer, about `size` bytes; `Ok(false)` at end of stream.
    fn poll_fill(&mut self, size: usize, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        crate::h1::poll_fill(&mut self.io, &mut self.buf, size, cx)
    }
}

/// Sends `req` on `conn` and reads the response head; the body follows in
/// the response, which gives the connection back to `pool` at its end.
pub async fn send(
    mut conn: Box<Conn>,
    mut req: Box<Request<RequestBody>>,
    pool: &Arc<H1Pool>,
) -> Result<Response<H1Body>, ProxyError> {
    let head_request = req.method() == Method::HEAD;
    let upgrade = crate::headers::is_upgrade(req.headers());
    let mut writer = Some(Writer::request(&mut req, &mut conn.out).map_err(write_failed)?);
    drop(req); // what is left of it (method and target, written): not held across the wait
    // Set when writing failed on the upstream's side: its response may
    // still be readable (it answered early and closed), else this error stands.
    let mut write_error = None;
    let head = std::future::poll_fn(|cx| {
        if let Some(w) = writer.as_mut() {
            match w.poll_write(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => writer = None,
                Poll::Ready(Err(WriteError::Io(e))) => {
                    write_error = Some(e);
                    writer = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(write_failed(e))),
                Poll::Pending => {}
            }
        }
        loop {
            let parsed = if conn.buf.is_empty() {
                Ok(Parsed::Partial)
            } else {
                read::head(&mut conn.buf, head_request, upgrade)
            };
            match parsed {
                Ok(Parsed::Head(head)) => return Poll::Ready(Ok(head)),
                Ok(Parsed::Partial) => {}
                Err(e) => return Poll::Ready(Err(ProxyError::with(Kind::UpstreamProtocol, e))),
            }
            match std::task::ready!(conn.poll_fill(HEAD_READ_SIZE, cx)) {
                Ok(true) => {}
                Ok(false) if conn.buf.is_empty() => {
                    let cause = write_error.take().unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                    return Poll::Ready(Err(ProxyError::with(Kind::UpstreamReset, cause)));
                }
                Ok(false) => {
                    let e = read::Invalid("closed in the middle of the response head".into());
                    return Poll::Ready(Err(ProxyError::with(Kind::UpstreamProtocol, e)));
                }
                Err(e) => return Poll::Ready(Err(ProxyError::with(Kind::UpstreamReset, e))),
            }
        }
    })
    .await?;
    let keep_alive = head.keep_alive && write_error.is_none();
    // Boxed: a request still being written when its answer starts is rare.
    let writer = writer.filter(|w| !w.done()).map(Box::new);
    let mut resp =
        Response::new(H1Body { conn: Some(conn), writer, framing: head.body, keep_alive, pool: pool.clone() });
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp.body_mut().release_if_ended();
    Ok(resp)
}

/// A request that could not be written because of its body: the client's
/// failure (marked by the body itself), or a length that does not add up.
fn write_failed(e: WriteError) -> ProxyError {
    match e {
        WriteError::Io(e) => ProxyError::with(Kind::UpstreamReset, e),
        WriteError::Body(e) if e.is::<ClientBodyError>() => ProxyError::with(Kind::UpstreamReset, e),
        WriteError::Body(e) => ProxyError::with(Kind::BadRequest, e),
    }
}

/// An HTTP/1.1 response body, read from the connection as it is polled.
/// Its connection goes back to the pool once the body and the request
/// have both ended cleanly, and closes if the body is dropped before.
pub struct H1Body {
    conn: Option<Box<Conn>>,
    /// What is left to write of the request.
    writer: Option<Box<Writer<RequestBody>>>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<H1Pool>,
}

impl H1Body {
    /// The upgraded connection of a 101 response, with any bytes the
    /// upstream already sent on it. It no longer counts against the
    /// endpoint's `max_connections_per_endpoint`, which caps the HTTP
    /// connections requests wait for: a long-lived WebSocket must not
    /// starve them.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        if self.framing != Framing::Upgraded {
            return None;
        }
        let mut conn = self.conn.take()?;
        conn.slot = None;
        Some(Upgraded(conn))
    }

    fn release_if_ended(&mut self) {
        if !self.framing.ended() {
            return;
        }
        let Some(conn) = self.conn.take() else { return };
        // Bytes beyond the response's end, or a request not all written,
        // would put the next exchange out of step: close instead.
        if self.keep_alive && conn.buf.is_empty() && self.writer.as_ref().is_none_or(|w| w.done()) {
            self.pool.give_back(conn);
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.framing = Framing::Length(0);
        Poll::Ready(Some(Err(e.into())))
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
        if let Some(w) = this.writer.as_mut().filter(|w| !w.done()) {
            match w.poll_write(cx, &mut conn.io) {
                Poll::Ready(Ok(())) | Poll::Pending => {}
                // The client's body failed: the response cannot be trusted to be whole.
                Poll::Ready(Err(WriteError::Body(e))) => return this.fail(e),
                Poll::Ready(Err(WriteError::Io(_))) => {
                    this.writer = None;
                    this.keep_alive = false;
                }
            }
        }
        let mut eof = false;
        loop {
            let step = match this.framing.step(&mut conn.buf, eof) {
                Ok(step) => step,
                Err(e) => return this.fail(e),
            };
            let frame = match step {
                Step::Data(data) => Frame::data(data),
                Step::Trailers(trailers) => Frame::trailers(trailers),
                Step::End => {
                    this.release_if_ended();
                    return Poll::Ready(None);
                }
                Step::NeedMore => match std::task::ready!(conn.poll_fill(READ_SIZE, cx)) {
                    Ok(more) => {
                        eof = !more;
                        continue;
                    }
                    Err(e) => return this.fail(e),
                },
            };
            this.release_if_ended();
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing.ended() || self.framing == Framing::Upgraded
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Upgraded => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A connection the upstream switched to another protocol (101): bytes it
/// sent after its response head come first, then the socket.
pub struct Upgraded(Box<Conn>);

impl AsyncRead for Upgraded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let conn = &mut self.get_mut().0;
        crate::h1::poll_read_rewound(&mut conn.buf, &mut conn.io, cx, out)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0.io).poll_shutdown(cx)
    }
}
