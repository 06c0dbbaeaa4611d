//! Writing an HTTP/1.1 message: the head, then the body in the framing
//! wasp chooses (RFC 9112 §6), written as the body arrives. Requests to
//! upstreams and responses to clients alike.
//!
//! wasp always decides the framing itself from what it will send: a
//! `Content-Length` the message carries (the body must then match it
//! exactly), else the body's known length, else `chunked` (for an HTTP/1.0
//! client: until the connection closes). A request whose body is empty
//! from the start gets no framing header at all. Any `Transfer-Encoding`
//! left in the headers is dropped first: the body wasp holds is already
//! decoded. A response that may carry no body (to `HEAD`, `1xx`, `204`,
//! `304`) gets none, whatever its body holds.

use super::BoxError;
use super::body::parse_length;
use super::spare;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Body;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Body bytes queued before wasp stops reading the body and waits for the
/// peer to take what is queued.
const QUEUE_LIMIT: usize = 64 * 1024;

/// Why writing a message stopped.
#[derive(Debug)]
pub enum WriteError {
    /// The body failed (the client's framing or connection, an upstream, a
    /// filter), or does not match its declared length.
    Body(BoxError),
    /// The connection failed.
    Io(io::Error),
}

/// How the body is framed on the wire.
enum Framing {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until wasp closes the connection (a response to HTTP/1.0).
    UntilClose,
    /// The message carries no body: what the body holds is read and dropped.
    None,
}

/// What a response answers, which decides how it is framed.
pub struct Answering {
    /// A `HEAD` request: the response's fields as for `GET`, and no body.
    pub head_request: bool,
    /// An HTTP/1.0 client: no chunked encoding; kept alive only if it asked.
    pub http10: bool,
    /// The connection closes after this response (`Connection: close` is sent).
    pub close: bool,
}

/// A message being written: bytes queued for the connection and the body
/// still to read.
pub struct Writer<B> {
    queue: VecDeque<Bytes>,
    queued: usize,
    body: Option<B>,
    framing: Framing,
    /// Nothing was written since the connection was last flushed.
    flushed: bool,
}

