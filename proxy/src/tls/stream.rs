//! A connection's byte stream, plain or TLS, as one type: listeners and
//! upstream connections serve it without knowing which.

use rustix::net::{RecvFlags, SendFlags};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Plain TCP, TLS terminated by wasp, or TLS wasp originated.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// A client's TLS connection to a listener.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// wasp's TLS connection to an upstream.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $e,
            Stream::Server($s) => $e,
            Stream::Client($s) => $e,
        }
    };
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => s.get_ref().0,
            Stream::Client(s) => s.get_ref().0,
        }
    }

    /// The local address of the TCP connection underneath.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.local_addr(),
            Stream::Server(s) => s.get_ref().0.local_addr(),
            Stream::Client(s) => s.get_ref().0.local_addr(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) if buf.remaining() <= SCRATCH => poll_read_plain(s, cx, buf),
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => poll_write_plain(s, cx, &[io::IoSlice::new(buf)]),
            Stream::Server(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => poll_write_plain(s, cx, bufs),
            Stream::Server(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Client(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Server(s) => s.is_write_vectored(),
            Stream::Client(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Writes to plain TCP as tokio's `TcpStream` does (wait for readiness, write,
/// clear the readiness on `WouldBlock`), but by a direct system call: glibc's
/// wrappers are cancellation points, and in a process with threads each call
/// is bracketed by two atomic exchanges (`__pthread_enable_asynccancel` and
/// its `disable`), each a full barrier, that nothing in wasp uses. `send` (one
/// buffer, or several small ones copied together) or `sendmsg` (several
/// larger), not `writev`: the socket calls skip the
/// file layer's checks and notifications (under `wrk -c50`, release builds
/// side by side: about 0.06 µs a request less than `writev`), and
/// `MSG_NOSIGNAL` makes a write to a peer that closed fail with `EPIPE`
/// whatever the process does with SIGPIPE (TLS writes, through tokio and
/// std, rely on SIGPIPE being ignored, as Rust's runtime sets it).
fn poll_write_plain(tcp: &TcpStream, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    loop {
        std::task::ready!(tcp.poll_write_ready(cx))?;
        let send = || match bufs {
            [one] => rustix::net::send(tcp, one, SendFlags::NOSIGNAL),
            // A small head and body (a response's, mostly): copied together
            // and sent as one buffer, which costs the kernel less than `sendmsg`.
            _ if total <= SCRATCH => SCRATCH_BUF.with_borrow_mut(|scratch| {
                let mut at = 0;
                for b in bufs {
                    scratch[at..at + b.len()].copy_from_slice(b);
                    at += b.len();
                }
                rustix::net::send(tcp, &scratch[..at], SendFlags::NOSIGNAL)
            }),
            _ => rustix::net::sendmsg(tcp, bufs, &mut Default::default(), SendFlags::NOSIGNAL),
        };
        match tcp.try_io(Interest::WRITABLE, || send().map_err(io::Error::from)) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            written => return Poll::Ready(written),
        }
    }
}

/// The largest read [`poll_read_plain`] serves: a head's read (4 KB asked),
/// or a read into a part-filled buffer or a tunnel's 8 KB, not a body's
/// first read (16 KB asked), whose bytes are not worth copying twice.
const SCRATCH: usize = 8 * 1024;

thread_local! {
    /// Where a small plain read lands before it is copied to the reader's buffer.
    static SCRATCH_BUF: std::cell::RefCell<[u8; SCRATCH]> = const { std::cell::RefCell::new([0; SCRATCH]) };
}

/// Reads a little from plain TCP as tokio's `TcpStream` does (wait for
/// readiness, read, clear the readiness on `WouldBlock` or a short read),
/// but by a direct `recv`, for the reason of [`poll_write_plain`]: glibc's
/// `recv` brackets each call with two atomic exchanges. (`read` would do
/// too, but costs the kernel more: about 0.14 µs a request, two reads, in
/// builds side by side.) The bytes land in a per-thread scratch buffer and
/// are copied out (a few hundred for a head): reading straight into the
/// caller's uninitialised buffer would need `unsafe`.
fn poll_read_plain(tcp: &TcpStream, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    let want = buf.remaining();
    if want == 0 {
        return Poll::Ready(Ok(())); // as tokio's own read: nothing asked, nothing read
    }
    loop {
        std::task::ready!(tcp.poll_read_ready(cx))?;
        let read = SCRATCH_BUF.with_borrow_mut(|scratch| {
            let scratch = &mut scratch[..want];
            let mut got = 0;
            let read = tcp.try_io(Interest::READABLE, || {
                (got, _) = rustix::net::recv(tcp, &mut *scratch, RecvFlags::empty()).map_err(io::Error::from)?;
                // Fewer bytes than asked for: the socket is empty now, and its
                // readiness is cleared (as tokio's own read does) so the next
                // read waits for more instead of finding `EAGAIN`.
                match got > 0 && got < want {
                    true => Err(io::ErrorKind::WouldBlock.into()),
                    false => Ok(()),
                }
            });
            buf.put_slice(&scratch[..got]);
            if got > 0 { Ok(()) } else { read }
        });
        match read {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            read => return Poll::Ready(read),
        }
    }
}
