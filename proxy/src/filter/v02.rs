//! `wasp:filter@0.2.0` (`wit/filter.wit`), the batched ABI: a phase is one
//! call. The guest gets the facts and headers it registered for at `init`
//! as arguments, and returns its decision with a list of edits, which are
//! all checked here before any is applied (an invalid one makes the whole
//! outcome the filter's `invalid_output`). Phases it did not register are
//! never called.

use super::host::HostState;
use super::lease::Phase;
use super::message::{BodyMode, Chunk, Decision, Edit, Head, MessageState, Refused, Reply};
use super::standing::Standing;
use http::HeaderName;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "http-filter",
    imports: { default: trappable },
    ownership: Borrowing { duplicate_if_necessary: true },
});

use self::wasp::filter::host;
pub use self::wasp::filter::types;
pub use exports::wasp::filter::{connection, handler};

/// Which headers a phase gets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderSet {
    None,
    Names(Vec<HeaderName>),
    All,
}

/// What a 0.2 filter registered at `init`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    phases: types::Phases,
    facts: types::Facts,
    request_headers: HeaderSet,
    response_headers: HeaderSet,
    /// The header edits wasp makes for it on every request and response.
    pub standing: Standing,
}

impl Registration {
    /// Every phase, fact and header: what a 0.1 filter gets.
    pub fn all() -> Self {
        Registration {
            phases: types::Phases::all(),
            facts: types::Facts::all(),
            request_headers: HeaderSet::All,
            response_headers: HeaderSet::All,
            standing: Standing::default(),
        }
    }

    /// Checks what `init` returned.
    pub fn check(r: types::Registration) -> Result<Self, String> {
        let set = |s: types::HeaderSet, which: &str| match s {
            types::HeaderSet::None => Ok(HeaderSet::None),
            types::HeaderSet::All => Ok(HeaderSet::All),
            types::HeaderSet::Names(names) => names
                .iter()
                .map(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("init registered an invalid {which} header name {n:?}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(HeaderSet::Names),
        };
        Ok(Registration {
            phases: r.phases,
            facts: r.facts,
            request_headers: set(r.request_headers, "request")?,
            response_headers: set(r.response_headers, "response")?,
            standing: Standing::check(r.request_edits, r.response_edits)?,
        })
    }

    /// Whether the filter implements `phase` (`on-call-response` always is).
    pub fn has(&self, phase: Phase) -> bool {
        let flag = match phase {
            Phase::RequestHeaders => types::Phases::REQUEST_HEADERS,
            Phase::RequestBody => types::Phases::REQUEST_BODY,
            Phase::ResponseHeaders => types::Phases::RESPONSE_HEADERS,
            Phase::ResponseBody => types::Phases::RESPONSE_BODY,
            Phase::CallResponse => return true,
        };
        self.phases.contains(flag)
    }

    /// Whether the filter has any response phase (so its instance serves
    /// a request until the response is through).
    pub fn has_response_phase(&self) -> bool {
        self.phases.intersects(types::Phases::RESPONSE_HEADERS | types::Phases::RESPONSE_BODY)
    }
}

/// The headers of `map` that `set` names, borrowed for a call (a phase's
/// arguments are lowered straight from wasp's own head: nothing is copied
/// on the host's side first).
fn headers<'a>(map: Option<&'a http::HeaderMap>, set: &'a HeaderSet) -> Vec<types::HeaderParam<'a>> {
    let header =
        |n: &'a HeaderName, v: &'a http::HeaderValue| types::HeaderParam { name: n.as_str(), value: v.as_bytes() };
    match (map, set) {
        (None, _) | (_, HeaderSet::None) => Vec::new(),
        (Some(map), HeaderSet::All) => map.iter().map(|(n, v)| header(n, v)).collect(),
        (Some(map), HeaderSet::Names(names)) => {
            names.iter().flat_map(|n| map.get_all(n).iter().map(move |v| header(n, v))).collect()
        }
    }
}

/// The request headers `reg` asked for, for [`request`].
pub fn request_headers<'a>(msg: &'a MessageState, reg: &'a Registration) -> Vec<types::HeaderParam<'a>> {
    headers(msg.headers(), &reg.request_headers)
}

/// The response headers `reg` asked for, for [`response`].
pub fn response_headers<'a>(msg: &'a MessageState, reg: &'a Registration) -> Vec<types::HeaderParam<'a>> {
    headers(msg.headers(), &reg.response_headers)
}

/// The request as `reg` asked to see it, with its `headers`.
pub fn request<'a>(
    msg: &'a MessageState,
    reg: &Registration,
    headers: &'a [types::HeaderParam<'a>],
) -> types::Request<'a> {
    use types::Facts as F;
    let want = |f: F| reg.facts.contains(f);
    let req = match &msg.head {
        Head::Request(p) => Some(p),
        _ => None,
    };
    let facts = &msg.facts;
    types::Request {
        method: req.filter(|_| want(F::METHOD)).map(|p| p.method.as_str()),
        path: msg.path().filter(|_| want(F::PATH)),
        authority: msg.authority().filter(|_| want(F::AUTHORITY)),
        request_id: want(F::REQUEST_ID).then(|| facts.request_id.to_str().unwrap_or_default()),
        peer: want(F::PEER).then_some(&*facts.peer),
        route: want(F::ROUTE).then_some(&*facts.route),
        peer_identity: facts.identity.as_deref().filter(|_| want(F::PEER_IDENTITY)),
        headers,
    }
}

