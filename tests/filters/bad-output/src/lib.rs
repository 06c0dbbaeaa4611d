//! Adversarial: answers with an impossible status or header, or tries to
//! set framing headers (`content-length`, `transfer-encoding`,
//! `connection`) on a local reply (`/framing-reply`) or on the upstream's
//! response (`/framing-response...`).
use wasp_sdk::{Decision, Filter, Reply, Request, Response};
struct BadOutput;
impl Filter for BadOutput {
    fn new(_: &str) -> Result<Self, String> {
        Ok(BadOutput)
    }
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        let path = req.path();
        if path.starts_with("/framing-response") {
            return Decision::Continue;
        }
        if path.starts_with("/framing-reply") {
            let reply = Reply::new(200)
                .header("content-length", "3")
                .header("transfer-encoding", "chunked")
                .header("connection", "close")
                .header("x-local", "yes")
                .body("a local reply longer than three bytes\n");
            return Decision::Reply(reply);
        }
        if path.contains("/header") {
            return Decision::Reply(Reply::new(200).header("bad header name", "x"));
        }
        Decision::Reply(Reply::new(42).body("not a status"))
    }
    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Decision {
        let refused = [
            resp.set_header("content-length", "3"),
            resp.append_header("transfer-encoding", "chunked"),
            resp.set_header("connection", "close"),
        ];
        let refused = refused.iter().filter(|r| r.is_err()).count();
        let _ = resp.set_header("x-refused", refused.to_string());
        Decision::Continue
    }
}
wasp_sdk::export!(BadOutput);
