//! Adversarial: allocates far past any sane memory cap.
use wasp_sdk::{Decision, Filter, Request};
struct Grow;
impl Filter for Grow {
    fn new(_: &str) -> Result<Self, String> {
        Ok(Grow)
    }
    fn on_request_headers(&mut self, _: &mut Request<'_>) -> Decision {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![7u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}
wasp_sdk::export!(Grow);
