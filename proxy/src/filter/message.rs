//! The message a filter phase works on, host side: the proxy's own request
//! or response head, moved in for the phase, the body or chunk of a body
//! phase, and the facts of the exchange; and the edits a filter may make to
//! it, checked ([`Edit`]) before they are applied. Both ABIs go through
//! here: 0.1's `message` resource applies each call as one edit, 0.2
//! checks a phase's whole edit list, then applies it.

use crate::h1::names;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::sync::Arc;

/// The head a phase works on, moved (not copied) in for the call.
pub enum Head {
    /// A request head.
    Request(http::request::Parts),
    /// A response head.
    Response(http::response::Parts),
    /// Already sent (streamed body phases): nothing to read or change.
    Sent,
}

/// What a filter asked to see of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The whole body in one call.
    Buffer,
    /// Each chunk as it passes.
    Stream,
}

/// The body a body phase works on: the whole body or one chunk.
#[derive(Default)]
pub struct Chunk {
    /// The bytes.
    pub data: Bytes,
    /// Whether this is the end of the body.
    pub end: bool,
    /// Trailers, at the end.
    pub trailers: Option<HeaderMap>,
}

/// What a filter may ask about the exchange.
#[derive(Clone)]
pub struct Facts {
    /// `x-request-id`.
    pub request_id: HeaderValue,
    /// Client address, `ip:port`.
    pub peer: Arc<str>,
    /// Route name.
    pub route: Arc<str>,
    /// The client's verified certificate identity (mTLS), if any.
    pub identity: Option<Arc<str>>,
}

/// A message lent to one phase.
pub struct MessageState {
    /// The head.
    pub head: Head,
    /// Facts of the exchange.
    pub facts: Facts,
    /// The body of a body phase (empty in headers phases).
    pub body: Chunk,
    /// What the filter asked to see of the body (headers phases).
    pub wants: Option<BodyMode>,
    /// Header edits a request phase made for the response (0.2's `response-edits`).
    pub response_edits: Vec<Edit>,
}

impl MessageState {
    /// A message for a headers phase.
    pub fn head(head: Head, facts: &Facts) -> Self {
        MessageState { head, facts: facts.clone(), body: Chunk::default(), wants: None, response_edits: Vec::new() }
    }

    /// The head's headers, unless already sent.
    pub fn headers(&self) -> Option<&HeaderMap> {
        match &self.head {
            Head::Request(p) => Some(&p.headers),
            Head::Response(p) => Some(&p.headers),
            Head::Sent => None,
        }
    }

    fn headers_mut(&mut self) -> Option<&mut HeaderMap> {
        match &mut self.head {
            Head::Request(p) => Some(&mut p.headers),
            Head::Response(p) => Some(&mut p.headers),
            Head::Sent => None,
        }
    }

    /// Path and query of a request head.
    pub fn path(&self) -> Option<&str> {
        match &self.head {
            Head::Request(p) => Some(request_path(p)),
            _ => None,
        }
    }

    /// The host a request head is for: the URI's authority, else `Host`.
    pub fn authority(&self) -> Option<&str> {
        let Head::Request(p) = &self.head else { return None };
        request_authority(p)
    }

    /// Whether `edit` fits this message: request edits on a request,
    /// header edits before the head is sent, body edits in body phases,
    /// trailers at the end of the body.
    pub fn fits(&self, edit: &Edit) -> Result<(), String> {
        let sent = || Err("the headers were already sent (streamed body phase)".to_string());
        match (edit, &self.head) {
            (Edit::Path(_), Head::Request(p)) if p.uri.scheme().is_none() && p.uri.authority().is_some() => {
                Err("an authority-form request (CONNECT) has no path".into())
            }
            (Edit::Method(_) | Edit::Path(_) | Edit::Authority(..), Head::Request(_)) => Ok(()),
            (Edit::Method(_), Head::Response(_)) => Err("a response has no method".into()),
            (Edit::Method(_), Head::Sent) => Err("the headers were already sent".into()),
            (Edit::Path(_) | Edit::Authority(..), _) => Err("not a request head (a response, or already sent)".into()),
            (Edit::Status(_), Head::Response(_)) => Ok(()),
            (Edit::Status(_), _) => Err("only a response has a status".into()),
            (
                Edit::SetHeader(..) | Edit::AppendHeader(..) | Edit::RemoveHeader(_) | Edit::RenameHeader(..),
                Head::Sent,
            ) => sent(),
            (Edit::AppendHeader(n, _), Head::Request(_)) if n == http::header::HOST => {
                Err("a request has one host: use set-header or set-authority".into())
            }
            (Edit::RenameHeader(_, to), Head::Request(_)) if to == http::header::HOST => {
                Err("a request has one host: use set-header or set-authority".into())
            }
            (Edit::SetHeader(..) | Edit::AppendHeader(..) | Edit::RemoveHeader(_) | Edit::RenameHeader(..), _) => {
                Ok(())
            }
            (Edit::Body(_), _) => Ok(()),
            (Edit::Trailer(..), _) if self.body.end => Ok(()),
            (Edit::Trailer(..), _) => Err("trailers can only be set at the end of the body".into()),
        }
    }

