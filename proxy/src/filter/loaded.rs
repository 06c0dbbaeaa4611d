//! A loaded filter: its component compiled once from binary, its WIT
//! version checked, pre-linked (`InstancePre`), and a pool of initialised
//! instances that serve one call at a time each.
//!
//! Instances are reused across requests: a fresh instance costs ~29 µs
//! (instantiate + `init`), a call on a reused one ~0.5 µs, so wasp keeps
//! idle instances and creates more only under concurrency. Each request
//! leases an instance for the phases it has left ([`Lease`], in
//! [`super::lease`], which runs the calls), so per-request state in a
//! filter's fields is never seen by another request. An instance that
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

use super::compile::NotCompiled;
use super::host::{FilterShared, HostState};
use super::kv::Kv;
use super::lease::{Lease, Phase};
use super::registry::LoadContext;
use super::v02::Registration;
use super::{v01, v02};
use crate::config::FilterConfig;
use crate::config::model::FailurePolicy;
use crate::metrics::Histogram;
use prometheus::{IntCounter, IntCounterVec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, InstancePre};
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

    pub(super) fn of(err: &wasmtime::Error) -> Failure {
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
pub(super) enum Exports {
    V01(v01::handler::Guest, Option<v01::connection::Guest>),
    V02(v02::handler::Guest, Option<v02::connection::Guest>, Arc<Registration>),
}

/// One instance and its store.
pub struct Instance {
    pub(super) store: Store<HostState>,
    pub(super) exports: Exports,
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
    /// What its first instance registered (0.1: everything); every later
    /// instance must register the same, and shares this one.
    registration: Arc<Registration>,
    shared: Arc<FilterShared>,
    config_json: String,
    memory: usize,
    pub(super) timeout: Duration,
    idle: Mutex<Vec<Instance>>,
    errors: IntCounterVec,
    /// Its standing edits left out of a request (a value invalid there).
    pub values_left_out: IntCounter,
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

    /// The header edits wasp makes for it on every request and response,
    /// with no call (0.2 `request-edits` and `response-edits`).
    pub fn standing(&self) -> &super::standing::Standing {
        &self.registration.standing
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
                let c = super::compile::component(runtime, bytes).map_err(|e| match e {
                    NotCompiled::Invalid(why) => format!("{path} is not a valid WebAssembly component: {why}"),
                    NotCompiled::Stopped(why) => format!("{path}: {why}"),
                })?;
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
            values_left_out: metrics.filter_values_left_out.with_label_values(&[&cfg.name]),
            name,
            generation,
            policy: cfg.on_error,
            max_body: cfg.max_body,
            pre,
            abi,
            registration: Arc::new(Registration::all()),
            config_json: cfg.config_json.clone(),
            memory: cfg.memory,
            timeout: cfg.timeout,
            idle: Mutex::new(Vec::new()),
        };
        let mut filter = filter;
        let first = filter.instantiate(true).map_err(|e| e.to_string())?;
        if let Exports::V02(_, _, registration) = &first.exports {
            filter.registration = registration.clone();
        }
        filter.give_back(first);
        Ok(filter)
    }

    /// A new instance, initialised with the filter's config (init gets
    /// [`INIT_BUDGET`] times a call's time). Only the `first` instance's
    /// registration is kept; a later one that registers otherwise is refused.
    fn instantiate(&self, first: bool) -> Result<Instance, InitError> {
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
                // The version matched at load; types that do not are an older text of it.
                let handler = handler.load(&mut store, &instance).map_err(|e| {
                    InitError::Instantiate(format!(
                        "{}: the component's exports do not match wasp:filter@{WIT_VERSION} as this wasp serves it (a build against a pre-release 0.2.0, before `registration` gained standing edits?); rebuild it with this wasp's wasp-sdk",
                        root_cause(&e)
                    ))
                })?;
                let connection =
                    connection.as_ref().map(|c| c.load(&mut store, &instance)).transpose().map_err(load)?;
                let registration =
                    handler.call_init(&mut store, &self.config_json).map_err(trapped)?.map_err(InitError::Rejected)?;
                let registration = Registration::check(registration).map_err(InitError::Registration)?;
                let registration = if first {
                    Arc::new(registration)
                } else if registration == *self.registration {
                    self.registration.clone()
                } else {
                    return Err(InitError::Registration(
                        "this instance's init registered other phases, facts, headers or standing edits than the filter's first one; a registration must follow from the config alone".into(),
                    ));
                };
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
            None => self.instantiate(false).map_err(|e| {
                tracing::warn!(filter = %self.name, error = %e, "cannot create a filter instance");
                self.count(Failure::Unavailable);
                Failure::Unavailable
            })?,
        };
        Ok(Lease::new(self.clone(), instance))
    }

    pub(super) fn give_back(&self, instance: Instance) {
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
pub(super) fn root_cause(e: &wasmtime::Error) -> String {
    let mut msg = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    if msg.len() > 400 {
        msg.truncate(400);
        msg.push('…');
    }
    msg
}
