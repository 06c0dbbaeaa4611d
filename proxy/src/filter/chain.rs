//! A route's filter chain: request phases in order, response phases in
//! reverse over the filters whose request phase ran. A local reply stops the
//! chain; a failing filter gets its policy (fail-closed: the request fails
//! with a generic 500 or 503; fail-open: the filter is skipped).

use super::bindings::wasp::filter::types::{Decision, LocalReply};
use super::host::{Facts, Head};
use super::loaded::{Failure, Lease, LoadedFilter, Phase};
use crate::config::model::FailurePolicy;
use crate::error::Kind;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

/// The filters of one route, in config order.
pub struct Chain {
    filters: Vec<Arc<LoadedFilter>>,
}

/// What the chain decided.
pub enum Verdict {
    /// Go on.
    Continue,
    /// Answer with this response instead; `filter` made it.
    Reply {
        /// Response head.
        head: http::response::Parts,
        /// Response body.
        body: Bytes,
        /// The filter that replied.
        filter: Arc<str>,
    },
    /// A fail-closed filter failed.
    Fail {
        /// How the client is answered.
        kind: Kind,
        /// The filter that failed.
        filter: Arc<str>,
    },
}

impl Chain {
    /// A chain over `filters`.
    pub fn new(filters: Vec<Arc<LoadedFilter>>) -> Self {
        Chain { filters }
    }

    /// Runs the request phases. Returns the verdict and the leases of the
    /// filters whose request phase ran: their response phases run on the
    /// same instances.
    pub fn on_request(&self, parts: &mut http::request::Parts, facts: &Facts) -> (Verdict, Vec<Lease>) {
        let mut leases = Vec::with_capacity(self.filters.len());
        for f in &self.filters {
            let mut lease = match f.lease() {
                Ok(l) => l,
                Err(failure) => match judge(f, Err(failure)) {
                    Step::Next => continue,
                    Step::Stop(verdict) => return (verdict, leases),
                },
            };
            let (head, outcome) = lease.call(Phase::RequestHeaders, Head::Request(take_request(parts)), facts);
            if let Head::Request(p) = head {
                *parts = p;
            }
            let continued = matches!(outcome, Ok(Decision::Continue));
            match judge(f, outcome) {
                Step::Next if continued => leases.push(lease),
                Step::Next => {} // fail-open: skipped, and so are its response phases
                Step::Stop(verdict) => return (verdict, leases),
            }
        }
        (Verdict::Continue, leases)
    }

    /// Runs the response phases on the leased instances, last first.
    pub fn on_response(&self, leases: &mut [Lease], parts: &mut http::response::Parts, facts: &Facts) -> Verdict {
        for lease in leases.iter_mut().rev() {
            let (head, outcome) = lease.call(Phase::ResponseHeaders, Head::Response(take_response(parts)), facts);
            if let Head::Response(p) = head {
                *parts = p;
            }
            if let Step::Stop(verdict) = judge(lease.filter(), outcome) {
                return verdict;
            }
        }
        Verdict::Continue
    }
}

enum Step {
    Next,
    Stop(Verdict),
}

fn judge(f: &Arc<LoadedFilter>, outcome: Result<Decision, Failure>) -> Step {
    let failure = match outcome {
        Ok(Decision::Continue) => return Step::Next,
        Ok(Decision::Reply(reply)) => match local_reply(reply) {
            Ok((head, body)) => return Step::Stop(Verdict::Reply { head, body, filter: f.name.clone() }),
            Err(why) => {
                tracing::warn!(filter = %f.name, "invalid local reply: {why}");
                f.count(Failure::InvalidOutput);
                Failure::InvalidOutput
            }
        },
        Err(failure) => failure,
    };
    match f.policy {
        FailurePolicy::FailOpen => Step::Next,
        FailurePolicy::FailClosed => {
            let kind = if failure == Failure::Unavailable { Kind::FilterUnavailable } else { Kind::FilterFailed };
            Step::Stop(Verdict::Fail { kind, filter: f.name.clone() })
        }
    }
}

/// Checks a guest's reply: a final status (200–599) and valid headers.
fn local_reply(reply: LocalReply) -> Result<(http::response::Parts, Bytes), String> {
    let status = StatusCode::from_u16(reply.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("status {} is not a final HTTP status (200-599)", reply.status))?;
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    for h in reply.headers {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("invalid header name {:?}", h.name))?;
        let value = HeaderValue::from_bytes(&h.value).map_err(|_| format!("invalid value for header {:?}", h.name))?;
        resp.headers_mut().append(name, value);
    }
    Ok((resp.into_parts().0, Bytes::from(reply.body)))
}

fn take_request(parts: &mut http::request::Parts) -> http::request::Parts {
    std::mem::replace(parts, http::Request::new(()).into_parts().0)
}

fn take_response(parts: &mut http::response::Parts) -> http::response::Parts {
    std::mem::replace(parts, http::Response::new(()).into_parts().0)
}
