//! Backward compatibility: a filter built with wit-bindgen directly against
//! `wit/filter.wit` as it was before the connection hook and `peer-identity`
//! (a frozen copy in `wit/`). wasp must keep loading it as an HTTP filter:
//! it marks every response `x-legacy: 1`. It has no `on-connection`, so it
//! cannot be a connection filter.

wit_bindgen::generate!({ path: "wit", world: "http-filter" });

use exports::wasp::filter::handler::Guest;
use wasp::filter::types::{CallResponse, Decision, Message};

struct Legacy;

impl Guest for Legacy {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_request_headers(_request: &Message) -> Decision {
        Decision::Continue
    }

    fn on_response_headers(response: &Message) -> Decision {
        let _ = response.set_header("x-legacy", b"1");
        Decision::Continue
    }

    fn on_request_body(_request: &Message) -> Decision {
        Decision::Continue
    }

    fn on_response_body(_response: &Message) -> Decision {
        Decision::Continue
    }

    fn on_call_response(_request: &Message, _id: u64, _response: Result<CallResponse, String>) -> Decision {
        Decision::Continue
    }
}

export!(Legacy);
