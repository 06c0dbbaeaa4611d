//! A request's one identity, established before routing and before any
//! filter: a single host and a normalised path that routes match, filters
//! see and the upstream receives, and framing that RFC 9112 allows.
//!
//! After [`establish`], the path is normal and the request has one host,
//! the same wherever it is read (the URI's authority and `Host`): an
//! absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2); in
//! HTTP/2 a `Host` that disagrees with `:authority` is refused.
//! Refused with 400: HTTP/1.1 without `Host`, more than one `Host`, a host
//! that is not a valid authority (or carries userinfo), `chunked` applied
//! more than once, and paths that [`path::normalize`] refuses.

pub mod path;

use crate::config::model::EscapedSlashes;
use crate::error::{Kind, ProxyError};
use http::header::{HOST, TRANSFER_ENCODING};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use std::borrow::Cow;

/// Why a request was refused before routing (for the log; the client sees 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// HTTP/1.1 without `Host`, or HTTP/2 without `:authority` or `Host`.
    #[error("no Host")]
    NoHost,
    /// More than one `Host` field.
    #[error("more than one Host")]
    ManyHosts,
    /// `Host` / `:authority` is not `host[:port]`.
    #[error("invalid host {0:?}")]
    BadHost(String),
    /// HTTP/2 `:authority` and `Host` name different hosts.
    #[error("Host {host:?} differs from :authority {authority:?}")]
    HostMismatch {
        /// `Host`
        host: String,
        /// `:authority`
        authority: String,
    },
    /// `Transfer-Encoding` applies `chunked` more than once.
    #[error("chunked applied more than once")]
    ChunkedTwice,
    /// `Transfer-Encoding` names a coding other than `chunked` (answered 501).
    #[error("transfer coding other than chunked")]
    UnknownCoding,
    /// The path cannot be normalised.
    #[error("path: {0}")]
    Path(#[from] path::PathError),
}

impl From<Refused> for ProxyError {
    fn from(r: Refused) -> Self {
        let kind = if r == Refused::UnknownCoding { Kind::UnsupportedCoding } else { Kind::BadRequest };
        ProxyError::with(kind, r)
    }
}

/// Checks and rewrites `req` into its one identity (see the module doc).
pub fn establish<B>(req: &mut Request<B>, slashes: EscapedSlashes) -> Result<(), Refused> {
    let h1 = req.version() < Version::HTTP_2;
    if h1 {
        transfer_codings(req.headers())?;
    }
    let host = one_host(req.uri(), req.headers(), h1, req.version() == Version::HTTP_11)?;
    let uri = req.uri();
    let path = uri.path();
    // `None`: the path is already normal.
    let normal = match path == "*" && req.method() == Method::OPTIONS {
        true => None,
        false => match path::normalize(path, slashes)? {
            Cow::Borrowed(_) => None,
            Cow::Owned(p) => Some(p),
        },
    };
    if let Some(host) = host {
        req.headers_mut().insert(HOST, host);
    }
    let Some(normal) = normal else { return Ok(()) };
    let target = match req.uri().query() {
        None => PathAndQuery::try_from(normal),
        Some(q) => PathAndQuery::try_from(format!("{normal}?{q}")),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(target.map_err(|_| path::PathError::BadEscape)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| path::PathError::BadEscape)?;
    Ok(())
}

/// The host to put in `Host`, when it must change (`None`: `Host` is already right).
fn one_host(uri: &Uri, headers: &HeaderMap, h1: bool, h11: bool) -> Result<Option<HeaderValue>, Refused> {
    let mut hosts = headers.get_all(HOST).iter();
    let (host, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Refused::ManyHosts);
    }
    if let Some(h) = host {
        check_host(h.as_bytes())?;
    }
    match (uri.authority(), host) {
        // HTTP/1 absolute form: the target's authority wins (RFC 9112 §3.2.2).
        (Some(a), _) if h1 => Ok(Some(authority_value(a)?)),
        (Some(a), Some(h)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            Err(Refused::HostMismatch { host: lossy(h.as_bytes()), authority: a.as_str().to_string() })
        }
        (Some(_), Some(_)) => Ok(None),
        (Some(a), None) => Ok(Some(authority_value(a)?)),
        (None, Some(_)) => Ok(None),
        // HTTP/1.0 may come without a host; HTTP/1.1 and HTTP/2 may not.
        (None, None) if h1 && !h11 => Ok(None),
        (None, None) => Err(Refused::NoHost),
    }
}

fn authority_value(a: &Authority) -> Result<HeaderValue, Refused> {
    check_host(a.as_str().as_bytes())?;
    HeaderValue::from_str(a.as_str()).map_err(|_| Refused::BadHost(a.as_str().to_string()))
}

/// `host[:port]`: a DNS name or IPv4 address, or an IP literal in
/// brackets, then an optional numeric port. No userinfo, no path, no
/// whitespace, no escapes. Checked in place: this runs on every request.
fn check_host(h: &[u8]) -> Result<(), Refused> {
    let (host, port) = match h.first() {
        Some(b'[') => match h.iter().position(|&b| b == b']') {
            Some(end) => (&h[..=end], &h[end + 1..]),
            None => (h, &h[..0]),
        },
        _ => match h.iter().rposition(|&b| b == b':') {
            Some(colon) => (&h[..colon], &h[colon..]),
            None => (h, &h[..0]),
        },
    };
    let name_ok = match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty() && inner.iter().all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        // Letters, digits, `-`, `.` and `_`: what DNS names and IPv4
        // addresses use. RFC 3986 also allows sub-delims and %-escapes, which
        // no real host needs and some servers decode (`adm%69n.local`).
        _ => !host.is_empty() && host.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if name_ok && port_ok { Ok(()) } else { Err(Refused::BadHost(lossy(h))) }
}

