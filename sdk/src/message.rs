//! Typed views of the request and response a phase works on. wasp passes
//! a phase what the filter registered for ([`crate::Registration`]): the
//! facts and headers arrive with the call, and changes are collected here
//! and handed back with the phase's decision, for wasp to check and apply.
//! Reads of registered headers see the filter's own changes.

use crate::bindings::wasp::filter::types as wit;

/// How a filter wants to see a body (see [`Request::read_body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The whole body in one body-phase call, buffered by wasp up to the
    /// filter's `limits.body` (over it: a request is answered 413, a
    /// response 502). Headers may still be changed in that call.
    Buffer,
    /// Each chunk in its own body-phase call as it passes; the headers are
    /// already sent. [`Request::end_of_stream`] marks the last call.
    Stream,
}

/// What a phase collects for its outcome.
#[doc(hidden)]
#[derive(Default)]
pub struct Changes {
    edits: Vec<wit::Edit>,
    response_edits: Vec<wit::Edit>,
    read_body: Option<wit::BodyMode>,
}

impl Changes {
    #[doc(hidden)]
    pub fn outcome(self, decision: crate::Decision) -> wit::Outcome {
        wit::Outcome {
            decision: decision.into_wit(),
            edits: self.edits,
            read_body: self.read_body,
            response_edits: self.response_edits,
        }
    }
}

/// A request phase's message: what wasp passed and what the filter changed.
#[doc(hidden)]
pub struct RequestState {
    msg: wit::Request,
    body: Option<wit::Body>,
    changes: Changes,
}

/// A response phase's message.
#[doc(hidden)]
pub struct ResponseState {
    msg: wit::Response,
    body: Option<wit::Body>,
    changes: Changes,
}

impl RequestState {
    #[doc(hidden)]
    pub fn new(msg: wit::Request, body: Option<wit::Body>) -> Self {
        RequestState { msg, body, changes: Changes::default() }
    }

    #[doc(hidden)]
    pub fn view(&mut self) -> Request<'_> {
        Request { inner: self }
    }

    #[doc(hidden)]
    pub fn outcome(self, decision: crate::Decision) -> wit::Outcome {
        self.changes.outcome(decision)
    }
}

impl ResponseState {
    #[doc(hidden)]
    pub fn new(msg: wit::Response, body: Option<wit::Body>) -> Self {
        ResponseState { msg, body, changes: Changes::default() }
    }

    #[doc(hidden)]
    pub fn view(&mut self) -> Response<'_> {
        Response { inner: self }
    }

    #[doc(hidden)]
    pub fn outcome(self, decision: crate::Decision) -> wit::Outcome {
        self.changes.outcome(decision)
    }
}

/// The request, during a request phase (or [`crate::Filter::on_call_response`]).
pub struct Request<'a> {
    inner: &'a mut RequestState,
}

/// The response, during a response phase.
pub struct Response<'a> {
    inner: &'a mut ResponseState,
}

/// Framing and hop-by-hop fields: wasp sets them from the body it sends.
fn managed(lower: &str) -> bool {
    matches!(
        lower,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-connection"
    )
}

/// RFC 9110 `tchar`s, by byte: 0 for a byte that is not one, 2 for an
/// upper-case letter, 1 for any other (a table, as the guest checks every
/// name a filter sets on every call).
const TCHAR: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let tchar = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        table[b] = if c.is_ascii_uppercase() { 2 } else { tchar as u8 };
        b += 1;
    }
    table
};

/// Whether `s` is an RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| TCHAR[usize::from(b)] != 0)
}

/// Whether `name` is a valid header name (an RFC 9110 token), for
/// filters that check header names in their config at `new`.
pub fn is_header_name(name: &str) -> bool {
    is_token(name)
}

/// Whether `name` (any case) is a framing or hop-by-hop header, which wasp
/// manages and refuses changes to: `content-length`, `transfer-encoding`,
/// `connection`, `keep-alive`, `upgrade`, `te`, `trailer`,
/// `proxy-connection`.
pub fn is_managed_header(name: &str) -> bool {
    managed(&name.to_ascii_lowercase())
}

/// A header name as wasp accepts it (an RFC 9110 token, not one wasp
/// manages), lower-cased.
fn checked_name(name: &str) -> Result<String, String> {
    // One pass over the name: whether each byte is a `tchar`, and whether any is upper-case.
    let (mut valid, mut upper) = (!name.is_empty(), false);
    for b in name.bytes() {
        let class = TCHAR[usize::from(b)];
        valid &= class != 0;
        upper |= class == 2;
    }
    if !valid {
        return Err(format!("invalid header name {name:?}"));
    }
    let lower = if upper { name.to_ascii_lowercase() } else { name.to_owned() };
    if managed(&lower) {
        return Err(format!("header {lower:?} is managed by wasp (framing or hop-by-hop); not changed"));
    }
    Ok(lower)
}