    /// Applies an edit that [`MessageState::fits`].
    pub fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::Method(m) => {
                if let Head::Request(p) = &mut self.head {
                    p.method = m;
                }
            }
            Edit::Path(pq) => {
                if let Head::Request(p) = &mut self.head {
                    let mut parts = std::mem::take(&mut p.uri).into_parts();
                    parts.path_and_query = Some(pq);
                    // Replacing a valid URI's path with a valid path keeps it valid.
                    p.uri = http::Uri::from_parts(parts).unwrap_or_default();
                }
            }
            Edit::Authority(a, value) => match &mut self.head {
                Head::Request(p) => set_host(p, a, value),
                Head::Response(p) => {
                    p.headers.insert(http::header::HOST, value);
                }
                Head::Sent => {}
            },
            Edit::Status(s) => {
                if let Head::Response(p) = &mut self.head {
                    p.status = s;
                }
            }
            e @ (Edit::SetHeader(..) | Edit::AppendHeader(..) | Edit::RemoveHeader(_) | Edit::RenameHeader(..)) => {
                if let Some(h) = self.headers_mut() {
                    edit_headers(h, e);
                }
            }
            Edit::Body(data) => self.body.data = data,
            Edit::Trailer(n, v) => {
                self.body.trailers.get_or_insert_with(HeaderMap::new).insert(n, v);
            }
        }
    }
}

/// Path and query of a request.
pub fn request_path(p: &http::request::Parts) -> &str {
    p.uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// The host a request is for: the URI's authority, else `Host`.
pub fn request_authority(p: &http::request::Parts) -> Option<&str> {
    p.uri.authority().map(Authority::as_str).or_else(|| p.headers.get(http::header::HOST)?.to_str().ok())
}

/// Applies a header edit (set, append, remove, rename) to `h`; other
/// edits are not header edits and change nothing.
pub fn edit_headers(h: &mut HeaderMap, edit: Edit) {
    match edit {
        Edit::SetHeader(n, v) => {
            h.insert(n, v);
        }
        Edit::AppendHeader(n, v) => {
            h.append(n, v);
        }
        Edit::RemoveHeader(n) => {
            h.remove(n);
        }
        Edit::RenameHeader(from, to) if h.contains_key(&from) => {
            let values: Vec<HeaderValue> = h.get_all(&from).iter().cloned().collect();
            h.remove(&from);
            for v in values {
                h.append(&to, v);
            }
        }
        _ => {}
    }
}

/// Applies a response edit kept from a request phase (header edits and
/// `set-status`, which always fit a response head) without a phase call.
pub fn edit_response(p: &mut http::response::Parts, edit: Edit) {
    match edit {
        Edit::Status(s) => p.status = s,
        Edit::Authority(_, v) => {
            p.headers.insert(http::header::HOST, v);
        }
        e => edit_headers(&mut p.headers, e),
    }
}

/// A change a filter asked for, checked: names and values parsed, framing
/// and hop-by-hop fields refused. Whether it fits the message is
/// [`MessageState::fits`].
#[derive(Debug)]
pub enum Edit {
    /// Replace a header's values.
    SetHeader(HeaderName, HeaderValue),
    /// Add a value.
    AppendHeader(HeaderName, HeaderValue),
    /// Remove a header.
    RemoveHeader(HeaderName),
    /// Move a header's values to another name.
    RenameHeader(HeaderName, HeaderName),
    /// A request's method.
    Method(Method),
    /// A request's path and query.
    Path(PathAndQuery),
    /// A request's one host (`Host` and the URI's authority); on a response, a `host` header.
    Authority(Authority, HeaderValue),
    /// A response's status.
    Status(StatusCode),
    /// A body phase's body.
    Body(Bytes),
    /// A trailer, at the end of the body.
    Trailer(HeaderName, HeaderValue),
}

/// Why an edit was refused.
#[derive(Debug)]
pub enum Refused {
    /// A framing or hop-by-hop field: wasp owns it.
    Framing(HeaderName),
    /// Not valid: the message says why.
    Invalid(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Framing(name) => {
                write!(f, "header {name:?} is managed by wasp (framing or hop-by-hop); not changed")
            }
            Refused::Invalid(why) => f.write_str(why),
        }
    }
}

