//! HTTP/1.1 on the wire, for both of wasp's sides: requests read from
//! clients ([`request`], [`wire`]) and responses written to them, requests
//! written to upstreams ([`write`]) and their responses read back
//! (`upstream::h1`), with one body decoder ([`body`]) and one encoder.
//! Parsing is httparse, strict by RFC 9112; nothing here knows routes,
//! filters or pools.

pub mod body;
pub mod date;
pub mod names;
pub mod request;
pub mod spare;
pub mod wire;
pub mod write;

/// Errors of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads more from `io` into `buf`, about `size` bytes at a time; `Ok(false)`
/// at end of stream.
pub fn poll_fill<T: tokio::io::AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut bytes::BytesMut,
    size: usize,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<bool>> {
    if buf.capacity() - buf.len() < size / 4 {
        buf.reserve(size);
    }
    tokio_util::io::poll_read_buf(std::pin::Pin::new(io), cx, buf).map_ok(|n| n > 0)
}

/// Reads into `out` what `buf` holds (bytes already read from `io`, e.g. past
/// a 101's head), then from `io`: a connection handed on mid-stream.
pub fn poll_read_rewound<T: tokio::io::AsyncRead + Unpin>(
    buf: &mut bytes::BytesMut,
    io: &mut T,
    cx: &mut std::task::Context<'_>,
    out: &mut tokio::io::ReadBuf<'_>,
) -> std::task::Poll<std::io::Result<()>> {
    if buf.is_empty() {
        return std::pin::Pin::new(io).poll_read(cx, out);
    }
    let n = buf.len().min(out.remaining());
    out.put_slice(&buf.split_to(n));
    std::task::Poll::Ready(Ok(()))
}
