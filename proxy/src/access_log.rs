//! The access log: one JSON line per HTTP request or TCP connection, written
//! by a background task so that a slow or failing sink never delays or fails
//! a request. Lines that cannot be queued are dropped and counted
//! (`wasp_access_log_dropped_total`); write errors are counted
//! (`wasp_access_log_errors_total`) and logged, never propagated.

use crate::config::AccessLogTarget;
use prometheus::IntCounter;
use std::io;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

/// Lines queued before new ones are dropped.
const QUEUE: usize = 16 * 1024;

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the access-log writer; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Msg>>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Opens the target and starts the writer task (needs a Tokio runtime).
    pub async fn start(target: &AccessLogTarget, dropped: IntCounter, errors: IntCounter) -> io::Result<Self> {
        let sink: Box<dyn AsyncWrite + Send + Unpin> = match target {
            AccessLogTarget::Off => return Ok(AccessLog { tx: None, dropped }),
            AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(rx, BufWriter::new(sink), errors));
        Ok(AccessLog { tx: Some(tx), dropped })
    }

    /// A log that writes nothing.
    pub fn off(dropped: IntCounter) -> Self {
        AccessLog { tx: None, dropped }
    }

    /// Whether lines are written at all (callers skip formatting when not).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line (without its newline); drops it if the writer is behind.
    pub fn write(&self, mut line: Vec<u8>) {
        if let Some(tx) = &self.tx {
            line.push(b'\n');
            if tx.try_send(Msg::Line(line)).is_err() {
                self.dropped.inc();
            }
        }
    }

    /// Waits until every line queued so far is written.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

async fn write_lines(
    mut rx: mpsc::Receiver<Msg>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    errors: IntCounter,
) {
    let mut failing = false;
    while let Some(msg) = rx.recv().await {
        let mut waiters = Vec::new();
        let mut next = Some(msg);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    let r = out.write_all(&line).await;
                    note(r, &errors, &mut failing);
                }
                Msg::Flush(done) => waiters.push(done),
            }
            next = rx.try_recv().ok();
        }
        let r = out.flush().await;
        note(r, &errors, &mut failing);
        for w in waiters {
            let _ = w.send(());
        }
    }
}

fn note(result: io::Result<()>, errors: &IntCounter, failing: &mut bool) {
    match result {
        Ok(()) => *failing = false,
        Err(e) => {
            errors.inc();
            if !*failing {
                tracing::warn!(error = %e, "access log write failed; requests are unaffected");
            }
            *failing = true;
        }
    }
}

/// Current time as RFC 3339 with milliseconds, for the `ts` field.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
