//! A hostile `wasp:filter@0.2.0` filter, built with wit-bindgen directly
//! (no SDK checks in the way): for `/v/<vector>` paths its request phase
//! returns an outcome with a harmless edit (`x-marker: 1`) followed by an
//! invalid one, which wasp must refuse whole (`invalid_output`, no edit
//! applied). `/ok` returns valid edits and response edits; `/seen` answers
//! with what the call received (only the registered `x-probe` header and
//! `path` fact). It registers only the request headers phase: the other
//! phases panic, so calling one would show as a trap.
//!
//! Its config (a JSON string) adds standing edits to its registration:
//! `"standing"` valid ones, `"standing-<vector>"` one that wasp must
//! refuse at load.

wit_bindgen::generate!({ path: "../../../wit", world: "http-filter" });

use exports::wasp::filter::handler::Guest;
use wasp::filter::types::{
    BodyMode, CallResponse, Decision, Edit, Fact, Facts, Header, HeaderSet, HeaderTemplate, LocalReply, Outcome, Part,
    Phases, Registration, Rename, Request, Response, StandingEdit,
};

struct Raw;

fn h(name: &str, value: &str) -> Header {
    Header { name: name.into(), value: value.as_bytes().to_vec() }
}

fn outcome(edits: Vec<Edit>, response_edits: Vec<Edit>) -> Outcome {
    Outcome { decision: Decision::Continue, edits, read_body: None, response_edits }
}

impl Guest for Raw {
    fn init(config: String) -> Result<Registration, String> {
        let text = |t: &str| Part::Text(t.into());
        let set = |name: &str, value: Vec<Part>| StandingEdit::SetHeader(HeaderTemplate { name: name.into(), value });
        let (request_edits, response_edits) = match config.trim_matches('"') {
            "" | "null" | "{}" => (vec![], vec![]),
            "standing" => (
                vec![
                    set("x-standing", vec![Part::Fact(Fact::Route), text(":"), Part::Fact(Fact::Path)]),
                    StandingEdit::RemoveHeader("x-drop".into()),
                ],
                vec![set("x-standing-response", vec![text("id="), Part::Fact(Fact::RequestId)])],
            ),
            "standing-framing" => (vec![set("content-length", vec![text("0")])], vec![]),
            "standing-crlf" => (vec![set("x-v", vec![text("a\r\nx-injected: 1")])], vec![]),
            "standing-bad-name" => (vec![set("bad name", vec![text("1")])], vec![]),
            "standing-second-host" => (
                vec![StandingEdit::AppendHeader(HeaderTemplate {
                    name: "host".into(),
                    value: vec![text("evil.example")],
                })],
                vec![],
            ),
            "standing-response-hop-by-hop" => (vec![], vec![StandingEdit::RemoveHeader("transfer-encoding".into())]),
            other => return Err(format!("unknown config {other:?}")),
        };
        Ok(Registration {
            phases: Phases::REQUEST_HEADERS,
            facts: Facts::PATH,
            request_headers: HeaderSet::Names(vec!["x-probe".into()]),
            response_headers: HeaderSet::None,
            request_edits,
            response_edits,
        })
    }