fn checked_value(name: &str, value: &[u8]) -> Result<Vec<u8>, String> {
    if value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t') {
        Ok(value.to_vec())
    } else {
        Err(format!("invalid value for header {name:?}"))
    }
}

fn header(name: &str, value: &[u8]) -> Result<wit::Header, String> {
    let name = checked_name(name)?;
    let value = checked_value(&name, value)?;
    Ok(wit::Header { name, value })
}

fn find<'h>(headers: &'h [wit::Header], name: &str) -> impl Iterator<Item = &'h [u8]> {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice())
}

/// The same header edits on the message's own view, so reads see them.
fn apply(headers: &mut Vec<wit::Header>, edit: &wit::Edit) {
    match edit {
        wit::Edit::SetHeader(h) => {
            headers.retain(|x| x.name != h.name);
            headers.push(h.clone());
        }
        wit::Edit::AppendHeader(h) => headers.push(h.clone()),
        wit::Edit::RemoveHeader(n) => headers.retain(|x| &x.name != n),
        wit::Edit::RenameHeader(r) => {
            for h in headers.iter_mut().filter(|h| h.name == r.from) {
                h.name = r.to.clone();
            }
        }
        _ => {}
    }
}

macro_rules! header_methods {
    ($headers:ident, $view:tt) => {
        /// The first value of header `name` (case-insensitive), as bytes.
        /// Only headers the filter registered for are seen.
        pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
            find(&self.inner.msg.$headers, name).next()
        }

        /// The first value of header `name` as text (`None` if absent or not UTF-8).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.header_bytes(name).and_then(|v| std::str::from_utf8(v).ok())
        }

        /// Every value of header `name`, in order.
        pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
            find(&self.inner.msg.$headers, name).collect()
        }

        /// The names of the headers present (of those registered for), each once.
        pub fn header_names(&self) -> Vec<&str> {
            let mut names: Vec<&str> = Vec::new();
            for h in &self.inner.msg.$headers {
                if !names.contains(&h.name.as_str()) {
                    names.push(&h.name);
                }
            }
            names
        }

        /// Sets header `name` to `value`, replacing earlier values.
        /// Fails on an invalid name or value, or a framing header.
        pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
            let edit = wit::Edit::SetHeader(header(name, value.as_ref())?);
            self.edit(edit);
            Ok(())
        }

        /// Adds a value to header `name`. Fails on an invalid name or value.
        pub fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
            let edit = wit::Edit::AppendHeader(header(name, value.as_ref())?);
            self.edit(edit);
            Ok(())
        }

        /// Removes header `name` (an invalid or framing name is ignored).
        pub fn remove_header(&mut self, name: &str) {
            if let Ok(name) = checked_name(name) {
                self.edit(wit::Edit::RemoveHeader(name));
            }
        }

        /// Moves every value of header `from` to header `to`.
        pub fn rename_header(&mut self, from: &str, to: &str) -> Result<(), String> {
            let rename = wit::Rename { from: checked_name(from)?, to: checked_name(to)? };
            self.edit(wit::Edit::RenameHeader(rename));
            Ok(())
        }

        fn edit(&mut self, edit: wit::Edit) {
            // A filter that registered no headers cannot read them: no view to keep.
            if crate::registration::views().$view {
                apply(&mut self.inner.msg.$headers, &edit);
            }
            self.inner.changes.edits.push(edit);
        }

        /// Asks to see the body in the body phase, which the filter must
        /// have registered: whole or chunk by chunk. Call it in the headers
        /// phase; without it the body phase does not run.
        pub fn read_body(&mut self, mode: BodyMode) {
            self.inner.changes.read_body = Some(match mode {
                BodyMode::Buffer => wit::BodyMode::Buffer,
                BodyMode::Stream => wit::BodyMode::Stream,
            });
        }

        /// In the body phase: the whole body (buffered) or this chunk (streamed).
        pub fn body(&self) -> &[u8] {
            self.inner.body.as_ref().map_or(&[], |b| b.data.as_slice())
        }

        /// In the body phase: replaces the whole body or this chunk. wasp
        /// fixes `content-length` (or sends the body chunked when streamed).
        pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
            let body = body.into();
            if let Some(b) = self.inner.body.as_mut() {
                b.data = body.clone();
            }
            self.inner.changes.edits.push(wit::Edit::SetBody(body));
        }

        /// In the body phase: whether this is the last call for this body.
        pub fn end_of_stream(&self) -> bool {
            self.inner.body.as_ref().is_some_and(|b| b.end_of_stream)
        }

        /// At the end of the body: its trailers (e.g. `grpc-status`), if any.
        pub fn trailers(&self) -> Vec<(&str, &[u8])> {
            self.inner
                .body
                .as_ref()
                .map_or_else(Vec::new, |b| b.trailers.iter().map(|h| (h.name.as_str(), h.value.as_slice())).collect())
        }

        /// At the end of the body: sets a trailer. Fails on an invalid name or
        /// value, or before the end of the body.
        pub fn set_trailer(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
            if !self.end_of_stream() {
                return Err("trailers can only be set at the end of the body".into());
            }
            let trailer = header(name, value.as_ref())?;
            self.inner.changes.edits.push(wit::Edit::SetTrailer(trailer));
            Ok(())
        }
    };
}

