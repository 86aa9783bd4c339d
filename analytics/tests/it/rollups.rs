//! ClickHouse rollups: the tables the materialized views keep agree with the raw
//! events before and after their parts merge, and a migration over existing
//! events backfills them.

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

/// Every rollup table and how many buckets the events above fill in it.
const TABLES: [(&str, usize); 6] = [
    ("usage_api_minute", 120),
    ("usage_api_hour", 2),
    ("usage_api_day", 1),
    ("usage_app_day", 1),
    ("usage_customer_hour", 2),
    ("usage_customer_day", 1),
];

/// (calls, errors, client errors, bytes out, overage, buckets, latency
/// histogram) from a rollup.
async fn totals(ch: &TestClickHouse, table: &str) -> String {
    ch.query(&format!(
        "SELECT sum(calls), sum(errors), sum(client_errors), sum(bytes_out), \
         sum(overage_calls), uniqExact(t), sumMap(latencyMap.bucket, latencyMap.calls) \
         FROM {}.{table} FORMAT TSV",
        ch.database
    ))
    .await
    .trim()
    .to_owned()
}

/// The latency histogram of the events, as ClickHouse prints a sumMap.
fn histogram(events: &[UsageEvent]) -> String {
    let mut h = std::collections::BTreeMap::<u16, u64>::new();
    for e in events {
        *h.entry(tollgate_analytics::latency::bucket(e.latency_us))
            .or_default() += 1;
    }
    let keys: Vec<String> = h.keys().map(u16::to_string).collect();
    let values: Vec<String> = h.values().map(u64::to_string).collect();
    format!("([{}],[{}])", keys.join(","), values.join(","))
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
    let latency = histogram(&all);
    let expected =
        |buckets: usize| format!("240\t{errors}\t{client}\t24000\t{overage}\t{buckets}\t{latency}");
    let db = &ch.database;
    for (table, buckets) in TABLES {
        assert_eq!(totals(&ch, table).await, expected(buckets), "{table}");
        // Merging parts adds rows up and keeps every count and bucket.
        ch.query(&format!("OPTIMIZE TABLE {db}.{table} FINAL"))
            .await;
        assert_eq!(
            totals(&ch, table).await,
            expected(buckets),
            "{table} merged"
        );
    }
    let rows = ch
        .query(&format!(
            "SELECT count() FROM {db}.usage_api_hour FORMAT TSV"
        ))
        .await;
    assert_eq!(rows.trim(), "6", "2 hours x 3 status classes, one row each");

    // A store that had events before these rollups existed: the migration rolls
    // them up once.
    for (table, _) in TABLES {
        ch.query(&format!("DROP TABLE {db}.{table}_mv")).await;
        ch.query(&format!("DROP TABLE {db}.{table}")).await;
    }
    ch.query(&format!(
        "ALTER TABLE {db}.tollgate_migrations DELETE WHERE version = 5"
    ))
    .await;
    // ALTER ... DELETE is a mutation: wait until the row is gone.
    tollgate_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let n = ch
            .query(&format!(
                "SELECT count() FROM {db}.tollgate_migrations WHERE version = 5 FORMAT TSV"
            ))
            .await;
        (n.trim() == "0").then_some(())
    })
    .await
    .expect("migration record removed");
    store.migrate().await.unwrap();
    for (table, buckets) in TABLES {
        assert_eq!(
            totals(&ch, table).await,
            expected(buckets),
            "{table} backfilled"
        );
    }
    // And the views run again for new events.
    store.insert(&events()[..10]).await.unwrap();
    for (table, _) in TABLES {
        let calls = ch
            .query(&format!("SELECT sum(calls) FROM {db}.{table} FORMAT TSV"))
            .await;
        assert_eq!(calls.trim(), "250", "{table}");
    }
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
    for (table, _) in TABLES {
        assert_eq!(
            totals(&ch, table).await.split('\t').next(),
            Some("240"),
            "{table} counts every event once"
        );
    }
    ch.cleanup().await;
}
