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

/// Starts watching; runs for the rest of the process.
pub fn spawn(live: Arc<Live>) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        // Reads (including wasp's own) are not changes; a writer closing the file is.
        Ok(e) if matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) => {}
        Ok(e) => {
            let _ = tx.send(e);
        }
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })
    .map_err(|e| format!("cannot watch the config and filter files: {e}"))?;
    let mut watched: Vec<PathBuf> = Vec::new();
    follow(&mut watcher, &mut watched, &live.watched_files())?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    settle(&mut rx, event, &live.watched_files()).await;
                }
                _ = hangup.recv() => tracing::info!(signal = "SIGHUP", "reload requested"),
            }
            live.reload().await;
            if let Err(e) = follow(&mut watcher, &mut watched, &live.watched_files()) {
                tracing::warn!(error = %e, "watch");
            }
        }
    });
    Ok(())
}

/// Waits until events stop arriving for [`DEBOUNCE`] (at most
/// [`MAX_DELAY`]) and no watched file is still open for writing (at most
/// [`MAX_WRITER`]).
async fn settle(rx: &mut UnboundedReceiver<Event>, first: Event, files: &[PathBuf]) {
    let names: Vec<OsString> = files.iter().filter_map(|f| f.file_name()).map(Into::into).collect();
    let mut writing = HashSet::new();
    note(&mut writing, &first, &names);
    let start = Instant::now();
    let mut quiet_at = start + DEBOUNCE;
    loop {
        match tokio::time::timeout_at(quiet_at, rx.recv()).await {
            Ok(Some(event)) => {
                note(&mut writing, &event, &names);
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

/// Watches the folders holding `files` and stops watching the others.
fn follow(watcher: &mut impl Watcher, watched: &mut Vec<PathBuf>, files: &[PathBuf]) -> Result<(), String> {
    let mut wanted: Vec<PathBuf> = files.iter().map(|f| folder(f)).collect();
    wanted.sort();
    wanted.dedup();
    for dir in watched.iter().filter(|d| !wanted.contains(d)) {
        let _ = watcher.unwatch(dir);
    }
    let (mut errors, mut failed) = (Vec::new(), Vec::new());
    for dir in wanted.iter().filter(|d| !watched.contains(d)) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            errors.push(format!("cannot watch {} for changes: {e}", dir.display()));
            failed.push(dir.clone());
        }
    }
    if watched.is_empty() && !wanted.is_empty() {
        tracing::info!(folders = wanted.len(), "watching the config and filter modules for changes");
    }
    // A folder that could not be watched is tried again after the next reload.
    *watched = wanted.into_iter().filter(|d| !failed.contains(d)).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

/// The folder holding `path` (`.` for a bare file name).
pub fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