impl Edit {
    /// `set-header`. Only a request's `host` is its authority (`on_request`):
    /// on a response it is a header like any other.
    pub fn set_header(name: &str, value: Bytes, on_request: bool) -> Result<Edit, Refused> {
        let (n, v) = header(name, value)?;
        if on_request && n == http::header::HOST {
            let text = v.to_str().map_err(|_| Refused::Invalid(format!("invalid authority {v:?}")))?;
            return Ok(Edit::Authority(parse_authority(text)?, v));
        }
        Ok(Edit::SetHeader(n, v))
    }

    /// `append-header`.
    pub fn append_header(name: &str, value: Bytes) -> Result<Edit, Refused> {
        let (n, v) = header(name, value)?;
        Ok(Edit::AppendHeader(n, v))
    }

    /// `remove-header`.
    pub fn remove_header(name: &str) -> Result<Edit, Refused> {
        Ok(Edit::RemoveHeader(header_name(name)?))
    }

    /// `rename-header`.
    pub fn rename_header(from: &str, to: &str) -> Result<Edit, Refused> {
        Ok(Edit::RenameHeader(header_name(from)?, header_name(to)?))
    }

    /// `set-method`.
    pub fn method(method: &str) -> Result<Edit, Refused> {
        Method::from_bytes(method.as_bytes())
            .map(Edit::Method)
            .map_err(|_| Refused::Invalid(format!("invalid method {method:?}")))
    }

    /// `set-path`: path and query, starting with `/`.
    pub fn path(path: &str) -> Result<Edit, Refused> {
        if !path.starts_with('/') {
            return Err(Refused::Invalid(format!("path {path:?} must start with '/'")));
        }
        path.parse().map(Edit::Path).map_err(|_| Refused::Invalid(format!("invalid path {path:?}")))
    }

    /// `set-authority`.
    pub fn authority(authority: &str) -> Result<Edit, Refused> {
        let value = HeaderValue::from_str(authority)
            .map_err(|_| Refused::Invalid(format!("invalid authority {authority:?}")))?;
        Ok(Edit::Authority(parse_authority(authority)?, value))
    }

    /// `set-status`: a final status.
    pub fn status(status: u16) -> Result<Edit, Refused> {
        StatusCode::from_u16(status)
            .ok()
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .map(Edit::Status)
            .ok_or_else(|| Refused::Invalid(format!("status {status} is not a final HTTP status (200-599)")))
    }

    /// `set-trailer`.
    pub fn trailer(name: &str, value: Bytes) -> Result<Edit, Refused> {
        let (n, v) = header(name, value)?;
        Ok(Edit::Trailer(n, v))
    }
}

fn parse_authority(authority: &str) -> Result<Authority, Refused> {
    authority
        .parse::<Authority>()
        .ok()
        .filter(|_| crate::identity::is_valid_host(authority.as_bytes()))
        .ok_or_else(|| Refused::Invalid(format!("invalid authority {authority:?}")))
}

/// Makes `authority` the request's one host: `Host`, and the URI's
/// authority where it has one, so that what the upstream gets agrees.
pub fn set_host(p: &mut http::request::Parts, authority: Authority, value: HeaderValue) {
    if p.uri.authority().is_some() {
        let mut parts = std::mem::take(&mut p.uri).into_parts();
        parts.authority = Some(authority);
        p.uri = http::Uri::from_parts(parts).unwrap_or_default();
    }
    p.headers.insert(http::header::HOST, value);
}

pub(super) fn header_name(name: &str) -> Result<HeaderName, Refused> {
    let n = names::parse(name.as_bytes()).map_err(|_| Refused::Invalid(format!("invalid header name {name:?}")))?;
    if is_framing(&n) {
        return Err(Refused::Framing(n));
    }
    Ok(n)
}

/// A guest's header name and value, checked, framing refused. The value
/// becomes the header's as it is (the guest's bytes were copied out of its
/// memory once already).
fn header(name: &str, value: Bytes) -> Result<(HeaderName, HeaderValue), Refused> {
    let n = header_name(name)?;
    let v = HeaderValue::from_maybe_shared(value)
        .map_err(|_| Refused::Invalid(format!("invalid value for header {name:?}")))?;
    Ok((n, v))
}

/// A guest's header name and value, checked.
pub fn header_pair(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), String> {
    let n = names::parse(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
    let v = HeaderValue::from_bytes(value).map_err(|_| format!("invalid value for header {name:?}"))?;
    Ok((n, v))
}

/// A guest's header list as a header map; fails on the first invalid name
/// or value. Framing and hop-by-hop fields are left out (wasp owns them) and
/// returned separately, for the caller to report.
pub fn header_map<'a>(
    headers: impl ExactSizeIterator<Item = (&'a str, &'a [u8])>,
) -> Result<(HeaderMap, Vec<HeaderName>), String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    let mut dropped = Vec::new();
    for (name, value) in headers {
        let (name, value) = header_pair(name, value)?;
        if is_framing(&name) {
            dropped.push(name);
        } else {
            map.append(name, value);
        }
    }
    Ok((map, dropped))
}

