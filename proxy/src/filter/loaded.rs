//! A loaded filter: its component compiled once from binary, its WIT
//! version checked, pre-linked (`InstancePre`), and a pool of initialised
//! instances that serve one call at a time each.
//!
//! Instances are reused across requests: a fresh instance costs ~29 µs
//! (instantiate + `init`), a call on a reused one ~0.5 µs, so wasp keeps
//! idle instances and creates more only under concurrency. Each request
//! leases an instance for the phases it has left ([`Lease`]), so
//! per-request state in a filter's fields is never seen by another request. An instance that
//! trapped, timed out or ran out of memory is dropped, never reused.
//!
//! A component is served through the ABI it was built for: 0.2 (batched,
//! [`super::v02`]) or 0.1 (a `message` resource, [`super::v01`]). A 0.2
//! filter's instance is leased only for the phases it registered: one with
//! no response phase goes back to the pool as soon as its request phases
//! are done (see [`LoadedFilter::releases_early`]).
//!
//! The `handler` export is required; the `connection` export (the L4 hook)
//! is optional, looked up once per version, so components built before it
//! existed still load as HTTP filters.

use super::call::{Answer, Pending};
use super::host::{FilterShared, HostState};
use super::kv::Kv;
use super::message::{Decision, MessageState};
use super::registry::LoadContext;
use super::v02::Registration;
use super::v02::types::{ConnectionDecision, ConnectionInfo};
use super::{v01, v02};
use crate::config::FilterConfig;
use crate::config::model::FailurePolicy;
use prometheus::{Histogram, IntCounterVec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Resource};
use wasmtime::{Store, Trap};

/// The `wasp:filter` version this proxy implements.
pub const WIT_VERSION: &str = "0.2.0";
/// The earlier version it still serves.
pub const WIT_VERSION_0_1: &str = "0.1.0";
/// Idle instances kept per filter.
const MAX_IDLE: usize = 64;
/// Init may take this many times a call's limit (parsing keys, tables...).
const INIT_BUDGET: u32 = 100;

/// Why a filter call failed; the label of `wasp_filter_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The guest trapped (panic, unreachable, bad resource...).
    Trap,
    /// The call ran past its time limit.
    Timeout,
    /// The instance tried to grow memory past its cap.
    Memory,
    /// The wasm stack overflowed.
    StackOverflow,
    /// The guest answered something invalid (status, header).
    InvalidOutput,
    /// No instance could be created (pool exhausted, init failed).
    Unavailable,
}

impl Failure {
    /// Every failure, for series that exist (at 0) from a filter's load on.
    pub const ALL: [Failure; 6] = [
        Failure::Trap,
        Failure::Timeout,
        Failure::Memory,
        Failure::StackOverflow,
        Failure::InvalidOutput,
        Failure::Unavailable,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Trap => "trap",
            Failure::Timeout => "timeout",
            Failure::Memory => "memory",
            Failure::StackOverflow => "stack_overflow",
            Failure::InvalidOutput => "invalid_output",
            Failure::Unavailable => "unavailable",
        }
    }

    fn of(err: &wasmtime::Error) -> Failure {
        // The limiter refused a grow past the cap (`trap_on_grow_failure`):
        // "forcing trap when growing memory to N bytes".
        let text = format!("{err:#}");
        if text.contains("growing memory") || text.contains("memory growth failure") {
            return Failure::Memory;
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Failure::Timeout,
            Some(Trap::StackOverflow) => Failure::StackOverflow,
            // Out-of-bounds accesses and the like are guest bugs, not the memory cap.
            _ => Failure::Trap,
        }
    }
}

/// A component's exports, per ABI, found once per version.
enum Abi {
    V01(v01::handler::GuestIndices, Option<v01::connection::GuestIndices>),
    V02(v02::handler::GuestIndices, Option<v02::connection::GuestIndices>),
}

