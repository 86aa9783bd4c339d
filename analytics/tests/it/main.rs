//! Usage store tests: the same cases against the embedded store and ClickHouse,
//! expecting the same answers.

mod key_filter;
mod retention;
mod rollups;
mod series;
mod spool;

use std::time::Duration;

use tollgate_analytics::writer::WriterSettings;
use tollgate_analytics::{SummaryQuery, UsageEvent, UsageStore, UsageWriter};
use tollgate_core::Settings;
use tollgate_testkit::TestClickHouse;

#[derive(Clone, Copy)]
enum Kind {
    Embedded,
    ClickHouse,
}

async fn with_usage_store<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(UsageStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    let ch = match kind {
        Kind::Embedded => None,
        Kind::ClickHouse => {
            let ch = TestClickHouse::new().await;
            settings.clickhouse_url = Some(ch.url.clone());
            settings.clickhouse_database = ch.database.clone();
            Some(ch)
        }
    };
    let store = UsageStore::open(&settings).await.expect("open usage store");
    body(store).await;
    if let Some(ch) = ch {
        ch.cleanup().await;
    }
}

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn event(i: u64, api: &str, status: u16, latency_us: u32) -> UsageEvent {
    let mut e = UsageEvent::new(T0 + i * 1000);
    e.api_slug = api.into();
    e.api_id = format!("api_{api}").into();
    e.method = "GET".into();
    e.status = status;
    e.latency_us = latency_us;
    e
}

fn day() -> SummaryQuery {
    SummaryQuery::parse(
        Some("2026-01-01T00:00:00Z"),
        Some("2026-01-02T00:00:00Z"),
        None,
    )
    .unwrap()
}

async fn summary_counts(store: UsageStore) {
    let mut events = Vec::new();
    // weather: 100 calls, latencies 1..=100 ms, every 10th a 500.
    for i in 0..100u64 {
        let status = if i % 10 == 9 { 500 } else { 200 };
        events.push(event(i, "weather", status, ((i + 1) * 1000) as u32));
    }
    // maps: 3 calls, one 401.
    events.push(event(200, "maps", 200, 2000));
    events.push(event(201, "maps", 401, 1000));
    events.push(event(202, "maps", 200, 3000));
    // no route: one 404.
    events.push(event(300, "", 404, 100));
    // outside the range.
    events.push(event(90_000, "weather", 200, 1000));
    store.insert(&events).await.unwrap();

    let s = store.summary(&day()).await.unwrap();
    assert_eq!(s.total_calls, 104);
    assert_eq!(s.by_status_class.get("2xx"), Some(&92));
    assert_eq!(s.by_status_class.get("4xx"), Some(&2));
    assert_eq!(s.by_status_class.get("5xx"), Some(&10));
    assert_eq!(s.by_api.len(), 3);
    let weather = &s.by_api[0];
    assert_eq!(weather.api.as_deref(), Some("weather"));
    assert_eq!(weather.calls, 100);
    assert_eq!(weather.errors, 10);
    // Both stores agree within ClickHouse's interpolation on 100 points.
    assert!(
        (weather.latency_ms.p50 - 50.0).abs() <= 1.0,
        "{:?}",
        weather.latency_ms
    );
    assert!(
        (weather.latency_ms.p95 - 95.0).abs() <= 1.0,
        "{:?}",
        weather.latency_ms
    );
    assert!(
        (weather.latency_ms.p99 - 99.0).abs() <= 1.0,
        "{:?}",
        weather.latency_ms
    );
    assert_eq!(s.by_api[1].api.as_deref(), Some("maps"));
    assert_eq!(s.by_api[1].errors, 1);
    assert_eq!(s.by_api[2].api, None);

    let only_maps = SummaryQuery::parse(
        Some("2026-01-01T00:00:00Z"),
        Some("2026-01-02T00:00:00Z"),
        Some("maps"),
    )
    .unwrap();
    let s = store.summary(&only_maps).await.unwrap();
    assert_eq!(s.total_calls, 3);
    assert_eq!(s.by_api.len(), 1);
    assert_eq!(s.by_status_class.get("4xx"), Some(&1));

    let empty = SummaryQuery::parse(
        Some("2020-01-01T00:00:00Z"),
        Some("2020-01-02T00:00:00Z"),
        None,
    )
    .unwrap();
    let s = store.summary(&empty).await.unwrap();
    assert_eq!(s.total_calls, 0);
    assert!(s.by_api.is_empty() && s.by_status_class.is_empty());
}

