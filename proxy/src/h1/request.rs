//! A client's request head, parsed strictly (httparse, RFC 9112) straight
//! into an [`http::request::Parts`]: field values are slices of the read
//! buffer, not copies. What RFC 9112 says to refuse is refused here, before
//! any routing: obs-fold, control characters, whitespace before a colon
//! (httparse), `chunked` applied twice or with `Content-Length` values
//! that differ (400), a transfer coding other than `chunked` (501), a head
//! over the listener's limits (431).

use super::body::{Framed, Framing, Refused, RequestFraming};
use super::spare;
use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, EXPECT, UPGRADE};
use http::{HeaderValue, Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Fields parsed into an array on the stack; a listener allowing more
/// parses into the heap once a head has more.
const STACK_FIELDS: usize = 64;

/// Fields the request path adds to a request: `x-forwarded-for`,
/// `x-forwarded-proto`, `x-request-id`, and room for two from filters (a
/// header-rewrite's `set`): more regrow the map once, about 1k
/// instructions, while the larger map costs next to nothing.
const ADDED_FIELDS: usize = 5;

/// A request head taken from the buffer.
pub struct Head<B = ()> {
    /// The request, with a placeholder body (`B::default()`), boxed where it
    /// is built: it is 224 bytes or more, and goes down the request path in
    /// its box.
    pub request: Box<Request<B>>,
    /// How its body is framed.
    pub body: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// It asks to switch protocols (HTTP/1.1 `Upgrade`).
    pub upgrade: bool,
}

/// A request refused before it is routed: the status to answer with, and why.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: String,
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal { status, why: why.into() }
}

/// The listener's limits on a head.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Request line and fields, in bytes.
    pub max_bytes: usize,
    /// Fields.
    pub max_fields: usize,
}

/// Parses a request head from the front of `buf`, removing it; `Ok(None)`
/// while it is incomplete.
pub fn parse<B: Default>(buf: &mut BytesMut, limits: Limits) -> Result<Option<Head<B>>, Refusal> {
    let scanned = {
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let config = httparse::ParserConfig::default();
        match config.parse_request_with_uninit_headers(&mut req, buf, &mut stack) {
            Err(httparse::Error::TooManyHeaders) if limits.max_fields > STACK_FIELDS => {
                // Rare: a listener that allows many fields, and a head that has them.
                let mut heap = Vec::with_capacity(limits.max_fields + 1);
                heap.resize_with(limits.max_fields + 1, MaybeUninit::uninit);
                let mut req = httparse::Request::new(&mut []);
                let parsed = config.parse_request_with_uninit_headers(&mut req, buf, &mut heap);
                scan(parsed, &req, buf, limits)?
            }
            parsed => scan(parsed, &req, buf, limits)?,
        }
    };
    let Some(s) = scanned else { return Ok(None) };
    let raw = buf.split_to(s.len).freeze();
    let uri = Uri::from_maybe_shared(raw.slice(s.target)).map_err(|e| {
        let status = if s.len >= u16::MAX as usize { StatusCode::URI_TOO_LONG } else { StatusCode::BAD_REQUEST };
        refuse(status, format!("malformed request target ({e})"))
    })?;
    // Room for the fields wasp adds (forwarding, request id) without a regrowth.
    let mut fields = s.fields;
    let mut headers = spare::map(fields.len() + ADDED_FIELDS);
    for (name, span) in fields.drain(..) {
        let value = HeaderValue::from_maybe_shared(raw.slice(span))
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("malformed value of field {name}")))?;
        headers.append(name, value);
    }
    spare::give_spans(fields);
    if s.framing.drop_length {
        headers.remove(CONTENT_LENGTH);
    } else if s.framing.repeated_length
        && let Some(length) = headers.remove(CONTENT_LENGTH)
    {
        headers.insert(CONTENT_LENGTH, length);
    }
    let mut request = crate::boxed::in_place!(Request::new(B::default()));
    *request.method_mut() = s.method;
    *request.uri_mut() = uri;
    *request.version_mut() = if s.http10 { Version::HTTP_10 } else { Version::HTTP_11 };
    *request.headers_mut() = headers;
    let keep_alive = match s.http10 {
        true => s.framed.keep_alive && !s.framed.close,
        false => !s.framed.close && !s.framing.drop_length,
    };
    Ok(Some(Head {
        request,
        body: s.framing.framing,
        keep_alive,
        expect_continue: s.expect_continue && !s.http10,
        upgrade: s.upgrade && !s.http10,
    }))
}

/// What one pass over a parsed head found, owned (the head's bytes are
/// still in the buffer).
struct Scanned {
    len: usize,
    method: Method,
    http10: bool,
    target: Range<usize>,
    fields: spare::Spans,
    framed: Framed,
    framing: RequestFraming,
    expect_continue: bool,
    upgrade: bool,
}

