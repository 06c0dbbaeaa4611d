//! A leased instance and the calls on it: one phase at a time, within the
//! filter's time limit, timed per phase, through the ABI the component was
//! built for (0.2: arguments in, outcome checked and applied; 0.1: the
//! message lent as a resource). A call that traps, times out or runs out of
//! memory discards the instance and counts the failure.

use super::call::{Answer, Pending};
use super::loaded::{Exports, Failure, Instance, LoadedFilter, root_cause};
use super::message::{Decision, Head, MessageState};
use super::v02::types::{ConnectionDecision, ConnectionInfo};
use super::{v01, v02};
use std::sync::Arc;
use wasmtime::component::Resource;

/// An instance lent to one request for the phases the filter has left
/// for it: all of a 0.1 filter's, a 0.2 filter's request phases and, if it
/// registered any, its response phases; so a filter may keep per-request
/// state in its fields across them. It goes back to the pool when dropped
/// (the chain drops it once no phase is left), unless a call on it failed.
pub struct Lease {
    filter: Arc<LoadedFilter>,
    instance: Option<Instance>,
}

impl Lease {
    pub(super) fn new(filter: Arc<LoadedFilter>, instance: Instance) -> Self {
        Lease { filter, instance: Some(instance) }
    }

    /// The filter this lease belongs to.
    pub fn filter(&self) -> &Arc<LoadedFilter> {
        &self.filter
    }

    /// Runs one phase within the filter's limits, on `msg` where it is (a
    /// message is a few hundred bytes: not moved in and out of each call).
    /// A failed instance is discarded and the failure counted.
    pub fn call(&mut self, phase: Phase, msg: &mut MessageState) -> Result<Decision, Failure> {
        self.dispatch(phase, msg, None)
    }

    /// Hands the answer of call `id` to the filter, with the request of the
    /// phase that made the call.
    pub fn call_response(&mut self, msg: &mut MessageState, id: u64, answer: &Answer) -> Result<Decision, Failure> {
        self.dispatch(Phase::CallResponse, msg, Some((id, answer)))
    }

    /// The calls the last phase prepared (sent only if it returned `wait`).
    pub fn take_calls(&mut self) -> Vec<Pending> {
        self.instance.as_mut().map(|i| std::mem::take(&mut i.store.data_mut().calls)).unwrap_or_default()
    }

    /// Asks the filter's `on-connection` whether a connection is served.
    /// A component without that export is `Unavailable` (the registry
    /// refuses those as connection filters, at load and on reload).
    pub fn on_connection(&mut self, info: &ConnectionInfo<'_>) -> Result<ConnectionDecision, Failure> {
        if !self.filter.has_connection_hook() {
            tracing::warn!(filter = %self.filter.name, "filter has no on-connection export");
            self.filter.count(Failure::Unavailable);
            return Err(Failure::Unavailable);
        }
        self.guarded(CONNECTION, |inst| {
            inst.store.data_mut().begin(None);
            match &inst.exports {
                Exports::V02(_, Some(hook), _) => hook.call_on_connection(&mut inst.store, info.clone()),
                Exports::V01(_, Some(hook)) => {
                    hook.call_on_connection(&mut inst.store, &v01::connection_info(info)).map(v01::connection_decision)
                }
                _ => wasmtime::bail!("no on-connection export"),
            }
        })
    }

    fn dispatch(
        &mut self,
        phase: Phase,
        msg: &mut MessageState,
        answer: Option<(u64, &Answer)>,
    ) -> Result<Decision, Failure> {
        // Without an instance, run_v02's guard answers `Unavailable`.
        match self.instance.as_ref().map(|i| &i.exports) {
            Some(Exports::V01(..)) => self.run_v01(phase, msg, answer),
            _ => self.run_v02(phase, msg, answer),
        }
    }

