//! Adversarial: never returns from the request phase.
use wasp_sdk::{Decision, Filter, Request};
struct Spin;
impl Filter for Spin {
    fn new(_: &str) -> Result<Self, String> {
        Ok(Spin)
    }
    fn on_request_headers(&mut self, _: &mut Request<'_>) -> Decision {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}
wasp_sdk::export!(Spin);
