//! Watches the config file and the filter modules, and reloads what changed
//! ([`Live::reload`]); SIGHUP asks for the same look. Folders, not files,
//! are watched so that every way a file really changes is seen: an in-place
//! write, an atomic rename over the old file, and a Kubernetes
//! ConfigMap/Secret volume swapping its `..data` symlink. Events are
//! debounced, a file being written in place is looked at only once its
//! writer closes it (a half-written config could still be a valid one), and
//! only a file whose content hash changed is reloaded. The set of folders
//! follows the config.

use crate::live::Live;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// Quiet time after the last event before the files are looked at.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// Longest a stream of events can postpone a look.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// Longest a writer that keeps a watched file open can postpone a look.
const MAX_WRITER: Duration = Duration::from_secs(5);

/// Starts watching; runs for the rest of the process. The folders are
/// watched when this returns, so a change made right after start-up is
/// seen. A watch that cannot be set up (inotify limits reached, say) is
/// logged and leaves SIGHUP.
pub async fn spawn(live: Arc<Live>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        // Reads (including wasp's own) are not changes; a writer closing the file is.
        Ok(e) if matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) => {}
        Ok(e) => {
            let _ = tx.send(e);
        }
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    });
    let mut watcher = watcher
        .inspect_err(|e| tracing::warn!(error = %e, "cannot watch the config and filter files; reload with SIGHUP"))
        .ok();
    let mut hangup =
        signal(SignalKind::hangup()).inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP")).ok();
    let mut watched: Vec<PathBuf> = Vec::new();
    let files = live.watched_files().await;
    let mut wanted = names(&files);
    follow(watcher.as_mut(), &mut watched, &files);
    tokio::spawn(async move {
        let mut watching = watcher.is_some();
        loop {
            tokio::select! {
                event = rx.recv(), if watching => {
                    let Some(event) = event else {
                        watching = false;
                        continue;
                    };
                    if !relevant(&event, &wanted) {
                        continue;
                    }
                    settle(&mut rx, event, &wanted).await;
                }
                Some(()) = async { hangup.as_mut()?.recv().await } => {
                    tracing::info!(signal = "SIGHUP", "reload requested");
                }
                else => return,
            }
            live.reload().await;
            let files = live.watched_files().await;
            wanted = names(&files);
            follow(watcher.as_mut(), &mut watched, &files);
        }
    });
}

/// The file names to look for in events: the watched files', and `..data`
/// (a Kubernetes volume swapping its content).
fn names(files: &[PathBuf]) -> Vec<OsString> {
    files.iter().filter_map(|f| f.file_name()).map(Into::into).chain([OsString::from("..data")]).collect()
}

/// Whether `event` is about a watched file (not, say, a log written next to the config).
fn relevant(event: &Event, names: &[OsString]) -> bool {
    event.paths.iter().filter_map(|p| p.file_name()).any(|n| names.iter().any(|w| w.as_os_str() == n))
}

/// Waits until events stop arriving for [`DEBOUNCE`] (at most
/// [`MAX_DELAY`]) and no watched file is still open for writing (at most
/// [`MAX_WRITER`]).
async fn settle(rx: &mut UnboundedReceiver<Event>, first: Event, names: &[OsString]) {
    let mut writing = HashSet::new();
    note(&mut writing, &first, names);
    let start = Instant::now();
    let mut quiet_at = start + DEBOUNCE;
    loop {
        match tokio::time::timeout_at(quiet_at, rx.recv()).await {
            Ok(Some(event)) => {
                note(&mut writing, &event, names);
                quiet_at = (Instant::now() + DEBOUNCE).min(start + MAX_DELAY);
            }
            Ok(None) => return,
            Err(_) if writing.is_empty() => return,
            Err(_) if start.elapsed() > MAX_WRITER => {
                tracing::warn!(files = ?writing, "still open for writing after 5 s; looking at them as they are");
                return;
            }
            Err(_) => quiet_at = Instant::now() + DEBOUNCE,
        }
    }
}

/// Tracks which watched files (by name) are being written in place: data
/// written and the writer not yet closed.
fn note(writing: &mut HashSet<OsString>, event: &Event, names: &[OsString]) {
    let watched =
        event.paths.iter().filter_map(|p| p.file_name()).filter(|n| names.iter().any(|w| w.as_os_str() == *n));
    for name in watched {
        match event.kind {
            EventKind::Modify(ModifyKind::Data(_)) => writing.insert(name.into()),
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => writing.remove(name),
            _ => false,
        };
    }
}

/// Watches the folders holding `files` and stops watching the others; a
/// folder that cannot be watched is logged and tried again after the next reload.
fn follow(watcher: Option<&mut impl Watcher>, watched: &mut Vec<PathBuf>, files: &[PathBuf]) {
    let Some(watcher) = watcher else { return };
    let mut wanted: Vec<PathBuf> = files.iter().map(|f| folder(f)).collect();
    wanted.sort();
    wanted.dedup();
    for dir in watched.iter().filter(|d| !wanted.contains(d)) {
        let _ = watcher.unwatch(dir);
    }
    let mut failed = Vec::new();
    for dir in wanted.iter().filter(|d| !watched.contains(d)) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(folder = %dir.display(), error = %e, "cannot watch for changes");
            failed.push(dir.clone());
        }
    }
    if watched.is_empty() && !wanted.is_empty() {
        tracing::info!(folders = wanted.len(), "watching the config and filter modules for changes");
    }
    *watched = wanted.into_iter().filter(|d| !failed.contains(d)).collect();
}

/// The folder holding `path` (`.` for a bare file name).
pub fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
