//! Standing edits (`registration.request-edits` and `response-edits` of
//! `wasp:filter@0.2.0`): header edits a filter registers at `init` and wasp
//! makes itself on every request, with no call into the filter. A filter
//! whose work is all standing edits (header-rewrite without a path prefix)
//! is never called and costs what a native header edit costs.
//!
//! Names, and the text of templates, are checked once, at load; values are
//! filled in per request from its facts, all of them before any edit is
//! made (a template reads the request as it reached the filter).

use super::message::{Edit, Facts, Refused, edit_headers, header_name, request_authority, request_path, set_host};
use super::v02::types;
use http::{HeaderName, HeaderValue};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fact a template reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fact {
    Method,
    Path,
    Authority,
    RequestId,
    Peer,
    Route,
    PeerIdentity,
}

/// A template's piece.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Fact(Fact),
}

/// A header value, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// Text only: made once, at load.
    Fixed(HeaderValue),
    /// Text and facts, joined per request.
    Template(Vec<Part>),
}

/// A standing edit, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(HeaderName, Value),
    Append(HeaderName, Value),
    /// `set-header host` on a request: its one host (`Host` and the URI's authority).
    Authority(Value),
    Remove(HeaderName),
    Rename(HeaderName, HeaderName),
}

/// A filter's standing edits, checked at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    request: Vec<Op>,
    response: Vec<Op>,
}

