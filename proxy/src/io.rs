//! A byte stream that notes when bytes last moved each way and whether a
//! write is waiting for the peer: what a connection needs to tell a client
//! that stopped reading (write stall) or a tunnel that went quiet (idle)
//! from one that is just slow. The bookkeeping is two relaxed stores per
//! poll that moved bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds on a process-wide monotonic clock.
pub fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When bytes last moved on a [`Watched`] stream.
pub struct Progress {
    read_ms: AtomicU64,
    write_ms: AtomicU64,
    /// A write found the peer's window full and is waiting.
    write_blocked: AtomicBool,
}

impl Progress {
    /// Progress starting now.
    pub fn new() -> Arc<Self> {
        let now = clock_ms();
        Arc::new(Progress { read_ms: now.into(), write_ms: now.into(), write_blocked: false.into() })
    }

    /// How long a write has been waiting for the peer to read (`None`: no write is waiting).
    pub fn write_stalled_for(&self) -> Option<Duration> {
        self.write_blocked.load(Ordering::Relaxed).then(|| since(self.write_ms.load(Ordering::Relaxed)))
    }

    /// How long since bytes last moved either way.
    pub fn idle_for(&self) -> Duration {
        since(self.read_ms.load(Ordering::Relaxed).max(self.write_ms.load(Ordering::Relaxed)))
    }
}

fn since(ms: u64) -> Duration {
    Duration::from_millis(clock_ms().saturating_sub(ms))
}

pin_project_lite::pin_project! {
    /// `inner`, reporting its progress to a shared [`Progress`].
    pub struct Watched<T> {
        #[pin]
        inner: T,
        progress: Arc<Progress>,
    }
}

impl<T> Watched<T> {
    /// Watches `inner`.
    pub fn new(inner: T, progress: Arc<Progress>) -> Self {
        Watched { inner, progress }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.progress.read_ms.store(clock_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        note_write(this.progress, &polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        note_write(this.progress, &polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn note_write(progress: &Progress, polled: &Poll<io::Result<usize>>) {
    match polled {
        Poll::Pending => {
            if !progress.write_blocked.load(Ordering::Relaxed) {
                // The stall is measured from the last write that moved bytes.
                progress.write_blocked.store(true, Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(n)) if *n > 0 => {
            progress.write_ms.store(clock_ms(), Ordering::Relaxed);
            progress.write_blocked.store(false, Ordering::Relaxed);
        }
        Poll::Ready(_) => progress.write_blocked.store(false, Ordering::Relaxed),
    }
}
