//! A route's filter chain: request phases in order, response phases in
//! reverse over the filters whose request phase ran. A local reply stops the
//! chain; a failing filter gets its policy (fail-closed: the request fails
//! with a generic 500 or 503; fail-open: the filter is skipped).
//!
//! One request's pass through the chain is a [`Run`]: the instances leased
//! for it (every phase of a filter runs on the same instance) and what each
//! filter asked to see of the bodies. Request phases may `wait` for HTTP
//! calls; response and streamed body phases may not. A filter's instance
//! goes back to its pool as soon as the filter has no phase left for this
//! request (0.2 filters that registered no response phase: after the
//! request phases), and phases a 0.2 filter did not register are skipped.
//! Response edits a request phase returned are applied where that filter's
//! response phase runs. A 0.2 filter's standing edits (registered at
//! `init`, see [`super::standing`]) are made by wasp when its turn comes,
//! before its request phase, and stay made whatever that phase does; its
//! standing response edits too, unless the chain stops (a local reply or
//! a fail-closed failure) at this filter or one before it.

use super::lease::{Lease, Phase};
use super::loaded::{Failure, LoadedFilter};
use super::message::{BodyMode, Chunk, Decision, Edit, Facts, Head, MessageState, Reply, edit_response, header_map};
use super::registry::Versioned;
use crate::config::model::FailurePolicy;
use crate::error::Kind;
use bytes::Bytes;
use futures_util::future::join_all;
use http::StatusCode;
use std::sync::{Arc, Mutex, MutexGuard};

/// Rounds of `wait` one phase may go through before it counts as invalid output.
const MAX_WAIT_ROUNDS: usize = 4;

/// The filters of one route, in config order.
pub struct Chain {
    filters: Vec<Arc<Versioned>>,
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

/// A filter that ran for one request: its instance while it has phases
/// left, what it asked of the bodies, and the response edits it returned.
struct Slot {
    filter: Arc<LoadedFilter>,
    lease: Option<Lease>,
    request_body: Option<BodyMode>,
    response_body: Option<BodyMode>,
    response_edits: Vec<Edit>,
    /// How many of `response_edits` are standing ones (the first), which
    /// are wasp's and stay when the filter fails open.
    standing: usize,
}

struct Slots {
    slots: Vec<Slot>,
    /// How a streamed phase ended the exchange, for the request path to
    /// answer with, and at which slot (a request-side reply goes through
    /// the slots before it only).
    abort: Option<(usize, Side, Verdict)>,
}

/// One request's pass through a chain. Shared with streamed bodies, which
/// run their filters' body phases as chunks pass.
#[derive(Clone)]
pub struct Run {
    state: Arc<Mutex<Slots>>,
    facts: Facts,
}

/// Which body a streamed or buffered body phase works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request body: filters in order.
    Request,
    /// The response body: filters in reverse order.
    Response,
}

impl Chain {
    /// A chain over `filters`.
    pub fn new(filters: Vec<Arc<Versioned>>) -> Self {
        Chain { filters }
    }

