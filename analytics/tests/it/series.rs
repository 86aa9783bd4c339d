//! Time series on both stores: the same events give the same buckets.

use tollgate_analytics::latency::{LatencyHistogram, bucket, representative_us};
use tollgate_analytics::{TimeSeriesParams, TimeSeriesQuery, TopQuery, UsageEvent, UsageStore};

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
    // p50 of 1000..1119 µs: 1.059 ms by nearest rank, within 1/64 from the
    // histogram (and the same on both stores: the exact value is checked in
    // latency_buckets_agree).
    let p50 = hours.points[0].latency_ms.p50;
    assert!((p50 - 1.059).abs() <= 1.059 / 64.0, "{p50}");

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

/// One call per minute at each edge of the latency buckets (around every power
/// of two), so a minute's p50 is its one latency's bucket.
fn edge_latencies() -> Vec<u32> {
    let mut v = vec![0, 1, 31, 32, 63, 64, 65];
    for k in 7..32 {
        let p = 1u32 << k;
        v.extend([p - 1, p, p + 1]);
    }
    v.push(u32::MAX);
    v
}

async fn latency_buckets_agree(store: UsageStore) {
    let latencies = edge_latencies();
    let events: Vec<UsageEvent> = latencies
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let mut e = UsageEvent::new(T0 + i as u64 * 60_000 + 59_999);
            e.api_slug = "weather".into();
            e.route = "/weather/today".into();
            e.app_id = "app_e".into();
            e.status = 200;
            e.latency_us = l;
            e
        })
        .collect();
    // Two batches, so the first hour's rollup rows merge histograms.
    store.insert(&events[..40]).await.unwrap();
    store.insert(&events[40..]).await.unwrap();
    let to = "2026-01-01T02:00:00Z";
    // From the minute rollup, and (filtered by app) from the raw events.
    for app in [None, Some("app_e")] {
        let minutes = store
            .time_series(&query("minute", to, |p| p.app = app))
            .await
            .unwrap();
        for (i, &l) in latencies.iter().enumerate() {
            let expected = representative_us(bucket(l)) / 1000.0;
            let p = &minutes.points[i];
            assert_eq!(p.calls, 1, "{app:?} minute {i}");
            assert_eq!(p.latency_ms.p50, expected, "{app:?} latency {l} µs");
            assert!(
                (p.latency_ms.p99 * 1000.0 - f64::from(l)).abs() <= f64::from(l) / 64.0,
                "{l} µs read as {} ms",
                p.latency_ms.p99
            );
        }
        assert!(
            minutes.points[latencies.len()..]
                .iter()
                .all(|p| p.calls == 0 && p.latency_ms.p50 == 0.0),
            "empty minutes filled with zeros"
        );
    }
    // Percentiles of the first hour merge its 60 minutes' histograms.
    let mut h = LatencyHistogram::default();
    latencies[..60].iter().for_each(|&l| h.record(l));
    let [p50, p95, p99] = h.percentiles_ms([50, 95, 99]);
    for app in [None, Some("app_e")] {
        let hours = store
            .time_series(&query("hour", to, |p| p.app = app))
            .await
            .unwrap();
        let first = &hours.points[0].latency_ms;
        assert_eq!(
            (first.p50, first.p95, first.p99),
            (p50, p95, p99),
            "{app:?}"
        );
    }
}

#[tokio::test]
async fn latency_buckets_agree_embedded() {
    with_usage_store(Kind::Embedded, latency_buckets_agree).await;
}

#[tokio::test]
async fn latency_buckets_agree_clickhouse() {
    with_usage_store(Kind::ClickHouse, latency_buckets_agree).await;
}

/// Calls over three days, on the edges of minutes, hours and days: per hour of
/// 2026-01-01..03, one call at :00:00.000 and one at :59:59.999, alternating
/// apps, plans, subscriptions, routes and statuses.
fn edge_events() -> Vec<UsageEvent> {
    (0..72u64)
        .flat_map(|h| [h * 3_600_000, h * 3_600_000 + 3_599_999])
        .enumerate()
        .map(|(i, offset)| {
            let mut e = UsageEvent::new(T0 + offset);
            e.api_slug = if i % 3 == 0 { "maps" } else { "weather" }.into();
            e.route = format!("/r{}", i % 2).into();
            e.app_id = format!("app_{}", i % 4).into();
            e.developer_id = format!("usr_{}", i % 2).into();
            e.plan_id = format!("plan_{}", i % 4 / 2).into();
            e.subscription_id = format!("sub_{}", i % 4).into();
            e.status = [200, 200, 404, 503][i % 4];
            e.latency_us = 1000 + (i as u32 * 37) % 5000;
            e.bytes_out = i as u64;
            e
        })
        .collect()
}

