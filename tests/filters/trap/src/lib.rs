//! Adversarial: panics on every request whose path contains `/boom`, and
//! reads far past its linear memory (near 4 GiB) on a path containing
//! `/oob`: wasmtime must turn that into a trap, whether the engine checks
//! bounds in the guest code or leaves it to the guard region.
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
        if req.path().contains("/oob") {
            // SAFETY: none; this is the attack. The address is a wasm32 offset outside the memory.
            let far = unsafe { core::ptr::read_volatile(0xFFFF_FF00usize as *const u64) };
            req.set_header("x-leaked", far.to_string()).ok();
        }
        Decision::Continue
    }
}
wasp_sdk::export!(Trap);