    /// Runs the request-headers phases (waiting for HTTP calls where a
    /// filter asks) on each filter's version serving now. The run keeps the
    /// leases of the filters whose phase ran: their later phases run on the
    /// same instances, so the request stays with the versions it started on.
    /// `generations` gets the version of each filter that ran.
    pub async fn on_request(
        &self,
        parts: &mut http::request::Parts,
        facts: Facts,
        generations: &mut Vec<(Arc<str>, u64)>,
    ) -> (Verdict, Run) {
        let mut slots = Vec::with_capacity(self.filters.len());
        let verdict = 'chain: {
            for versioned in &self.filters {
                let f = &versioned.current();
                generations.push((f.name.clone(), f.generation));
                let response_edits = standing_edits(f, parts, &facts);
                let mut slot = Slot {
                    filter: f.clone(),
                    lease: None,
                    request_body: None,
                    response_body: None,
                    standing: response_edits.len(),
                    response_edits,
                };
                if !f.has(Phase::RequestHeaders) && f.releases_early() {
                    slot.keep_edits(&mut slots); // a 0.2 filter with no phase for requests
                    continue;
                }
                let mut lease = match f.lease() {
                    Ok(l) => l,
                    Err(failure) => match judge(f, Err(failure)) {
                        Step::Next => {
                            slot.keep_edits(&mut slots);
                            continue;
                        }
                        Step::Stop(verdict) => break 'chain verdict,
                    },
                };
                if f.has(Phase::RequestHeaders) {
                    let mut msg = MessageState::head(Head::Request(take_request(parts)), &facts);
                    let outcome = call_and_wait(&mut lease, Phase::RequestHeaders, &mut msg).await;
                    if let Head::Request(p) = std::mem::replace(&mut msg.head, Head::Sent) {
                        *parts = p;
                    }
                    let continued = matches!(outcome, Ok(Decision::Continue));
                    match judge(f, outcome) {
                        Step::Next if continued => {}
                        Step::Next => {
                            // fail-open: skipped, and so are its later phases; its
                            // standing edits are wasp's and still made
                            slot.keep_edits(&mut slots);
                            continue;
                        }
                        Step::Stop(verdict) => break 'chain verdict,
                    }
                    slot.request_body = msg.wants;
                    slot.response_edits.append(&mut msg.response_edits);
                }
                slot.lease = Some(lease);
                slot.release_if_done();
                slots.push(slot);
            }
            Verdict::Continue
        };
        (verdict, Run { state: Arc::new(Mutex::new(Slots { slots, abort: None })), facts })
    }
}

impl Run {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the filters want `side`'s body: buffered whole (with the smallest
    /// limit among those asking) if any filter asked for that, else streamed.
    pub fn body_mode(&self, side: Side) -> Option<(BodyMode, usize)> {
        let state = self.lock();
        let mut mode = None;
        for slot in &state.slots {
            match (slot.wants(side), mode) {
                (Some(BodyMode::Buffer), Some((BodyMode::Buffer, limit))) => {
                    mode = Some((BodyMode::Buffer, slot.filter.max_body.min(limit)))
                }
                (Some(BodyMode::Buffer), _) => mode = Some((BodyMode::Buffer, slot.filter.max_body)),
                (Some(BodyMode::Stream), None) => mode = Some((BodyMode::Stream, usize::MAX)),
                _ => {}
            }
        }
        mode
    }

    /// Runs the request-body phases over the whole buffered body; header
    /// changes still apply, and filters may `wait` for calls.
    pub async fn on_request_body(&self, parts: &mut http::request::Parts, body: Chunk) -> (Verdict, Chunk) {
        // Nothing else holds the run yet: take the slots out to call across awaits.
        let mut slots = std::mem::take(&mut self.lock().slots);
        let mut msg = MessageState { body, ..MessageState::head(Head::Request(take_request(parts)), &self.facts) };
        let mut verdict = Verdict::Continue;
        for i in 0..slots.len() {
            let slot = &mut slots[i];
            if slot.request_body.is_none() {
                continue;
            }
            let Some(lease) = slot.lease.as_mut() else { continue };
            let outcome = call_and_wait(lease, Phase::RequestBody, &mut msg).await;
            slot.response_edits.append(&mut msg.response_edits);
            if let Some(v) = slot.settle(Side::Request, outcome) {
                verdict = v;
                slots.truncate(i); // a reply goes through the filters before this one only
                break;
            }
            slot.request_body = None; // the whole body: its request phases are done
            slot.release_if_done();
        }
        self.lock().slots = slots;
        if let Head::Request(p) = msg.head {
            *parts = p;
        }
        (verdict, msg.body)
    }

