//! A loaded filter: its component compiled once from binary, its WIT
//! version checked, pre-linked (`InstancePre`), and a pool of initialised
//! instances that serve one call at a time each.
//!
//! Instances are reused across requests: a fresh instance costs ~29 µs
//! (instantiate + `init`), a call on a reused one ~0.5 µs, so wasp keeps
//! idle instances and creates more only under concurrency. Each request
//! leases an instance for all its phases ([`Lease`]), so per-request state
//! in a filter's fields is never seen by another request. An instance that
//! trapped, timed out or ran out of memory is dropped, never reused.
//!
//! The `handler` export is required; the `connection` export (the L4 hook)
//! is optional, looked up once per version, so components built before it
//! existed still load as HTTP filters.

use super::bindings::exports::wasp::filter::{connection, handler};
use super::bindings::wasp::filter::types::{ConnectionDecision, ConnectionInfo, Decision};
use super::call::{Answer, Pending};
use super::host::{CallClock, FilterShared, HostState, MessageState};
use super::kv::Kv;
use super::registry::LoadContext;
use crate::config::FilterConfig;
use crate::config::model::FailurePolicy;
use prometheus::{Histogram, IntCounterVec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Resource};
use wasmtime::{Store, StoreLimitsBuilder, Trap};

/// The `wasp:filter` version this proxy implements.
pub const WIT_VERSION: &str = "0.1.0";
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