/// An instance's exports, per ABI.
enum Exports {
    V01(v01::handler::Guest, Option<v01::connection::Guest>),
    V02(v02::handler::Guest, Option<v02::connection::Guest>, Registration),
}

/// One instance and its store.
pub struct Instance {
    store: Store<HostState>,
    exports: Exports,
}

/// A filter ready to serve.
pub struct LoadedFilter {
    /// Name from the config.
    pub name: Arc<str>,
    /// Version number: 1 at start, +1 per reload.
    pub generation: u64,
    /// Failure policy.
    pub policy: FailurePolicy,
    /// The largest body it may see whole.
    pub max_body: usize,
    pre: InstancePre<HostState>,
    abi: Abi,
    /// What its first instance registered (0.1: everything).
    registration: Registration,
    shared: Arc<FilterShared>,
    config_json: String,
    memory: usize,
    timeout: Duration,
    idle: Mutex<Vec<Instance>>,
    errors: IntCounterVec,
    /// Call duration per [`Phase`].
    pub durations: [Histogram; 6],
}

impl LoadedFilter {
    /// The compiled component this version runs.
    pub fn component(&self) -> &Component {
        self.pre.component()
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.shared.metrics
    }

    /// Whether the component exports the connection hook (`on-connection`).
    pub fn has_connection_hook(&self) -> bool {
        matches!(&self.abi, Abi::V01(_, Some(_)) | Abi::V02(_, Some(_)))
    }

