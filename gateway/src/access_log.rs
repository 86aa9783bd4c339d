//! The optional structured access log: one JSON object per answered call on
//! standard output, written by a background task so the request path never
//! waits on the terminal or a pipe. Lines that find the buffer full are dropped
//! and counted.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_analytics::UsageEvent;

/// Lines waiting to be written before new ones are dropped.
const BUFFER_LINES: usize = 65_536;

/// Handle for the request path; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer task on standard output.
    pub fn start() -> Self {
        let (tx, mut rx) = mpsc::channel::<String>(BUFFER_LINES);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while rx.recv_many(&mut batch, 256).await > 0 {
                let lines = std::mem::take(&mut batch);
                // Writing to stdout may block: do it off the async workers.
                let written = tokio::task::spawn_blocking(move || {
                    let mut out = std::io::stdout().lock();
                    for line in &lines {
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.write_all(b"\n");
                    }
                    let _ = out.flush();
                })
                .await;
                if written.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues one call's line.
    pub fn record(&self, event: &UsageEvent) {
        let line = match serde_json::to_string(event) {
            Ok(l) => l,
            Err(_) => return,
        };
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
