//! Adversarial: panics while loading.
use wasp_sdk::Filter;
struct InitTrap;
impl Filter for InitTrap {
    fn new(_: &str) -> Result<Self, String> {
        panic!("secret internal detail that must not reach clients");
    }
}
wasp_sdk::export!(InitTrap);
