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
            e.app_id = format!("app_{}", i % 2).into();
            e.subscription_id = format!("sub_{}", i % 2).into();
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
    // A subscription's series (ClickHouse reads the raw events for it).
    let one_subscription = store
        .time_series(&query("hour", "2026-01-01T02:00:00Z", |p| {
            p.subscription = Some("sub_1")
        }))
        .await
        .unwrap();
    assert_eq!(calls(&one_subscription), [60, 60]);
    assert_eq!(
        one_subscription.points[0].errors,
        all[..120]
            .iter()
            .filter(|e| &*e.subscription_id == "sub_1" && e.status >= 500)
            .count() as u64
    );
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

async fn same_rankings(store: UsageStore) {
    let mut all = events();
    // A third app with fewer calls, and a call refused before authentication.
    for i in 0..5u64 {
        let mut e = UsageEvent::new(T0 + 7_200_000 + i * 1000);
        e.api_slug = "maps".into();
        e.app_id = "app_z".into();
        e.status = 200;
        all.push(e);
    }
    let mut anonymous = UsageEvent::new(T0 + 7_300_000);
    anonymous.status = 401;
    all.push(anonymous);
    store.insert(&all).await.unwrap();

    let top = |dimension: &'static str,
               limit: Option<&'static str>,
               f: fn(&mut TimeSeriesParams<'static>)| {
        let store = &store;
        async move {
            let mut p = TimeSeriesParams {
                from: Some("2026-01-01T00:00:00Z"),
                to: Some("2026-01-02T00:00:00Z"),
                ..TimeSeriesParams::default()
            };
            f(&mut p);
            let q = tollgate_analytics::TopQuery::parse(p, Some(dimension), limit).unwrap();
            store
                .top(&q)
                .await
                .unwrap()
                .entries
                .into_iter()
                .map(|e| (e.key, e.calls, e.errors, e.client_errors))
                .collect::<Vec<_>>()
        }
    };
    let by_app = top("app", None, |_| {}).await;
    let errors_of = |app: u64| {
        all[..240]
            .iter()
            .filter(|e| *e.app_id == *format!("app_{app}") && e.status >= 500)
            .count() as u64
    };
    let client_of = |app: u64| {
        all[..240]
            .iter()
            .filter(|e| *e.app_id == *format!("app_{app}") && e.status / 100 == 4)
            .count() as u64
    };
    assert_eq!(
        by_app,
        [
            (Some("app_0".into()), 120, errors_of(0), client_of(0)),
            (Some("app_1".into()), 120, errors_of(1), client_of(1)),
            (Some("app_z".into()), 5, 0, 0),
            (None, 1, 0, 1),
        ]
    );
    assert_eq!(
        top("api", Some("1"), |_| {}).await,
        [(
            Some("weather".into()),
            240,
            errors_of(0) + errors_of(1),
            client_of(0) + client_of(1)
        )]
    );
    let classes = top("status_class", None, |_| {}).await;
    let fives = errors_of(0) + errors_of(1);
    let fours = client_of(0) + client_of(1) + 1;
    assert_eq!(
        classes
            .iter()
            .map(|(k, n, _, _)| (k.clone().unwrap(), *n))
            .collect::<Vec<_>>(),
        [
            ("2xx".into(), 246 - fives - fours),
            ("4xx".into(), fours),
            ("5xx".into(), fives)
        ]
    );
    let by_class_of_one = top("status_class", None, |p| p.subscription = Some("sub_0")).await;
    assert_eq!(
        by_class_of_one.iter().map(|(_, n, _, _)| n).sum::<u64>(),
        120,
        "{by_class_of_one:?}"
    );
    assert!(
        by_class_of_one
            .iter()
            .all(|(k, _, _, _)| k.as_deref().is_some_and(|k| k.ends_with("xx")))
    );
    let server_errors_by_app = top("app", None, |p| p.status_class = Some("5xx")).await;
    assert_eq!(server_errors_by_app.len(), 2);
    assert!(
        server_errors_by_app
            .iter()
            .all(|(_, calls, errors, _)| calls == errors)
    );
}

#[tokio::test]
async fn top_lists_embedded() {
    with_usage_store(Kind::Embedded, same_rankings).await;
}

#[tokio::test]
async fn top_lists_clickhouse() {
    with_usage_store(Kind::ClickHouse, same_rankings).await;
}
