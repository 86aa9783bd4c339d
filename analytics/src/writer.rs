//! From the request path to the usage store without ever blocking a request,
//! through the durable spool.
//!
//! 1. The gateway hands each event to a [`UsageRecorder`], which puts it in a
//!    bounded in-memory queue with `try_send` (never waits). A full queue drops
//!    the event and counts it.
//! 2. The spool thread (an OS thread: file writes and `fdatasync` must not stall
//!    a runtime worker) takes the queued events every sync interval — sooner
//!    when a full batch is queued: the recorder wakes it then, not for every
//!    event —, encodes them into records ([`crate::record`]), appends them to
//!    the spool and syncs it. It seals the open segment every flush interval
//!    (or when it is full) and hands it to the shipper. A full spool (the size
//!    cap) or a disk error drops the events and counts them by reason. A disk
//!    error also seals the segment, which is shipped with what it holds; the
//!    next append tries the disk again in a new one. Drops and disk errors are
//!    logged at most once per reason every ten seconds, never per event.
//! 3. The shipper task reads sealed segments oldest first, inserts their events
//!    into the store in batches, and deletes a segment once the store has
//!    confirmed all of it. A failed insert is retried with back-off for as
//!    long as the store stays away; the spool absorbs the outage. A segment
//!    found at start (not shipped by the previous run), and every retry after a
//!    failed or timed-out insert (whose outcome is unknown), is written with
//!    [`UsageStore::insert_once`], so no event is counted twice.
//!
//! Shutdown stops the queue, the spool thread writes and seals what it holds,
//! and the shipper ships what the store accepts; what it cannot ship stays on
//! disk for the next start. A SIGKILL loses at most what was recorded since the
//! spool thread's last pass (one sync interval): the rest is on disk.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::event::UsageEvent;
use crate::record::{self, RecordEncoder, SpooledRecord};
use crate::spool::{self, Segment, SpoolLimits, SpoolStats, SpoolWriter};
use crate::store::UsageStore;

/// Longest wait for the store to answer one insert; past it the outcome is
/// unknown and the batch is retried with `insert_once`.
const INSERT_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, a segment is left on disk after this many failed inserts.
const SHUTDOWN_ATTEMPTS: u32 = 3;
/// Segments shipped at once: a ClickHouse insert keeps about one core busy on
/// the server, and reading the next segment overlaps the insert of this one.
const SHIPPERS: usize = 2;
/// At most one warning per drop reason in this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Counters of the usage path, for metrics and tests.
#[derive(Debug)]
pub struct UsageStats {
    /// Events the store confirmed (shipped).
    pub written: AtomicU64,
    /// Events appended to the spool.
    pub spooled: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Events dropped because the writer had stopped.
    pub dropped_stopped: AtomicU64,
    /// Events dropped because the spool held its maximum size.
    pub dropped_spool_full: AtomicU64,
    /// Events dropped because the spool could not be written (disk error).
    pub dropped_spool_error: AtomicU64,
    /// Spool records that passed their checksum but could not be decoded
    /// (records, not events: how many events they held is unknown).
    pub dropped_corrupt: AtomicU64,
    /// Failed insert attempts (each retried).
    pub write_failures: AtomicU64,
    /// Segments found at start and replayed.
    pub replayed_segments: AtomicU64,
    /// Seconds per successful insert.
    pub insert_seconds: Histogram,
    /// The spool's own counters (bytes and segments on disk, torn tails).
    pub spool: Arc<SpoolStats>,
}

impl Default for UsageStats {
    fn default() -> Self {
        Self {
            written: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_stopped: AtomicU64::new(0),
            dropped_spool_full: AtomicU64::new(0),
            dropped_spool_error: AtomicU64::new(0),
            dropped_corrupt: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            replayed_segments: AtomicU64::new(0),
            // 1 ms to about 33 s.
            insert_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            spool: Arc::new(SpoolStats::default()),
        }
    }
}

/// What a warning of [`DropWarnings`] is about.
#[derive(Debug, Clone, Copy)]
enum Warning {
    QueueFull,
    SpoolFull,
    /// The disk refused a write or a sync of the spool.
    Disk,
}