impl<B> Writer<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Encodes the head of `request` (origin-form target, headers as given)
    /// and prepares to send its body after it. The head is encoded in
    /// `out`, the connection's buffer, reused once the last head is written;
    /// its header map goes to the thread's [`spare`]s. The request is
    /// borrowed and its body taken: it is 224 bytes and more, and moving it
    /// out of its box costs two copies.
    pub fn request(request: &mut http::Request<B>, out: &mut BytesMut) -> Result<Self, WriteError>
    where
        B: Default,
    {
        let body = std::mem::take(request.body_mut());
        let mut headers = std::mem::take(request.headers_mut());
        let (framing, size) = choose(&mut headers, &body, true, false)?;
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        // Room for the request line, the fields and a framing field added above.
        let head = out;
        head.reserve(64 + target.len() + size);
        head.put_slice(request.method().as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(target.as_bytes());
        head.put_slice(b" HTTP/1.1\r\n");
        put_fields(head, &headers);
        head.put_slice(b"\r\n");
        spare::give_map(headers);
        let empty = matches!(framing, Framing::None);
        let writer = Writer::new(head.split().freeze(), body, framing);
        Ok(if empty { writer.without_body() } else { writer })
    }

    /// Encodes the head of response `parts` to a request as `to` describes
    /// (adding `Date` if it has none, and `Connection` as needed) and
    /// prepares to send `body` after it; the head is encoded in `out`, its
    /// header map goes to the thread's [`spare`]s.
    pub fn response(
        mut parts: http::response::Parts,
        body: B,
        to: &Answering,
        out: &mut BytesMut,
    ) -> Result<Self, WriteError> {
        let status = parts.status;
        let headers = &mut parts.headers;
        let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
        let (framing, size) = if bodiless {
            headers.remove(CONTENT_LENGTH);
            headers.remove(TRANSFER_ENCODING);
            (Framing::None, 0)
        } else if to.head_request || status == StatusCode::NOT_MODIFIED {
            // The fields describe the body a GET would get: left as they are.
            headers.remove(TRANSFER_ENCODING);
            (Framing::None, 0)
        } else {
            choose(headers, &body, !to.http10, true)?
        };
        let close = to.close || matches!(framing, Framing::UntilClose);
        if close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        } else if to.http10 {
            headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        if !headers.contains_key(DATE) {
            headers.insert(DATE, super::date::now());
        }
        let head = out;
        head.reserve(64 + size + headers.len() * 40);
        head.put_slice(b"HTTP/1.1 ");
        head.put_slice(status.as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        head.put_slice(b"\r\n");
        put_fields(head, headers);
        head.put_slice(b"\r\n");
        spare::give_map(parts.headers);
        Ok(Writer::new(head.split().freeze(), body, framing))
    }

    fn new(head: Bytes, body: B, framing: Framing) -> Self {
        let queued = head.len();
        // Room for the head and a chunk's size, data and CRLF without a regrowth.
        let mut queue = VecDeque::with_capacity(4);
        queue.push_back(head);
        Writer { queue, queued, body: Some(body), framing, flushed: true }
    }

    fn without_body(mut self) -> Self {
        self.body = None;
        self
    }

    /// Whether the connection must close after this message (its body ends
    /// when the connection does).
    pub fn until_close(&self) -> bool {
        matches!(self.framing, Framing::UntilClose)
    }

    /// Whether the whole message has been written and flushed.
    pub fn done(&self) -> bool {
        self.body.is_none() && self.queue.is_empty() && self.flushed
    }

    /// Moves the message along as far as it can without waiting: reads
    /// what the body has ready (up to [`QUEUE_LIMIT`] ahead), then writes.
    /// `Ready(Ok)` only once everything is written; errors are final.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            while self.queued < QUEUE_LIMIT
                && let Some(body) = self.body.as_mut()
            {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(WriteError::Body(e.into()))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.data(data)?,
                        Err(frame) => {
                            let trailers = frame.into_trailers().ok();
                            self.end(trailers.as_ref())?;
                        }
                    },
                    Poll::Ready(None) => self.end(None)?,
                }
            }
            if self.queue.is_empty() {
                // Flushed before waiting for more body too: TLS takes bytes
                // it cannot send yet into its own buffer, and only a flush
                // moves them on once the socket has room.
                if !self.flushed {
                    std::task::ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(WriteError::Io)?;
                    self.flushed = true;
                }
                return if self.body.is_some() { Poll::Pending } else { Poll::Ready(Ok(())) };
            }
            let mut slices = [IoSlice::new(&[]); 16];
            let n = self.queue.iter().zip(slices.iter_mut()).map(|(b, s)| *s = IoSlice::new(b)).count();
            let written = std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]));
            match written {
                Ok(0) => return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.advance(n),
                Err(e) => return Poll::Ready(Err(WriteError::Io(e))),
            }
        }
    }

    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push_back(bytes);
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        self.flushed = false;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else { return };
            if n < front.len() {
                let _ = front.split_to(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }

    fn data(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Framing::None => return Ok(()),
            Framing::UntilClose => {}
            Framing::Length(left) => {
                if data.len() as u64 > *left {
                    return Err(mismatch("longer"));
                }
                *left -= data.len() as u64;
            }
            Framing::Chunked => self.push(Bytes::from(format!("{:x}\r\n", data.len()))),
        }
        let chunked = matches!(self.framing, Framing::Chunked);
        self.push(data);
        if chunked {
            self.push(Bytes::from_static(b"\r\n"));
        }
        Ok(())
    }

    /// The body ended (with `trailers`, which only chunked framing carries).
    fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), WriteError> {
        self.body = None;
        match self.framing {
            Framing::Length(0) | Framing::UntilClose | Framing::None => Ok(()),
            Framing::Length(_) => Err(mismatch("shorter")),
            Framing::Chunked => {
                let mut last = BytesMut::from(&b"0\r\n"[..]);
                if let Some(t) = trailers {
                    put_fields(&mut last, t);
                }
                last.put_slice(b"\r\n");
                self.push(last.freeze());
                Ok(())
            }
        }
    }
}