impl Standing {
    /// Checks what `init` registered: valid names, none that wasp manages
    /// (framing, hop-by-hop), no second host on a request, text that a
    /// header value may hold.
    pub fn check(request: Vec<types::StandingEdit>, response: Vec<types::StandingEdit>) -> Result<Self, String> {
        // Bounded: a header map holds at most 32,768 names, and every
        // value is filled in per request, outside the guest's limits.
        for (side, edits) in [("request", &request), ("response", &response)] {
            if edits.len() > MAX_EDITS {
                return Err(format!("{side}-edits: {} edits, more than {MAX_EDITS}", edits.len()));
            }
            let text: usize = edits.iter().map(text_len).sum();
            if text > MAX_TEXT {
                return Err(format!("{side}-edits: {text} bytes of names and text, more than {MAX_TEXT}"));
            }
        }
        let ops = |edits: Vec<types::StandingEdit>, side: &str| {
            edits
                .into_iter()
                .enumerate()
                .map(|(i, e)| op(e, side == "request").map_err(|why| format!("{side}-edits[{i}]: {why}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Standing { request: ops(request, "request")?, response: ops(response, "response")? })
    }

    /// Whether the filter registered none.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// Makes the request edits on `req` and returns the response edits,
    /// every value filled in from `req` (and `facts`) as it is now. A value
    /// that comes out invalid for this request is left out, counted in
    /// `left_out` (and a warning, at most one a second).
    pub fn apply(
        &self,
        req: &mut http::request::Parts,
        facts: &Facts,
        filter: &str,
        left_out: &IntCounter,
    ) -> Vec<Edit> {
        let edit = |op| {
            let e = edit(op, req, facts, filter);
            if e.is_none() {
                left_out.inc();
            }
            e
        };
        let response: Vec<Edit> = self.response.iter().filter_map(edit).collect();
        let edits: Vec<Edit> = self.request.iter().filter_map(edit).collect();
        for e in edits {
            make(req, e);
        }
        response
    }
}

/// Makes a request edit: a header edit, or the request's one host.
fn make(req: &mut http::request::Parts, e: Edit) {
    match e {
        Edit::Authority(a, v) => set_host(req, a, v),
        e => edit_headers(&mut req.headers, e),
    }
}

/// Standing edits per side, at most.
const MAX_EDITS: usize = 64;
/// Bytes of names and template text per side, at most.
const MAX_TEXT: usize = 16 * 1024;

fn text_len(e: &types::StandingEdit) -> usize {
    use types::StandingEdit as S;
    let parts =
        |v: &[types::Part]| v.iter().map(|p| if let types::Part::Text(t) = p { t.len() } else { 0 }).sum::<usize>();
    match e {
        S::SetHeader(h) | S::AppendHeader(h) => h.name.len() + parts(&h.value),
        S::RemoveHeader(n) => n.len(),
        S::RenameHeader(r) => r.from.len() + r.to.len(),
    }
}

fn op(e: types::StandingEdit, on_request: bool) -> Result<Op, String> {
    use types::StandingEdit as S;
    let name = |n: &str| {
        header_name(n).map_err(|why| match why {
            Refused::Framing(n) => format!("header {n:?} is managed by wasp (framing or hop-by-hop)"),
            Refused::Invalid(why) => why,
        })
    };
    let one_host = "a request has one host: use set-header host";
    Ok(match e {
        S::SetHeader(h) => {
            let n = name(&h.name)?;
            let v = value(h.value, &n)?;
            match v {
                Value::Fixed(ref fixed) if on_request && n == http::header::HOST => {
                    let text = fixed.to_str().map_err(|_| format!("invalid authority {fixed:?}"))?;
                    Edit::authority(text).map_err(|why| why.to_string())?;
                    Op::Authority(v)
                }
                _ if on_request && n == http::header::HOST => Op::Authority(v),
                _ => Op::Set(n, v),
            }
        }
        S::AppendHeader(h) => {
            let n = name(&h.name)?;
            if on_request && n == http::header::HOST {
                return Err(one_host.into());
            }
            let v = value(h.value, &n)?;
            Op::Append(n, v)
        }
        S::RemoveHeader(n) => Op::Remove(name(&n)?),
        S::RenameHeader(r) => {
            let to = name(&r.to)?;
            if on_request && to == http::header::HOST {
                return Err(one_host.into());
            }
            Op::Rename(name(&r.from)?, to)
        }
    })
}

fn value(parts: Vec<types::Part>, name: &HeaderName) -> Result<Value, String> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        out.push(match p {
            types::Part::Text(t) => {
                HeaderValue::from_str(&t).map_err(|_| format!("invalid text {t:?} in the value of {name}"))?;
                Part::Text(t)
            }
            types::Part::Fact(f) => Part::Fact(match f {
                types::Fact::Method => Fact::Method,
                types::Fact::Path => Fact::Path,
                types::Fact::Authority => Fact::Authority,
                types::Fact::RequestId => Fact::RequestId,
                types::Fact::Peer => Fact::Peer,
                types::Fact::Route => Fact::Route,
                types::Fact::PeerIdentity => Fact::PeerIdentity,
            }),
        });
    }
    if out.iter().all(|p| matches!(p, Part::Text(_))) {
        let text: String =
            out.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect();
        let fixed = HeaderValue::from_str(&text).map_err(|_| format!("invalid value {text:?} for {name}"))?;
        return Ok(Value::Fixed(fixed));
    }
    Ok(Value::Template(out))
}

/// `op` for this request, its value filled in; `None` (with a warning) if
/// the value is not valid here.
fn edit(op: &Op, req: &http::request::Parts, facts: &Facts, filter: &str) -> Option<Edit> {
    let filled = |v: &Value, name: &str| {
        let out = fill(v, req, facts);
        if out.is_none() && may_warn() {
            tracing::warn!(
                filter,
                header = name,
                "a standing edit's value is not a valid header value for this request; left out"
            );
        }
        out
    };
    Some(match op {
        Op::Set(n, v) => Edit::SetHeader(n.clone(), filled(v, n.as_str())?),
        Op::Append(n, v) => Edit::AppendHeader(n.clone(), filled(v, n.as_str())?),
        Op::Authority(v) => {
            let v = filled(v, "host")?;
            match v.to_str().map_err(|_| ()).and_then(|a| Edit::authority(a).map_err(|_| ())) {
                Ok(e) => e,
                Err(()) => {
                    if may_warn() {
                        tracing::warn!(
                            filter,
                            "a standing edit's host is not a valid authority for this request; left out"
                        );
                    }
                    return None;
                }
            }
        }
        Op::Remove(n) => Edit::RemoveHeader(n.clone()),
        Op::Rename(from, to) => Edit::RenameHeader(from.clone(), to.clone()),
    })
}

/// Whether a warning about a value left out may be logged now: at most one
/// a second in the process, since what a client sends (its path, host or
/// certificate) can make every request's value invalid.
fn may_warn() -> bool {
    // No second yet: the process's clock starts at 0.
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    first_in_second(&LAST, crate::io::clock_ms() / 1000)
}

/// Whether `now` (a second) is a later one than the last one `last` saw.
fn first_in_second(last: &AtomicU64, now: u64) -> bool {
    last.swap(now, Ordering::Relaxed) != now
}

fn fill(v: &Value, req: &http::request::Parts, facts: &Facts) -> Option<HeaderValue> {
    let parts = match v {
        Value::Fixed(v) => return Some(v.clone()),
        Value::Template(parts) => parts,
    };
    if let [Part::Fact(Fact::RequestId)] = parts.as_slice() {
        return Some(facts.request_id.clone());
    }
    let mut out = Vec::with_capacity(64);
    for p in parts {
        match p {
            Part::Text(t) => out.extend_from_slice(t.as_bytes()),
            Part::Fact(f) => match f {
                Fact::Method => out.extend_from_slice(req.method.as_str().as_bytes()),
                Fact::Path => out.extend_from_slice(request_path(req).as_bytes()),
                Fact::Authority => out.extend_from_slice(request_authority(req).unwrap_or_default().as_bytes()),
                Fact::RequestId => out.extend_from_slice(facts.request_id.as_bytes()),
                Fact::Peer => out.extend_from_slice(facts.peer.as_bytes()),
                Fact::Route => out.extend_from_slice(facts.route.as_bytes()),
                Fact::PeerIdentity => out.extend_from_slice(facts.identity.as_deref().unwrap_or_default().as_bytes()),
            },
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::{HeaderTemplate, Part as P, StandingEdit as S};

    fn text(t: &str) -> P {
        P::Text(t.into())
    }

    fn set(name: &str, value: Vec<P>) -> S {
        S::SetHeader(HeaderTemplate { name: name.into(), value })
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("PATCH").uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn facts(identity: Option<&str>) -> Facts {
        Facts {
            request_id: HeaderValue::from_static("rid-1"),
            peer: "127.0.0.1:4000".into(),
            route: "api".into(),
            identity: identity.map(Into::into),
        }
    }

    #[test]
    fn templates_read_the_request_as_it_reached_the_filter() {
        let s = Standing::check(
            vec![
                set(
                    "x-all",
                    vec![
                        P::Fact(types::Fact::Method),
                        text(" "),
                        P::Fact(types::Fact::Path),
                        text(" "),
                        P::Fact(types::Fact::Authority),
                        text(" "),
                        P::Fact(types::Fact::RequestId),
                        text(" "),
                        P::Fact(types::Fact::Peer),
                        text(" "),
                        P::Fact(types::Fact::Route),
                        text(" ["),
                        P::Fact(types::Fact::PeerIdentity),
                        text("]"),
                    ],
                ),
                // The host changes after every template was filled in.
                set("host", vec![text("new.example")]),
                set("x-host", vec![P::Fact(types::Fact::Authority)]),
                S::AppendHeader(HeaderTemplate { name: "x-list".into(), value: vec![text("b")] }),
                S::RemoveHeader("x-secret".into()),
                S::RenameHeader(types::Rename { from: "x-old".into(), to: "x-new".into() }),
            ],
            vec![set("x-echo", vec![text("id="), P::Fact(types::Fact::RequestId)])],
        )
        .expect("valid");
        let mut req = request("/p?q=1", &[("host", "old.example"), ("x-list", "a"), ("x-secret", "s"), ("x-old", "o")]);
        let left_out = IntCounter::new("left_out", "-").expect("counter");
        let response = s.apply(&mut req, &facts(None), "f", &left_out);
        assert_eq!(left_out.get(), 0);
        let h = &req.headers;
        assert_eq!(h["x-all"], "PATCH /p?q=1 old.example rid-1 127.0.0.1:4000 api []");
        assert_eq!(h["host"], "new.example");
        assert_eq!(h["x-host"], "old.example");
        let list: Vec<_> = h.get_all("x-list").iter().collect();
        assert_eq!(list, ["a", "b"]);
        assert!(h.get("x-secret").is_none() && h.get("x-old").is_none());
        assert_eq!(h["x-new"], "o");
        assert!(matches!(&response[..], [Edit::SetHeader(n, v)] if n == "x-echo" && v == "id=rid-1"));
    }

    #[test]
    fn a_value_invalid_for_one_request_is_left_out_and_the_others_are_made() {
        let s = Standing::check(
            vec![set("x-who", vec![P::Fact(types::Fact::PeerIdentity)]), set("x-ok", vec![text("1")])],
            vec![],
        )
        .expect("valid");
        let mut req = request("/", &[]);
        let left_out = IntCounter::new("left_out", "-").expect("counter");
        s.apply(&mut req, &facts(Some("spiffe://a\r\nx-injected: 1")), "f", &left_out);
        assert_eq!(left_out.get(), 1, "counted");
        assert!(req.headers.get("x-who").is_none());
        assert!(req.headers.get("x-injected").is_none());
        assert_eq!(req.headers["x-ok"], "1");
    }

    #[test]
    fn warnings_about_values_left_out_are_at_most_one_a_second() {
        let last = AtomicU64::new(0);
        let warned: Vec<bool> = [5, 5, 5, 6, 6, 9].into_iter().map(|now| first_in_second(&last, now)).collect();
        assert_eq!(warned, [true, false, false, true, false, true]);
    }

    #[test]
    fn a_registration_wasp_cannot_honour_fails_the_load_with_the_reason() {
        let refused = |req: Vec<S>, resp: Vec<S>| Standing::check(req, resp).expect_err("refused");
        let cases = [
            (
                refused(vec![set("content-length", vec![text("0")])], vec![]),
                "request-edits[0]: header \"content-length\" is managed by wasp",
            ),
            (
                refused(vec![], vec![S::RemoveHeader("connection".into())]),
                "response-edits[0]: header \"connection\" is managed by wasp",
            ),
            (refused(vec![set("x ok", vec![])], vec![]), "request-edits[0]: invalid header name \"x ok\""),
            (
                refused(vec![set("x-a", vec![text("a\r\nb: c")])], vec![]),
                "request-edits[0]: invalid text \"a\\r\\nb: c\" in the value of x-a",
            ),
            (
                refused(vec![S::AppendHeader(HeaderTemplate { name: "host".into(), value: vec![text("h")] })], vec![]),
                "request-edits[0]: a request has one host",
            ),
            (
                refused(vec![S::RenameHeader(types::Rename { from: "x-h".into(), to: "host".into() })], vec![]),
                "request-edits[0]: a request has one host",
            ),
            (refused(vec![set("host", vec![text("a/b")])], vec![]), "request-edits[0]: invalid authority \"a/b\""),
        ];
        for (got, want) in cases {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
        let many: Vec<S> = (0..65).map(|i| set(&format!("x-{i}"), vec![text("1")])).collect();
        assert!(refused(many, vec![]).starts_with("request-edits: 65 edits, more than 64"));
        let huge = vec![set("x-big", vec![text(&"a".repeat(20_000))])];
        assert!(refused(vec![], huge).starts_with("response-edits: 20005 bytes of names and text, more than 16384"));
        // On a response, `host` is a header like any other.
        Standing::check(vec![], vec![S::AppendHeader(HeaderTemplate { name: "host".into(), value: vec![] })])
            .expect("a response's host header");
    }
}