async fn edges_and_filters(store: UsageStore) {
    let all = edge_events();
    store.insert(&all).await.unwrap();
    let count = |from: u64, to: u64, keep: &dyn Fn(&UsageEvent) -> bool| {
        all.iter()
            .filter(|e| (T0 + from..T0 + to).contains(&e.timestamp_ms) && keep(e))
            .count() as u64
    };
    const H: u64 = 3_600_000;
    const D: u64 = 24 * H;

    // Days: each day holds its own 48 calls, none of the next day's.
    let days = store
        .time_series(&query("day", "2026-01-05T00:00:00Z", |_| {}))
        .await
        .unwrap();
    assert_eq!(calls(&days), [48, 48, 48, 0]);
    // Hours, filtered by each customer column and the status class: the
    // customer rollup, checked against the events.
    type Keep = fn(&UsageEvent) -> bool;
    type Params = fn(&mut TimeSeriesParams<'static>);
    let cases: [(Params, Keep); 5] = [
        (|p| p.app = Some("app_1"), |e| &*e.app_id == "app_1"),
        (|p| p.plan = Some("plan_1"), |e| &*e.plan_id == "plan_1"),
        (
            |p| p.developer = Some("usr_0"),
            |e| &*e.developer_id == "usr_0",
        ),
        (
            |p| {
                p.subscription = Some("sub_2");
                p.api = Some("weather");
            },
            |e| &*e.subscription_id == "sub_2" && &*e.api_slug == "weather",
        ),
        (
            |p| {
                p.status_class = Some("4xx");
                p.app = Some("app_2");
            },
            |e| e.status / 100 == 4 && &*e.app_id == "app_2",
        ),
    ];
    for (i, (params, keep)) in cases.into_iter().enumerate() {
        for (bucket, width, to) in [
            ("hour", H, "2026-01-02T00:00:00Z"),
            ("day", D, "2026-01-04T00:00:00Z"),
        ] {
            let series = store.time_series(&query(bucket, to, params)).await.unwrap();
            let expected: Vec<u64> = (0..series.points.len() as u64)
                .map(|b| count(b * width, (b + 1) * width, &keep))
                .collect();
            assert_eq!(calls(&series), expected, "case {i} by {bucket}");
            assert!(expected.iter().sum::<u64>() > 0, "case {i} selects calls");
        }
    }

    // Rankings over ragged ranges: hours, whole days, hours again.
    let ranked = |from: &'static str, to: &'static str, dimension: &'static str| {
        let store = &store;
        async move {
            let p = TimeSeriesParams {
                from: Some(from),
                to: Some(to),
                ..TimeSeriesParams::default()
            };
            let q = TopQuery::parse(p, Some(dimension), Some("100")).unwrap();
            store
                .top(&q)
                .await
                .unwrap()
                .entries
                .into_iter()
                .map(|e| (e.key.unwrap_or_default(), e.calls, e.bytes_out))
                .collect::<Vec<_>>()
        }
    };
    let expect = |from: u64, to: u64, key: fn(&UsageEvent) -> String| {
        let mut m = std::collections::BTreeMap::<String, (u64, u64)>::new();
        for e in all
            .iter()
            .filter(|e| (T0 + from..T0 + to).contains(&e.timestamp_ms))
        {
            let v = m.entry(key(e)).or_default();
            v.0 += 1;
            v.1 += e.bytes_out;
        }
        let mut v: Vec<_> = m.into_iter().map(|(k, (n, b))| (k, n, b)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    // 2026-01-01T22:00 to 2026-01-03T02:00: 2 hours, 1 day, 2 hours.
    let (from, to) = ("2026-01-01T22:00:00Z", "2026-01-03T02:00:00Z");
    let (f, t) = (22 * H, 2 * D + 2 * H);
    assert_eq!(
        ranked(from, to, "app").await,
        expect(f, t, |e| e.app_id.to_string())
    );
    assert_eq!(
        ranked(from, to, "route").await,
        expect(f, t, |e| e.route.to_string())
    );
    assert_eq!(
        ranked(from, to, "status_class").await,
        expect(f, t, |e| format!("{}xx", e.status / 100))
    );
    // Less than a day: hours only; a range not on whole hours widens to them.
    assert_eq!(
        ranked("2026-01-02T03:30:00Z", "2026-01-02T05:00:00Z", "plan").await,
        expect(D + 3 * H, D + 5 * H, |e| e.plan_id.to_string())
    );
    // Routes of one app: the raw events.
    let p = TimeSeriesParams {
        from: Some(from),
        to: Some(to),
        app: Some("app_3"),
        ..TimeSeriesParams::default()
    };
    let q = TopQuery::parse(p, Some("route"), None).unwrap();
    let routes: Vec<(String, u64)> = store
        .top(&q)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.key.unwrap_or_default(), e.calls))
        .collect();
    let of_app_3: Vec<(String, u64)> = expect(f, t, |e| {
        if &*e.app_id == "app_3" {
            e.route.to_string()
        } else {
            String::new()
        }
    })
    .into_iter()
    .filter(|(k, _, _)| !k.is_empty())
    .map(|(k, n, _)| (k, n))
    .collect();
    assert_eq!(routes, of_app_3);
}

#[tokio::test]
async fn edges_and_filters_embedded() {
    with_usage_store(Kind::Embedded, edges_and_filters).await;
}

#[tokio::test]
async fn edges_and_filters_clickhouse() {
    with_usage_store(Kind::ClickHouse, edges_and_filters).await;
}
