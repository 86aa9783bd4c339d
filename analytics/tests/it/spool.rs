//! The writer with its durable spool: what a previous run left is replayed
//! without counting twice, torn tails are skipped, a store outage is absorbed,
//! and a full spool drops and counts while the writer goes on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tollgate_analytics::clickhouse::ClickHouseStore;
use tollgate_analytics::record::RecordEncoder;
use tollgate_analytics::spool::{self, SpoolLimits, SpoolStats, SpoolWriter};
use tollgate_analytics::writer::WriterSettings;
use tollgate_analytics::{UsageEvent, UsageStore, UsageWriter};
use tollgate_testkit::TestClickHouse;

use crate::{Kind, day, event, with_usage_store};

fn settings(root: &std::path::Path) -> WriterSettings {
    WriterSettings {
        flush_interval: Duration::from_millis(50),
        sync_interval: Duration::from_millis(20),
        ..WriterSettings::new(root)
    }
}

/// Writes `events` as one sealed segment into the spool slot `dir`, in
/// records of `per_record` events.
fn segment(dir: &std::path::Path, events: &[UsageEvent], per_record: usize) -> spool::Segment {
    let stats = std::sync::Arc::new(SpoolStats::default());
    let (mut w, _) = SpoolWriter::open(dir, SpoolLimits::default(), stats).unwrap();
    let mut enc = RecordEncoder::new();
    let mut buf = Vec::new();
    for chunk in events.chunks(per_record) {
        for e in chunk {
            enc.push(e);
        }
        enc.finish(&mut buf);
        w.append(&buf).unwrap();
    }
    w.seal().unwrap().unwrap()
}

async fn total(store: &UsageStore) -> u64 {
    store.summary(&day()).await.unwrap().total_calls
}

async fn wait_total(store: &UsageStore, n: u64) -> u64 {
    tollgate_testkit::eventually(Duration::from_secs(30), || async {
        let got = total(store).await;
        (got == n).then_some(got)
    })
    .await
    .unwrap_or(total(store).await)
}

async fn replays_what_a_previous_run_left(store: UsageStore) {
    let root = tempfile::tempdir().unwrap();
    let slot = root.path().join("spool").join("0");
    let all: Vec<UsageEvent> = (0..300).map(|i| event(i, "weather", 200, 1000)).collect();
    // A crash after the store took a segment, before it was deleted.
    let first = segment(&slot, &all[..100], 10);
    let batch_id = all[0].id.simple().to_string();
    store.insert_batch(&batch_id, &all[..100]).await.unwrap();
    // A crash halfway through an insert: some of the segment is stored.
    segment(&slot, &all[100..200], 10);
    store
        .insert_batch(&all[100].id.simple().to_string(), &all[100..150])
        .await
        .unwrap();
    // A crash in the middle of a write: the last record is torn.
    let torn = segment(&slot, &all[200..300], 10);
    let data = std::fs::read(&torn.path).unwrap();
    std::fs::write(&torn.path, &data[..data.len() - 5]).unwrap();
    assert!(first.path.exists());

    let (recorder, writer) = UsageWriter::start(store.clone(), settings(root.path())).unwrap();
    // 290 intact events: the torn record's 10 are gone, nothing counts twice.
    assert_eq!(wait_total(&store, 290).await, 290);
    let stats = recorder.stats().clone();
    assert_eq!(stats.replayed_segments.load(Ordering::Relaxed), 3);
    assert_eq!(stats.spool.corrupt_tails.load(Ordering::Relaxed), 1);
    // New events go the normal way, after the replay.
    for i in 1000..1010 {
        recorder.record(event(i, "weather", 200, 1000));
    }
    assert_eq!(wait_total(&store, 300).await, 300);
    writer.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(total(&store).await, 300, "counted twice");
    let left: Vec<_> = std::fs::read_dir(&slot)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .collect();
    assert!(left.is_empty(), "shipped segments stay on disk: {left:?}");
    assert_eq!(stats.spool.bytes.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn replays_what_a_previous_run_left_embedded() {
    with_usage_store(Kind::Embedded, replays_what_a_previous_run_left).await;
}

#[tokio::test]
async fn replays_what_a_previous_run_left_clickhouse() {
    with_usage_store(Kind::ClickHouse, replays_what_a_previous_run_left).await;
}

/// ClickHouse unreachable: the spool absorbs events up to its cap, drops and
/// counts the rest; at shutdown what was not shipped stays on disk, and the
/// next start ships it.
#[tokio::test]
async fn a_full_spool_drops_and_counts_and_the_rest_survives_an_outage() {
    let ch = TestClickHouse::new().await;
    let real = UsageStore::ClickHouse(Box::new(ClickHouseStore::new(
        &ch.url,
        &ch.database,
        None,
        None,
        false,
    )));
    real.migrate().await.unwrap();
    let closed = tollgate_testkit::upstream::closed_port().await;
    let away = UsageStore::ClickHouse(Box::new(ClickHouseStore::new(
        &format!("http://{closed}"),
        &ch.database,
        None,
        None,
        false,
    )));
    let root = tempfile::tempdir().unwrap();
    let limited = WriterSettings {
        spool_max_bytes: 64 << 10,
        batch_size: 500,
        ..settings(root.path())
    };
    let (recorder, writer) = UsageWriter::start(away, limited.clone()).unwrap();
    let stats = recorder.stats().clone();
    let sent = 20_000u64;
    for i in 0..sent {
        recorder.record(event(i % 3600, "weather", 200, 1000));
        if i % 500 == 0 {
            // Let the spool thread keep up, so the queue never overflows.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    writer.shutdown().await;
    let spooled = stats.spooled.load(Ordering::Relaxed);
    let full = stats.dropped_spool_full.load(Ordering::Relaxed);
    assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 0);
    assert!(full > 0, "the cap was never reached");
    assert_eq!(spooled + full, sent, "every event is spooled or counted");
    assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    assert!(stats.write_failures.load(Ordering::Relaxed) > 0);
    assert!(stats.spool.bytes.load(Ordering::Relaxed) <= 64 << 10);

    // The store is back: the next start ships exactly what was spooled.
    let (recorder, writer) = UsageWriter::start(real.clone(), limited).unwrap();
    assert_eq!(wait_total(&real, spooled).await, spooled);
    // The store has the rows a moment before the shipper has its answer.
    writer.shutdown().await;
    assert_eq!(
        recorder.stats().written.load(Ordering::Relaxed),
        spooled,
        "shipped"
    );
    assert_eq!(total(&real).await, spooled, "counted twice");
    ch.cleanup().await;
}
