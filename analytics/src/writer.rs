//! From the request path to the usage store without ever blocking a request.
//!
//! The gateway hands each event to a [`UsageRecorder`], which puts it in a
//! bounded in-memory queue with `try_send` (never waits). One [`UsageWriter`]
//! task takes events off the queue in batches and writes a batch when it is
//! full or when the flush interval has passed, whichever comes first. The
//! writer sleeps in between: the recorder wakes it only when a full batch is
//! queued, not for every event (a wake-up per event cost the serving thread
//! more than the event itself). A failed
//! write is retried with back-off, keeping the batch; while it retries the queue
//! absorbs new events, and an event that finds the queue full is dropped and
//! counted (the durable spool that removes this loss comes with the metering
//! work). Shutdown closes the queue, drains it and writes what is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, mpsc, watch};

use crate::event::UsageEvent;
use crate::store::UsageStore;

/// Counters of the usage path, for metrics and tests.
#[derive(Debug, Default)]
pub struct UsageStats {
    /// Events written to the store.
    pub written: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Events dropped because the writer had stopped.
    pub dropped_stopped: AtomicU64,
    /// Events given up after failed writes at shutdown.
    pub dropped_write_failed: AtomicU64,
    /// Failed write attempts (each retried).
    pub write_failures: AtomicU64,
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct UsageRecorder {
    tx: mpsc::Sender<UsageEvent>,
    stats: Arc<UsageStats>,
    last_warning: Arc<Mutex<Option<Instant>>>,
    /// Wakes the writer when a full batch is queued.
    batch_full: Arc<Notify>,
    batch_size: usize,
}

impl UsageRecorder {
    /// Queues an event; if the queue is full the event is dropped and counted.
    pub fn record(&self, event: UsageEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {
                if self.queue_depth() >= self.batch_size {
                    self.batch_full.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                self.warn_dropped("usage queue full; dropping events");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.dropped_stopped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<UsageStats> {
        &self.stats
    }

    fn warn_dropped(&self, what: &str) {
        // At most one warning every ten seconds, with the running total.
        if let Ok(mut last) = self.last_warning.try_lock()
            && last.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            *last = Some(Instant::now());
            tracing::warn!(
                dropped_total = self.stats.dropped_queue_full.load(Ordering::Relaxed),
                "{what}"
            );
        }
    }
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Longest time an event waits before it is written.
    pub flush_interval: Duration,
    /// Most events in one insert.
    pub batch_size: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
}

/// The batching writer task.
#[derive(Debug)]
pub struct UsageWriter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<UsageStats>,
}

impl UsageWriter {
    /// Starts a writer into `store`; returns the recorder for the request path.
    pub fn start(store: UsageStore, settings: WriterSettings) -> (UsageRecorder, Self) {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let stats = Arc::new(UsageStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let batch_full = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            store,
            rx,
            stop_rx,
            batch_full.clone(),
            settings,
            stats.clone(),
        ));
        (
            UsageRecorder {
                tx,
                stats: stats.clone(),
                last_warning: Arc::new(Mutex::new(None)),
                batch_full,
                batch_size: settings.batch_size.max(1),
            },
            Self { stop, task, stats },
        )
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<UsageStats> {
        &self.stats
    }

    /// Stops taking events, writes everything queued, and returns when done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "usage writer task failed");
        }
    }
}

async fn run(
    store: UsageStore,
    mut rx: mpsc::Receiver<UsageEvent>,
    mut stop: watch::Receiver<bool>,
    batch_full: Arc<Notify>,
    settings: WriterSettings,
    stats: Arc<UsageStats>,
) {
    let batch_size = settings.batch_size.max(1);
    let mut batch: Vec<UsageEvent> = Vec::with_capacity(batch_size);
    let mut ticker = tokio::time::interval(settings.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let interval_passed = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
            () = batch_full.notified() => false,
            _ = ticker.tick() => true,
        };
        // Full batches are written as they fill up; when the interval has
        // passed, everything queued. A partial batch otherwise stays in the
        // queue, where the recorder counts it towards the next full batch.
        while rx.len() >= batch_size || (interval_passed && !rx.is_empty()) {
            rx.recv_many(&mut batch, batch_size).await;
            write(&store, &mut batch, &stats, false).await;
        }
        if rx.is_closed() && rx.is_empty() {
            break; // every recorder is gone
        }
    }
    // Drain: refuse new events, write what is queued.
    rx.close();
    loop {
        let room = batch_size - batch.len();
        if rx.recv_many(&mut batch, room).await == 0 {
            break;
        }
        if batch.len() >= batch_size {
            write(&store, &mut batch, &stats, true).await;
        }
    }
    write(&store, &mut batch, &stats, true).await;
}

/// Writes and clears `batch`, retrying failures with back-off. While serving it
/// retries until the store answers; at shutdown it gives up after a few tries
/// and counts the loss.
async fn write(
    store: &UsageStore,
    batch: &mut Vec<UsageEvent>,
    stats: &UsageStats,
    stopping: bool,
) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match store.insert(batch).await {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return;
            }
            Err(e) => {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
                if stopping && attempts >= 5 {
                    tracing::error!(error = %e, events = batch.len(), "giving up writing usage events at shutdown");
                    stats
                        .dropped_write_failed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                tracing::warn!(error = %e, events = batch.len(), retry_in_ms = delay.as_millis() as u64, "writing usage events failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
