//! Time series on both stores: the same events give the same buckets.

use tollgate_analytics::{TimeSeriesParams, TimeSeriesQuery, UsageEvent, UsageStore};

use super::{Kind, with_usage_store};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// 240 calls, one every 30 s for two hours: every 7th a 503, every 5th a 404,
/// apps alternating, 100 bytes out each, latency growing by 1 µs per call.
fn events() -> Vec<UsageEvent> {
    (0..240u64)
        .map(|i| {
            let mut e = UsageEvent::new(T0 + i * 30_000);
            e.api_id = "api_w".into();
            e.api_slug = "weather".into();
            e.route = "/weather/today".into();
            e.status = match i {
                _ if i % 7 == 0 => 503,
                _ if i % 5 == 0 => 404,
                _ => 200,
            };
            e.latency_us = 1000 + i as u32;
            e.bytes_in = 10;
            e.bytes_out = 100;
            e.app_id = format!("app_{}", i % 2);
            e.plan_id = "plan_p".into();
            e.developer_id = "usr_d".into();
            e
        })
        .collect()
}

fn query(
    bucket: &'static str,
    to: &'static str,
    f: impl FnOnce(&mut TimeSeriesParams<'static>),
) -> TimeSeriesQuery {
    let mut p = TimeSeriesParams {
        from: Some("2026-01-01T00:00:00Z"),
        to: Some(to),
        bucket: Some(bucket),
        ..TimeSeriesParams::default()
    };
    f(&mut p);
    TimeSeriesQuery::parse(p).unwrap()
}

fn calls(series: &tollgate_analytics::TimeSeries) -> Vec<u64> {
    series.points.iter().map(|p| p.calls).collect()
}

async fn same_buckets(store: UsageStore) {
    let all = events();
    store.insert(&all).await.unwrap();

    // Hours: two full, one empty (filled with zeros).
    let hours = store
        .time_series(&query("hour", "2026-01-01T03:00:00Z", |_| {}))
        .await
        .unwrap();
    assert_eq!(hours.bucket, "hour");
    assert_eq!(calls(&hours), [120, 120, 0]);
    assert_eq!(hours.points[0].t, "2026-01-01T00:00:00Z");
    let first_hour = &all[..120];
    assert_eq!(
        hours.points[0].errors,
        first_hour.iter().filter(|e| e.status >= 500).count() as u64
    );
    assert_eq!(
        hours.points[0].client_errors,
        first_hour.iter().filter(|e| e.status / 100 == 4).count() as u64
    );
    assert_eq!(
        (hours.points[1].bytes_in, hours.points[1].bytes_out),
        (1200, 12000)
    );
    assert_eq!(hours.points[2].latency_ms.p50, 0.0);
    // p50 of 1000..1119 µs: about 1.06 ms (the stores may differ in the last digit).
    let p50 = hours.points[0].latency_ms.p50;
    assert!((1.05..1.07).contains(&p50), "{p50}");

    // Minutes: two calls each.
    let minutes = store
        .time_series(&query("minute", "2026-01-01T00:05:00Z", |_| {}))
        .await
        .unwrap();
    assert_eq!(calls(&minutes), [2, 2, 2, 2, 2]);

    // Days, and filters.
    let day = store
        .time_series(&query("day", "2026-01-01T12:00:00Z", |_| {}))
        .await
        .unwrap();
    assert_eq!(calls(&day), [240]);
    let one_app = store
        .time_series(&query("hour", "2026-01-01T02:00:00Z", |p| {
            p.app = Some("app_1")
        }))
        .await
        .unwrap();
    assert_eq!(calls(&one_app), [60, 60]);
    let server_errors = store
        .time_series(&query("day", "2026-01-02T00:00:00Z", |p| {
            p.status_class = Some("5xx")
        }))
        .await
        .unwrap();
    assert_eq!(
        calls(&server_errors),
        [all.iter().filter(|e| e.status >= 500).count() as u64]
    );
    let other_api = store
        .time_series(&query("day", "2026-01-02T00:00:00Z", |p| {
            p.api = Some("maps");
            p.plan = Some("plan_p");
        }))
        .await
        .unwrap();
    assert_eq!(calls(&other_api), [0]);
}

#[tokio::test]
async fn time_series_embedded() {
    with_usage_store(Kind::Embedded, same_buckets).await;
}

#[tokio::test]
async fn time_series_clickhouse() {
    with_usage_store(Kind::ClickHouse, same_buckets).await;
}