impl Request<'_> {
    /// The method, e.g. `GET` (registered with `Facts::METHOD`).
    pub fn method(&self) -> &str {
        self.inner.msg.method.as_deref().unwrap_or_default()
    }

    /// Changes the method. Fails on an invalid method.
    pub fn set_method(&mut self, method: &str) -> Result<(), String> {
        if !is_token(method) {
            return Err(format!("invalid method {method:?}"));
        }
        self.inner.msg.method = Some(method.to_string());
        self.inner.changes.edits.push(wit::Edit::SetMethod(method.to_string()));
        Ok(())
    }

    /// Path and query, e.g. `/api/users?page=2` (registered with `Facts::PATH`).
    pub fn path(&self) -> &str {
        self.inner.msg.path.as_deref().unwrap_or_default()
    }

    /// Changes path and query. Fails unless it starts with `/`.
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with '/'"));
        }
        self.inner.msg.path = Some(path.to_string());
        self.inner.changes.edits.push(wit::Edit::SetPath(path.to_string()));
        Ok(())
    }

    /// The host the request is for, if known (registered with `Facts::AUTHORITY`).
    pub fn authority(&self) -> Option<&str> {
        self.inner.msg.authority.as_deref()
    }

    /// Changes the host the request is for (wasp checks it).
    pub fn set_authority(&mut self, authority: &str) -> Result<(), String> {
        checked_value("host", authority.as_bytes())?;
        self.inner.msg.authority = Some(authority.to_string());
        self.inner.changes.edits.push(wit::Edit::SetAuthority(authority.to_string()));
        Ok(())
    }

    /// The request id wasp forwards, `x-request-id` (registered with `Facts::REQUEST_ID`).
    pub fn request_id(&self) -> &str {
        self.inner.msg.request_id.as_deref().unwrap_or_default()
    }

    /// The client's address, `ip:port` (registered with `Facts::PEER`).
    pub fn peer(&self) -> &str {
        self.inner.msg.peer.as_deref().unwrap_or_default()
    }

    /// The name of the route that took the request (registered with `Facts::ROUTE`).
    pub fn route(&self) -> &str {
        self.inner.msg.route.as_deref().unwrap_or_default()
    }

    /// The client's verified identity on this connection (mTLS): its
    /// certificate's URI SAN (e.g. `spiffe://cluster.local/ns/shop/sa/web`),
    /// else its DNS SAN, else its subject CN. `None` on plaintext
    /// connections, without a verified client certificate, or unless
    /// registered with `Facts::PEER_IDENTITY`.
    pub fn peer_identity(&self) -> Option<&str> {
        self.inner.msg.peer_identity.as_deref()
    }

    /// Sets a response header when the response comes back (the
    /// upstream's or a later filter's local reply), without a response
    /// phase: the cheapest way to add response headers.
    pub fn set_response_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
        let edit = wit::Edit::SetHeader(header(name, value.as_ref())?);
        self.inner.changes.response_edits.push(edit);
        Ok(())
    }

    /// Adds a response header value when the response comes back.
    pub fn append_response_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
        let edit = wit::Edit::AppendHeader(header(name, value.as_ref())?);
        self.inner.changes.response_edits.push(edit);
        Ok(())
    }

    /// Removes a response header when the response comes back.
    pub fn remove_response_header(&mut self, name: &str) {
        if let Ok(name) = checked_name(name) {
            self.inner.changes.response_edits.push(wit::Edit::RemoveHeader(name));
        }
    }

    /// Renames a response header when the response comes back.
    pub fn rename_response_header(&mut self, from: &str, to: &str) -> Result<(), String> {
        let rename = wit::Rename { from: checked_name(from)?, to: checked_name(to)? };
        self.inner.changes.response_edits.push(wit::Edit::RenameHeader(rename));
        Ok(())
    }

    header_methods!(headers, 0);
}

impl Response<'_> {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.msg.status
    }

    /// Changes the status (a final status, 200-599).
    pub fn set_status(&mut self, status: u16) -> Result<(), String> {
        if !(200..=599).contains(&status) {
            return Err(format!("status {status} is not a final HTTP status (200-599)"));
        }
        self.inner.msg.status = status;
        self.inner.changes.edits.push(wit::Edit::SetStatus(status));
        Ok(())
    }

    header_methods!(headers, 1);
}
