//! The response side of an HTTP/1.1 exchange: the head, parsed strictly
//! (httparse; 1xx interim responses skipped), and the body's framing
//! decided once by RFC 9112 §6.3 (then decoded by [`crate::h1::body`]).
//!
//! Anything ambiguous is refused as `UpstreamProtocol` (a 502) rather than
//! guessed at: `Transfer-Encoding` together with `Content-Length`, a coding
//! other than `chunked`, conflicting or malformed lengths, a malformed
//! chunk. A response is never reused past bytes the upstream sent beyond
//! its end: the connection is closed instead of read out of step.

use crate::h1::body::{Framed, MAX_FIELDS, invalid};
pub use crate::h1::body::{Framing, Invalid, Step};
use crate::h1::spare;
use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use std::mem::MaybeUninit;

/// Largest response head (status line and fields) wasp reads.
pub const MAX_HEAD: usize = 64 * 1024;
/// A parsed response head.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// How its body is framed.
    pub body: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// What the read buffer holds of a response head.
pub enum Parsed {
    /// Not all of it yet.
    Partial,
    /// A whole head, taken from the buffer.
    Head(Head),
}

/// Parses a response head from the front of `buf`, removing it (and any
/// 1xx interim responses before it). `head_request`: the body is empty
/// whatever the head says; `upgrade`: the request asked to switch protocols.
pub fn head(buf: &mut BytesMut, head_request: bool, upgrade: bool) -> Result<Parsed, Invalid> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Err(invalid(format!("response head larger than {} KiB", MAX_HEAD / 1024)));
                }
                Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
                Err(e) => return Err(invalid(format!("malformed response head ({e})"))),
            };
        let code = resp.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len); // an interim response (100 Continue, 103 Early Hints): the final one follows
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("status code {code}")))?;
        let version = if resp.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        let base = buf.as_ptr() as usize;
        let mut spans = spare::spans();
        let mut framed = Framed::default();
        for field in resp.headers.iter() {
            let name = crate::h1::names::parse(field.name.as_bytes())
                .map_err(|_| invalid(format!("field name {:?}", field.name)))?;
            if framed.note(&name, field.value) {
                continue; // `Connection: keep-alive` or `close`: noted, not passed on
            }
            spans.push((name, spare::span(base, field.value)));
        }
        let raw = buf.split_to(len).freeze();
        // Sized to the fields: on the way to the client, fields are usually
        // only removed (a larger map would cost more than the rare regrowth).
        let mut headers = spare::map(spans.len());
        for (name, span) in spans.drain(..) {
            let value = HeaderValue::from_maybe_shared(raw.slice(span))
                .map_err(|_| invalid(format!("value of field {name}")))?;
            headers.append(name, value);
        }
        spare::give_spans(spans);
        let keep_alive = version == Version::HTTP_11 && !framed.close;
        let body = if status == StatusCode::SWITCHING_PROTOCOLS {
            if !upgrade {
                return Err(invalid("101 Switching Protocols to a request that asked for no upgrade"));
            }
            Framing::Upgraded
        } else {
            framed.response(head_request, status)?
        };
        let keep_alive = keep_alive && body != Framing::UntilClose && body != Framing::Upgraded;
        return Ok(Parsed::Head(Head { status, version, headers, body, keep_alive }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::body::Chunk;

    fn parsed(raw: &[u8], head_request: bool) -> Result<Head, Invalid> {
        match head(&mut BytesMut::from(raw), head_request, false)? {
            Parsed::Head(h) => Ok(h),
            Parsed::Partial => Err(invalid("partial")),
        }
    }

    #[test]
    fn framing_follows_rfc_9112_and_refuses_ambiguity() {
        let f = |raw: &str| parsed(raw.as_bytes(), false).map(|h| (h.body, h.keep_alive));
        assert_eq!(f("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n").ok(), Some((Framing::Length(7), true)));
        assert_eq!(f("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n").ok(), Some((Framing::Length(7), true)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n").ok(),
            Some((Framing::Chunked(Chunk::Size), true))
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n").ok(), Some((Framing::UntilClose, false)));
        assert_eq!(f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").ok(), Some((Framing::Length(1), false)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 1\r\n\r\n").ok(),
            Some((Framing::Length(1), false))
        );
        assert_eq!(f("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n").ok(), Some((Framing::Length(0), true)));
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n").ok(),
            Some((Framing::Length(0), true))
        );
        let head = parsed(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).expect("HEAD");
        assert_eq!(head.body, Framing::Length(0));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 99 Odd\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx : a\r\n\r\n",
        ] {
            assert!(f(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 2"[..]);
        assert!(matches!(head(&mut buf, false, false), Ok(Parsed::Partial)));
        assert_eq!(&buf[..], b"HTTP/1.1 2", "the interim responses are consumed");
        buf.extend_from_slice(b"01 Created\r\ncontent-length: 2\r\n\r\nokEXTRA");
        let Ok(Parsed::Head(h)) = head(&mut buf, false, false) else { panic!("no head") };
        assert_eq!((h.status, h.body), (StatusCode::CREATED, Framing::Length(2)));
        assert_eq!(&buf[..], b"okEXTRA", "only the head is taken");
        let mut big = BytesMut::from(format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD)).as_bytes());
        assert!(head(&mut big, false, false).is_err());
    }
}