fn put_fields(out: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

fn mismatch(how: &str) -> WriteError {
    WriteError::Body(format!("the body is {how} than its content-length").into())
}

/// The framing of a body in `headers` (fixed up to say it) and the room
/// the fields take: its declared length, else its known one, else chunked
/// (`chunked_ok`) or until close. `always_length`: a body empty from the
/// start is sent with `Content-Length: 0` (a response) rather than with no
/// framing field and unread (a request: a retry may still send it).
fn choose<B: Body>(
    headers: &mut HeaderMap,
    body: &B,
    chunked_ok: bool,
    always_length: bool,
) -> Result<(Framing, usize), WriteError> {
    // One pass over the fields sizes the head and reads the framing
    // fields, so that no field is looked up by name.
    let (mut coded, mut declared, mut size) = (false, None, 0);
    for (name, value) in headers.iter() {
        if name == TRANSFER_ENCODING {
            coded = true;
        } else if name == CONTENT_LENGTH {
            let n =
                parse_length(value.as_bytes()).ok_or_else(|| WriteError::Body("an invalid content-length".into()))?;
            if declared.is_some_and(|l| l != n) {
                return Err(WriteError::Body("conflicting content-lengths".into()));
            }
            declared = Some(n);
        }
        size += name.as_str().len() + value.len() + 4;
    }
    if coded {
        headers.remove(TRANSFER_ENCODING);
    }
    if let Some(n) = declared {
        return Ok((Framing::Length(n), size));
    }
    if body.is_end_stream() && !always_length {
        return Ok((Framing::None, size));
    }
    let framing = match body.size_hint().exact() {
        Some(n) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        }
        None if chunked_ok => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            Framing::Chunked
        }
        None => Framing::UntilClose,
    };
    Ok((framing, size + 32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::body::{RequestBody, Source};
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// Over TLS with a full socket, rustls accepts bytes it cannot send yet;
    /// while the body then waits for the client, they must still reach the
    /// upstream (a real handshake over an 8 KiB pipe, a 200 KiB chunk, then
    /// a body that never ends).
    #[tokio::test]
    async fn bytes_tls_buffered_reach_the_upstream_while_the_body_waits() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let issued = rcgen::generate_simple_self_signed(vec!["app.local".to_string()]).expect("certificate");
        let cert = CertificateDer::from(issued.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.clone()], key);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let (near, far) = tokio::io::duplex(8 * 1024);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server.expect("server config")));
        let name = ServerName::try_from("app.local").expect("name");
        let (c, s) = tokio::join!(connector.connect(name, near), acceptor.accept(far));
        let (mut c, mut s) = (c.expect("client handshake"), s.expect("server handshake"));

        let mut data = vec![b'x'; 200 * 1024];
        data.extend_from_slice(b"END");
        let frames = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from(data)))])
            .chain(futures_util::stream::pending());
        let body = RequestBody::new(Source::Boxed(BodyExt::boxed(StreamBody::new(frames)))).0;
        let mut request = http::Request::post("/").header("host", "app").body(body).expect("request");
        let mut out = BytesMut::new();
        let mut writer = Writer::request(&mut request, &mut out).map_err(|_| "writer").expect("writer");
        tokio::spawn(async move { std::future::poll_fn(|cx| writer.poll_write(cx, &mut c)).await.map_err(|_| ()) });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while !got.ends_with(b"END\r\n") {
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!("upstream got {} bytes, not the whole chunk: {other:?}", got.len()),
            }
        }
    }
}