    /// Runs the response-headers phases, last filter first.
    pub fn on_response(&self, parts: &mut http::response::Parts) -> Verdict {
        let mut state = self.lock();
        for slot in state.slots.iter_mut().rev() {
            let phase = slot.lease.is_some() && slot.filter.has(Phase::ResponseHeaders);
            if !phase {
                // Only edits to make (response edits fit any response head):
                // the head is not moved in and out.
                for edit in slot.response_edits.drain(..) {
                    edit_response(parts, edit);
                }
                if slot.response_body.is_none() {
                    slot.lease = None;
                }
                continue;
            }
            let mut msg = MessageState::head(Head::Response(take_response(parts)), &self.facts);
            for edit in slot.response_edits.drain(..) {
                if msg.fits(&edit).is_ok() {
                    msg.apply(edit);
                }
            }
            let mut outcome = Ok(Decision::Continue);
            if let Some(lease) = slot.lease.as_mut().filter(|_| slot.filter.has(Phase::ResponseHeaders)) {
                outcome = lease.call(Phase::ResponseHeaders, &mut msg);
                slot.response_body = msg.wants;
            }
            if let Head::Response(p) = msg.head {
                *parts = p;
            }
            if let Step::Stop(verdict) = judge(&slot.filter, outcome) {
                return verdict;
            }
            if slot.response_body.is_none() {
                slot.lease = None; // done with this request
            }
        }
        Verdict::Continue
    }

    /// Runs the response-body phases over the whole buffered body, last filter first.
    pub fn on_response_body(&self, parts: &mut http::response::Parts, body: Chunk) -> (Verdict, Chunk) {
        let mut state = self.lock();
        let msg = MessageState { body, ..MessageState::head(Head::Response(take_response(parts)), &self.facts) };
        let (msg, stop) = body_phases(&mut state.slots, Side::Response, msg);
        if let Head::Response(p) = msg.head {
            *parts = p;
        }
        (stop.map_or(Verdict::Continue, |(_, v)| v), msg.body)
    }

    /// Passes one chunk of a streamed body through the filters that asked to
    /// stream it. `None` means a filter ended the message: the stream must be
    /// aborted (see [`Run::take_abort`] for what the filter decided).
    pub fn on_chunk(&self, side: Side, chunk: Chunk) -> Option<Chunk> {
        let mut state = self.lock();
        let Slots { slots, abort } = &mut *state;
        let msg = MessageState { body: chunk, ..MessageState::head(Head::Sent, &self.facts) };
        let (msg, stop) = body_phases(slots, side, msg);
        match stop {
            Some((at, verdict)) => {
                *abort = Some((at, side, verdict));
                None
            }
            None => Some(msg.body),
        }
    }

    /// What ended a streamed body early, if a filter did. Taken when the
    /// request path answers with it: a request-side reply then goes
    /// through the filters before the one that gave it only.
    pub fn take_abort(&self) -> Option<Verdict> {
        let mut state = self.lock();
        let (at, side, verdict) = state.abort.take()?;
        if side == Side::Request {
            state.slots.truncate(at);
        }
        Some(verdict)
    }
}

impl Slot {
    fn wants(&self, side: Side) -> Option<BodyMode> {
        match side {
            Side::Request => self.request_body,
            Side::Response => self.response_body,
        }
    }

    /// Judges a body phase's outcome; `Some` stops the chain. A fail-open
    /// filter that failed sees no more of this body; failing in a request
    /// body phase, it is skipped for the rest of the request, as in its
    /// request headers phase: no response phase, and of its response edits
    /// only the standing ones (wasp's).
    fn settle(&mut self, side: Side, outcome: Result<Decision, Failure>) -> Option<Verdict> {
        let continued = matches!(outcome, Ok(Decision::Continue));
        match judge(&self.filter, outcome) {
            Step::Next if !continued => {
                match side {
                    Side::Request => self.skip(),
                    Side::Response => self.response_body = None,
                }
                None
            }
            Step::Next => None,
            Step::Stop(verdict) => Some(verdict),
        }
    }

