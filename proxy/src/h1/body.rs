//! HTTP/1.1 message bodies on the wire (RFC 9112 §6–7), for both sides of
//! wasp: what a head's framing fields say ([`Framed`], noted in the one
//! pass over its fields), and the decoding of a body from a read buffer
//! ([`Framing::step`]): a length, chunked (with trailers), or until close.
//! A malformed body is an error, never a guess, and bytes past a body's end
//! are left in the buffer for the caller to judge.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Most fields in a head or trailer section wasp reads by default.
pub const MAX_FIELDS: usize = 128;
/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section.
const MAX_TRAILERS: usize = 16 * 1024;

/// A message that is not valid HTTP/1.1 (or not one wasp accepts).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// An [`Invalid`] saying `what`.
pub fn invalid(what: impl Into<String>) -> Invalid {
    Invalid(what.into())
}

/// How a body is delimited.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(Chunk),
    /// Until the sender closes the connection (responses only).
    UntilClose,
    /// The connection switched protocols (101): it is the upgraded stream now.
    Upgraded,
}

/// Where a chunked decoder is.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, at the trailer section.
    Trailers,
}

/// What a head's framing fields say, noted in the one pass over its
/// fields (no lookups by name afterwards).
#[derive(Default)]
pub struct Framed {
    /// Transfer codings listed, over all `Transfer-Encoding` fields.
    codings: usize,
    /// The first of them is `chunked`.
    chunked: bool,
    /// One of them is not `chunked`.
    unknown: bool,
    /// `Content-Length` fields seen.
    lengths: usize,
    /// A `Content-Length` field holds a list (`5, 5`).
    length_list: bool,
    /// The one length they agree on, or what is wrong with them.
    length: Option<Result<u64, &'static str>>,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive` (HTTP/1.0).
    pub keep_alive: bool,
}

/// How a request's body is framed, and what that means for its connection.
pub struct RequestFraming {
    /// The body.
    pub framing: Framing,
    /// Both `Transfer-Encoding` and `Content-Length`: read as chunked, the
    /// length removed, and the connection closed after the response.
    pub drop_length: bool,
    /// Several equal `Content-Length` fields: one is kept.
    pub repeated_length: bool,
}

/// Why a request's framing is refused.
pub enum Refused {
    /// 400.
    Bad(&'static str),
    /// 501: a transfer coding wasp does not implement.
    Coding,
}

impl Framed {
    /// Notes field `name: value`; `true` if it is a `Connection` field
    /// saying only `keep-alive` or `close`: noted here, hop-by-hop, and of
    /// no use past this hop, so it need not be kept.
    pub fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        let items = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        if name == TRANSFER_ENCODING {
            for coding in items() {
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                self.chunked |= self.codings == 0 && chunked;
                self.unknown |= !chunked;
                self.codings += 1;
            }
        } else if name == CONTENT_LENGTH {
            self.lengths += 1;
            self.length_list |= value.contains(&b',');
            for item in items() {
                self.length = Some(match (self.length, parse_length(item)) {
                    (Some(Err(e)), _) => Err(e),
                    (_, None) => Err("malformed content-length"),
                    (Some(Ok(l)), Some(n)) if l != n => Err("conflicting content-lengths"),
                    (_, Some(n)) => Ok(n),
                });
            }
        } else if name == CONNECTION {
            let mut only_framing = true;
            for token in items() {
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                (self.close, self.keep_alive) = (self.close | close, self.keep_alive | keep_alive);
                only_framing &= close || keep_alive;
            }
            return only_framing;
        }
        false
    }

