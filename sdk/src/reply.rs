//! What a phase decides: go on, or answer locally.

use crate::bindings::wasp::filter::types as wit;

/// The outcome of a phase.
#[non_exhaustive]
pub enum Decision {
    /// Go on: the next filter, then the upstream (or the client).
    Continue,
    /// Stop the chain and answer with this response. In a streamed body
    /// phase, whose headers are already sent, it aborts the message instead.
    Reply(Reply),
    /// Send the calls this phase made with [`crate::host::http::call`] and
    /// hand each answer to [`crate::Filter::on_call_response`]. Only from
    /// request phases.
    Wait,
}

/// A response a filter sends instead of forwarding the request.
pub struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    /// A reply with `status` (a final status, 200–599; anything else is
    /// refused by wasp and counted as the filter's `invalid_output`), no
    /// headers and an empty body.
    pub fn new(status: u16) -> Self {
        Reply { status, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

impl Decision {
    #[doc(hidden)]
    pub fn into_wit(self) -> wit::Decision {
        match self {
            Decision::Continue => wit::Decision::Continue,
            Decision::Wait => wit::Decision::Wait,
            Decision::Reply(r) => wit::Decision::Reply(wit::LocalReply {
                status: r.status,
                headers: r.headers.into_iter().map(|(name, value)| wit::Header { name, value }).collect(),
                body: r.body,
            }),
        }
    }
}