    /// Skips the filter for the rest of the request: no more phases (its
    /// instance goes back), and of its response edits only the standing
    /// ones, which are wasp's.
    fn skip(&mut self) {
        self.request_body = None;
        self.response_body = None;
        self.lease = None;
        self.response_edits.truncate(self.standing);
    }

    /// Keeps a slot whose filter is skipped (or has no phase) for its
    /// response edits alone, if it has any.
    fn keep_edits(mut self, slots: &mut Vec<Slot>) {
        self.skip();
        if !self.response_edits.is_empty() {
            slots.push(self);
        }
    }

    /// Gives the instance back once the filter has no phase left for this
    /// request: no body it asked to see, and no response phase.
    fn release_if_done(&mut self) {
        if self.request_body.is_none() && self.response_body.is_none() && self.filter.releases_early() {
            self.lease = None;
        }
    }
}

/// Runs `side`'s body phase of the filters in `slots` that asked for that
/// body (in route order for the request, reverse for the response), each on
/// the message the one before left. A verdict other than go on stops there:
/// it comes back with the index of the slot that gave it.
fn body_phases(slots: &mut [Slot], side: Side, mut msg: MessageState) -> (MessageState, Option<(usize, Verdict)>) {
    let phase = match side {
        Side::Request => Phase::RequestBody,
        Side::Response => Phase::ResponseBody,
    };
    let end = msg.body.end;
    let n = slots.len();
    for k in 0..n {
        let i = if side == Side::Request { k } else { n - 1 - k };
        let slot = &mut slots[i];
        if slot.wants(side).is_none() {
            continue;
        }
        let Some(lease) = slot.lease.as_mut() else { continue };
        let outcome = lease.call(phase, &mut msg);
        slot.response_edits.append(&mut msg.response_edits);
        if let Some(verdict) = slot.settle(side, outcome) {
            return (msg, Some((i, verdict)));
        }
        if end && side == Side::Request {
            slot.request_body = None; // the last chunk: its request phases are done
            slot.release_if_done();
        }
    }
    (msg, None)
}

/// Makes `f`'s standing request edits on `parts` and returns its standing
/// response edits, filled in from the request as it reached `f`.
fn standing_edits(f: &LoadedFilter, parts: &mut http::request::Parts, facts: &Facts) -> Vec<Edit> {
    if f.standing().is_empty() {
        return Vec::new();
    }
    f.standing().apply(parts, facts, &f.name, &f.values_left_out)
}

/// Calls a request phase; while it answers `wait`, sends the calls it
/// prepared and hands each answer to `on-call-response` (in the order the
/// calls were made). A reply or failure stops at once; `wait` again sends
/// the calls made meanwhile.
async fn call_and_wait(lease: &mut Lease, phase: Phase, msg: &mut MessageState) -> Result<Decision, Failure> {
    let mut outcome = lease.call(phase, msg);
    for _ in 0..MAX_WAIT_ROUNDS {
        if !matches!(outcome, Ok(Decision::Wait)) {
            return outcome;
        }
        let calls = lease.take_calls();
        if calls.is_empty() {
            break;
        }
        let answers = join_all(calls.into_iter().map(|c| async move { (c.id, c.future.await) })).await;
        outcome = Ok(Decision::Continue);
        for (id, answer) in &answers {
            match lease.call_response(msg, *id, answer) {
                Ok(Decision::Continue) => {}
                Ok(Decision::Wait) => outcome = Ok(Decision::Wait),
                other => return other,
            }
        }
    }
    if matches!(outcome, Ok(Decision::Wait)) {
        tracing::warn!(filter = %lease.filter().name, "invalid decision: wait with no call prepared (or too many rounds)");
        lease.filter().count(Failure::InvalidOutput);
        outcome = Err(Failure::InvalidOutput);
    }
    outcome
}

