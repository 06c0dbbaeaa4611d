//! A client's HTTP/1.1 connection as its parts share it: the socket and
//! the bytes read from it but not yet used. The connection reads request
//! heads from it and writes responses to it; a request's body reads itself
//! from it as the request path polls it (no task or channel in between);
//! an upgraded connection's tunnel takes it over. They run in the
//! connection's one task (except a body sent to an HTTP/2 upstream, which
//! hyper reads from its own), and hold the lock only for a read or a
//! write, never while polling anything else.

use super::BoxError;
use super::body::{Framing, Step};
use crate::io::Watched;
use crate::tls::Stream;
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The interim response a client that sent `Expect: 100-continue` waits for.
pub const INTERIM: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Bytes asked of the socket per read of a body.
const READ_SIZE: usize = 16 * 1024;
/// Bytes asked of the socket per read of heads: most connections spend
/// their life between requests, holding this much each.
const HEAD_READ_SIZE: usize = 4 * 1024;

/// The connection, shared.
#[derive(Clone)]
pub struct Wire {
    shared: Arc<Mutex<Inner>>,
    /// Plain TCP: a flush has nothing to do, and takes no lock.
    plain: bool,
}

/// What is shared.
pub struct Inner {
    /// The socket.
    pub io: Watched<Stream>,
    /// Bytes read and not yet used.
    pub buf: BytesMut,
    /// The client closed its sending side (or the connection failed).
    pub eof: bool,
    /// The current request's body, as far as it has been read.
    pub body: Framing,
    /// `100 Continue`, still to be written before the body is read.
    pub interim: Option<Bytes>,
    /// Where response heads are encoded (reused once each is written).
    pub out: BytesMut,
}

impl Wire {
    /// A connection over `io`.
    pub fn new(io: Watched<Stream>) -> Self {
        let plain = matches!(io.get_ref(), Stream::Plain(_));
        let inner = Inner {
            io,
            buf: BytesMut::new(),
            eof: false,
            body: Framing::Length(0),
            interim: None,
            out: BytesMut::new(),
        };
        Wire { shared: Arc::new(Mutex::new(inner)), plain }
    }

    /// The shared state.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the connection for every holder: a request body still held
    /// elsewhere (an HTTP/2 upstream's request task reads it from its own
    /// task) sees its end at once instead of holding the socket open.
    pub fn close(&self) {
        if Arc::strong_count(&self.shared) > 1 {
            let inner = self.lock();
            let _ = socket2::SockRef::from(inner.io.get_ref().tcp()).shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Inner {
    /// Reads more into the buffer; `Ok(false)` at end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let size = if self.body.ended() { HEAD_READ_SIZE } else { READ_SIZE };
        let read = std::task::ready!(super::poll_fill(&mut self.io, &mut self.buf, size, cx));
        self.eof |= !matches!(read, Ok(true));
        Poll::Ready(read)
    }

    /// Whether the rest of the request body is in the buffer (or none is left).
    pub fn body_buffered(&self) -> bool {
        match self.body {
            Framing::Length(left) => self.buf.len() as u64 >= left,
            _ => false,
        }
    }

    /// Skips the rest of the request body if it is all in the buffer;
    /// whether the body has ended now.
    pub fn skip_buffered_body(&mut self) -> bool {
        if let Framing::Length(left) = self.body
            && self.body_buffered()
        {
            self.buf.advance(left as usize);
            self.body = Framing::Length(0);
        }
        self.body.ended()
    }

    /// Writes what is left of `100 Continue`.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(bytes) = self.interim.as_mut() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, bytes))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = bytes.split_to(n);
            if bytes.is_empty() {
                self.interim = None;
                std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A request's body, read from its connection as it is polled.
pub struct RequestBody {
    wire: Wire,
    /// Known at the start: the body has this exact length.
    exact: Option<u64>,
    done: bool,
}

impl RequestBody {
    /// The body of the request whose head was just read from `inner`, the
    /// wire's state (the caller holds the lock); `interim`: the client waits
    /// for `100 Continue`, sent when the body is first polled.
    pub fn new(wire: Wire, inner: &mut Inner, framing: Framing, interim: bool) -> Self {
        let exact = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let done = exact == Some(0);
        inner.body = framing;
        inner.interim = (interim && !done).then(|| Bytes::from_static(INTERIM));
        RequestBody { wire, exact, done }
    }
}

/// A client's body that broke off or broke its framing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut wire = this.wire.lock();
        let inner = &mut *wire;
        if let Err(e) = std::task::ready!(inner.poll_interim(cx)) {
            this.done = true;
            return Poll::Ready(Some(Err(e.into())));
        }
        loop {
            let step = inner.body.step(&mut inner.buf, inner.eof).map_err(|e| BodyError(e.0));
            let frame = match step {
                Ok(Step::Data(data)) => Frame::data(data),
                Ok(Step::Trailers(trailers)) => Frame::trailers(trailers),
                Ok(Step::End) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => match std::task::ready!(inner.poll_fill(cx)) {
                    Ok(_) => continue,
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            this.done = inner.body.ended();
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

// As a byte stream (a connection switched to another protocol by a 101, or
// to HTTP/2 by its preface; the connection writing a response): bytes
// already read come first, then the socket.

impl AsyncRead for Wire {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        super::poll_read_rewound(&mut inner.buf, &mut inner.io, cx, out)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.lock().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.lock().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.lock().io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.plain {
            // TCP buffers nothing in wasp: written is sent.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.lock().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().io).poll_shutdown(cx)
    }
}

/// Where the request path picks up a client connection it agreed to
/// upgrade, once the connection has written the 101 (a request extension,
/// hence `Clone`; the first taker gets the connection).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Wire>>>>);

impl OnUpgrade {
    /// A pair: the connection's end, and the request path's.
    pub fn pair() -> (tokio::sync::oneshot::Sender<Wire>, Self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (tx, OnUpgrade(Arc::new(Mutex::new(Some(rx)))))
    }

    /// The connection, once its 101 is written; `None` if it closed first.
    pub async fn wire(self) -> Option<Wire> {
        let rx = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()?;
        rx.await.ok()
    }
}