/// Whether `h` is a host wasp accepts (`host[:port]`, see [`establish`]).
pub fn is_valid_host(h: &[u8]) -> bool {
    check_host(h).is_ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The only transfer coding wasp forwards is one `chunked` (hyper removes it;
/// another coding would reach the upstream undeclared once wasp drops the
/// hop-by-hop `Transfer-Encoding`). RFC 9112 §6.1: 501 for a coding a
/// server does not implement.
fn transfer_codings(headers: &HeaderMap) -> Result<(), Refused> {
    let mut chunked = 0;
    for coding in headers.get_all(TRANSFER_ENCODING).iter().flat_map(|v| v.as_bytes().split(|&b| b == b',')) {
        match coding.trim_ascii() {
            c if c.eq_ignore_ascii_case(b"chunked") => chunked += 1,
            _ => return Err(Refused::UnknownCoding),
        }
    }
    if chunked > 1 { Err(Refused::ChunkedTwice) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut r = Request::builder().version(version).uri(uri);
        for h in hosts {
            r = r.header(HOST, *h);
        }
        r.body(()).expect("request")
    }

    /// The path and query, and the one host (URI authority and `Host` agree).
    fn run(mut r: Request<()>) -> Result<(String, Option<String>), Refused> {
        establish(&mut r, EscapedSlashes::Keep)?;
        let header = r.headers().get(HOST).map(|h| h.to_str().expect("ascii").to_string());
        assert_eq!(r.headers().get_all(HOST).iter().count(), usize::from(header.is_some()));
        let authority = r.uri().authority().map(|a| a.to_string());
        if let (Some(h), Some(a)) = (&header, &authority) {
            assert!(h.eq_ignore_ascii_case(a), "{h} vs {a}");
        }
        let path = r.uri().path_and_query().map_or_else(|| r.uri().to_string(), |p| p.to_string());
        Ok((path, authority.or(header)))
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let r = req(Version::HTTP_11, "http://public.local/x/../y?q=1", &["admin.local"]);
        assert_eq!(run(r), Ok(("/y?q=1".into(), Some("public.local".into()))));
    }

    #[test]
    fn hosts_must_be_one_and_valid() {
        assert_eq!(run(req(Version::HTTP_11, "/", &[])), Err(Refused::NoHost));
        assert_eq!(run(req(Version::HTTP_11, "/", &["a", "b"])), Err(Refused::ManyHosts));
        assert!(matches!(run(req(Version::HTTP_11, "/", &["a b"])), Err(Refused::BadHost(_))));
        assert!(matches!(run(req(Version::HTTP_11, "/", &["u@a"])), Err(Refused::BadHost(_))));
        assert!(matches!(run(req(Version::HTTP_11, "/", &[""])), Err(Refused::BadHost(_))));
        for bad in
            ["a:b", "a/b", "[::1", "[zz]", ":80", "a:8o", "a?b", "a#b", "adm%69n.local", "a.local,b.local", "a;b"]
        {
            assert!(matches!(run(req(Version::HTTP_11, "/", &[bad])), Err(Refused::BadHost(_))), "{bad}");
        }
        for good in ["a.b-c_d", "10.0.0.1:8080", "[::1]:443", "xn--bcher-kva.example", "a:"] {
            assert!(run(req(Version::HTTP_11, "/", &[good])).is_ok(), "{good}");
        }
        assert_eq!(run(req(Version::HTTP_10, "/", &[])), Ok(("/".into(), None)));
        assert_eq!(run(req(Version::HTTP_11, "/a", &["a:80"])), Ok(("/a".into(), Some("a:80".into()))));
    }

    #[test]
    fn http2_authority_and_host_must_agree() {
        assert_eq!(run(req(Version::HTTP_2, "http://a.local/x", &[])), Ok(("/x".into(), Some("a.local".into()))));
        assert_eq!(
            run(req(Version::HTTP_2, "http://a.local/x", &["A.local"])),
            Ok(("/x".into(), Some("a.local".into())))
        );
        assert_eq!(run(req(Version::HTTP_2, "http://a.local/x/../y", &[])), Ok(("/y".into(), Some("a.local".into()))));
        assert!(matches!(
            run(req(Version::HTTP_2, "http://a.local/x", &["b.local"])),
            Err(Refused::HostMismatch { .. })
        ));
        assert_eq!(run(req(Version::HTTP_2, "/x", &[])), Err(Refused::NoHost));
    }

    #[test]
    fn chunked_twice_is_refused() {
        let mut r = req(Version::HTTP_11, "/", &["a"]);
        r.headers_mut().insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked, chunked"));
        assert_eq!(run(r), Err(Refused::ChunkedTwice));
        let mut r = req(Version::HTTP_11, "/", &["a"]);
        r.headers_mut().append(TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        r.headers_mut().append(TRANSFER_ENCODING, HeaderValue::from_static("Chunked"));
        assert_eq!(run(r), Err(Refused::UnknownCoding));
        let mut r = req(Version::HTTP_11, "/", &["a"]);
        r.headers_mut().insert(TRANSFER_ENCODING, HeaderValue::from_static("Chunked"));
        assert!(run(r).is_ok());
    }

    #[test]
    fn options_star_is_kept() {
        let mut r = req(Version::HTTP_11, "*", &["a"]);
        *r.method_mut() = Method::OPTIONS;
        assert_eq!(run(r), Ok(("*".into(), Some("a".into()))));
        assert_eq!(run(req(Version::HTTP_11, "*", &["a"])), Err(Refused::Path(path::PathError::NotAPath)));
    }
}
