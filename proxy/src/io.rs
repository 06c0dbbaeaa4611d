//! A byte stream that notes when bytes last moved each way and whether a
//! write is waiting for the peer: what a connection needs to tell a client
//! that stopped reading (write stall) or a tunnel that went quiet (idle)
//! from one that is just slow. The bookkeeping is two relaxed stores per
//! poll that moved bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds on a process-wide monotonic clock.
pub fn clock_ms() -> u64 {
    ms_at(Instant::now())
}

/// `at` on the clock of [`clock_ms`], for a caller that has just read the
/// time anyway (one clock read instead of two).
pub fn ms_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now)).as_millis() as u64
}

/// When bytes last moved on a [`Watched`] stream.
pub struct Progress {
    read_ms: AtomicU64,
    /// When a write last moved bytes: noted only where [`Progress::idle_for`]
    /// is asked (a tunnel); a connection's writes (several a request) read
    /// no clock unless one has to wait.
    write_ms: Option<AtomicU64>,
    /// When the write waiting for the peer to read began to wait ([`NOT_BLOCKED`]: none waits).
    blocked_ms: AtomicU64,
}

const NOT_BLOCKED: u64 = u64::MAX;

impl Progress {
    /// Progress starting now, for a connection: reads, and writes that wait.
    pub fn new() -> Arc<Self> {
        Arc::new(Progress { read_ms: clock_ms().into(), write_ms: None, blocked_ms: NOT_BLOCKED.into() })
    }

    /// Progress starting now that also notes every write, for [`Progress::idle_for`].
    pub fn both_ways() -> Arc<Self> {
        let now = clock_ms();
        Arc::new(Progress { read_ms: now.into(), write_ms: Some(now.into()), blocked_ms: NOT_BLOCKED.into() })
    }

    /// How long a write has been waiting for the peer to read (`None`: no write is waiting).
    pub fn write_stalled_for(&self) -> Option<Duration> {
        let blocked = self.blocked_ms.load(Ordering::Relaxed);
        (blocked != NOT_BLOCKED).then(|| since(blocked))
    }

    /// How long since bytes last moved either way (writes count only if
    /// made by [`Progress::both_ways`]).
    pub fn idle_for(&self) -> Duration {
        let wrote = self.write_ms.as_ref().map_or(0, |w| w.load(Ordering::Relaxed));
        since(self.read_ms.load(Ordering::Relaxed).max(wrote))
    }
}

fn since(ms: u64) -> Duration {
    Duration::from_millis(clock_ms().saturating_sub(ms))
}

/// Looks at the bytes a [`Watched`] stream reads (e.g. to count frames);
/// `false` stops the reading: the stream reads nothing more.
pub trait ReadHook {
    /// Sees `bytes`, just read.
    fn read(&mut self, bytes: &[u8]) -> bool;
}

/// No hook.
impl ReadHook for () {
    fn read(&mut self, _: &[u8]) -> bool {
        true
    }
}

pin_project_lite::pin_project! {
    /// `inner`, reporting its progress to a shared [`Progress`] and what it
    /// reads to `hook`.
    pub struct Watched<T, H = ()> {
        #[pin]
        inner: T,
        progress: Arc<Progress>,
        hook: H,
        stopped: bool,
    }
}

impl<T> Watched<T> {
    /// Watches `inner`.
    pub fn new(inner: T, progress: Arc<Progress>) -> Self {
        Watched::with_hook(inner, progress, ())
    }
}

impl<T, H> Watched<T, H> {
    /// The stream watched.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// When a read last moved bytes ([`clock_ms`]).
    pub fn read_ms(&self) -> u64 {
        self.progress.read_ms.load(Ordering::Relaxed)
    }
}

impl<T, H: ReadHook> Watched<T, H> {
    /// Watches `inner`, showing what it reads to `hook`.
    pub fn with_hook(inner: T, progress: Arc<Progress>, hook: H) -> Self {
        Watched { inner, progress, hook, stopped: false }
    }
}

impl<T: AsyncRead, H: ReadHook> AsyncRead for Watched<T, H> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.stopped {
            // The hook stopped the reading: nothing more is read (the
            // connection is being ended), and no wakeup is asked for.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.progress.read_ms.store(clock_ms(), Ordering::Relaxed);
            *this.stopped = !this.hook.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite, H> AsyncWrite for Watched<T, H> {
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
    let blocked = &progress.blocked_ms;
    match polled {
        Poll::Pending => {
            // The stall is measured from the first write that had to wait.
            if blocked.load(Ordering::Relaxed) == NOT_BLOCKED {
                blocked.store(clock_ms(), Ordering::Relaxed);
            }
            return;
        }
        Poll::Ready(Ok(n)) if *n > 0 => {
            if let Some(wrote) = &progress.write_ms {
                wrote.store(clock_ms(), Ordering::Relaxed);
            }
        }
        Poll::Ready(_) => {}
    }
    if blocked.load(Ordering::Relaxed) != NOT_BLOCKED {
        blocked.store(NOT_BLOCKED, Ordering::Relaxed);
    }
}
