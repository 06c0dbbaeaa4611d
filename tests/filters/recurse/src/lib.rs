//! Adversarial: unbounded recursion on the wasm stack (scalars only, so
//! every frame lives on the engine's stack, not in linear memory).
use wasp_sdk::{Decision, Filter, Request};
struct Recurse;

#[inline(never)]
fn deeper(n: u64, depth: u64) -> u64 {
    if depth == 0 {
        return n;
    }
    // Not a tail call: the result is used after the call returns.
    deeper(n.wrapping_mul(6364136223846793005).wrapping_add(1), depth - 1).rotate_left(7) ^ n
}

impl Filter for Recurse {
    fn new(_: &str) -> Result<Self, String> {
        Ok(Recurse)
    }
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        let depth = req.path().len() as u64 * 1_000_000_000;
        if deeper(depth, depth) == 42 {
            return Decision::Continue;
        }
        Decision::Continue
    }
}
wasp_sdk::export!(Recurse);