#[tokio::test]
async fn summary_counts_embedded() {
    with_usage_store(Kind::Embedded, summary_counts).await;
}

#[tokio::test]
async fn summary_counts_clickhouse() {
    with_usage_store(Kind::ClickHouse, summary_counts).await;
}

async fn writer_drains_on_shutdown(store: UsageStore) {
    let spool = tempfile::tempdir().unwrap();
    let (recorder, writer) = UsageWriter::start(
        store.clone(),
        WriterSettings {
            flush_interval: Duration::from_secs(3600),
            sync_interval: Duration::from_secs(3600),
            batch_size: 64,
            queue_capacity: 10_000,
            ..WriterSettings::new(spool.path())
        },
    )
    .unwrap();
    for i in 0..1000 {
        recorder.record(event(i, "weather", 200, 1000));
    }
    writer.shutdown().await;
    assert_eq!(store.summary(&day()).await.unwrap().total_calls, 1000);
    // After shutdown the queue is closed: events are refused and counted.
    recorder.record(event(1, "weather", 200, 1000));
    assert_eq!(
        recorder
            .stats()
            .dropped_stopped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn writer_drains_on_shutdown_embedded() {
    with_usage_store(Kind::Embedded, writer_drains_on_shutdown).await;
}

#[tokio::test]
async fn writer_drains_on_shutdown_clickhouse() {
    with_usage_store(Kind::ClickHouse, writer_drains_on_shutdown).await;
}

async fn writer_flushes_on_interval(store: UsageStore) {
    let spool = tempfile::tempdir().unwrap();
    let (recorder, writer) = UsageWriter::start(
        store.clone(),
        WriterSettings {
            flush_interval: Duration::from_millis(200),
            batch_size: 10_000,
            queue_capacity: 10_000,
            ..WriterSettings::new(spool.path())
        },
    )
    .unwrap();
    for i in 0..10 {
        recorder.record(event(i, "weather", 200, 1000));
    }
    let store2 = store.clone();
    let seen = tollgate_testkit::eventually(Duration::from_secs(5), || {
        let store = store2.clone();
        async move {
            let n = store.summary(&day()).await.unwrap().total_calls;
            (n == 10).then_some(n)
        }
    })
    .await;
    assert_eq!(seen, Some(10), "events not flushed without shutdown");
    writer.shutdown().await;
}

#[tokio::test]
async fn writer_flushes_on_interval_embedded() {
    with_usage_store(Kind::Embedded, writer_flushes_on_interval).await;
}

#[tokio::test]
async fn writer_flushes_on_interval_clickhouse() {
    with_usage_store(Kind::ClickHouse, writer_flushes_on_interval).await;
}

#[tokio::test]
async fn embedded_replay_does_not_double_count() {
    with_usage_store(Kind::Embedded, |store| async move {
        let batch: Vec<_> = (0..50).map(|i| event(i, "weather", 200, 1000)).collect();
        store.insert(&batch).await.unwrap();
        store.insert(&batch).await.unwrap();
        assert_eq!(store.summary(&day()).await.unwrap().total_calls, 50);
        // A batch half stored before, with one event twice: the rollups count
        // each new event once.
        let mut mixed = batch[25..].to_vec();
        mixed.extend((50..75).map(|i| event(i, "weather", 200, 1000)));
        mixed.push(mixed[40].clone());
        store.insert(&mixed).await.unwrap();
        assert_eq!(store.summary(&day()).await.unwrap().total_calls, 75);
        assert_eq!(daily_calls(&store).await, [75]);
    })
    .await;
}

/// The embedded store in the file at `path`, migrated.
async fn open_embedded(path: &std::path::Path) -> tollgate_analytics::embedded::EmbeddedStore {
    let store = tollgate_analytics::embedded::EmbeddedStore::open(path)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Calls of 2026-01-01 from the daily series (the rollups).
async fn daily_calls(store: &UsageStore) -> Vec<u64> {
    let q = tollgate_analytics::TimeSeriesQuery::parse(tollgate_analytics::TimeSeriesParams {
        from: Some("2026-01-01T00:00:00Z"),
        to: Some("2026-01-02T00:00:00Z"),
        bucket: Some("day"),
        ..Default::default()
    })
    .unwrap();
    let series = store.time_series(&q).await.unwrap();
    series.points.iter().map(|p| p.calls).collect()
}

/// A store file with the schema of the first `migrations` embedded-usage
/// migrations, as an earlier Tollgate left it.
async fn legacy_store(path: &std::path::Path, migrations: usize) -> sqlx::SqlitePool {
    let db = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let mut legacy = sqlx::migrate!("../migrations/embedded-usage");
    legacy.migrations = std::borrow::Cow::Owned(legacy.migrations[..migrations].to_vec());
    legacy.run(&db).await.unwrap();
    db
}

#[tokio::test]
async fn embedded_store_from_before_the_rollups_upgrades_with_every_event() {
    // Written before the rollups (0003), the compact tables (0005) and the
    // blocks (0006): one table of events with the id as text.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let db = legacy_store(&path, 2).await;
    let events: Vec<_> = (0..120)
        .map(|i| {
            event(
                i * 700,
                "weather",
                if i % 8 == 0 { 503 } else { 200 },
                1000 + i as u32,
            )
        })
        .collect();
    for (i, e) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO usage_events VALUES (?1, ?2, 'n1', 'api_weather', 'weather', '/f', 'GET', \
             ?3, ?4, 900, 10, 20, ?5, 'tg_live_AAAA', 'dev_1', 'plan_1', 'sub_1', '127.0.0.1', '', ?6)",
        )
        .bind(e.id.hyphenated().to_string())
        .bind(e.timestamp_ms as i64)
        .bind(i64::from(e.status))
        .bind(i64::from(e.latency_us))
        .bind(if i % 3 == 0 { "app_2" } else { "app_1" })
        .bind(i64::from(i % 5 == 0))
        .execute(&db)
        .await
        .unwrap();
    }
    db.close().await;
    let store = UsageStore::Embedded(open_embedded(&path).await);
    store.migrate().await.unwrap();
    let q = tollgate_analytics::TimeSeriesQuery::parse(tollgate_analytics::TimeSeriesParams {
        from: Some("2026-01-01T00:00:00Z"),
        to: Some("2026-01-02T00:00:00Z"),
        bucket: Some("hour"),
        ..Default::default()
    })
    .unwrap();
    let hours = store.time_series(&q).await.unwrap();
    let expected: Vec<u64> = (0..24u64)
        .map(|h| {
            events
                .iter()
                .filter(|e| (e.timestamp_ms - T0) / 3_600_000 == h)
                .count() as u64
        })
        .collect();
    assert_eq!(
        hours.points.iter().map(|p| p.calls).collect::<Vec<_>>(),
        expected,
        "the rollups were filled from the old events"
    );
    // The raw events moved too, every column kept.
    let summary = store.summary(&day()).await.unwrap();
    assert_eq!(summary.total_calls, 120);
    assert_eq!(summary.by_api[0].errors, 15);
    assert_eq!(summary.by_api[0].overage_calls, 24);
    let UsageStore::Embedded(embedded) = &store else {
        unreachable!()
    };
    let moved = embedded.events(0, i64::MAX).await.unwrap();
    assert_eq!(moved.len(), 120);
    for (i, (m, e)) in moved.iter().zip(&events).enumerate() {
        assert_eq!(
            (m.id, m.timestamp_ms, m.status, m.latency_us),
            (e.id, e.timestamp_ms, e.status, e.latency_us)
        );
        assert_eq!(&*m.app_id, if i % 3 == 0 { "app_2" } else { "app_1" });
        assert_eq!(
            (
                &*m.key_prefix,
                &*m.client_ip,
                m.upstream_latency_us,
                m.bytes_out
            ),
            ("tg_live_AAAA", "127.0.0.1", 900, 20)
        );
    }
    // The old tables are gone, and migrating again changes nothing.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let old: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN \
         ('usage_events', 'usage_event_rows', 'usage_routes', 'usage_customers', \
          'usage_rollup_pending', 'usage_rollup_backfill')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(old, 0);
    store.migrate().await.unwrap();
    assert_eq!(daily_calls(&store).await, [120]);
    assert_eq!(store.summary(&day()).await.unwrap().total_calls, 120);
}

#[tokio::test]
async fn embedded_store_with_queued_events_upgrades_folding_them_once() {
    // The compact tables (0005) with events of which some were still queued
    // for the rollups when the old version stopped.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let db = legacy_store(&path, 5).await;
    let events: Vec<_> = (0..10).map(|i| event(i, "weather", 200, 1000)).collect();
    sqlx::query(
        "INSERT INTO usage_routes (node, api_id, api_slug, route, method) \
         VALUES ('', 'api_weather', 'weather', '', 'GET')",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO usage_customers (app_id, key_prefix, developer_id, plan_id, subscription_id) \
         VALUES ('', '', '', '', '')",
    )
    .execute(&db)
    .await
    .unwrap();
    for e in &events {
        sqlx::query(
            "INSERT INTO usage_event_rows VALUES (?1, ?2, 1, 1, 200, 1000, 0, 0, 0, '', '', 0)",
        )
        .bind(e.timestamp_ms as i64)
        .bind(e.id.as_bytes().as_slice())
        .execute(&db)
        .await
        .unwrap();
    }
    // The version that wrote them had rolled up what came before 0003.
    sqlx::query("DELETE FROM usage_rollup_backfill")
        .execute(&db)
        .await
        .unwrap();
    // The first six are in the rollups; the last four are queued.
    let mut encoder = tollgate_analytics::record::RecordEncoder::new();
    let mut record = Vec::new();
    for e in &events[6..] {
        encoder.push(e);
    }
    encoder.finish(&mut record);
    sqlx::query("INSERT INTO usage_rollup_pending (written_ms, events, record) VALUES (0, 4, ?1)")
        .bind(record.as_slice())
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO usage_api_day (t, api_slug, route, status_class, calls, errors, client_errors, \
         bytes_in, bytes_out, overage_calls, latency) VALUES (?1, 'weather', '', 2, 6, 0, 0, 0, 0, 0, '{}')",
    )
    .bind(T0 as i64)
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
    // Two processes start on it at once: one moves the events, the other
    // finds that done.
    let open = || tollgate_analytics::embedded::EmbeddedStore::open(&path);
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    let (ma, mb) = tokio::join!(a.migrate(), b.migrate());
    ma.unwrap();
    mb.unwrap();
    let store = UsageStore::Embedded(a);
    assert_eq!(daily_calls(&store).await, [10]);
    assert_eq!(store.summary(&day()).await.unwrap().total_calls, 10);
    // A replayed batch with the old events and new ones stores the new ones.
    let mut replay = events[5..].to_vec();
    replay.extend((10..12).map(|i| event(i, "weather", 200, 1000)));
    store.insert(&replay).await.unwrap();
    assert_eq!(daily_calls(&store).await, [12]);
    assert_eq!(store.summary(&day()).await.unwrap().total_calls, 12);
}