    /// A response's body, by RFC 9112 §6.3, refusing what a stricter or
    /// looser reader could take differently.
    pub fn response(&self, head_request: bool, status: StatusCode) -> Result<Framing, Invalid> {
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Framing::Length(0));
        }
        if self.codings > 0 {
            if self.lengths > 0 {
                return Err(invalid("both transfer-encoding and content-length"));
            }
            if self.codings > 1 || !self.chunked {
                return Err(invalid("a transfer-encoding other than chunked"));
            }
            return Ok(Framing::Chunked(Chunk::Size));
        }
        match self.length {
            None => Ok(Framing::UntilClose),
            Some(Ok(n)) => Ok(Framing::Length(n)),
            Some(Err(e)) => Err(invalid(e)),
        }
    }

    /// A request's body (RFC 9112 §6.1–6.3): chunked if it says so (a
    /// `Content-Length` beside it is dropped), else its one length, else none.
    /// `http10`: an HTTP/1.0 request may not use transfer codings.
    pub fn request(&self, http10: bool) -> Result<RequestFraming, Refused> {
        let mut out = RequestFraming { framing: Framing::Length(0), drop_length: false, repeated_length: false };
        if self.codings > 0 {
            if self.unknown {
                return Err(Refused::Coding);
            }
            if self.codings > 1 {
                return Err(Refused::Bad("chunked applied more than once"));
            }
            if http10 {
                return Err(Refused::Bad("transfer-encoding in an HTTP/1.0 request"));
            }
            out.framing = Framing::Chunked(Chunk::Size);
            out.drop_length = self.lengths > 0;
            return Ok(out);
        }
        if self.length_list {
            return Err(Refused::Bad("a list in content-length"));
        }
        match self.length {
            None => {}
            Some(Ok(n)) => {
                out.framing = Framing::Length(n);
                out.repeated_length = self.lengths > 1;
            }
            Some(Err(e)) => return Err(Refused::Bad(e)),
        }
        Ok(out)
    }
}

/// A content-length: ASCII digits only, no sign, within u64.
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// What the next step of decoding found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body data.
    Data(Bytes),
    /// The trailer section, which ends the body.
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes are needed (`eof`: there will be none).
    NeedMore,
}

impl Framing {
    /// Whether nothing is left of the body.
    pub fn ended(&self) -> bool {
        matches!(self, Framing::Length(0))
    }

    /// Decodes the next piece of body from `buf`. `eof`: the upstream has
    /// closed, so `buf` is all there will be.
    pub fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, Invalid> {
        loop {
            match self {
                Framing::Length(0) => return Ok(Step::End),
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return if eof {
                            Err(invalid(format!("closed with {left} body bytes unsent")))
                        } else {
                            Ok(Step::NeedMore)
                        };
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Framing::UntilClose => {
                    if !buf.is_empty() {
                        return Ok(Step::Data(buf.split().freeze()));
                    }
                    if eof {
                        *self = Framing::Length(0);
                        return Ok(Step::End);
                    }
                    return Ok(Step::NeedMore);
                }
                Framing::Upgraded => return Ok(Step::End),
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Size => {
                        let Some(line) = line(buf, MAX_CHUNK_LINE, "chunk-size line")? else {
                            return more(eof, "a chunk-size line");
                        };
                        let size = chunk_size(&line)?;
                        *chunk = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return more(eof, "chunk data");
                        }
                        let n = (*left).min(buf.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Step::Data(buf.split_to(n).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return more(eof, "the CRLF after chunk data");
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(invalid("chunk data longer than its size"));
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                        let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                            Ok(httparse::Status::Complete((len, fields))) => {
                                let mut trailers = HeaderMap::new();
                                for f in fields.iter() {
                                    let name = HeaderName::from_bytes(f.name.as_bytes());
                                    let value = HeaderValue::from_bytes(f.value);
                                    let (Ok(name), Ok(value)) = (name, value) else {
                                        return Err(invalid("malformed trailer field"));
                                    };
                                    trailers.append(name, value);
                                }
                                (len, trailers)
                            }
                            Ok(httparse::Status::Partial) if buf.len() >= MAX_TRAILERS => {
                                return Err(invalid("trailer section too large"));
                            }
                            Ok(httparse::Status::Partial) => return more(eof, "the trailer section"),
                            Err(e) => return Err(invalid(format!("malformed trailer section ({e})"))),
                        };
                        // httparse takes a bare LF as a line end; a chunk-size line may not
                        // have one, and neither may the trailer section: readers that
                        // disagree on where a body ends are how requests are smuggled.
                        if buf[..len].iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r')) {
                            return Err(invalid("a trailer section line not ended by CRLF"));
                        }
                        buf.advance(len);
                        *self = Framing::Length(0);
                        return Ok(if trailers.is_empty() { Step::End } else { Step::Trailers(trailers) });
                    }
                },
            }
        }
    }
}

