//! The wasmtime engine all filters share: component model, a pooling
//! allocator sized from the config (`filter_instances` instances, each
//! memory limited to the largest `limits.memory` of the config it started
//! with, in slots that spare the guest code its bounds checks where the
//! address space allows), epoch interruption driven by a 1 ms ticker thread that runs
//! only while guest code does (an idle proxy does not wake up), and a
//! bounded wasm stack, and wasmtime's on-disk cache of compiled code (keyed
//! by the module's content and the engine's settings), so a restart with
//! unchanged filters does not compile them again. Created once per process,
//! when a config first has filters.

use super::compile::{Compile, Settings};
use super::host::HostState;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Cache, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Epoch tick: the granularity of filter time limits.
pub const TICK: Duration = Duration::from_millis(1);
/// The largest memory any filter may be configured with.
pub const MAX_MEMORY: usize = 1 << 30;
/// Wasm stack per call; deeper recursion traps as `stack_overflow`.
pub const MAX_STACK: usize = 512 * 1024;

/// The shared engine and the linker with wasp's host imports. The epoch
/// ticker thread runs for the rest of the process once an engine exists.
#[derive(Clone)]
pub struct Runtime {
    /// The engine.
    pub engine: Engine,
    /// Host imports for the `http-filter` world.
    pub linker: Linker<HostState>,
    /// The largest linear memory an instance can have in this engine: a
    /// filter's `limits.memory` may not be larger (raising it needs a restart).
    pub max_memory: usize,
    /// With a compiled-code cache: the cache, and how a child process
    /// compiles into it (see `compile`).
    pub compile: Option<Compile>,
}

/// Wasm page size: memory limits are rounded up to it.
const PAGE: usize = 64 << 10;
/// A memory slot reserving wasm's whole 32-bit index space and a guard
/// region: Cranelift drops the bounds check on every guest load and store
/// (an access out of bounds faults, and wasmtime turns that into a trap).
const FULL_RESERVATION: u64 = 4 << 30;
const FULL_GUARD: u64 = 32 << 20;
/// The address space the pool may reserve for full slots (mapped without
/// access: no memory until an instance uses it).
const MAX_ADDRESS_SPACE: u64 = 16 << 40;

impl Runtime {
    /// Builds the engine with room for `instances` filter instances at once,
    /// each with at most `max_memory` bytes of linear memory (rounded up to
    /// a page), caching compiled code in `cache` (a folder that cannot be
    /// used is logged, and filters are then compiled on every start), and
    /// starts its epoch ticker.
    ///
    /// The pool reserves address space (never memory) for its slots up
    /// front. A slot reserving 4 GiB and a 32 MiB guard lets the compiled
    /// guest code skip a bounds check on every load and store (16 % fewer
    /// instructions for the auth + rate-limit + header-rewrite chain), so
    /// that is used while the pool fits in 16 TiB (up to 2,032
    /// `filter_instances`) and the process may reserve it. Otherwise (more
    /// instances, or a `ulimit -v`, or valgrind) each slot is sized from the
    /// config, `max_memory` plus a page, and the guest code checks bounds.
    pub fn new(
        instances: u32,
        max_memory: usize,
        cache: Option<&Path>,
        compile_timeout: Duration,
    ) -> Result<Self, String> {
        let max_memory = max_memory.clamp(PAGE, MAX_MEMORY).div_ceil(PAGE) * PAGE;
        let cache = cache.and_then(|dir| match super::compile::cache(dir) {
            Ok(cache) => {
                tracing::debug!(folder = %dir.display(), "compiled filters are cached");
                Some((dir.to_path_buf(), cache))
            }
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %format!("{e:#}"),
                    "cannot use the compiled-filter cache; filters are compiled on every start");
                None
            }
        });
        let full = Slots { reservation: FULL_RESERVATION, guard: FULL_GUARD };
        let sized = Slots { reservation: max_memory as u64, guard: PAGE as u64 };
        let engine = |slots| {
            Engine::new(&config(instances, max_memory, slots, cache.as_ref().map(|(_, c)| c.clone())))
                .map(|e| (e, slots))
        };
        let (engine, slots) = if u64::from(instances) * 2 * (full.reservation + full.guard) <= MAX_ADDRESS_SPACE {
            engine(full).or_else(|e| {
                tracing::info!(error = %format!("{e:#}"),
                    "cannot reserve 4 GiB per filter memory; sizing memory slots from the config (guest code checks bounds)");
                engine(sized)
            })
        } else {
            engine(sized)
        }
        .map_err(|e| format!("cannot start the filter engine: {e:#}"))?;
        let compile = cache.map(|(dir, cache)| Compile {
            settings: Settings { cache: dir, instances, max_memory, slots },
            timeout: compile_timeout,
            cache,
        });
        let mut linker = Linker::new(&engine);
        // Both ABIs' imports: components built for 0.1 and for 0.2 link against the same linker.
        super::v02::HttpFilter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .and_then(|()| super::v01::HttpFilter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s))
            .map_err(|e| format!("cannot link host imports: {e:#}"))?;
        let ticker = engine.clone();
        let thread = std::thread::Builder::new()
            .name("wasp-epoch".into())
            .spawn(move || {
                loop {
                    if GUESTS.load(Ordering::Acquire) == 0 {
                        // Woken by the first guest call (an unpark before this park makes it return at once).
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        TICKERS.lock().unwrap_or_else(|p| p.into_inner()).push(thread.thread().clone());
        Ok(Runtime { engine, linker, max_memory, compile })
    }
}

/// The address space of one linear memory slot in the pool.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    /// Bytes reserved for the memory.
    pub reservation: u64,
    /// Bytes of guard region after it.
    pub guard: u64,
}

/// The engine's settings: a pool of `instances` instances whose memories
/// may grow to `max_memory` in slots of `slots`.
pub fn config(instances: u32, max_memory: usize, slots: Slots, cache: Option<Cache>) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .max_memory_size(max_memory)
        .max_memories_per_component(4)
        .max_tables_per_component(16);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_STACK)
        .memory_reservation(slots.reservation)
        .memory_guard_size(slots.guard)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .cache(cache);
    config
}

/// Guest calls running now, in every engine of the process.
static GUESTS: AtomicUsize = AtomicUsize::new(0);

/// The epoch ticker threads, woken when guest code starts to run.
static TICKERS: Mutex<Vec<std::thread::Thread>> = Mutex::new(Vec::new());

/// Guest code running: epochs tick (so its time limit holds) until dropped.
pub struct Running(());

impl Running {
    /// Marks a guest call as running, waking the tickers if none was.
    pub fn start() -> Self {
        if GUESTS.fetch_add(1, Ordering::AcqRel) == 0 {
            for t in TICKERS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                t.unpark();
            }
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        GUESTS.fetch_sub(1, Ordering::AcqRel);
    }
}
