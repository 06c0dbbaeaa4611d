//! Adversarial: answers with an impossible status or header.
use wasp_sdk::{Decision, Filter, Reply, Request};
struct BadOutput;
impl Filter for BadOutput {
    fn new(_: &str) -> Result<Self, String> {
        Ok(BadOutput)
    }
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        if req.path().contains("/header") {
            return Decision::Reply(Reply::new(200).header("bad header name", "x"));
        }
        Decision::Reply(Reply::new(42).body("not a status"))
    }
}
wasp_sdk::export!(BadOutput);