/// The response as it goes to a filter, with the `headers` it asked for.
pub fn response<'a>(msg: &MessageState, headers: &'a [types::HeaderParam<'a>]) -> types::Response<'a> {
    let status = match &msg.head {
        Head::Response(p) => p.status.as_u16(),
        _ => 0,
    };
    types::Response { status, headers }
}

/// A body phase's trailers, for [`body`].
pub fn trailers(chunk: &Chunk) -> Vec<types::HeaderParam<'_>> {
    headers(chunk.trailers.as_ref(), &HeaderSet::All)
}

/// A body phase's body, with its `trailers`.
pub fn body<'a>(chunk: &'a Chunk, trailers: &'a [types::HeaderParam<'a>]) -> types::Body<'a> {
    types::Body { data: &chunk.data, end_of_stream: chunk.end, trailers }
}

/// The answer to a call's headers, for [`answer`].
pub fn answer_headers(answer: &super::call::Answer) -> Vec<types::HeaderParam<'_>> {
    answer.as_ref().map_or_else(
        |_| Vec::new(),
        |r| r.headers.iter().map(|(n, v)| types::HeaderParam { name: n, value: v }).collect(),
    )
}

/// The answer to a call, as 0.2 passes it, with its `headers`.
pub fn answer<'a>(
    answer: &'a super::call::Answer,
    headers: &'a [types::HeaderParam<'a>],
) -> Result<types::CallResponse<'a>, &'a str> {
    match answer {
        Ok(r) => Ok(types::CallResponse { status: r.status, headers, body: &r.body }),
        Err(e) => Err(e),
    }
}

/// A guest's edit, checked, for a request's head (`on_request`) or another.
fn edit(e: types::Edit, on_request: bool) -> Result<Edit, Refused> {
    use types::Edit as E;
    match e {
        E::SetHeader(h) => Edit::set_header(&h.name, h.value.into(), on_request),
        E::AppendHeader(h) => Edit::append_header(&h.name, h.value.into()),
        E::RemoveHeader(n) => Edit::remove_header(&n),
        E::RenameHeader(r) => Edit::rename_header(&r.from, &r.to),
        E::SetMethod(m) => Edit::method(&m),
        E::SetPath(p) => Edit::path(&p),
        E::SetAuthority(a) => Edit::authority(&a),
        E::SetStatus(s) => Edit::status(s),
        E::SetBody(b) => Ok(Edit::Body(b.into())),
        E::SetTrailer(h) => Edit::trailer(&h.name, h.value.into()),
    }
}