#[tokio::test]
async fn embedded_events_move_to_the_compact_tables() {
    // The schema as it was before 0005, with two events in it (the id as text).
    let db = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    for sql in [
        include_str!("../../../migrations/embedded-usage/0001_usage_events.sql"),
        include_str!("../../../migrations/embedded-usage/0002_overage.sql"),
        include_str!("../../../migrations/embedded-usage/0003_query_rollups.sql"),
        include_str!("../../../migrations/embedded-usage/0004_rollup_pending.sql"),
    ] {
        sqlx::raw_sql(sql).execute(&db).await.unwrap();
    }
    let ids = [
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    ];
    for (i, id) in ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO usage_events VALUES (?1, ?2, 'n1', 'api_1', 'weather', '/f', 'GET', 200, \
             1000, 900, 10, 20, ?4, 'tg_live_AAAA', 'dev_1', 'plan_1', 'sub_1', '127.0.0.1', '', ?3)",
        )
        .bind(id.hyphenated().to_string())
        .bind(T0 as i64 + i as i64)
        .bind(i as i64)
        .bind(if i == 2 { "app_2" } else { "app_1" })
        .execute(&db)
        .await
        .unwrap();
    }
    sqlx::raw_sql(include_str!(
        "../../../migrations/embedded-usage/0005_compact_events.sql"
    ))
    .execute(&db)
    .await
    .unwrap();
    let rows: Vec<(Vec<u8>, i64, String, String, i64)> = sqlx::query_as(
        "SELECT id, timestamp_ms, app_id, key_prefix, overage FROM usage_events ORDER BY timestamp_ms",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let expected: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.as_bytes().to_vec(),
                T0 as i64 + i as i64,
                if i == 2 { "app_2" } else { "app_1" }.to_owned(),
                "tg_live_AAAA".to_owned(),
                i as i64,
            )
        })
        .collect();
    assert_eq!(rows, expected, "every event kept, its id as 16 bytes");
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM usage_routes), (SELECT COUNT(*) FROM usage_customers)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(counts, (1, 2), "one row per distinct route and customer");
}

