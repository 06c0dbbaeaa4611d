//! The proxy's one error type. Every failure on the request path becomes a
//! [`ProxyError`] with a [`Kind`] and an optional source, and
//! [`ProxyError::status`] / [`crate::respond::local_reply`] are the single place
//! where a failure turns into a status code and a short body. The `reason`
//! (`wasp_...`) lands in the access log and in metrics.

use http::StatusCode;
use std::fmt;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The downstream client sent something we refuse.
    Client,
    /// The upstream failed or could not be reached.
    Upstream,
    /// wasp's own routing or policy (no route, circuit open, overload).
    Proxy,
    /// A Wasm filter.
    Filter,
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No route matched.
    NoRoute,
    /// Request target longer than the listener allows.
    UriTooLong,
    /// Malformed request (e.g. missing host for an HTTP/2 upstream).
    BadRequest,
    /// A transfer coding wasp does not implement (anything but `chunked`).
    UnsupportedCoding,
    /// TCP connect to the upstream failed.
    ConnectFailure,
    /// TCP connect to the upstream timed out.
    ConnectTimeout,
    /// The TLS handshake with the upstream failed (untrusted or wrong certificate, no common protocol).
    TlsFailure,
    /// Upstream closed or reset before sending response headers.
    UpstreamReset,
    /// Upstream sent something that is not valid HTTP.
    UpstreamProtocol,
    /// The route's timeout passed before the response headers.
    Timeout,
    /// Every endpoint's circuit breaker is open.
    CircuitOpen,
    /// The cluster has `max_pending` requests in flight.
    Overflow,
    /// An upgrade (e.g. WebSocket) was asked of an HTTP/2 cluster.
    UpgradeUnsupported,
    /// The proxy is draining.
    Draining,
    /// A fail-closed filter trapped, timed out, ran out of memory or answered nonsense.
    FilterFailed,
    /// A fail-closed filter had no instance to run on (pool exhausted).
    FilterUnavailable,
    /// A filter asked for the whole request body and it is over the filter's `limits.body`.
    RequestTooLarge,
    /// A filter asked for the whole response body and it is over the filter's `limits.body`.
    ResponseTooLarge,
    /// The client's request body failed (reset, malformed framing) while a filter buffered it.
    ClientBody,
    /// The original destination is wasp itself: forwarding there would loop.
    Loop,
}