/// Fields a filter may not set, append, remove or put in a reply or
/// trailers: the message's framing and hop-by-hop fields, which wasp sets
/// from the body it actually sends. A filter setting `content-length` on a
/// response whose body it did not change would otherwise desynchronise the
/// client's connection (response splitting).
pub fn is_framing(name: &HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH || name == http::header::TRAILER || crate::headers::is_hop_by_hop(name)
}

/// A response a filter sends instead of the upstream's, unchecked.
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

/// What a phase decided.
pub enum Decision {
    /// Go on.
    Continue,
    /// Answer with this.
    Reply(Reply),
    /// Send the calls the phase prepared, then call `on-call-response`.
    Wait,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            request_id: HeaderValue::from_static("rid"),
            peer: "127.0.0.1:1".into(),
            route: "r".into(),
            identity: None,
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> MessageState {
        let mut b = http::Request::builder().uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        MessageState::head(Head::Request(b.body(()).expect("request").into_parts().0), &facts())
    }

    fn edit(msg: &mut MessageState, e: Result<Edit, Refused>) -> Result<(), String> {
        let e = e.map_err(|r| r.to_string())?;
        msg.fits(&e)?;
        msg.apply(e);
        Ok(())
    }

    #[test]
    fn a_rename_moves_every_value_in_order_after_the_existing_ones() {
        let mut m = request("/", &[("x-a", "1"), ("x-a", "2"), ("x-b", "0")]);
        edit(&mut m, Edit::rename_header("x-a", "x-b")).expect("rename");
        let h = m.headers().expect("headers");
        assert!(h.get("x-a").is_none());
        let values: Vec<_> = h.get_all("x-b").iter().map(|v| v.to_str().expect("text")).collect();
        assert_eq!(values, ["0", "1", "2"]);
    }

    #[test]
    fn the_host_moves_with_the_uri_authority_and_a_connect_request_has_no_path() {
        let mut m = request("http://old.example/p?q", &[("host", "old.example")]);
        edit(&mut m, Edit::set_header("host", Bytes::from_static(b"new.example:8080"), true)).expect("host");
        let Head::Request(p) = &m.head else { panic!("a request") };
        assert_eq!(p.uri.to_string(), "http://new.example:8080/p?q");
        assert_eq!(p.headers["host"], "new.example:8080");
        assert!(edit(&mut m, Edit::set_header("host", Bytes::from_static(b"a/b"), true)).is_err(), "not an authority");

        let mut connect = request("old.example:443", &[]);
        let refused = edit(&mut connect, Edit::path("/x")).expect_err("no path on CONNECT");
        assert!(refused.contains("authority-form"), "{refused}");
    }

    #[test]
    fn framing_and_hop_by_hop_fields_are_refused_by_every_header_edit() {
        for name in ["content-length", "transfer-encoding", "connection", "te", "upgrade", "trailer", "keep-alive"] {
            assert!(
                matches!(Edit::set_header(name, Bytes::from_static(b"1"), true), Err(Refused::Framing(_))),
                "{name}"
            );
            assert!(matches!(Edit::append_header(name, Bytes::from_static(b"1")), Err(Refused::Framing(_))), "{name}");
            assert!(matches!(Edit::remove_header(name), Err(Refused::Framing(_))), "{name}");
            assert!(matches!(Edit::rename_header("x-a", name), Err(Refused::Framing(_))), "{name}");
            assert!(matches!(Edit::trailer(name, Bytes::from_static(b"1")), Err(Refused::Framing(_))), "{name}");
        }
        assert!(matches!(Edit::set_header("x-v", Bytes::from_static(b"a\r\nb: c"), true), Err(Refused::Invalid(_))));
        assert!(matches!(Edit::status(42), Err(Refused::Invalid(_))));
    }

    #[test]
    fn edits_that_do_not_fit_the_message_are_refused() {
        let mut sent = MessageState::head(Head::Sent, &facts());
        assert!(
            edit(&mut sent, Edit::set_header("x-a", Bytes::from_static(b"1"), true)).is_err(),
            "headers already sent"
        );
        assert!(edit(&mut sent, Edit::trailer("x-t", Bytes::from_static(b"1"))).is_err(), "not the end of the body");
        sent.body.end = true;
        edit(&mut sent, Edit::trailer("x-t", Bytes::from_static(b"1"))).expect("a trailer at the end");
        let mut req = request("/", &[("host", "h")]);
        assert!(edit(&mut req, Edit::status(200)).is_err(), "a request has no status");
        assert!(edit(&mut req, Edit::append_header("host", Bytes::from_static(b"h2"))).is_err(), "one host");
    }
}