    /// 0.2: the message's facts and registered headers go in as arguments,
    /// the outcome's edits are checked whole and applied here.
    fn run_v02(
        &mut self,
        phase: Phase,
        m: &mut MessageState,
        answer: Option<(u64, &Answer)>,
    ) -> Result<Decision, Failure> {
        let result = self.guarded(phase as usize, |inst| {
            let Instance { store, exports } = inst;
            let Exports::V02(handler, _, reg) = &*exports else { wasmtime::bail!("not a 0.2 instance") };
            store.data_mut().begin(Some(&m.facts));
            let outcome = match (phase, answer) {
                (Phase::RequestHeaders, _) => {
                    let headers = v02::request_headers(m, reg);
                    handler.call_on_request_headers(&mut *store, v02::request(m, reg, &headers))
                }
                (Phase::RequestBody, _) => {
                    let (headers, trailers) = (v02::request_headers(m, reg), v02::trailers(&m.body));
                    let (req, body) = (v02::request(m, reg, &headers), v02::body(&m.body, &trailers));
                    handler.call_on_request_body(&mut *store, req, body)
                }
                (Phase::ResponseHeaders, _) => {
                    let headers = v02::response_headers(m, reg);
                    handler.call_on_response_headers(&mut *store, v02::response(m, &headers))
                }
                (Phase::ResponseBody, _) => {
                    let (headers, trailers) = (v02::response_headers(m, reg), v02::trailers(&m.body));
                    let (resp, body) = (v02::response(m, &headers), v02::body(&m.body, &trailers));
                    handler.call_on_response_body(&mut *store, resp, body)
                }
                (Phase::CallResponse, Some((id, answer))) => {
                    let (headers, answer_headers) = (v02::request_headers(m, reg), v02::answer_headers(answer));
                    let req = v02::request(m, reg, &headers);
                    handler.call_on_call_response(&mut *store, req, id, v02::answer(answer, &answer_headers))
                }
                (Phase::CallResponse, None) => wasmtime::bail!("on-call-response without an answer"),
            }?;
            let calls_prepared = !store.data().calls.is_empty();
            let settled = v02::settle(outcome, m, phase, reg, calls_prepared);
            if !matches!(settled, Ok(Decision::Wait)) {
                store.data_mut().calls.clear();
            }
            Ok(settled)
        });
        match result {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(why)) => {
                tracing::warn!(filter = %self.filter.name, "invalid outcome: {why}");
                self.filter.count(Failure::InvalidOutput);
                Err(Failure::InvalidOutput)
            }
            Err(failure) => Err(failure),
        }
    }

    /// 0.1: the message is lent to the guest as a `message` resource and
    /// always comes back, even when the call fails.
    fn run_v01(
        &mut self,
        phase: Phase,
        msg: &mut MessageState,
        answer: Option<(u64, &Answer)>,
    ) -> Result<Decision, Failure> {
        let Some(inst) = self.instance.as_mut() else {
            return Err(Failure::Unavailable);
        };
        inst.store.data_mut().begin(Some(&msg.facts));
        // Lent to the guest's resource table for the call, and put back after.
        let facts = msg.facts.clone();
        let lent = std::mem::replace(msg, MessageState::head(Head::Sent, &facts));
        let lent = match inst.store.data_mut().table.push(lent) {
            Ok(r) => r,
            Err(_) => unreachable_table(),
        };
        let rep = lent.rep();
        let mut lent = Some(lent);
        let mut back = None;
        let result = self.guarded(phase as usize, |inst| {
            let Instance { store, exports } = inst;
            let Exports::V01(handler, _) = &*exports else { wasmtime::bail!("not a 0.1 instance") };
            let m = Resource::<MessageState>::new_borrow(rep);
            let result = match (phase, answer) {
                (Phase::RequestHeaders, _) => handler.call_on_request_headers(&mut *store, m),
                (Phase::RequestBody, _) => handler.call_on_request_body(&mut *store, m),
                (Phase::ResponseHeaders, _) => handler.call_on_response_headers(&mut *store, m),
                (Phase::ResponseBody, _) => handler.call_on_response_body(&mut *store, m),
                (Phase::CallResponse, Some((id, answer))) => {
                    let answer = v01::answer(answer);
                    handler.call_on_call_response(&mut *store, m, id, answer.as_ref().map_err(String::as_str))
                }
                (Phase::CallResponse, None) => Err(wasmtime::format_err!("on-call-response without an answer")),
            };
            let data = store.data_mut();
            back = lent.take().map(|r| data.table.delete(r).unwrap_or_else(|_| unreachable_table()));
            if !matches!(result, Ok(v01::exports::wasp::filter::handler::Decision::Wait)) {
                data.calls.clear();
            }
            result.map(Decision::from)
        });
        *msg = back.unwrap_or_else(|| unreachable_table());
        result
    }

    /// Runs `call` on the leased instance within the filter's time limit,
    /// timed in `wasp_filter_duration_seconds{phase}`; a trap, timeout or
    /// OOM is logged and counted, and the instance is discarded.
    fn guarded<T>(
        &mut self,
        phase: usize,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<T>,
    ) -> Result<T, Failure> {
        let f = &self.filter;
        let Some(inst) = self.instance.as_mut() else { return Err(Failure::Unavailable) };
        let start = inst.store.data_mut().clock.start(f.timeout);
        inst.store.set_epoch_deadline(1);
        let running = super::runtime::Running::start();
        let result = call(inst);
        drop(running);
        f.durations[phase].observe(start.elapsed().as_secs_f64());
        result.map_err(|trap| {
            let failure = Failure::of(&trap);
            tracing::warn!(filter = %f.name, reason = failure.label(), error = %root_cause(&trap), "filter failed");
            f.count(failure);
            self.instance = None;
            failure
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.filter.give_back(instance);
        }
    }
}

/// A phase of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `on-request-headers`
    RequestHeaders = 0,
    /// `on-request-body`
    RequestBody = 1,
    /// `on-response-headers`
    ResponseHeaders = 2,
    /// `on-response-body`
    ResponseBody = 3,
    /// `on-call-response`
    CallResponse = 4,
}

/// Index of `on-connection` among the duration histograms.
const CONNECTION: usize = 5;

impl Phase {
    /// `wasp_filter_duration_seconds{phase}` labels: the phases, then
    /// `on-call-response` and `on-connection`.
    pub const LABELS: [&'static str; 6] =
        ["request_headers", "request_body", "response_headers", "response_body", "call_response", "connection"];
}

/// The table only fails when full or when a handle is stale; wasp pushes one
/// resource per call into a fresh slot and removes the same handle, so
/// neither can happen.
fn unreachable_table() -> ! {
    panic!("filter resource table lost a lent message")
}