#[tokio::test]
async fn embedded_store_is_shared_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let open = || open_embedded(&path);
    // Two gateways on one file, writing in turns, one of them a replay of
    // the other's batch.
    let (a, b) = (open().await, open().await);
    let batch = |from: u64, key: &str| -> Vec<UsageEvent> {
        (from..from + 10)
            .map(|i| {
                let mut e = event(i, "weather", 200, 1000);
                e.app_id = String::from("app_1").into();
                e.key_prefix = key.to_owned().into();
                e
            })
            .collect()
    };
    a.insert(&batch(0, "tg_live_AAAA")).await.unwrap();
    b.insert(&batch(10, "tg_live_AAAA")).await.unwrap();
    a.insert(&batch(20, "tg_live_AAAA")).await.unwrap();
    let replayed = batch(30, "tg_live_BBBB");
    b.insert(&replayed).await.unwrap();
    assert_eq!(a.insert(&replayed).await.unwrap(), 0);
    a.insert(&batch(40, "tg_live_BBBB")).await.unwrap();
    let (a, b) = (UsageStore::Embedded(a), UsageStore::Embedded(b));
    let by_key = |key: &'static str| {
        let b = &b;
        async move {
            let q =
                tollgate_analytics::TimeSeriesQuery::parse(tollgate_analytics::TimeSeriesParams {
                    from: Some("2026-01-01T00:00:00Z"),
                    to: Some("2026-01-02T00:00:00Z"),
                    bucket: Some("day"),
                    app: Some("app_1"),
                    key: Some(key),
                    ..Default::default()
                })
                .unwrap();
            b.time_series(&q).await.unwrap().points[0].calls
        }
    };
    assert_eq!(by_key("tg_live_AAAA").await, 30);
    assert_eq!(by_key("tg_live_BBBB").await, 20);
    assert_eq!(a.summary(&day()).await.unwrap().total_calls, 50);
    // Both fold; each block is in the rollups once.
    assert_eq!(daily_calls(&a).await, [50]);
    assert_eq!(daily_calls(&b).await, [50]);
}