/// Warns about drops at most once per interval and reason, with the total.
#[derive(Debug, Default)]
struct DropWarnings {
    last: [Option<Instant>; 3],
}

impl DropWarnings {
    fn warn(&mut self, reason: Warning, total: u64, what: &str) {
        let last = &mut self.last[reason as usize];
        if last.is_none_or(|t| t.elapsed() > WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(dropped_total = total, "{what}");
        }
    }
}

/// The request path's handle: cheap to clone (one reference count; each
/// call's meter holds one), never blocks.
#[derive(Clone, Debug)]
pub struct UsageRecorder(Arc<Recorder>);

#[derive(Debug)]
struct Recorder {
    tx: mpsc::Sender<UsageEvent>,
    stats: Arc<UsageStats>,
    last_warning: std::sync::Mutex<DropWarnings>,
    /// The spool thread, woken when `wake_at` events are queued.
    spool_thread: Thread,
    wake_at: usize,
}

impl UsageRecorder {
    /// Queues an event; if the queue is full the event is dropped and counted.
    pub fn record(&self, event: UsageEvent) {
        let this = &*self.0;
        match this.tx.try_send(event) {
            Ok(()) => {
                if self.queue_depth() >= this.wake_at {
                    this.spool_thread.unpark();
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let total = this
                    .stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if let Ok(mut w) = this.last_warning.try_lock() {
                    w.warn(
                        Warning::QueueFull,
                        total,
                        "usage queue full; dropping events",
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                this.stats.dropped_stopped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.0.tx.max_capacity() - self.0.tx.capacity()
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<UsageStats> {
        &self.0.stats
    }
}

/// How the writer batches and spools.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Longest time an event waits on disk before its segment is shipped.
    pub flush_interval: Duration,
    /// Most events in one insert.
    pub batch_size: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// The spool root (normally `<data dir>/spool`); this process claims a
    /// slot in it.
    pub spool_dir: PathBuf,
    /// How often queued events are appended to the spool and synced to disk.
    pub sync_interval: Duration,
    /// Most bytes the spool holds on disk; beyond it events are dropped.
    pub spool_max_bytes: u64,
}

impl WriterSettings {
    /// Defaults with the spool under `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            batch_size: 100_000,
            queue_capacity: 100_000,
            spool_dir: data_dir.join("spool"),
            sync_interval: Duration::from_millis(200),
            spool_max_bytes: SpoolLimits::default().max_bytes,
        }
    }
}

/// Tells the spool thread to stop.
#[derive(Debug, Default)]
struct Stop(AtomicBool);

/// The spool thread and the shipper task.
#[derive(Debug)]
pub struct UsageWriter {
    stop: Arc<Stop>,
    spool_thread: std::thread::JoinHandle<()>,
    shipper: tokio::task::JoinHandle<()>,
    stats: Arc<UsageStats>,
    spool_dir: PathBuf,
}

impl UsageWriter {
    /// Claims a spool slot, starts the spool thread and the shipper (which
    /// first replays what a previous run left); returns the recorder for the
    /// request path. Must run inside a Tokio runtime.
    pub fn start(
        store: UsageStore,
        settings: WriterSettings,
    ) -> std::io::Result<(UsageRecorder, Self)> {
        let stats = Arc::new(UsageStats::default());
        let claim = spool::claim(&settings.spool_dir)?;
        let limits = SpoolLimits {
            // Small caps (tests, tiny disks) still get several segments.
            segment_bytes: SpoolLimits::default()
                .segment_bytes
                .min(settings.spool_max_bytes / 8)
                .max(4096),
            max_bytes: settings.spool_max_bytes,
        };
        let (spool, left) = SpoolWriter::open(&claim.dir, limits, stats.spool.clone())?;
        if !left.is_empty() {
            tracing::info!(
                segments = left.len(),
                adopted = claim.adopted,
                bytes = left.iter().map(|s| s.bytes).sum::<u64>(),
                dir = %claim.dir.display(),
                "replaying usage spool segments not shipped before"
            );
        }
        let spool_dir = claim.dir.clone();
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let (sealed_tx, sealed_rx) = mpsc::unbounded_channel();
        let stop = Arc::new(Stop::default());
        let spool_thread = {
            let stats = stats.clone();
            let stop = stop.clone();
            let settings = settings.clone();
            std::thread::Builder::new()
                .name("usage-spool".into())
                .spawn(move || {
                    crate::priority::lower_this_thread();
                    // The claim's lock lives as long as the thread writes.
                    let _claim = claim;
                    spool_loop(rx, spool, sealed_tx, &stop, &settings, &stats);
                })?
        };
        let shipper = tokio::spawn(ship_loop(
            store,
            sealed_rx,
            left,
            settings.batch_size.max(1),
            stats.clone(),
        ));
        let recorder = UsageRecorder(Arc::new(Recorder {
            tx,
            stats: stats.clone(),
            last_warning: std::sync::Mutex::default(),
            spool_thread: spool_thread.thread().clone(),
            // Early enough that a burst never fills the queue between passes.
            wake_at: settings.batch_size.min(settings.queue_capacity / 4).max(1),
        }));
        Ok((
            recorder,
            Self {
                stop,
                spool_thread,
                shipper,
                stats,
                spool_dir,
            },
        ))
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<UsageStats> {
        &self.stats
    }

    /// The spool slot this writer holds.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    /// Stops taking events, spools everything queued, ships what the store
    /// accepts and returns; the rest stays on disk for the next start.
    pub async fn shutdown(self) {
        self.stop.0.store(true, Ordering::Release);
        self.spool_thread.thread().unpark();
        let thread = self.spool_thread;
        if let Err(e) = tokio::task::spawn_blocking(move || thread.join()).await {
            tracing::error!(error = %e, "usage spool thread failed");
        }
        if let Err(e) = self.shipper.await {
            tracing::error!(error = %e, "usage shipper task failed");
        }
    }
}

/// Appends the encoder's record to the spool, counting what is refused, and
/// hands the segment to the shipper once it is full.
fn append(
    enc: &mut RecordEncoder,
    buf: &mut Vec<u8>,
    spool: &mut SpoolWriter,
    sealed: &mpsc::UnboundedSender<Segment>,
    stats: &UsageStats,
    warnings: &mut DropWarnings,
) -> bool {
    let events = enc.len() as u64;
    enc.finish(buf);
    match spool.append(buf) {
        Ok(()) => {
            stats.spooled.fetch_add(events, Ordering::Relaxed);
            if spool.segment_full() {
                seal(spool, sealed, stats, warnings);
            }
            true
        }
        Err(spool::AppendError::Full(bytes)) => {
            let total = stats
                .dropped_spool_full
                .fetch_add(events, Ordering::Relaxed)
                + events;
            warnings.warn(
                Warning::SpoolFull,
                total,
                &format!(
                    "usage spool full ({bytes} bytes, the cap); dropping events until the store catches up"
                ),
            );
            false
        }
        Err(spool::AppendError::Write(e)) => {
            stats
                .dropped_spool_error
                .fetch_add(events, Ordering::Relaxed);
            disk_error(e, "dropping events", sealed, stats, warnings);
            false
        }
    }
}

/// Seals the segment being written and hands it to the shipper.
fn seal(
    spool: &mut SpoolWriter,
    sealed: &mpsc::UnboundedSender<Segment>,
    stats: &UsageStats,
    warnings: &mut DropWarnings,
) {
    match spool.seal() {
        Ok(Some(segment)) => {
            let _ = sealed.send(segment);
        }
        Ok(None) => {}
        Err(e) => disk_error(
            e,
            "shipping the segment as written",
            sealed,
            stats,
            warnings,
        ),
    }
}

/// After the disk refused a write or a sync: the segment it sealed goes to
/// the shipper (its records are on disk), and the error is logged — at most
/// once per interval, for a full disk fails every write until room is made.
fn disk_error(
    e: spool::WriteError,
    then: &str,
    sealed: &mpsc::UnboundedSender<Segment>,
    stats: &UsageStats,
    warnings: &mut DropWarnings,
) {
    if let Some(segment) = e.sealed {
        let _ = sealed.send(segment);
    }
    warnings.warn(
        Warning::Disk,
        stats.dropped_spool_error.load(Ordering::Relaxed),
        &format!("cannot write the usage spool: {}; {then}", e.source),
    );
}

fn spool_loop(
    mut rx: mpsc::Receiver<UsageEvent>,
    mut spool: SpoolWriter,
    sealed: mpsc::UnboundedSender<Segment>,
    stop: &Stop,
    settings: &WriterSettings,
    stats: &UsageStats,
) {
    let mut enc = RecordEncoder::new();
    let mut buf = Vec::new();
    let mut warnings = DropWarnings::default();
    let sync_every = settings.sync_interval;
    let seal_every = settings.flush_interval;
    let mut next_sync = Instant::now() + sync_every;
    let mut next_seal = Instant::now() + seal_every;
    let mut unsynced = false;
    let mut unsealed = false;
    loop {
        let stopping = stop.0.load(Ordering::Acquire);
        if stopping {
            // Refuse new events; what is queued is still received below.
            rx.close();
        }
        let mut closed = false;
        loop {
            // A record is appended when it is full and when the queue is empty.
            let drained = match rx.try_recv() {
                Ok(event) => {
                    enc.push(&event);
                    false
                }
                Err(TryRecvError::Empty) => true,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    true
                }
            };
            if (drained || enc.is_full()) && !enc.is_empty() {
                let ok = append(
                    &mut enc,
                    &mut buf,
                    &mut spool,
                    &sealed,
                    stats,
                    &mut warnings,
                );
                unsynced |= ok;
                unsealed |= ok;
            }
            if drained {
                break;
            }
        }
        let now = Instant::now();
        let finishing = closed || (stopping && rx.is_empty());
        if finishing || (unsealed && now >= next_seal) {
            seal(&mut spool, &sealed, stats, &mut warnings);
            unsealed = false;
            unsynced = false;
            next_seal = now + seal_every;
            next_sync = now + sync_every;
        } else if now >= next_sync {
            if unsynced && let Err(e) = spool.sync() {
                disk_error(
                    e,
                    "shipping the segment as written",
                    &sealed,
                    stats,
                    &mut warnings,
                );
            }
            unsynced = false;
            next_sync = now + sync_every;
        }
        if !unsealed {
            next_seal = next_seal.max(now + seal_every);
        }
        if finishing {
            break;
        }
        let wake = if unsealed {
            next_sync.min(next_seal)
        } else {
            next_sync
        };
        std::thread::park_timeout(wake.saturating_duration_since(Instant::now()));
    }
    // Dropping `sealed` tells the shipper nothing more will come.
}

/// One segment, read back from disk.
struct Loaded {
    /// Its records, each checked to decode (unreadable and empty ones left
    /// out), in order.
    records: Vec<SpooledRecord>,
    /// Their events, decoded, when the store takes events
    /// ([`UsageStore::takes_events`]); else empty.
    events: Vec<UsageEvent>,
    /// Identifies the segment's inserts in the store: the id of its first
    /// event, unique across nodes and restarts, and the same on a replay.
    batch_id: String,
}

impl Loaded {
    /// The segment in inserts of whole records, each of at most `size`
    /// events unless one record holds more; each with its records' events
    /// when they were decoded.
    fn batches(&self, size: usize) -> Vec<(&[SpooledRecord], &[UsageEvent])> {
        let mut batches = Vec::new();
        let (mut first, mut events_at) = (0, 0);
        while first < self.records.len() {
            let mut end = first;
            let mut n = 0;
            while end < self.records.len() && (end == first || n + self.records[end].events <= size)
            {
                n += self.records[end].events;
                end += 1;
            }
            let events = if self.events.is_empty() {
                &self.events[..]
            } else {
                &self.events[events_at..events_at + n]
            };
            batches.push((&self.records[first..end], events));
            first = end;
            events_at += n;
        }
        batches
    }
}

/// Reads a segment; decodes its events when `decode` (the store takes
/// events), else only checks that they decode.
fn load(segment: &Segment, decode: bool, stats: &UsageStats) -> std::io::Result<Loaded> {
    let read = spool::read_segment(segment, &stats.spool)?;
    let mut events = Vec::new();
    let mut records = Vec::with_capacity(read.records.len());
    for (i, r) in read.records.into_iter().enumerate() {
        let before = events.len();
        let checked = if decode {
            record::decode(&r, &mut events).map(|()| SpooledRecord::of_events(r, &events[before..]))
        } else {
            SpooledRecord::read(r)
        };
        match checked {
            Ok(Some(record)) => records.push(record),
            Ok(None) => {}
            Err(e) => {
                // The CRC matched, so this is a record from a newer version or
                // a bug, not a torn write: count it and go on with the next.
                stats.dropped_corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::error!(segment = %segment.path.display(), record = i, error = %e, "skipping an unreadable usage spool record");
            }
        }
    }
    let batch_id = records
        .first()
        .map(|r| r.first_id.simple().to_string())
        .unwrap_or_default();
    Ok(Loaded {
        records,
        events,
        batch_id,
    })
}

async fn ship_loop(
    store: UsageStore,
    mut sealed: mpsc::UnboundedReceiver<Segment>,
    left: Vec<Segment>,
    batch_size: usize,
    stats: Arc<UsageStats>,
) {
    // (segment, may already be in the store)
    let mut pending: VecDeque<(Segment, bool)> = left.into_iter().map(|s| (s, true)).collect();
    stats
        .replayed_segments
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
    let stopping = Arc::new(AtomicBool::new(false));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut gave_up = false;
    loop {
        while !gave_up && in_flight.len() < SHIPPERS {
            let Some((segment, replay)) = pending.pop_front() else {
                break;
            };
            in_flight.spawn(ship_segment(
                store.clone(),
                segment,
                replay,
                batch_size,
                stats.clone(),
                stopping.clone(),
            ));
        }
        if in_flight.is_empty() && (gave_up || stopping.load(Ordering::Acquire)) {
            break;
        }
        tokio::select! {
            received = sealed.recv(), if !stopping.load(Ordering::Acquire) => match received {
                Some(s) => pending.push_back((s, false)),
                // The spool thread has finished: ship what is left, then stop.
                None => stopping.store(true, Ordering::Release),
            },
            Some(done) = in_flight.join_next() => match done {
                Ok(true) => {}
                Ok(false) => gave_up = true,
                Err(e) => {
                    tracing::error!(error = %e, "usage shipper failed");
                    gave_up = true;
                }
            },
            else => break,
        }
    }
    if gave_up {
        // Shutting down and the store is away: the rest stays on disk for
        // the next start.
        tracing::warn!(
            segments = stats.spool.segments.load(Ordering::Relaxed),
            "usage store unavailable at shutdown; unshipped usage stays in the spool for the next start"
        );
    }
}

/// Ships one segment: reads it, inserts its events in batches and deletes it
/// once every batch is confirmed. Returns false when it gave up at shutdown.
async fn ship_segment(
    store: UsageStore,
    segment: Segment,
    replay: bool,
    batch_size: usize,
    stats: Arc<UsageStats>,
    stopping: Arc<AtomicBool>,
) -> bool {
    let loaded = loop {
        let (s, st) = (segment.clone(), stats.clone());
        let decode = store.takes_events();
        // At the background priority: reading a segment through checks
        // every record (milliseconds for a second of traffic), which on a
        // thread as urgent as the serving ones held them up each second.
        match crate::priority::run_in_background("usage-load", move || load(&s, decode, &st)).await
        {
            Ok(Ok(l)) => break l,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = spool::remove_segment(&segment, &stats.spool);
                return true;
            }
            Ok(Err(e)) => {
                // Unreadable (permissions, a failing disk): keep it for the
                // operator under another name, and go on with the next.
                let aside = segment.path.with_extension("unreadable");
                tracing::error!(segment = %segment.path.display(), error = %e, moved_to = %aside.display(), "cannot read a usage spool segment");
                let _ = std::fs::rename(&segment.path, &aside);
                let _ = spool::remove_segment(&segment, &stats.spool);
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, "usage spool reader failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for (records, events) in loaded.batches(batch_size) {
        let batch = Batch {
            id: &loaded.batch_id,
            records,
            events,
        };
        if !insert(&store, &batch, replay, &stopping, &stats).await {
            return false;
        }
    }
    if let Err(e) = spool::remove_segment(&segment, &stats.spool) {
        tracing::error!(segment = %segment.path.display(), error = %e, "cannot delete a shipped usage spool segment");
    }
    true
}

/// Inserts one batch, retrying with back-off while the store is away. After a
/// failed attempt the outcome is unknown, so retries use `insert_once`; so does
/// a replayed segment. Returns false when it gave up at shutdown.
/// One insert's worth of a segment.
struct Batch<'a> {
    id: &'a str,
    /// Whole spool records.
    records: &'a [SpooledRecord],
    /// Their events, when the store takes events.
    events: &'a [UsageEvent],
}

impl Batch<'_> {
    fn len(&self) -> usize {
        self.records.iter().map(|r| r.events).sum()
    }
}

async fn insert(
    store: &UsageStore,
    batch: &Batch<'_>,
    replay: bool,
    stopping: &AtomicBool,
    stats: &UsageStats,
) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut may_be_stored = replay;
    let mut failures_stopping = 0;
    loop {
        let started = Instant::now();
        let attempt = store.insert_spooled(batch.id, batch.records, batch.events, may_be_stored);
        let error = match tokio::time::timeout(INSERT_TIMEOUT, attempt).await {
            Ok(Ok(inserted)) => {
                stats
                    .insert_seconds
                    .observe(started.elapsed().as_secs_f64());
                stats.written.fetch_add(inserted as u64, Ordering::Relaxed);
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", INSERT_TIMEOUT.as_secs()),
        };
        stats.write_failures.fetch_add(1, Ordering::Relaxed);
        may_be_stored = true;
        if stopping.load(Ordering::Acquire) {
            failures_stopping += 1;
            if failures_stopping >= SHUTDOWN_ATTEMPTS {
                tracing::error!(error = %error, events = batch.len(), "giving up inserting usage events at shutdown");
                return false;
            }
        }
        if stopping.load(Ordering::Acquire) {
            // Shutting down: a few quick tries, not minutes of back-off.
            delay = delay.min(Duration::from_millis(200));
        }
        tracing::warn!(error = %error, events = batch.len(), retry_in_ms = delay.as_millis() as u64, "inserting usage events failed; they stay in the spool");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(record_sizes: &[usize], decoded: bool) -> Loaded {
        let total = record_sizes.iter().sum::<usize>() as u64;
        Loaded {
            records: record_sizes
                .iter()
                .map(|&events| SpooledRecord {
                    bytes: vec![record::VERSION],
                    events,
                    first_id: uuid::Uuid::nil(),
                    first_ms: 0,
                    last_ms: 0,
                })
                .collect(),
            events: if decoded {
                (0..total).map(UsageEvent::new).collect()
            } else {
                Vec::new()
            },
            batch_id: String::new(),
        }
    }

    /// (records, events) per batch.
    fn shape(l: &Loaded, size: usize) -> Vec<(usize, usize)> {
        l.batches(size)
            .into_iter()
            .map(|(r, e)| (r.len(), e.len()))
            .collect()
    }

    #[test]
    fn batches_hold_whole_records() {
        let l = loaded(&[3, 4, 5], true);
        assert_eq!(shape(&l, 100), [(3, 12)]);
        assert_eq!(shape(&l, 7), [(2, 7), (1, 5)]);
        // A record larger than the batch size goes alone, whole.
        assert_eq!(shape(&l, 3), [(1, 3), (1, 4), (1, 5)]);
        assert_eq!(shape(&l, 8), [(2, 7), (1, 5)]);
        // Each batch's events are its records' events.
        let batches = l.batches(7);
        assert_eq!(batches[1].1[0].timestamp_ms, 7);
        // Not decoded: records only.
        assert_eq!(shape(&loaded(&[3, 4, 5], false), 7), [(2, 0), (1, 0)]);
        assert!(loaded(&[], true).batches(10).is_empty());
    }
}
