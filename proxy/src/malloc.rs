//! glibc's allocator, sized for a proxy's traffic.
//!
//! A request allocates a handful of small blocks (its exchange, the
//! upstream request, the two heads' buffers, a couple of header values)
//! and frees them when its response ends. glibc keeps freed blocks in a
//! per-thread cache, but only 7 of a size: with tens of requests in flight
//! on a worker the rest go through the arena's bins, under its lock, on
//! every allocation and every free. The cache's depth is a tunable that
//! glibc reads from the environment once, before `main`; so a serving wasp
//! started without it starts itself again, once, with
//! `GLIBC_TUNABLES=glibc.malloc.tcache_count=64` added. Measured with
//! bench/ab.sh (HTTP/1.1 keep-alive, 50 connections, release build): at
//! a depth of 256, 8.25 → 8.12 µs CPU a request (lower in 6 of 6 rounds),
//! 24,650 → 24,307 instructions; 64 against 256: 8.56 against 8.64 µs
//! (lower in 6 of 8). The price is memory a thread keeps in free blocks:
//! bench/soak.py's 500 req/s through two filters on two workers holds
//! 17.7 MiB with glibc's default, 19.5 at 64, 28.3 at 256.
//!
//! An operator's own `tcache_count` in `GLIBC_TUNABLES` is left as it is,
//! and so is a process that cannot start itself again: it serves as
//! before. Nor is it done under valgrind, which would not follow it
//! (bench/instr.sh and bench/run.sh set the same tunable for their valgrind
//! runs). `WASP_MALLOC_TUNED` marks the second start, so that a
//! loader that drops `GLIBC_TUNABLES` (secure execution) cannot make it loop.

use std::ffi::OsString;

/// The tunable and the depth asked for.
const TUNABLE: &str = "glibc.malloc.tcache_count";
const DEPTH: u32 = 64;
/// Set on the second start.
const MARK: &str = "WASP_MALLOC_TUNED";

/// Starts this process again with the cache depth set, unless it already
/// has it (or cannot): returns only then.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    use std::os::unix::process::CommandExt;
    // Under valgrind (its preload library in place) a second start would
    // leave the tool behind: the measurement would end there.
    if std::env::var_os("LD_PRELOAD").is_some_and(|p| p.to_string_lossy().contains("vgpreload")) {
        return;
    }
    let Some(tunables) = tunables(std::env::var_os("GLIBC_TUNABLES"), std::env::var_os(MARK).is_some()) else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "wasp".into());
    // The running binary's path (under valgrind, the program's, not valgrind's).
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    // `exec` returns only if it failed; serving untuned is still serving.
    let _ = std::process::Command::new(exe).arg0(arg0).args(args).env("GLIBC_TUNABLES", tunables).env(MARK, "1").exec();
}

/// Elsewhere there is nothing to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// The `GLIBC_TUNABLES` to start again with, given the current one; `None`
/// when it already names the cache depth or this is the second start.
fn tunables(current: Option<OsString>, marked: bool) -> Option<OsString> {
    if marked {
        return None;
    }
    let setting = format!("{TUNABLE}={DEPTH}");
    match current {
        Some(c) if c.to_string_lossy().contains(TUNABLE) => None,
        Some(c) if !c.is_empty() => {
            let mut joined = c;
            joined.push(":");
            joined.push(setting);
            Some(joined)
        }
        _ => Some(setting.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_is_added_to_what_the_operator_set() {
        assert_eq!(tunables(None, false), Some("glibc.malloc.tcache_count=64".into()));
        assert_eq!(tunables(Some("".into()), false), Some("glibc.malloc.tcache_count=64".into()));
        assert_eq!(
            tunables(Some("glibc.malloc.arena_max=2".into()), false),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=64".into())
        );
    }

    #[test]
    fn an_operators_depth_or_a_second_start_is_left_alone() {
        assert_eq!(tunables(Some("glibc.malloc.tcache_count=16".into()), false), None);
        assert_eq!(tunables(None, true), None);
    }
}