fn scan(
    parsed: Result<httparse::Status<usize>, httparse::Error>,
    req: &httparse::Request<'_, '_>,
    buf: &BytesMut,
    limits: Limits,
) -> Result<Option<Scanned>, Refusal> {
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => {
            return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields"));
        }
        Err(e) => return Err(refuse(StatusCode::BAD_REQUEST, format!("malformed request head ({e})"))),
    };
    if len > limits.max_bytes {
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
    }
    if req.headers.len() > limits.max_fields {
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields"));
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "malformed method"))?;
    let http10 = req.version == Some(0);
    let base = buf.as_ptr() as usize;
    let Some(path) = req.path else { return Err(refuse(StatusCode::BAD_REQUEST, "no request target")) };
    let target = spare::span(base, path.as_bytes());
    let mut fields = spare::spans();
    let mut framed = Framed::default();
    let (mut expect_continue, mut upgrade) = (false, false);
    for field in req.headers.iter() {
        let name = super::names::parse(field.name.as_bytes())
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("malformed field name {:?}", field.name)))?;
        if framed.note(&name, field.value) {
            continue; // `Connection: keep-alive` or `close`: noted, not passed on
        }
        if name == EXPECT {
            expect_continue |= field.value.eq_ignore_ascii_case(b"100-continue");
        } else if name == UPGRADE {
            upgrade = true;
        }
        fields.push((name, spare::span(base, field.value)));
    }
    let framing = framed.request(http10).map_err(|e| match e {
        Refused::Bad(why) => refuse(StatusCode::BAD_REQUEST, why),
        Refused::Coding => refuse(StatusCode::NOT_IMPLEMENTED, "a transfer coding other than chunked"),
    })?;
    Ok(Some(Scanned { len, method, http10, target, fields, framed, framing, expect_continue, upgrade }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 8192, max_fields: 100 };

    fn parsed(raw: &str) -> Result<Head, StatusCode> {
        let mut buf = BytesMut::from(raw.as_bytes());
        match parse::<()>(&mut buf, LIMITS) {
            Ok(Some(head)) => Ok(head),
            Ok(None) => Err(StatusCode::CONTINUE),
            Err(refusal) => Err(refusal.status),
        }
    }

    #[test]
    fn heads_parse_whole_from_any_split_and_leave_what_follows() {
        let raw = b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhelloGET";
        let end = raw.len() - 8;
        for split in 1..end {
            let mut buf = BytesMut::from(&raw[..split]);
            assert!(matches!(parse::<()>(&mut buf, LIMITS), Ok(None)), "complete at {split}");
        }
        let mut buf = BytesMut::from(&raw[..]);
        let head = parse::<()>(&mut buf, LIMITS).ok().flatten().expect("a head");
        assert_eq!(&buf[..], b"helloGET", "only the head is taken");
        assert_eq!((head.request.method(), head.request.uri().to_string()), (&Method::POST, "/a?b".to_string()));
        assert_eq!(head.request.headers()["host"], "x");
        assert_eq!(head.body, Framing::Length(5));
        assert!(head.keep_alive && head.expect_continue && !head.upgrade);
    }

    #[test]
    fn framing_and_keep_alive_follow_rfc_9112() {
        let head = parsed("POST / HTTP/1.1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n").expect("ok");
        assert!(matches!(head.body, Framing::Chunked(_)));
        assert!(head.request.headers().get("content-length").is_none(), "the length is dropped");
        assert!(!head.keep_alive, "and the connection closed after");
        let head = parsed("POST / HTTP/1.1\r\ncontent-length: 4\r\ncontent-length: 4\r\n\r\n").expect("ok");
        assert_eq!(head.request.headers().get_all("content-length").iter().count(), 1);
        assert!(!parsed("GET / HTTP/1.0\r\n\r\n").expect("1.0").keep_alive);
        assert!(parsed("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").expect("1.0").keep_alive);
        assert!(!parsed("GET / HTTP/1.1\r\nconnection: x, close\r\n\r\n").expect("close").keep_alive);
        assert!(parsed("GET / HTTP/1.1\r\nupgrade: websocket\r\n\r\n").expect("upgrade").upgrade);
        assert!(!parsed("GET / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").expect("1.0").expect_continue);
    }

    #[test]
    fn what_rfc_9112_refuses_is_refused() {
        let bad = StatusCode::BAD_REQUEST;
        for (raw, status) in [
            ("POST / HTTP/1.1\r\ntransfer-encoding: chunked, chunked\r\n\r\n", bad),
            ("POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n", bad),
            ("POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n", StatusCode::NOT_IMPLEMENTED),
            ("POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n", StatusCode::NOT_IMPLEMENTED),
            ("POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", bad),
            ("POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", bad),
            ("POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n", bad),
            ("POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\n", bad),
            ("GET / HTTP/1.1\r\nx: a\r\n b\r\n\r\n", bad),
            ("GET / HTTP/1.1\r\nx: a\x01b\r\n\r\n", bad),
            ("GET / HTTP/1.1\r\nx : a\r\n\r\n", bad),
            ("GET  / HTTP/1.1\r\n\r\n", bad),
            ("GET / HTTP/2.0\r\n\r\n", bad),
            ("G\x00T / HTTP/1.1\r\n\r\n", bad),
        ] {
            assert_eq!(parsed(raw).err(), Some(status), "{raw:?}");
        }
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(parsed(&big).err(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let unfinished = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(9000));
        assert_eq!(parsed(&unfinished).err(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parsed(&many).err(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let mut buf = BytesMut::from(many.as_bytes());
        let allowed = parse::<()>(&mut buf, Limits { max_bytes: 8192, max_fields: 200 });
        assert_eq!(allowed.ok().flatten().map(|h| h.request.headers().len()), Some(101), "past the stack array");
    }
}