/// Events the embedded store holds that are not in its rollups yet.
async fn queued(path: &std::path::Path) -> i64 {
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(events), 0) FROM usage_event_blocks \
         WHERE seq > (SELECT folded_seq FROM usage_fold_state)",
    )
    .fetch_one(&db)
    .await
    .unwrap()
}

#[tokio::test]
async fn embedded_queued_events_survive_a_restart_and_are_folded_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let open = || open_embedded(&path);
    let store = open().await;
    // 3,000 events: more than one queued record (1,024 events each).
    let events: Vec<_> = (0..3000)
        .map(|i| event(i, "weather", if i % 10 == 0 { 500 } else { 200 }, 1000))
        .collect();
    store.insert(&events[..2000]).await.unwrap();
    // Replayed in part: only the new events are queued.
    store.insert(&events[1000..]).await.unwrap();
    assert_eq!(queued(&path).await, 3000, "queued, not yet folded");
    // The process stops without folding; the next one finds them queued.
    drop(store);
    let store = UsageStore::Embedded(open().await);
    assert_eq!(daily_calls(&store).await, [3000]);
    assert_eq!(queued(&path).await, 0, "a query folds the queue");
    let q = tollgate_analytics::TimeSeriesQuery::parse(tollgate_analytics::TimeSeriesParams {
        from: Some("2026-01-01T00:00:00Z"),
        to: Some("2026-01-01T01:00:00Z"),
        bucket: Some("hour"),
        ..Default::default()
    })
    .unwrap();
    let hour = store.time_series(&q).await.unwrap();
    assert_eq!(hour.points[0].calls, 3000);
    assert_eq!(hour.points[0].errors, 300);
    // Folding again (a second query) adds nothing.
    assert_eq!(daily_calls(&store).await, [3000]);
}

