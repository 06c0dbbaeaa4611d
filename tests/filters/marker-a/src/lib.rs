//! Reload tests: marks every response `x-version: a` (its twin marks `b`).
use wasp_sdk::{Decision, Filter, Response};
struct Marker;
impl Filter for Marker {
    fn new(_: &str) -> Result<Self, String> {
        Ok(Marker)
    }
    fn on_response_headers(&mut self, response: &mut Response<'_>) -> Decision {
        let _ = response.set_header("x-version", "a");
        Decision::Continue
    }
}
wasp_sdk::export!(Marker);