/// One instance and its store.
pub struct Instance {
    store: Store<HostState>,
    handler: handler::Guest,
    connection: Option<connection::Guest>,
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
    handler: handler::GuestIndices,
    /// The `connection` export, if the component has one.
    connection: Option<connection::GuestIndices>,
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
        self.connection.is_some()
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
        check_version(&runtime.engine, &component).map_err(|e| format!("{path}: {e}"))?;
        let mut linker = runtime.linker.clone();
        // No WASI: a filter gets only wasp's own imports; anything else traps if called.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| format!("{path}: cannot link: {}", root_cause(&e)))?;
        let not_a_filter = |e: wasmtime::Error| {
            format!("{path} does not implement the wasp:filter http-filter world: {}", root_cause(&e))
        };
        let pre = linker.instantiate_pre(&component).map_err(not_a_filter)?;
        let handler = handler::GuestIndices::new(&pre).map_err(not_a_filter)?;
        // Optional: absent from components built before the hook existed.
        let connection = connection::GuestIndices::new(&pre).ok();
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
            handler,
            connection,
            config_json: cfg.config_json.clone(),
            memory: cfg.memory,
            timeout: cfg.timeout,
            idle: Mutex::new(Vec::new()),
        };
        let first = filter.instantiate().map_err(|e| e.to_string())?;
        filter.give_back(first);
        Ok(filter)
    }

    /// A new instance, initialised with the filter's config (init gets [`INIT_BUDGET`] times a call's time).
    fn instantiate(&self) -> Result<Instance, InitError> {
        let limits = StoreLimitsBuilder::new().memory_size(self.memory).trap_on_grow_failure(true).build();
        let state = HostState {
            table: Default::default(),
            limits,
            shared: self.shared.clone(),
            calls: Vec::new(),
            next_call: 0,
            clock: CallClock::default(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(HostState::limiter);
        store.epoch_deadline_callback(|mut ctx| ctx.data_mut().clock.on_tick());
        store.data_mut().clock.start(self.timeout * INIT_BUDGET);
        store.set_epoch_deadline(1);
        let _running = super::runtime::Running::start();
        let instantiate = |store: &mut Store<HostState>| {
            let instance = self.pre.instantiate(&mut *store)?;
            let handler = self.handler.load(&mut *store, &instance)?;
            let connection = self.connection.as_ref().map(|c| c.load(&mut *store, &instance)).transpose()?;
            wasmtime::Result::Ok((handler, connection))
        };
        let (handler, connection) = instantiate(&mut store).map_err(|e| InitError::Instantiate(root_cause(&e)))?;
        match handler.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok(Instance { store, handler, connection }),
            Ok(Err(message)) => Err(InitError::Rejected(message)),
            Err(trap) => Err(InitError::Trapped(Failure::of(&trap), root_cause(&trap))),
        }
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

/// An instance lent to one request: both its phases run on it, so a filter
/// may keep per-request state in its fields. It goes back to the pool when
/// the request is done, unless a call on it failed.
pub struct Lease {
    filter: Arc<LoadedFilter>,
    instance: Option<Instance>,
}

impl Lease {
    /// The filter this lease belongs to.
    pub fn filter(&self) -> &Arc<LoadedFilter> {
        &self.filter
    }

    /// Runs one phase within the filter's limits. The message is lent to
    /// the guest as a `message` resource and always comes back, even when
    /// the call fails; a failed instance is discarded and the failure counted.
    pub fn call(&mut self, phase: Phase, msg: MessageState) -> (MessageState, Result<Decision, Failure>) {
        self.run(phase as usize, msg, |handler, store, m| match phase {
            Phase::RequestHeaders => handler.call_on_request_headers(store, m),
            Phase::RequestBody => handler.call_on_request_body(store, m),
            Phase::ResponseHeaders => handler.call_on_response_headers(store, m),
            Phase::ResponseBody => handler.call_on_response_body(store, m),
        })
    }

    /// Hands the answer of call `id` to the filter, with the request of the
    /// phase that made the call.
    pub fn call_response(
        &mut self,
        msg: MessageState,
        id: u64,
        answer: &Answer,
    ) -> (MessageState, Result<Decision, Failure>) {
        self.run(CALL_RESPONSE, msg, |handler, store, m| {
            handler.call_on_call_response(store, m, id, answer.as_ref().map_err(String::as_str))
        })
    }

    /// The calls the last phase prepared (sent only if it returned `wait`).
    pub fn take_calls(&mut self) -> Vec<Pending> {
        self.instance.as_mut().map(|i| std::mem::take(&mut i.store.data_mut().calls)).unwrap_or_default()
    }

    /// Asks the filter's `on-connection` whether a connection is served.
    /// A component without that export is `Unavailable` (the registry
    /// refuses those as connection filters, at load and on reload).
    pub fn on_connection(&mut self, info: &ConnectionInfo) -> Result<ConnectionDecision, Failure> {
        let Some(hook) = self.instance.as_ref().and_then(|i| i.connection.clone()) else {
            tracing::warn!(filter = %self.filter.name, "filter has no on-connection export");
            self.filter.count(Failure::Unavailable);
            return Err(Failure::Unavailable);
        };
        self.guarded(CONNECTION, |inst| hook.call_on_connection(&mut inst.store, info))
    }

    fn run(
        &mut self,
        phase: usize,
        msg: MessageState,
        call: impl FnOnce(&handler::Guest, &mut Store<HostState>, Resource<MessageState>) -> wasmtime::Result<Decision>,
    ) -> (MessageState, Result<Decision, Failure>) {
        let Some(inst) = self.instance.as_mut() else {
            return (msg, Err(Failure::Unavailable));
        };
        inst.store.data_mut().calls.clear();
        let lent = match inst.store.data_mut().table.push(msg) {
            Ok(r) => r,
            Err(_) => unreachable_table(),
        };
        let rep = lent.rep();
        let mut lent = Some(lent);
        let mut back = None;
        let result = self.guarded(phase, |inst| {
            let borrowed = Resource::<MessageState>::new_borrow(rep);
            let result = call(&inst.handler, &mut inst.store, borrowed);
            let data = inst.store.data_mut();
            back = lent.take().map(|r| data.table.delete(r).unwrap_or_else(|_| unreachable_table()));
            if !matches!(result, Ok(Decision::Wait)) {
                data.calls.clear();
            }
            result
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
}

/// Index of `on-call-response` among the duration histograms.
const CALL_RESPONSE: usize = 4;
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
    Trapped(Failure, String),
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Instantiate(e) => write!(f, "cannot instantiate: {e}"),
            InitError::Rejected(m) => write!(f, "the filter rejected its config: {m}"),
            InitError::Trapped(kind, e) => write!(f, "init failed ({}): {e}", kind.label()),
        }
    }
}

/// Refuses components built for another major (or, before 1.0, minor) version of `wasp:filter`.
fn check_version(engine: &wasmtime::Engine, component: &Component) -> Result<(), String> {
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
    if versions.is_empty() {
        return Err("not a wasp filter: it uses no wasp:filter interface".into());
    }
    let compatible = |v: &str| {
        let (ours, theirs): (Vec<&str>, Vec<&str>) = (WIT_VERSION.split('.').collect(), v.split('.').collect());
        match (ours.first(), theirs.first()) {
            (Some(&"0"), Some(&"0")) => ours.get(1) == theirs.get(1),
            (a, b) => a == b,
        }
    };
    match versions.iter().find(|v| !compatible(v)) {
        Some(v) => Err(format!(
            "built for wasp:filter@{v}, but this wasp provides wasp:filter@{WIT_VERSION}; rebuild it against a matching wasp-sdk"
        )),
        None => Ok(()),
    }
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
