//! Connection-hook tests: its config (a JSON string) says what
//! `on-connection` does: `allow`, `deny`, `trap` (panics) or `spin` (never
//! returns). Responses it sees are marked `x-conn-policy: <mode>`.
use wasp_sdk::{Connection, ConnectionDecision, Decision, Filter, Response};
struct Policy(String);
impl Filter for Policy {
    fn new(config: &str) -> Result<Self, String> {
        let mode: String = wasp_sdk::parse_config(config)?;
        match mode.as_str() {
            "allow" | "deny" | "trap" | "spin" => Ok(Policy(mode)),
            _ => Err(format!("unknown mode {mode:?}")),
        }
    }
    fn on_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        match self.0.as_str() {
            "deny" => ConnectionDecision::Deny(format!("denied {}", conn.peer())),
            "trap" => panic!("connection hook trapped"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            _ => ConnectionDecision::Allow,
        }
    }
    fn on_response_headers(&mut self, response: &mut Response<'_>) -> Decision {
        let _ = response.set_header("x-conn-policy", self.0.as_str());
        Decision::Continue
    }
}
wasp_sdk::export!(Policy);