/// Checks a phase's outcome whole (its decision, every edit, every
/// response edit, `read-body`) and, if it is valid, applies its edits to
/// `msg` (response edits are kept in `msg.response_edits` for later);
/// otherwise says what is wrong and changes nothing.
pub fn settle(
    outcome: types::Outcome,
    msg: &mut MessageState,
    phase: Phase,
    reg: &Registration,
    calls_prepared: bool,
) -> Result<Decision, String> {
    let body_phase = matches!(phase, Phase::RequestBody | Phase::ResponseBody);
    let request_side = matches!(phase, Phase::RequestHeaders | Phase::RequestBody | Phase::CallResponse);
    if matches!(outcome.decision, types::Decision::Wait) {
        let waits = request_side && matches!(msg.head, Head::Request(_));
        if !waits {
            return Err("wait is only allowed in request phases (headers, or a buffered body)".into());
        }
        if !calls_prepared {
            return Err("wait with no call prepared".into());
        }
    }
    let refused = |why: Refused| why.to_string();
    if let types::Decision::Reply(r) = &outcome.decision {
        super::message::Edit::status(r.status).map_err(refused)?;
        for h in &r.headers {
            super::message::header_pair(&h.name, &h.value).map_err(|why| format!("local reply: {why}"))?;
        }
    }
    let mut edits = Vec::with_capacity(outcome.edits.len());
    let on_request = matches!(msg.head, Head::Request(_));
    for e in outcome.edits {
        let e = edit(e, on_request).map_err(refused)?;
        if matches!(e, Edit::Body(_) | Edit::Trailer(..)) && !body_phase {
            return Err("set-body and set-trailer are only allowed in body phases".into());
        }
        msg.fits(&e)?;
        edits.push(e);
    }
    let mut later = Vec::with_capacity(outcome.response_edits.len());
    if !outcome.response_edits.is_empty() && !request_side {
        return Err("response-edits are only allowed from request phases".into());
    }
    for e in outcome.response_edits {
        match edit(e, false).map_err(refused)? {
            Edit::Authority(_, v) => later.push(Edit::SetHeader(http::header::HOST, v)),
            e @ (Edit::SetHeader(..)
            | Edit::AppendHeader(..)
            | Edit::RemoveHeader(_)
            | Edit::RenameHeader(..)
            | Edit::Status(_)) => later.push(e),
            other => return Err(format!("response-edits may only change headers and status, not {other:?}")),
        }
    }
    let wants = match (outcome.read_body, phase) {
        (None, _) => None,
        (Some(mode), Phase::RequestHeaders | Phase::ResponseHeaders) => {
            let body = if phase == Phase::RequestHeaders { Phase::RequestBody } else { Phase::ResponseBody };
            if !reg.has(body) {
                return Err(format!("read-body asks for the {body:?} phase, which init did not register"));
            }
            Some(match mode {
                types::BodyMode::Buffer => BodyMode::Buffer,
                types::BodyMode::Stream => BodyMode::Stream,
            })
        }
        (Some(_), _) => return Err("read-body is only allowed from headers phases".into()),
    };
    for e in edits {
        msg.apply(e);
    }
    if wants.is_some() {
        msg.wants = wants;
    }
    msg.response_edits.extend(later);
    Ok(match outcome.decision {
        types::Decision::Continue => Decision::Continue,
        types::Decision::Wait => Decision::Wait,
        types::Decision::Reply(r) => Decision::Reply(Reply {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }),
    })
}

impl types::Host for HostState {}

super::host::bind_host_imports!(types, host);

#[cfg(test)]
mod tests {
    use super::super::message::Facts;
    use super::*;

    fn set(name: &str, value: &str) -> types::Edit {
        types::Edit::SetHeader(types::HeaderResult { name: name.into(), value: value.as_bytes().to_vec() })
    }

    fn outcome(edits: Vec<types::Edit>, response_edits: Vec<types::Edit>) -> types::Outcome {
        types::Outcome { decision: types::Decision::Continue, edits, read_body: None, response_edits }
    }

    fn facts() -> Facts {
        Facts {
            request_id: http::HeaderValue::from_static("rid"),
            peer: "127.0.0.1:1".into(),
            route: "r".into(),
            identity: None,
        }
    }

    #[test]
    fn host_is_the_authority_on_a_request_and_a_plain_header_on_a_response() {
        let reg = Registration::all();
        let req = http::Request::builder().uri("/").header("host", "a.example").body(()).expect("request");
        let mut msg = MessageState::head(Head::Request(req.into_parts().0), &facts());
        let not_authority = settle(
            outcome(vec![set("host", "not an/authority")], vec![]),
            &mut msg,
            Phase::RequestHeaders,
            &reg,
            false,
        );
        assert!(not_authority.is_err(), "a request's host must be an authority");
        // A response edit asked for from the request phase, and one made in a response phase.
        settle(outcome(vec![], vec![set("host", "any text")]), &mut msg, Phase::RequestHeaders, &reg, false)
            .expect("response edit");
        assert!(
            matches!(&msg.response_edits[..], [Edit::SetHeader(n, v)] if n == http::header::HOST && v == "any text")
        );
        let resp = http::Response::builder().status(200).body(()).expect("response");
        let mut msg = MessageState::head(Head::Response(resp.into_parts().0), &facts());
        settle(outcome(vec![set("host", "any text")], vec![]), &mut msg, Phase::ResponseHeaders, &reg, false)
            .expect("response phase");
        assert_eq!(msg.headers().expect("head")["host"], "any text");
    }
}
