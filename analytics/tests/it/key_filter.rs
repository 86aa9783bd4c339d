//! Usage of one key (by its prefix), and the calls a quota counted, on both
//! stores: the same events give the same answers.

use tollgate_analytics::{TimeSeriesParams, TimeSeriesQuery, TopQuery, UsageEvent, UsageStore};

use super::{Kind, with_usage_store};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// One app, two keys: key A makes 30 calls in the first hour (3 of them refused
/// for a rate limit, 2 for the quota), key B 10 in the second hour; another
/// app's key with the same prefix as A makes 7.
fn events() -> Vec<UsageEvent> {
    let mut all = Vec::new();
    let mut push = |i: u64, app: &str, key: &str, status: u16, code: &str| {
        let mut e = UsageEvent::new(T0 + i * 1000);
        e.api_slug = "weather".into();
        e.app_id = app.into();
        e.key_prefix = key.into();
        e.subscription_id = format!("sub_{app}").into();
        e.status = status;
        e.error_code = code.into();
        e.latency_us = 1000;
        all.push(e);
    };
    for i in 0..25 {
        push(i, "app_1", "tg_live_AAAA", 200, "");
    }
    for i in 25..28 {
        push(i, "app_1", "tg_live_AAAA", 429, "rate_limited");
    }
    for i in 28..30 {
        push(i, "app_1", "tg_live_AAAA", 429, "quota_exceeded");
    }
    for i in 0..10 {
        // An upstream's own 500s count against the quota: the call was admitted.
        let status = if i < 2 { 500 } else { 200 };
        push(3600 + i, "app_1", "tg_live_BBBB", status, "");
    }
    for i in 0..7 {
        push(i, "app_2", "tg_live_AAAA", 200, "");
    }
    all
}

fn params(p: &mut TimeSeriesParams<'static>) {
    p.from = Some("2026-01-01T00:00:00Z");
    p.to = Some("2026-01-01T02:00:00Z");
    p.bucket = Some("hour");
}

async fn per_key(store: UsageStore) {
    store.insert(&events()).await.unwrap();
    let series = |f: fn(&mut TimeSeriesParams<'static>)| {
        let store = &store;
        async move {
            let mut p = TimeSeriesParams::default();
            params(&mut p);
            f(&mut p);
            let s = store
                .time_series(&TimeSeriesQuery::parse(p).unwrap())
                .await
                .unwrap();
            s.points
                .iter()
                .map(|p| (p.calls, p.client_errors, p.errors))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        series(|p| p.app = Some("app_1")).await,
        [(30, 5, 0), (10, 0, 2)]
    );
    assert_eq!(
        series(|p| {
            p.app = Some("app_1");
            p.key = Some("tg_live_AAAA");
        })
        .await,
        [(30, 5, 0), (0, 0, 0)]
    );
    assert_eq!(
        series(|p| {
            p.app = Some("app_1");
            p.key = Some("tg_live_BBBB");
        })
        .await,
        [(0, 0, 0), (10, 0, 2)]
    );
    // Without the app the prefix alone matches both apps' keys.
    assert_eq!(
        series(|p| p.key = Some("tg_live_AAAA")).await,
        [(37, 5, 0), (0, 0, 0)]
    );

    let top = |key: Option<&'static str>, counted: bool| {
        let store = &store;
        async move {
            let mut p = TimeSeriesParams::default();
            params(&mut p);
            p.subscription = Some("sub_app_1");
            p.key = key;
            let mut q = TopQuery::parse(p, Some("status_class"), None).unwrap();
            q.filter.quota_counted = counted;
            store
                .top(&q)
                .await
                .unwrap()
                .entries
                .iter()
                .map(|e| e.calls)
                .sum::<u64>()
        }
    };
    assert_eq!(top(None, false).await, 40);
    // Refusals for the rate limit and the quota are not counted; the upstream's 500s are.
    assert_eq!(top(None, true).await, 35);
    assert_eq!(top(Some("tg_live_AAAA"), true).await, 25);

    // A prefix that is not an id is refused before any SQL.
    let mut p = TimeSeriesParams::default();
    params(&mut p);
    p.key = Some("tg' OR 1=1");
    assert!(TimeSeriesQuery::parse(p).is_err());
}

#[tokio::test]
async fn per_key_embedded() {
    with_usage_store(Kind::Embedded, per_key).await;
}

#[tokio::test]
async fn per_key_clickhouse() {
    with_usage_store(Kind::ClickHouse, per_key).await;
}
