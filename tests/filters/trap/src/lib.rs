//! Adversarial: panics on every request whose path contains `/boom`.
use wasp_sdk::{Decision, Filter, Request};
struct Trap;
impl Filter for Trap {
    fn new(_: &str) -> Result<Self, String> {
        Ok(Trap)
    }
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        if req.path().contains("/boom") {
            panic!("secret internal detail that must not reach clients");
        }
        Decision::Continue
    }
}
wasp_sdk::export!(Trap);