fn more(eof: bool, what: &str) -> Result<Step, Invalid> {
    if eof { Err(invalid(format!("closed in the middle of {what}"))) } else { Ok(Step::NeedMore) }
}

/// Takes one CRLF-terminated line (without the CRLF) from the front of `buf`.
fn line(buf: &mut BytesMut, max: usize, what: &str) -> Result<Option<Bytes>, Invalid> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let line = buf.split_to(end + 1).freeze();
            Ok(Some(line.slice(..end - 1)))
        }
        Some(_) => Err(invalid(format!("{what} not ended by CRLF"))),
        None if buf.len() >= max => Err(invalid(format!("{what} longer than {max} bytes"))),
        None => Ok(None),
    }
}

/// RFC 9112 §7.1: `chunk-size [ chunk-ext ]`; extensions are ignored but
/// may hold no control characters.
fn chunk_size(line: &[u8]) -> Result<u64, Invalid> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(invalid("malformed chunk size"));
    }
    // Whitespace may only come before an extension's `;` (BWS, RFC 9112 §7.1.1).
    let after = &line[digits..];
    let rest = after.trim_ascii_start();
    let stray_space = rest.is_empty() && !after.is_empty();
    if stray_space || !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| b.is_ascii_control() && b != b'\t')
    {
        return Err(invalid("malformed chunk extension"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("malformed chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| invalid("malformed chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a whole body from `raw` (the upstream then closes).
    fn decode(mut framing: Framing, raw: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), Invalid> {
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), None);
        // Fed one byte at a time: every state must survive a split anywhere.
        let mut rest = raw;
        loop {
            match framing.step(&mut buf, rest.is_empty())? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Trailers(t) => trailers = Some(t),
                Step::End => return Ok((body, trailers)),
                Step::NeedMore => {
                    buf.extend_from_slice(&rest[..1]);
                    rest = &rest[1..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_byte_by_byte_with_trailers() {
        let chunked = || Framing::Chunked(Chunk::Size);
        let (body, trailers) =
            decode(chunked(), b"5;a=b\r\nhello\r\n1 ; x\r\n \r\nA\r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\n").expect("ok");
        assert_eq!(body, b"hello 0123456789");
        assert_eq!(trailers.expect("trailers")["x-sum"], "1");
        assert_eq!(decode(chunked(), b"0\r\n\r\n").expect("empty").0, b"");
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"5\r\nhel",
            b"5\r\nhello\r\n",
            b"0\r\nx-sum: 1\r\n",
            b"5;\x01\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\t\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nx: 1\n\r\n",
        ] {
            assert!(decode(chunked(), bad).is_err(), "{:?} was accepted", String::from_utf8_lossy(bad));
        }
        assert!(decode(chunked(), &[b'1'; MAX_CHUNK_LINE + 1]).is_err(), "an endless size line");
    }

    #[test]
    fn lengths_end_exactly_and_close_delimited_bodies_at_eof() {
        assert_eq!(decode(Framing::Length(5), b"hello").expect("ok").0, b"hello");
        assert!(decode(Framing::Length(5), b"hell").is_err(), "a short body is an error, not an end");
        let mut buf = BytesMut::from(&b"helloEXTRA"[..]);
        let mut f = Framing::Length(5);
        assert_eq!(f.step(&mut buf, false).expect("data"), Step::Data(Bytes::from_static(b"hello")));
        assert_eq!(f.step(&mut buf, false).expect("end"), Step::End);
        assert_eq!(&buf[..], b"EXTRA", "bytes past the end are left (and the connection not reused)");
        assert_eq!(decode(Framing::UntilClose, b"all of it").expect("ok").0, b"all of it");
    }

    #[test]
    fn content_length_is_plain_digits_within_u64() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"18446744073"), Some(18_446_744_073));
        assert_eq!(parse_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [&b""[..], b"+1", b"-1", b"1 ", b"1e3", b"18446744073709551616", b"\xd9\xa1"] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
