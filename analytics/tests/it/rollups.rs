//! ClickHouse rollups: the minute and hour tables the materialized views keep
//! agree with the raw events, and a migration over existing events backfills them.

use tollgate_analytics::{UsageEvent, UsageStore};
use tollgate_core::Settings;
use tollgate_testkit::TestClickHouse;

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// 240 calls over two hours: every 7th a 503, every 5th a 404, every 3rd
/// overage; bytes out of 100 each, two apps.
fn events() -> Vec<UsageEvent> {
    (0..240u64)
        .map(|i| {
            let mut e = UsageEvent::new(T0 + i * 30_000);
            e.api_id = "api_w".into();
            e.api_slug = "weather".into();
            e.route = "/weather/today".into();
            e.status = if i % 7 == 0 {
                503
            } else if i % 5 == 0 {
                404
            } else {
                200
            };
            e.latency_us = 1000 + i as u32;
            e.bytes_out = 100;
            e.app_id = format!("app_{}", i % 2).into();
            e.overage = i % 3 == 0;
            e
        })
        .collect()
}

/// (calls, errors, client errors, bytes out, overage, groups) from a rollup.
async fn totals(ch: &TestClickHouse, table: &str, bucket: &str) -> String {
    ch.query(&format!(
        "SELECT sumMerge(calls), sumMerge(errors), sumMerge(client_errors), sumMerge(bytes_out), \
         sumMerge(overage_calls), uniqExact({bucket}) FROM {}.{table} FORMAT TSV",
        ch.database
    ))
    .await
    .trim()
    .to_owned()
}

#[tokio::test]
async fn rollups_agree_with_raw_events_and_backfill_on_migration() {
    let ch = TestClickHouse::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    settings.clickhouse_url = Some(ch.url.clone());
    settings.clickhouse_database = ch.database.clone();
    let store = UsageStore::open(&settings).await.unwrap();
    let all = events();
    store.insert(&all[..100]).await.unwrap();
    store.insert(&all[100..]).await.unwrap();

    let errors = all.iter().filter(|e| e.status >= 500).count();
    let client = all
        .iter()
        .filter(|e| (400..500).contains(&e.status))
        .count();
    let overage = all.iter().filter(|e| e.overage).count();
    let expected = |buckets: usize| format!("240\t{errors}\t{client}\t24000\t{overage}\t{buckets}");
    assert_eq!(totals(&ch, "usage_minute", "minute").await, expected(120));
    assert_eq!(totals(&ch, "usage_hour", "hour").await, expected(2));

    // Latency quantiles merge across inserts: p50 of 1000..1239 µs.
    let p50: f64 = ch
        .query(&format!(
            "SELECT quantilesMerge(0.5, 0.95, 0.99)(latency)[1] FROM {}.usage_hour FORMAT TSV",
            ch.database
        ))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!((1100.0..1140.0).contains(&p50), "{p50}");

    // A store that had events before the rollups existed: the migration rolls
    // them up once.
    let db = &ch.database;
    for sql in [
        format!("DROP TABLE {db}.usage_minute_mv"),
        format!("DROP TABLE {db}.usage_hour_mv"),
        format!("DROP TABLE {db}.usage_minute"),
        format!("DROP TABLE {db}.usage_hour"),
        format!("ALTER TABLE {db}.tollgate_migrations DELETE WHERE version = 3"),
    ] {
        ch.query(&sql).await;
    }
    // ALTER ... DELETE is a mutation: wait until the row is gone.
    tollgate_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let n = ch
            .query(&format!(
                "SELECT count() FROM {db}.tollgate_migrations WHERE version = 3 FORMAT TSV"
            ))
            .await;
        (n.trim() == "0").then_some(())
    })
    .await
    .expect("migration record removed");
    store.migrate().await.unwrap();
    assert_eq!(totals(&ch, "usage_minute", "minute").await, expected(120));
    assert_eq!(totals(&ch, "usage_hour", "hour").await, expected(2));
    // And the views run again for new events.
    store.insert(&events()[..10]).await.unwrap();
    let calls = ch
        .query(&format!(
            "SELECT sumMerge(calls) FROM {db}.usage_hour FORMAT TSV"
        ))
        .await;
    assert_eq!(calls.trim(), "250");
    ch.cleanup().await;
}

#[tokio::test]
async fn replayed_batches_are_counted_once_in_raw_events_and_rollups() {
    let ch = TestClickHouse::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    settings.clickhouse_url = Some(ch.url.clone());
    settings.clickhouse_database = ch.database.clone();
    let store = UsageStore::open(&settings).await.unwrap();
    let all = events();
    let (first, second) = all.split_at(120);

    // A batch written, then replayed whole (a crash after the insert, before
    // the segment was deleted).
    store
        .insert_batch("node-a/00000000000000000001", first)
        .await
        .unwrap();
    let again = store
        .insert_once("node-a/00000000000000000001", first)
        .await
        .unwrap();
    assert_eq!(again, 0, "nothing of the replayed batch is new");
    // A batch of which only part was stored before: the rest goes in.
    store
        .insert_batch("node-a/00000000000000000002", &second[..40])
        .await
        .unwrap();
    let rest = store
        .insert_once("node-a/00000000000000000002", second)
        .await
        .unwrap();
    assert_eq!(rest, 80);
    // The same events under another batch id are other events' business: a
    // batch id is never reused, so only ids within the batch are checked.
    let db = &ch.database;
    let raw = ch
        .query(&format!(
            "SELECT count(), uniqExact(event_id) FROM {db}.usage_events FORMAT TSV"
        ))
        .await;
    assert_eq!(raw.trim(), "240\t240");
    assert_eq!(
        totals(&ch, "usage_hour", "hour").await.split('\t').next(),
        Some("240"),
        "the rollups count every event once"
    );
    ch.cleanup().await;
}
