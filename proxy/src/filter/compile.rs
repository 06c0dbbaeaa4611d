//! Compiling a filter in a child process. Cranelift needs tens of MiB of heap
//! to compile a component, and glibc keeps most of it in the process after
//! the compile ends (about 12 MiB of RSS for one small filter, which neither
//! `malloc_trim` nor fewer arenas gave back). So when compiled code has a
//! cache folder, wasp runs itself (`wasp compile-filter`, the running binary) with the
//! same engine settings to compile the module into that cache, and then
//! loads it from there as a restart would: the proxy's heap never holds the
//! compiler's. A compiler crash or an out-of-memory kill takes down the
//! child, not the proxy, and is reported as the filter's load error.
//!
//! Without a cache folder (`filter_cache: off`, or one that cannot be used)
//! filters are compiled in the proxy, as they are when the child cannot be
//! started (for example `/proc` not mounted).

use super::runtime::{Runtime, Slots, config};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Engine};

/// How the child builds an engine identical to the proxy's (the cache key
/// covers the engine's settings, so any difference would make the proxy
/// miss the cache and compile after all).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cache folder both processes use.
    pub cache: PathBuf,
    /// `filter_instances`.
    pub instances: u32,
    /// The largest linear memory, in bytes.
    pub max_memory: usize,
    /// The memory slots the proxy's engine got.
    pub slots: Slots,
}

/// Compiling in a child process: its engine, how long it may take, and the
/// proxy's handle on the cache it compiles into.
#[derive(Clone, Debug)]
pub struct Compile {
    /// The child's engine settings.
    pub settings: Settings,
    /// `filter_compile_timeout`: the child is killed after it.
    pub timeout: Duration,
    /// The proxy engine's cache (its hit and miss counters).
    pub cache: Cache,
}

/// Why a module was not loaded.
#[derive(Debug)]
pub enum NotCompiled {
    /// It is not a valid component: the compiler's message.
    Invalid(String),
    /// Compiling it was stopped (time limit) or killed (by a signal).
    Stopped(String),
}

/// What became of a compile in the child.
enum Child {
    /// The module is compiled into the cache.
    Cached,
    /// The module was not compiled.
    Refused(NotCompiled),
    /// The child could not run; compile here instead.
    Unavailable(String),
}

/// Compiles `bytes` (in a child process when `runtime` has a cache folder)
/// and loads the component. The error's message is one line.
pub fn component(runtime: &Runtime, bytes: &[u8]) -> Result<Component, NotCompiled> {
    let here = || {
        Component::from_binary(&runtime.engine, bytes).map_err(|e| NotCompiled::Invalid(super::loaded::root_cause(&e)))
    };
    let Some(compile) = &runtime.compile else { return here() };
    let misses = compile.cache.cache_misses();
    let cached = match in_child(compile, bytes) {
        Child::Cached => true,
        Child::Refused(why) => return Err(why),
        Child::Unavailable(why) => {
            tracing::warn!(error = %why, "cannot compile the filter in a child process; compiling it in the proxy");
            false
        }
    };
    let component = here()?;
    if cached && compile.cache.cache_misses() != misses {
        tracing::warn!("the filter compiled in a child process was not found in the cache; compiled it in the proxy");
    }
    Ok(component)
}

/// Runs `wasp compile-filter …` (this binary) with `bytes` on its stdin,
/// and kills it if it takes longer than `compile.timeout`.
fn in_child(compile: &Compile, bytes: &[u8]) -> Child {
    let settings = &compile.settings;
    // The running binary's path (under valgrind, the program's, not valgrind's).
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let spawned = Command::new(&exe)
        .arg("compile-filter")
        .arg("--cache")
        .arg(&settings.cache)
        .args(["--instances", &settings.instances.to_string()])
        .args(["--max-memory", &settings.max_memory.to_string()])
        .args(["--reservation", &settings.slots.reservation.to_string()])
        .args(["--guard", &settings.slots.guard.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Child::Unavailable(format!("cannot start {}: {e}", exe.display())),
    };
    // Fed and drained by threads, so a child that stops reading or writes a lot
    // cannot block this one past the time limit. A write error means the child
    // exited early; its status and stderr say why.
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || stdin.write_all(&bytes));
    }
    let reader = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text.truncate(4096);
            String::from_utf8_lossy(&text).into_owned()
        })
    });
    let deadline = Instant::now() + compile.timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Child::Refused(NotCompiled::Stopped(format!(
                    "compiling it took longer than filter_compile_timeout ({}); stopped",
                    humantime::format_duration(compile.timeout)
                )));
            }
            Ok(None) => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Child::Unavailable(format!("cannot wait for the compile process: {e}")),
        }
    };
    let stderr = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    let stderr = stderr.trim();
    match status.code() {
        Some(0) => Child::Cached,
        Some(REFUSED) => Child::Refused(NotCompiled::Invalid(stderr.to_string())),
        Some(code) => Child::Unavailable(format!("the compile process exited with status {code}: {stderr}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or_default();
            Child::Refused(NotCompiled::Stopped(format!(
                "compiling it was killed by signal {signal}{}",
                if signal == 9 { " (out of memory?)" } else { "" }
            )))
        }
    }
}

/// The child's exit status for a module that does not compile (`EX_DATAERR`);
/// any other failure means the child could not do its job, and the proxy
/// compiles the module itself.
const REFUSED: i32 = 65;

/// The child: compiles the module on stdin into `settings.cache` with an
/// engine built like the proxy's. Exit 0 when it is cached, [`REFUSED`] with
/// the root cause on stderr when it does not compile, 2 when it cannot work.
pub fn child_main(settings: &Settings) -> ExitCode {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the module: {e}");
        return ExitCode::from(2);
    }
    let engine = match engine(settings) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match Component::from_binary(&engine, &bytes) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", super::loaded::root_cause(&e));
            ExitCode::from(REFUSED as u8)
        }
    }
}

fn engine(settings: &Settings) -> Result<Engine, String> {
    let cache = cache(&settings.cache).map_err(|e| format!("cannot use the cache folder: {e:#}"))?;
    let config = config(settings.instances, settings.max_memory, settings.slots, Some(cache));
    Engine::new(&config).map_err(|e| format!("cannot start the filter engine: {e:#}"))
}

/// wasmtime's compiled-code cache in `dir`.
pub fn cache(dir: &Path) -> wasmtime::Result<Cache> {
    Cache::new(CacheConfig::new().with_directory(dir).clone())
}
