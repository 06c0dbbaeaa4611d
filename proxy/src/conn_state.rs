//! What the request path knows about its downstream connection: who it is
//! from, what its TLS handshake settled, its requests in flight (for the idle
//! check and HTTP/2 rapid-reset detection), its HTTP/2 streams waiting for
//! window, and its place under the listener's `max_connections`. Shared by
//! [`crate::conn`], [`crate::forward`] and [`crate::respond`]; it imports
//! none of them.

use crate::deadline::Deadlines;
use crate::handler::{Serving, Slot};
use crate::io::{clock_ms, ms_at};
use crate::stall::Streams;
use crate::tls::Session;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Who a connection is from, and where it was headed.
pub struct Ends {
    /// The client's address.
    pub peer: SocketAddr,
    /// Where the client connected before `wasp iptables` redirected it
    /// (listeners with `original_destination`).
    pub destination: Option<SocketAddr>,
}

/// What the request path knows about its connection.
pub struct ConnState {
    /// The client's address.
    pub peer: SocketAddr,
    /// Where the client was headed (listeners with `original_destination`).
    pub destination: Option<SocketAddr>,
    /// The client's IP as a header value, for `x-forwarded-for` (formatted once per connection).
    pub peer_header: HeaderValue,
    /// The client's `ip:port` as text, for filters: formatted on first use,
    /// once per connection (formatting an address costs ~1.6k instructions).
    peer_text: std::sync::OnceLock<Arc<str>>,
    /// The listener that accepted it: an upgraded connection's tunnel is
    /// held by it (see [`Serving::hold`]).
    pub accepted_by: Arc<Serving>,
    /// The connection's place under `max_connections`: a tunnel the
    /// connection becomes keeps it until the tunnel closes.
    pub slot: Slot,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
    /// Requests begun on this connection, and how many of them the client
    /// reset before their response (HTTP/2 rapid reset).
    streams: AtomicU32,
    early_resets: AtomicU32,
    /// Fires when the client resets most of its streams early (`true`) or
    /// floods control frames (`false`).
    pub(crate) abusive: Notify,
    pub(crate) abuse_was_resets: AtomicBool,
    /// HTTP/2 responses waiting for the client to grant window.
    pub waiting: Streams,
    /// What the TLS handshake settled, on a TLS listener.
    pub tls: Option<Session>,
    /// HTTP/1.1: its requests' route deadlines, kept by the connection's check.
    pub deadlines: Deadlines,
}

/// A connection where the client reset more than half of its streams before
/// their response, after at least this many, is ended (rapid reset,
/// CVE-2023-44487, when wasp keeps up and h2's own pending-reset limit never
/// sees it), as Envoy's premature-reset check does.
const RESET_CHECK_AFTER: u32 = 100;

impl ConnState {
    /// The state of a connection just accepted.
    pub fn new(ends: Ends, tls: Option<Session>, accepted_by: Arc<Serving>, slot: Slot, max_streams: u32) -> Self {
        let Ends { peer, destination } = ends;
        let peer_header = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        let (in_flight, idle_since_ms) = (AtomicUsize::new(0), AtomicU64::new(clock_ms()));
        ConnState {
            peer,
            destination,
            peer_header,
            peer_text: std::sync::OnceLock::new(),
            accepted_by,
            slot,
            in_flight,
            idle_since_ms,
            streams: AtomicU32::new(0),
            early_resets: AtomicU32::new(0),
            abusive: Notify::new(),
            abuse_was_resets: AtomicBool::new(false),
            waiting: Streams::new(max_streams as usize),
            tls,
            deadlines: Deadlines::default(),
        }
    }

    /// The client's `ip:port`, formatted once per connection.
    pub fn peer_text(&self) -> Arc<str> {
        self.peer_text.get_or_init(|| self.peer.to_string().into()).clone()
    }

    /// The client's verified certificate identity (mTLS).
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.tls.as_ref().and_then(Session::identity)
    }

    /// A request began on this connection; `http2`: as one of its streams
    /// (counted for rapid-reset detection, which only HTTP/2 has).
    pub fn request_started(&self, http2: bool) {
        if http2 {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            self.streams.fetch_add(1, Ordering::Relaxed);
        } else {
            // HTTP/1.1: one request at a time, begun and ended in the
            // connection's task: no read-modify-write needed.
            self.in_flight.store(self.in_flight.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// A request's response ended; `http2` as for [`ConnState::request_started`];
    /// `reset` if the client reset it before its response (an HTTP/2 stream
    /// cancelled early); `now`, when it ended.
    pub fn request_finished(&self, http2: bool, reset: bool, now: Instant) {
        let before = match http2 {
            true => self.in_flight.fetch_sub(1, Ordering::Relaxed),
            false => {
                let before = self.in_flight.load(Ordering::Relaxed);
                self.in_flight.store(before.saturating_sub(1), Ordering::Relaxed);
                before
            }
        };
        if before == 1 {
            self.idle_since_ms.store(ms_at(now), Ordering::Relaxed);
        }
        if reset {
            let resets = self.early_resets.fetch_add(1, Ordering::Relaxed) + 1;
            let streams = self.streams.load(Ordering::Relaxed);
            if streams >= RESET_CHECK_AFTER && resets * 2 > streams {
                self.abuse_was_resets.store(true, Ordering::Relaxed);
                self.abusive.notify_one();
            }
        }
    }

    /// How long the connection has had no request in flight (`None` while one is).
    /// Bytes without a request (a client still sending headers) do not count as
    /// activity: `header_read_timeout` governs those.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(Duration::from_millis(clock_ms().saturating_sub(self.idle_since_ms.load(Ordering::Relaxed))))
    }
}
