//! Retention on both stores: what is older than the policy keeps goes, the rest stays.

use tollgate_analytics::retention::RetentionPolicy;
use tollgate_analytics::{SummaryQuery, UsageEvent, UsageStore};

use super::{Kind, with_usage_store};

const JAN_10: u64 = 1_768_003_200_000; // 2026-01-10T00:00:00Z
const MAR_20: u64 = 1_773_964_800_000; // 2026-03-20T00:00:00Z
const APR_15: i64 = 1_776_211_200_000; // 2026-04-15T00:00:00Z

fn calls_in(from: &str, to: &str) -> SummaryQuery {
    SummaryQuery::parse(Some(from), Some(to), None).unwrap()
}

async fn old_usage_goes(store: UsageStore) {
    let events: Vec<UsageEvent> = (0..10u64)
        .flat_map(|i| {
            [JAN_10, MAR_20].map(|t| {
                let mut e = UsageEvent::new(t + i * 1000);
                e.api_slug = "weather".into();
                e.status = 200;
                e
            })
        })
        .collect();
    store.insert(&events).await.unwrap();
    let total = || calls_in("2025-12-01T00:00:00Z", "2026-04-15T00:00:00Z");
    assert_eq!(store.summary(&total()).await.unwrap().total_calls, 20);

    let keep_a_year = RetentionPolicy {
        raw_days: 365,
        rollup_days: 365,
    };
    let report = store.apply_retention(APR_15, keep_a_year).await.unwrap();
    assert!(report.partitions_dropped.is_empty() && report.events_deleted == 0);

    // 30 days of raw events: January goes (entirely older than March 16).
    let month = RetentionPolicy {
        raw_days: 30,
        rollup_days: 365,
    };
    let report = store.apply_retention(APR_15, month).await.unwrap();
    assert_eq!(store.summary(&total()).await.unwrap().total_calls, 10);
    assert_eq!(
        store
            .summary(&calls_in("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"))
            .await
            .unwrap()
            .total_calls,
        10,
        "March stays"
    );
    match &store {
        UsageStore::ClickHouse(_) => {
            assert_eq!(report.partitions_dropped, ["usage_events:202601"]);
            // The rollups still hold January (their own, longer retention).
            assert_eq!(january_calls(&store).await, 10);
            let both = RetentionPolicy {
                raw_days: 30,
                rollup_days: 30,
            };
            let report = store.apply_retention(APR_15, both).await.unwrap();
            assert_eq!(
                report.partitions_dropped,
                [
                    "usage_api_day:202601",
                    "usage_api_hour:202601",
                    "usage_api_minute:202601",
                    "usage_app_day:202601",
                    "usage_customer_day:202601",
                    "usage_customer_hour:202601"
                ]
            );
            assert_eq!(january_calls(&store).await, 0);
            assert_eq!(march_calls(&store).await, 10);
        }
        UsageStore::Embedded(_) => {
            assert_eq!(report.events_deleted, 10);
            assert_eq!(report.rollup_rows_deleted, 0);
            // The rollups still hold January (their own, longer retention)...
            assert_eq!(january_calls(&store).await, 10);
            // ... until their retention comes: 10 calls in one minute, hour
            // and day, by API, app and customer: one row in each of six tables.
            let both = RetentionPolicy {
                raw_days: 30,
                rollup_days: 30,
            };
            let report = store.apply_retention(APR_15, both).await.unwrap();
            assert_eq!(report.rollup_rows_deleted, 6);
            assert_eq!(january_calls(&store).await, 0);
            assert_eq!(
                march_calls(&store).await,
                10,
                "March's rollups stay (they end after the cut-off)"
            );
        }
    }
    // Running again finds nothing more to remove.
    let report = store.apply_retention(APR_15, month).await.unwrap();
    assert_eq!(
        report,
        tollgate_analytics::retention::RetentionReport::default()
    );
}

/// Calls of a daily series over `[from, to)`, from the rollups.
async fn daily_calls(store: &UsageStore, from: &str, to: &str) -> u64 {
    let q = tollgate_analytics::TimeSeriesQuery::parse(tollgate_analytics::TimeSeriesParams {
        from: Some(from),
        to: Some(to),
        bucket: Some("day"),
        ..Default::default()
    })
    .unwrap();
    store
        .time_series(&q)
        .await
        .unwrap()
        .points
        .iter()
        .map(|p| p.calls)
        .sum()
}

async fn january_calls(store: &UsageStore) -> u64 {
    daily_calls(store, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z").await
}

async fn march_calls(store: &UsageStore) -> u64 {
    daily_calls(store, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z").await
}

#[tokio::test]
async fn retention_embedded() {
    with_usage_store(Kind::Embedded, old_usage_goes).await;
}

#[tokio::test]
async fn retention_clickhouse() {
    with_usage_store(Kind::ClickHouse, old_usage_goes).await;
}