    /// The `wasp:filter` version the component was built for.
    pub fn wit_version(&self) -> &'static str {
        match self.abi {
            Abi::V01(..) => WIT_VERSION_0_1,
            Abi::V02(..) => WIT_VERSION,
        }
    }

    /// Whether it implements `phase` (0.1 filters implement every phase).
    pub fn has(&self, phase: Phase) -> bool {
        self.registration.has(phase)
    }

    /// Whether a request's instance goes back to the pool as soon as its
    /// request phases are done: the filter registered no response phase.
    pub fn releases_early(&self) -> bool {
        !self.registration.has_response_phase()
    }

    /// Compiles, checks, links and initialises the filter described by `cfg`
    /// from its module's `bytes`, as version `generation`, sharing `kv` with
    /// its other versions. The error says what is wrong, in terms of the file
    /// or the filter's own message. `compiled` holds the components already
    /// compiled, by the SHA-256 of their file, so filters sharing a module,
    /// and new versions of a filter whose module did not change, compile
    /// (and map its code) once.
    pub fn load(
        ctx: &LoadContext,
        cfg: &FilterConfig,
        (bytes, sha256): (&[u8], &str),
        kv: Arc<Kv>,
        generation: u64,
        compiled: &mut HashMap<String, Component>,
    ) -> Result<Self, String> {
        let (runtime, metrics) = (&ctx.runtime, &ctx.metrics);
        let path = &cfg.module_name;
        if !bytes.starts_with(b"\0asm") {
            return Err(format!("{path} is not a WebAssembly file (no \\0asm header)"));
        }
        let component = match compiled.get(sha256) {
            Some(c) => c.clone(),
            None => {
                let c = Component::from_binary(&runtime.engine, bytes)
                    .map_err(|e| format!("{path} is not a valid WebAssembly component: {}", root_cause(&e)))?;
                compiled.insert(sha256.to_string(), c.clone());
                c
            }
        };
        let version = check_version(&runtime.engine, &component).map_err(|e| format!("{path}: {e}"))?;
        let mut linker = runtime.linker.clone();
        // No WASI: a filter gets only wasp's own imports; anything else traps if called.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| format!("{path}: cannot link: {}", root_cause(&e)))?;
        let not_a_filter = |e: wasmtime::Error| {
            format!("{path} does not implement the wasp:filter http-filter world: {}", root_cause(&e))
        };
        let pre = linker.instantiate_pre(&component).map_err(not_a_filter)?;
        // The connection hook is optional: absent from components built before it existed.
        let abi = match version {
            WIT_VERSION => Abi::V02(
                v02::handler::GuestIndices::new(&pre).map_err(not_a_filter)?,
                v02::connection::GuestIndices::new(&pre).ok(),
            ),
            _ => Abi::V01(
                v01::handler::GuestIndices::new(&pre).map_err(not_a_filter)?,
                v01::connection::GuestIndices::new(&pre).ok(),
            ),
        };
        let name: Arc<str> = cfg.name.as_str().into();
        let filter = LoadedFilter {
            shared: Arc::new(FilterShared {
                name: name.clone(),
                kv,
                metrics: metrics.clone(),
                allow: cfg.allow.clone(),
                clusters: cfg
                    .http_clusters
                    .iter()
                    .filter_map(|n| Some((n.clone(), ctx.clusters.get(n)?.clone())))
                    .collect(),
            }),
            durations: Phase::LABELS.map(|phase| metrics.filter_duration.with_label_values(&[&cfg.name, phase])),
            errors: metrics.filter_errors.clone(),
            name,
            generation,
            policy: cfg.on_error,
            max_body: cfg.max_body,
            pre,
            abi,
            registration: Registration::all(),
            config_json: cfg.config_json.clone(),
            memory: cfg.memory,
            timeout: cfg.timeout,
            idle: Mutex::new(Vec::new()),
        };
        let mut filter = filter;
        let first = filter.instantiate().map_err(|e| e.to_string())?;
        if let Exports::V02(_, _, registration) = &first.exports {
            filter.registration = registration.clone();
        }
        filter.give_back(first);
        Ok(filter)
    }

    /// A new instance, initialised with the filter's config (init gets [`INIT_BUDGET`] times a call's time).
    fn instantiate(&self) -> Result<Instance, InitError> {
        let state = HostState::new(self.shared.clone(), self.memory);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(HostState::limiter);
        store.epoch_deadline_callback(|mut ctx| ctx.data_mut().clock.on_tick());
        store.data_mut().clock.start(self.timeout * INIT_BUDGET);
        store.set_epoch_deadline(1);
        let _running = super::runtime::Running::start();
        let instance = self.pre.instantiate(&mut store).map_err(|e| InitError::Instantiate(root_cause(&e)))?;
        let trapped = |trap: wasmtime::Error| InitError::Trapped(Failure::of(&trap), root_cause(&trap));
        let load = |e: wasmtime::Error| InitError::Instantiate(root_cause(&e));
        let exports = match &self.abi {
            Abi::V01(handler, connection) => {
                let handler = handler.load(&mut store, &instance).map_err(load)?;
                let connection =
                    connection.as_ref().map(|c| c.load(&mut store, &instance)).transpose().map_err(load)?;
                handler.call_init(&mut store, &self.config_json).map_err(trapped)?.map_err(InitError::Rejected)?;
                Exports::V01(handler, connection)
            }
            Abi::V02(handler, connection) => {
                let handler = handler.load(&mut store, &instance).map_err(load)?;
                let connection =
                    connection.as_ref().map(|c| c.load(&mut store, &instance)).transpose().map_err(load)?;
                let registration =
                    handler.call_init(&mut store, &self.config_json).map_err(trapped)?.map_err(InitError::Rejected)?;
                let registration = Registration::check(registration).map_err(InitError::Registration)?;
                Exports::V02(handler, connection, registration)
            }
        };
        Ok(Instance { store, exports })
    }

    /// Leases an instance to one request for all its phases (a pooled one,
    /// or a new one when all are busy).
    pub fn lease(self: &Arc<Self>) -> Result<Lease, Failure> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let instance = match pooled {
            Some(i) => i,
            None => self.instantiate().map_err(|e| {
                tracing::warn!(filter = %self.name, error = %e, "cannot create a filter instance");
                self.count(Failure::Unavailable);
                Failure::Unavailable
            })?,
        };
        Ok(Lease { filter: self.clone(), instance: Some(instance) })
    }

    fn give_back(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(instance);
        }
    }

    /// Counts a failure found outside a call (e.g. invalid output).
    pub fn count(&self, failure: Failure) {
        self.errors.with_label_values(&[&self.name, failure.label()]).inc();
    }
}

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
    /// The filter this lease belongs to.
    pub fn filter(&self) -> &Arc<LoadedFilter> {
        &self.filter
    }

    /// Runs one phase within the filter's limits. The message always comes
    /// back, even when the call fails; a failed instance is discarded and
    /// the failure counted.
    pub fn call(&mut self, phase: Phase, msg: MessageState) -> (MessageState, Result<Decision, Failure>) {
        self.dispatch(phase, msg, None)
    }

    /// Hands the answer of call `id` to the filter, with the request of the
    /// phase that made the call.
    pub fn call_response(
        &mut self,
        msg: MessageState,
        id: u64,
        answer: &Answer,
    ) -> (MessageState, Result<Decision, Failure>) {
        self.dispatch(Phase::CallResponse, msg, Some((id, answer)))
    }

    /// The calls the last phase prepared (sent only if it returned `wait`).
    pub fn take_calls(&mut self) -> Vec<Pending> {
        self.instance.as_mut().map(|i| std::mem::take(&mut i.store.data_mut().calls)).unwrap_or_default()
    }

    /// Asks the filter's `on-connection` whether a connection is served.
    /// A component without that export is `Unavailable` (the registry
    /// refuses those as connection filters, at load and on reload).
    pub fn on_connection(&mut self, info: &ConnectionInfo) -> Result<ConnectionDecision, Failure> {
        if !self.filter.has_connection_hook() {
            tracing::warn!(filter = %self.filter.name, "filter has no on-connection export");
            self.filter.count(Failure::Unavailable);
            return Err(Failure::Unavailable);
        }
        self.guarded(CONNECTION, |inst| match &inst.exports {
            Exports::V02(_, Some(hook), _) => hook.call_on_connection(&mut inst.store, info),
            Exports::V01(_, Some(hook)) => {
                hook.call_on_connection(&mut inst.store, &v01::connection_info(info)).map(v01::connection_decision)
            }
            _ => wasmtime::bail!("no on-connection export"),
        })
    }

    fn dispatch(
        &mut self,
        phase: Phase,
        msg: MessageState,
        answer: Option<(u64, &Answer)>,
    ) -> (MessageState, Result<Decision, Failure>) {
        let Some(inst) = self.instance.as_mut() else {
            return (msg, Err(Failure::Unavailable));
        };
        inst.store.data_mut().calls.clear();
        match inst.exports {
            Exports::V01(..) => self.run_v01(phase, msg, answer),
            Exports::V02(..) => self.run_v02(phase, msg, answer),
        }
    }

    /// 0.2: the message's facts and registered headers go in as arguments,
    /// the outcome's edits are checked whole and applied here.
    fn run_v02(
        &mut self,
        phase: Phase,
        mut msg: MessageState,
        answer: Option<(u64, &Answer)>,
    ) -> (MessageState, Result<Decision, Failure>) {
        let m = &mut msg;
        let result = self.guarded(phase as usize, |inst| {
            let Instance { store, exports } = inst;
            let Exports::V02(handler, _, reg) = &*exports else { wasmtime::bail!("not a 0.2 instance") };
            let outcome = match (phase, answer) {
                (Phase::RequestHeaders, _) => handler.call_on_request_headers(&mut *store, &v02::request(m, reg)),
                (Phase::RequestBody, _) => {
                    handler.call_on_request_body(&mut *store, &v02::request(m, reg), &v02::body(&m.body))
                }
                (Phase::ResponseHeaders, _) => handler.call_on_response_headers(&mut *store, &v02::response(m, reg)),
                (Phase::ResponseBody, _) => {
                    handler.call_on_response_body(&mut *store, &v02::response(m, reg), &v02::body(&m.body))
                }
                (Phase::CallResponse, Some((id, answer))) => {
                    let answer = v02::answer(answer);
                    handler.call_on_call_response(
                        &mut *store,
                        &v02::request(m, reg),
                        id,
                        answer.as_ref().map_err(String::as_str),
                    )
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
        let result = match result {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(why)) => {
                tracing::warn!(filter = %self.filter.name, "invalid outcome: {why}");
                self.filter.count(Failure::InvalidOutput);
                Err(Failure::InvalidOutput)
            }
            Err(failure) => Err(failure),
        };
        (msg, result)
    }

    /// 0.1: the message is lent to the guest as a `message` resource and
    /// always comes back, even when the call fails.
    fn run_v01(
        &mut self,
        phase: Phase,
        msg: MessageState,
        answer: Option<(u64, &Answer)>,
    ) -> (MessageState, Result<Decision, Failure>) {
        let Some(inst) = self.instance.as_mut() else {
            return (msg, Err(Failure::Unavailable));
        };
        let lent = match inst.store.data_mut().table.push(msg) {
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
        (back.unwrap_or_else(|| unreachable_table()), result)
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

#[derive(Debug)]
enum InitError {
    Instantiate(String),
    Rejected(String),
    Registration(String),
    Trapped(Failure, String),
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Instantiate(e) => write!(f, "cannot instantiate: {e}"),
            InitError::Rejected(m) => write!(f, "the filter rejected its config: {m}"),
            InitError::Registration(m) => write!(f, "invalid registration: {m}"),
            InitError::Trapped(kind, e) => write!(f, "init failed ({}): {e}", kind.label()),
        }
    }
}

/// The ABI a component was built for: [`WIT_VERSION`] or
/// [`WIT_VERSION_0_1`]. Versions are compatible when their major versions
/// match, or before 1.0 their minor versions (0.2.x with 0.2.y); a
/// component built for any other version, or mixing two, is refused.
fn check_version(engine: &wasmtime::Engine, component: &Component) -> Result<&'static str, String> {
    let ty = component.component_type();
    let mut versions: Vec<String> = ty
        .imports(engine)
        .chain(ty.exports(engine))
        .filter_map(|(name, _item)| {
            name.strip_prefix("wasp:filter/").map(|rest| rest.split_once('@').map_or("", |(_, v)| v).to_string())
        })
        .collect();
    versions.sort();
    versions.dedup();
    let compatible = |ours: &str, theirs: &str| {
        let (ours, theirs): (Vec<&str>, Vec<&str>) = (ours.split('.').collect(), theirs.split('.').collect());
        match (ours.first(), theirs.first()) {
            (Some(&"0"), Some(&"0")) => ours.get(1) == theirs.get(1),
            (a, b) => a == b,
        }
    };
    let Some(first) = versions.first() else {
        return Err("not a wasp filter: it uses no wasp:filter interface".into());
    };
    let served = [WIT_VERSION, WIT_VERSION_0_1].into_iter().find(|ours| versions.iter().all(|v| compatible(ours, v)));
    served.ok_or_else(|| {
        let v = versions.iter().find(|v| ![WIT_VERSION, WIT_VERSION_0_1].iter().any(|o| compatible(o, v))).unwrap_or(first);
        format!(
            "built for wasp:filter@{v}, but this wasp provides wasp:filter@{WIT_VERSION} (and serves {WIT_VERSION_0_1}); rebuild it against a matching wasp-sdk"
        )
    })
}

/// The innermost message of an error chain, for logs and config errors.
fn root_cause(e: &wasmtime::Error) -> String {
    let mut msg = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    if msg.len() > 400 {
        msg.truncate(400);
        msg.push('…');
    }
    msg
}