impl Kind {
    /// The status a client sees.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::UriTooLong => StatusCode::URI_TOO_LONG,
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            Kind::ConnectFailure
            | Kind::ConnectTimeout
            | Kind::TlsFailure
            | Kind::CircuitOpen
            | Kind::Overflow
            | Kind::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Kind::UpstreamReset | Kind::UpstreamProtocol | Kind::UpgradeUnsupported => StatusCode::BAD_GATEWAY,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::FilterFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::FilterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::ResponseTooLarge => StatusCode::BAD_GATEWAY,
            Kind::ClientBody => StatusCode::BAD_REQUEST,
            Kind::Loop => StatusCode::LOOP_DETECTED,
        }
    }

    /// The `wasp_...` reason in the access log.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::NoRoute => "wasp_no_route",
            Kind::UriTooLong => "wasp_uri_too_long",
            Kind::BadRequest => "wasp_bad_request",
            Kind::UnsupportedCoding => "wasp_unsupported_transfer_coding",
            Kind::ConnectFailure => "wasp_upstream_connect_failure",
            Kind::ConnectTimeout => "wasp_upstream_connect_timeout",
            Kind::TlsFailure => "wasp_upstream_tls_failure",
            Kind::UpstreamReset => "wasp_upstream_reset",
            Kind::UpstreamProtocol => "wasp_upstream_protocol_error",
            Kind::Timeout => "wasp_request_timeout",
            Kind::CircuitOpen => "wasp_circuit_open",
            Kind::Overflow => "wasp_overflow",
            Kind::UpgradeUnsupported => "wasp_upgrade_unsupported",
            Kind::Draining => "wasp_draining",
            Kind::FilterFailed => "wasp_filter_failed",
            Kind::FilterUnavailable => "wasp_filter_unavailable",
            Kind::RequestTooLarge => "wasp_request_body_too_large",
            Kind::ResponseTooLarge => "wasp_response_body_too_large",
            Kind::ClientBody => "wasp_request_body_error",
            Kind::Loop => "wasp_loop_detected",
        }
    }

    /// The body a client sees: short, and never upstream or guest text.
    pub fn message(self) -> &'static str {
        match self {
            Kind::NoRoute => "no route matches this request",
            Kind::UriTooLong => "request target too long",
            Kind::BadRequest => "malformed request",
            Kind::UnsupportedCoding => "transfer coding not implemented",
            Kind::ConnectFailure => "upstream connection failed",
            Kind::ConnectTimeout => "upstream connect timed out",
            Kind::TlsFailure => "upstream TLS handshake failed",
            Kind::UpstreamReset => "upstream closed the connection before responding",
            Kind::UpstreamProtocol => "upstream sent an invalid response",
            Kind::Timeout => "upstream did not respond in time",
            Kind::CircuitOpen => "upstream circuit breaker is open",
            Kind::Overflow => "too many requests pending for this upstream",
            Kind::UpgradeUnsupported => "protocol upgrade is not supported for this upstream",
            Kind::Draining => "proxy is shutting down",
            Kind::FilterFailed => "request failed in a filter",
            Kind::FilterUnavailable => "filter capacity exhausted",
            Kind::RequestTooLarge => "request body too large",
            Kind::ResponseTooLarge => "upstream response body too large",
            Kind::ClientBody => "request body could not be read",
            Kind::Loop => "the original destination is this proxy",
        }
    }

    /// Who is to blame.
    pub fn source(self) -> Source {
        match self {
            Kind::UriTooLong
            | Kind::BadRequest
            | Kind::UnsupportedCoding
            | Kind::RequestTooLarge
            | Kind::ClientBody => Source::Client,
            Kind::NoRoute
            | Kind::CircuitOpen
            | Kind::Overflow
            | Kind::Draining
            | Kind::UpgradeUnsupported
            | Kind::Loop => Source::Proxy,
            Kind::FilterFailed | Kind::FilterUnavailable => Source::Filter,
            _ => Source::Upstream,
        }
    }

    /// Label for `wasp_upstream_errors_total{kind}`, for upstream failures.
    pub fn upstream_label(self) -> Option<&'static str> {
        match self {
            Kind::ConnectFailure => Some("connect_failure"),
            Kind::ConnectTimeout => Some("connect_timeout"),
            Kind::TlsFailure => Some("tls"),
            Kind::UpstreamReset => Some("reset"),
            Kind::UpstreamProtocol => Some("protocol"),
            Kind::Timeout => Some("timeout"),
            Kind::CircuitOpen => Some("circuit_open"),
            Kind::Overflow => Some("overflow"),
            Kind::Loop => Some("loop"),
            _ => None,
        }
    }
}

/// A failure on the request path.
#[derive(Debug)]
pub struct ProxyError {
    /// What failed.
    pub kind: Kind,
    /// The underlying error, for logs only.
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProxyError {
    /// An error without an underlying cause.
    pub fn new(kind: Kind) -> Self {
        ProxyError { kind, cause: None }
    }

    /// An error caused by `cause`.
    pub fn with(kind: Kind, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ProxyError { kind, cause: Some(cause.into()) }
    }

    /// Classifies an error from an upstream connection (after connecting).
    pub fn from_hyper(err: hyper::Error) -> Self {
        ProxyError::with(classify_hyper(&err), err)
    }
}

fn classify_hyper(err: &(dyn std::error::Error + 'static)) -> Kind {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_status())
        {
            return Kind::UpstreamProtocol;
        }
        cur = e.source();
    }
    Kind::UpstreamReset
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.reason())?;
        let mut cur = self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_an_error_status_and_a_wasp_reason() {
        use Kind::*;
        for k in [
            NoRoute,
            UriTooLong,
            BadRequest,
            UnsupportedCoding,
            ConnectFailure,
            ConnectTimeout,
            UpstreamReset,
            UpstreamProtocol,
            Timeout,
            CircuitOpen,
            Overflow,
            UpgradeUnsupported,
            Draining,
            FilterFailed,
            FilterUnavailable,
            RequestTooLarge,
            ResponseTooLarge,
            ClientBody,
        ] {
            assert!(k.status().is_client_error() || k.status().is_server_error(), "{k:?}");
            assert!(k.reason().starts_with("wasp_"), "{k:?}");
            assert!(!k.message().is_empty());
        }
        assert_eq!(Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(CircuitOpen.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
