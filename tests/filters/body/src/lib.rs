//! Test filter for the body phases: upper-cases request and/or response
//! bodies, buffered or streamed as configured, and reports what it saw.
//!
//! Config: `{ "request": "buffer"|"stream", "response": "buffer"|"stream",
//! "deny": "word", "mark": true }` (each optional). `mark` asks, in the
//! request headers phase, for response header `x-body-filter: seen`;
//! `fail` makes its request body phase trap.
//! Buffered request: sets
//! `x-body-len` (the length it saw) and answers 403 if the body contains
//! `deny`. Buffered response: sets `x-filtered-len`. Streamed response:
//! counts chunks and, at the end, sets trailer `x-chunks` and echoes the
//! upstream's `grpc-status` trailer as `x-seen-grpc-status`.
use serde::Deserialize;
use wasp_sdk::{BodyMode, Decision, Filter, Reply, Request, Response};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    request: Option<Mode>,
    response: Option<Mode>,
    deny: Option<String>,
    #[serde(default)]
    mark: bool,
    #[serde(default)]
    fail: bool,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Buffer,
    Stream,
}

impl From<Mode> for BodyMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Buffer => BodyMode::Buffer,
            Mode::Stream => BodyMode::Stream,
        }
    }
}

struct Body {
    config: Config,
    chunks: u32,
}

impl Filter for Body {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Body { config: wasp_sdk::parse_config(config)?, chunks: 0 })
    }

    fn on_request_headers(&mut self, request: &mut Request<'_>) -> Decision {
        self.chunks = 0;
        if self.config.mark {
            let _ = request.set_response_header("x-body-filter", "seen");
        }
        if let Some(mode) = self.config.request {
            request.read_body(mode.into());
        }
        Decision::Continue
    }

    fn on_request_body(&mut self, request: &mut Request<'_>) -> Decision {
        if self.config.fail {
            panic!("the request body phase fails, as configured");
        }
        let body = request.body().to_vec();
        if let Some(word) = &self.config.deny
            && body.windows(word.len()).any(|w| w == word.as_bytes())
        {
            return Decision::Reply(Reply::new(403).body(format!("body mentions {word}\n")));
        }
        if matches!(self.config.request, Some(Mode::Buffer)) {
            let _ = request.set_header("x-body-len", body.len().to_string());
        }
        request.set_body(body.to_ascii_uppercase());
        Decision::Continue
    }

    fn on_response_headers(&mut self, response: &mut Response<'_>) -> Decision {
        if let Some(mode) = self.config.response {
            response.read_body(mode.into());
        }
        Decision::Continue
    }

    fn on_response_body(&mut self, response: &mut Response<'_>) -> Decision {
        let body = response.body().to_vec();
        self.chunks += 1;
        if matches!(self.config.response, Some(Mode::Buffer)) {
            let _ = response.set_header("x-filtered-len", body.len().to_string());
        }
        response.set_body(body.to_ascii_uppercase());
        if response.end_of_stream() && matches!(self.config.response, Some(Mode::Stream)) {
            let grpc = response.trailers().into_iter().find(|(n, _)| *n == "grpc-status").map(|(_, v)| v.to_vec());
            let _ = response.set_trailer("x-chunks", self.chunks.to_string());
            if let Some(v) = grpc {
                let _ = response.set_trailer("x-seen-grpc-status", v);
            }
        }
        Decision::Continue
    }
}

wasp_sdk::export!(Body);
