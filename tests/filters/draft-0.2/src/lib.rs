//! A component built against a pre-release `wasp:filter@0.2.0` text
//! (`wit/filter.wit` here, from before `registration` gained standing
//! edits): the version matches, the types do not, and wasp must refuse it
//! saying to rebuild. Its phases are never called.

wit_bindgen::generate!({ path: "wit", world: "http-filter" });

use exports::wasp::filter::handler::Guest;
use wasp::filter::types::{
    Body, CallResponse, ConnectionDecision, ConnectionInfo, Facts, HeaderSet, Outcome, Phases, Registration, Request,
    Response,
};

struct Draft;

impl Guest for Draft {
    fn init(_config: String) -> Result<Registration, String> {
        Ok(Registration {
            phases: Phases::empty(),
            facts: Facts::empty(),
            request_headers: HeaderSet::None,
            response_headers: HeaderSet::None,
        })
    }

    fn on_request_headers(_: Request) -> Outcome {
        unreachable!("never loaded")
    }

    fn on_request_body(_: Request, _: Body) -> Outcome {
        unreachable!("never loaded")
    }

    fn on_response_headers(_: Response) -> Outcome {
        unreachable!("never loaded")
    }

    fn on_response_body(_: Response, _: Body) -> Outcome {
        unreachable!("never loaded")
    }

    fn on_call_response(_: Request, _: u64, _: Result<CallResponse, String>) -> Outcome {
        unreachable!("never loaded")
    }
}

impl exports::wasp::filter::connection::Guest for Draft {
    fn on_connection(_: ConnectionInfo) -> ConnectionDecision {
        ConnectionDecision::Allow
    }
}

export!(Draft);