enum Step {
    Next,
    Stop(Verdict),
}

fn judge(f: &Arc<LoadedFilter>, outcome: Result<Decision, Failure>) -> Step {
    let failure = match outcome {
        Ok(Decision::Continue) => return Step::Next,
        Ok(Decision::Reply(reply)) => match local_reply(reply) {
            Ok((head, body, framing)) => {
                if !framing.is_empty() {
                    tracing::warn!(filter = %f.name, headers = ?framing, "a local reply may not set framing or hop-by-hop headers; left out");
                    f.count(Failure::InvalidOutput);
                }
                return Step::Stop(Verdict::Reply { head, body, filter: f.name.clone() });
            }
            Err(why) => {
                tracing::warn!(filter = %f.name, "invalid local reply: {why}");
                f.count(Failure::InvalidOutput);
                Failure::InvalidOutput
            }
        },
        Ok(Decision::Wait) => {
            tracing::warn!(filter = %f.name, "invalid decision: wait is only allowed in request phases");
            f.count(Failure::InvalidOutput);
            Failure::InvalidOutput
        }
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

/// Checks a guest's reply: a final status (200–599) and valid headers;
/// framing fields are left out (hyper frames the reply from its body) and named.
fn local_reply(reply: Reply) -> Result<(http::response::Parts, Bytes, Vec<http::HeaderName>), String> {
    let status = StatusCode::from_u16(reply.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("status {} is not a final HTTP status (200-599)", reply.status))?;
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    let (headers, framing) = header_map(reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())))?;
    *resp.headers_mut() = headers;
    Ok((resp.into_parts().0, Bytes::from(reply.body), framing))
}

fn take_request(parts: &mut http::request::Parts) -> http::request::Parts {
    std::mem::replace(parts, http::Request::new(()).into_parts().0)
}

fn take_response(parts: &mut http::response::Parts) -> http::response::Parts {
    std::mem::replace(parts, http::Response::new(()).into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct Header {
        name: String,
        value: Vec<u8>,
    }
    use proptest::prelude::*;

    fn header() -> impl Strategy<Value = Header> {
        let names = prop_oneof![
            Just("content-length".to_string()),
            Just("Transfer-Encoding".to_string()),
            Just("connection".to_string()),
            Just("trailer".to_string()),
            Just("x-ok".to_string()),
            "[a-zA-Z0-9 :\r\n\0-]{0,12}",
        ];
        (names, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(name, value)| Header { name, value })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..Default::default() })]

        /// Whatever a guest answers, the host accepts only a final status
        /// and valid headers, and never lets a framing field through.
        #[test]
        fn a_local_reply_is_checked_whole(
            status in any::<u16>(),
            headers in proptest::collection::vec(header(), 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let valid = (200..=599).contains(&status)
                && headers.iter().all(|h| {
                    http::HeaderName::from_bytes(h.name.as_bytes()).is_ok() && http::HeaderValue::from_bytes(&h.value).is_ok()
                });
            let framing = headers
                .iter()
                .filter(|h| http::HeaderName::from_bytes(h.name.as_bytes()).is_ok_and(|n| super::super::message::is_framing(&n)))
                .count();
            let pairs = headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
            match local_reply(Reply { status, headers: pairs, body: body.clone() }) {
                Ok((head, out, dropped)) => {
                    prop_assert!(valid);
                    prop_assert_eq!(head.status.as_u16(), status);
                    prop_assert_eq!(&out[..], &body[..]);
                    prop_assert_eq!(dropped.len(), framing);
                    prop_assert!(head.headers.keys().all(|n| !super::super::message::is_framing(n)));
                    prop_assert_eq!(head.headers.len() + dropped.len(), headers.len());
                }
                Err(why) => {
                    prop_assert!(!valid);
                    prop_assert!(!why.is_empty());
                }
            }
        }
    }
}