    fn on_request_headers(request: Request) -> Outcome {
        let path = request.path.clone().unwrap_or_default();
        let marker = Edit::SetHeader(h("x-marker", "1"));
        let bad = |edit: Edit| outcome(vec![Edit::SetHeader(h("x-marker", "1")), edit], vec![]);
        match path.as_str() {
            "/ok" => outcome(
                vec![
                    Edit::SetHeader(h("x-raw", "1")),
                    Edit::AppendHeader(h("x-raw-list", "a")),
                    Edit::AppendHeader(h("x-raw-list", "b")),
                    Edit::RenameHeader(Rename { from: "x-probe".into(), to: "x-probed".into() }),
                    Edit::SetPath("/rewritten?q=1".into()),
                    Edit::SetMethod("PUT".into()),
                    Edit::SetAuthority("rewritten.example:8080".into()),
                ],
                vec![
                    Edit::SetHeader(h("x-raw-response", "1")),
                    Edit::RemoveHeader("x-upstream".into()),
                    // On a response `host` is a header like any other, not an authority.
                    Edit::SetHeader(h("host", "not an/authority")),
                ],
            ),
            "/seen" => {
                let headers: Vec<String> = request
                    .headers
                    .iter()
                    .map(|h| format!("{}={}", h.name, String::from_utf8_lossy(&h.value)))
                    .collect();
                let body = format!(
                    "headers={} method={:?} request_id={:?} peer={:?} route={:?}\n",
                    headers.join(","),
                    request.method,
                    request.request_id,
                    request.peer,
                    request.route
                );
                Outcome {
                    decision: Decision::Reply(LocalReply { status: 200, headers: vec![], body: body.into_bytes() }),
                    edits: vec![],
                    read_body: None,
                    response_edits: vec![],
                }
            }
            "/v/framing" => bad(Edit::SetHeader(h("content-length", "0"))),
            "/v/transfer-encoding" => bad(Edit::AppendHeader(h("transfer-encoding", "chunked"))),
            "/v/connection" => bad(Edit::RemoveHeader("connection".into())),
            "/v/rename-to-framing" => {
                bad(Edit::RenameHeader(Rename { from: "x-probe".into(), to: "content-length".into() }))
            }
            "/v/bad-name" => bad(Edit::SetHeader(h("bad name", "x"))),
            "/v/bad-value" => bad(Edit::SetHeader(h("x-v", "a\r\nx-injected: 1"))),
            "/v/host-crlf" => bad(Edit::SetHeader(h("host", "evil\r\nx-injected: 1"))),
            "/v/authority" => bad(Edit::SetAuthority("a/b@c".into())),
            "/v/path" => bad(Edit::SetPath("no-slash".into())),
            "/v/path-crlf" => bad(Edit::SetPath("/a\r\nx-injected: 1".into())),
            "/v/method" => bad(Edit::SetMethod("GE T".into())),
            "/v/status-on-request" => bad(Edit::SetStatus(200)),
            "/v/body-in-headers-phase" => bad(Edit::SetBody(b"smuggled".to_vec())),
            "/v/trailer-in-headers-phase" => bad(Edit::SetTrailer(h("x-t", "1"))),
            "/v/read-unregistered-body" => Outcome {
                decision: Decision::Continue,
                edits: vec![marker],
                read_body: Some(BodyMode::Buffer),
                response_edits: vec![],
            },
            "/v/response-edit-body" => outcome(vec![marker], vec![Edit::SetBody(b"x".to_vec())]),
            "/v/response-edit-framing" => outcome(vec![marker], vec![Edit::SetHeader(h("content-length", "5"))]),
            "/v/response-edit-status" => outcome(vec![marker], vec![Edit::SetStatus(42)]),
            "/v/wait-without-call" => {
                Outcome { decision: Decision::Wait, edits: vec![marker], read_body: None, response_edits: vec![] }
            }
            _ => outcome(vec![], vec![]),
        }
    }

    fn on_request_body(_request: Request, _body: wasp::filter::types::Body) -> Outcome {
        panic!("on-request-body was not registered")
    }

    fn on_response_headers(_response: Response) -> Outcome {
        panic!("on-response-headers was not registered")
    }

    fn on_response_body(_response: Response, _body: wasp::filter::types::Body) -> Outcome {
        panic!("on-response-body was not registered")
    }

    fn on_call_response(_request: Request, _id: u64, _response: Result<CallResponse, String>) -> Outcome {
        panic!("no call was made")
    }
}

impl exports::wasp::filter::connection::Guest for Raw {
    fn on_connection(_info: wasp::filter::types::ConnectionInfo) -> wasp::filter::types::ConnectionDecision {
        wasp::filter::types::ConnectionDecision::Allow
    }
}

export!(Raw);
