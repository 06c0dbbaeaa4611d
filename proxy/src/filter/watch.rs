//! Watches the folders that hold filter modules and reloads the filters
//! whose file changed. Folders, not files, are watched so that every way a
//! file really changes is seen: an in-place write (reloaded once the writer
//! closes it; a half-written file fails to load and is tried again when the
//! write completes), an atomic rename over the old file, and a Kubernetes
//! ConfigMap/Secret volume swapping its `..data` symlink. Events are
//! debounced, and a filter is reloaded only if its content hash changed.

use super::registry::Registry;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;

/// Quiet time after the last event before the files are looked at.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// Longest a stream of events can postpone a look.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Starts watching; runs for the rest of the process.
pub fn spawn(registry: Arc<Registry>) -> Result<(), String> {
    let dirs = registry.module_dirs();
    if dirs.is_empty() {
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Reads (including wasp's own) are not changes; a writer closing the file is.
        Ok(e) if matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(e) => tracing::warn!(error = %e, "filter file watch error"),
    })
    .map_err(|e| format!("cannot watch filter modules: {e}"))?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {} for filter changes: {e}", dir.display()))?;
    }
    tracing::info!(folders = dirs.len(), "watching filter modules for changes");
    tokio::spawn(async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            let start = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(DEBOUNCE).await;
                let mut more = false;
                while rx.try_recv().is_ok() {
                    more = true;
                }
                if !more || start.elapsed() > MAX_DELAY {
                    break;
                }
            }
            let registry = registry.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || registry.refresh()).await {
                tracing::error!(error = %e, "filter reload task failed");
            }
        }
    });
    Ok(())
}
