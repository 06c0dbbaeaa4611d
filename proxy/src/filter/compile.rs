//! Compiling a filter in a child process. Cranelift needs tens of MiB of heap
//! to compile a component, and glibc keeps most of it in the process after
//! the compile ends (about 12 MiB of RSS for one small filter, which neither
//! `malloc_trim` nor fewer arenas gave back). So when compiled code has a
//! cache folder, wasp runs itself (`/proc/self/exe compile-filter`) with the
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

/// What became of a compile in the child.
enum Child {
    /// The module is compiled into the cache.
    Cached,
    /// The module does not compile: the child's message.
    Refused(String),
    /// The child could not run; compile here instead.
    Unavailable(String),
}

/// Compiles `bytes` (in a child process when `runtime` has a cache folder)
/// and loads the component. The error is the root cause, in one line.
pub fn component(runtime: &Runtime, bytes: &[u8]) -> Result<Component, String> {
    let misses = runtime.cache.as_ref().map(Cache::cache_misses);
    let child = runtime.compile.as_ref().map(|settings| in_child(settings, bytes));
    match &child {
        Some(Child::Refused(message)) => return Err(message.clone()),
        Some(Child::Unavailable(why)) => {
            tracing::warn!(error = %why, "cannot compile the filter in a child process; compiling it in the proxy")
        }
        Some(Child::Cached) | None => {}
    }
    let component = Component::from_binary(&runtime.engine, bytes).map_err(|e| super::loaded::root_cause(&e))?;
    let compiled_here = runtime.cache.as_ref().map(Cache::cache_misses) != misses;
    if matches!(child, Some(Child::Cached)) && compiled_here {
        tracing::warn!("the filter compiled in a child process was not found in the cache; compiled it in the proxy");
    }
    Ok(component)
}

/// Runs `/proc/self/exe compile-filter …` with `bytes` on its stdin.
fn in_child(settings: &Settings, bytes: &[u8]) -> Child {
    let spawned = Command::new("/proc/self/exe")
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
        Err(e) => return Child::Unavailable(format!("cannot start /proc/self/exe: {e}")),
    };
    // The child reads all of stdin before it writes anything, so writing first cannot deadlock.
    // A write error means the child exited early; its status and stderr say why.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(bytes);
    }
    let mut stderr = String::new();
    if let Some(pipe) = child.stderr.take() {
        let _ = pipe.take(64 << 10).read_to_string(&mut stderr);
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(e) => return Child::Unavailable(format!("cannot wait for the compile process: {e}")),
    };
    let stderr = stderr.trim();
    match status.code() {
        Some(0) => Child::Cached,
        Some(1) if !stderr.is_empty() => Child::Refused(stderr.to_string()),
        Some(code) => Child::Unavailable(format!("the compile process exited with status {code}: {stderr}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or_default();
            Child::Refused(format!(
                "compiling it was killed by signal {signal}{}",
                if signal == 9 { " (out of memory?)" } else { "" }
            ))
        }
    }
}

/// The child: compiles the module on stdin into `settings.cache` with an
/// engine built like the proxy's. Exit 0 when it is cached, 1 with the root
/// cause on stderr when it does not compile, 2 when the engine cannot start.
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
            ExitCode::FAILURE
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