#[tokio::test]
async fn clickhouse_migrations_are_idempotent() {
    with_usage_store(Kind::ClickHouse, |store| async move {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(store.summary(&day()).await.unwrap().total_calls, 0);
    })
    .await;
}

#[tokio::test]
async fn embedded_small_blocks_merge_when_folded() {
    use tollgate_analytics::record::{RecordEncoder, SpooledRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = UsageStore::Embedded(open_embedded(&path).await);
    // A quiet gateway: the spool writes a record of one or two events per
    // sync interval, and the shipper sends each segment as it comes.
    let events: Vec<_> = (0..300)
        .map(|i| {
            event(
                i,
                "weather",
                if i % 3 == 0 { 404 } else { 200 },
                1000 + i as u32,
            )
        })
        .collect();
    let record = |events: &[UsageEvent]| {
        let mut encoder = RecordEncoder::new();
        for e in events {
            encoder.push(e);
        }
        let mut bytes = Vec::new();
        encoder.finish(&mut bytes);
        SpooledRecord::read(bytes).unwrap().unwrap()
    };
    for pair in events.chunks(2) {
        let inserted = store
            .insert_spooled("", &[record(pair)], &[], false)
            .await
            .unwrap();
        assert_eq!(inserted, pair.len());
    }
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let blocks = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_event_blocks")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert_eq!(blocks().await, 150);
    // The fold (here, before a rollup query) merges them.
    assert_eq!(daily_calls(&store).await, [300]);
    assert_eq!(blocks().await, 1);
    assert_eq!(queued(&path).await, 0, "the merged block is folded");
    assert_eq!(daily_calls(&store).await, [300], "and not folded again");
    let summary = store.summary(&day()).await.unwrap();
    assert_eq!((summary.total_calls, summary.by_api[0].errors), (300, 100));
    // A replay of a record finds its events in the merged block.
    let again = store
        .insert_spooled("", &[record(&events[10..12])], &[], true)
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(store.summary(&day()).await.unwrap().total_calls, 300);
    let UsageStore::Embedded(embedded) = &store else {
        unreachable!()
    };
    let back = embedded.events(0, i64::MAX).await.unwrap();
    assert_eq!(
        back.iter().map(|e| e.id).collect::<Vec<_>>(),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}
