//! Usage at volume: a generator of realistic events, the insert rate of the
//! usage stores, and the latency of the dashboard queries over them.
//!
//! Loads `USAGE_EVENTS` events (default 10,000,000 into ClickHouse, 1,000,000
//! into the embedded store) over 30 days, in time order as gateways send them
//! (each batch the next slice of the 30 days): 40 APIs with a skewed share of
//! traffic, 5 routes each, 2,000 apps of 400 developers on 4 plans, mostly 200s
//! with some 4xx and 5xx, log-normal-ish latencies. Then runs a 30-day daily time
//! series and a top-10 apps query 20 times each and reports p50 and p95.
//! Last, the insert cost as the gateway pays it: 120 batches of 10,000 events,
//! each batch one second of traffic (10,000 calls/s) on the busiest mix, as the
//! usage writer sends them; it reports microseconds per event: the mean over the
//! two minutes, counting the embedded store's folds of its queued events into
//! the rollups (one inside an insert about every minute, and the last one), and
//! p50, p95 and max per batch. `USAGE_INSERT_ONLY=1` runs only
//! that part, on an empty store. Every batch goes in as the shipper sends a
//! new segment's: as spool records (encoded before the clock starts), through
//! `UsageStore::insert_spooled`.
//!
//!   cargo bench --bench usage_queries                      # both stores
//!   USAGE_STORE=clickhouse cargo bench --bench usage_queries
//!   USAGE_STORE=embedded USAGE_EVENTS=1000000 cargo bench --bench usage_queries
//!
//! ClickHouse at TOLLGATE_TEST_CLICKHOUSE_URL (default http://127.0.0.1:8123), in
//! a database of its own that is dropped at the end.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate_analytics::event::Text;
use tollgate_analytics::record::encode_records;
use tollgate_analytics::{
    SummaryQuery, TimeSeriesParams, TimeSeriesQuery, TopQuery, UsageEvent, UsageStore,
};
use tollgate_core::Settings;

const DAY_MS: u64 = 86_400_000;
const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const APIS: usize = 40;
const APPS: usize = 2_000;
const BATCH: usize = 100_000;

/// One realistic event at a random time of the 30 days.
fn event(rng: &mut StdRng, apis: &[(Text, Text)], routes: &[Vec<Text>]) -> UsageEvent {
    let mut e = UsageEvent::new(START_MS + rng.random_range(0..30 * DAY_MS));
    // Skewed traffic: the first APIs get most calls.
    let api = ((rng.random::<f64>().powi(3)) * APIS as f64) as usize % APIS;
    e.api_id.clone_from(&apis[api].0);
    e.api_slug.clone_from(&apis[api].1);
    e.route.clone_from(&routes[api][rng.random_range(0..5)]);
    e.method = if rng.random_bool(0.8) { "GET" } else { "POST" }.into();
    let app = ((rng.random::<f64>().powi(2)) * APPS as f64) as usize % APPS;
    e.app_id = format!("app_{app:04}").into();
    e.developer_id = format!("usr_{:03}", app / 5).into();
    e.plan_id = format!("plan_{}", app % 4).into();
    e.subscription_id = format!("sub_{app:04}").into();
    e.key_prefix = format!("tg_live_{app:04}").into();
    let roll: f64 = rng.random();
    e.status = if roll < 0.90 {
        200
    } else if roll < 0.93 {
        201
    } else if roll < 0.96 {
        404
    } else if roll < 0.98 {
        429
    } else if roll < 0.99 {
        401
    } else {
        503
    };
    // Log-normal-ish: most calls 2-20 ms, a long tail.
    let base: f64 = rng.random_range(0.0_f64..1.0);
    e.latency_us = (2000.0 * (base * 3.5).exp()) as u32;
    e.upstream_latency_us = e.latency_us.saturating_sub(150);
    e.bytes_in = if &*e.method == "POST" {
        rng.random_range(50..2000)
    } else {
        0
    };
    e.bytes_out = rng.random_range(100..20_000);
    e.node = "bench".into();
    e.client_ip = format!("10.0.{}.{}", app % 250, api).into();
    e.overage = rng.random_bool(0.01);
    e
}

/// Inserts the batch as the shipper inserts a new segment's; returns how long
/// the insert took.
async fn ship(store: &UsageStore, batch: &[UsageEvent]) -> Duration {
    // As the spool holds it, and decoded when the store takes events.
    let records = encode_records(batch);
    let events = if store.takes_events() {
        batch.to_vec()
    } else {
        Vec::new()
    };
    let batch_id = batch[0].id.simple().to_string();
    let t = Instant::now();
    store
        .insert_spooled(&batch_id, &records, &events, false)
        .await
        .expect("insert");
    t.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn measure<F, Fut>(label: &str, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run().await; // warm-up
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        run().await;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "  {label}: p50 {:.1} ms, p95 {:.1} ms (20 runs)",
        percentile(&times, 0.50),
        percentile(&times, 0.95)
    );
}

async fn bench(kind: &str, events: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    let database = format!("tg_bench_{}", std::process::id());
    let url = std::env::var("TOLLGATE_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    if kind == "clickhouse" {
        settings.clickhouse_url = Some(url.clone());
        settings.clickhouse_database = database.clone();
    }
    let store = UsageStore::open(&settings)
        .await
        .expect("open the usage store");
    println!("{} with {events} events over 30 days:", store.describe());

    let mut rng = StdRng::seed_from_u64(42);
    let apis: Vec<(Text, Text)> = (0..APIS)
        .map(|i| (format!("api_{i:02}").into(), format!("api-{i:02}").into()))
        .collect();
    let routes: Vec<Vec<Text>> = apis
        .iter()
        .map(|(_, slug)| {
            (0..5)
                .map(|r| format!("/{slug}/r{r}/{{id}}").into())
                .collect()
        })
        .collect();
    if std::env::var_os("USAGE_INSERT_ONLY").is_some() {
        insert_cost(&store, &mut rng, &apis, &routes).await;
        drop_database(kind, &url, &database).await;
        return;
    }
    let mut inserting = Duration::ZERO;
    let mut left = events;
    while left > 0 {
        let n = left.min(BATCH);
        // In time order, as gateways send them: each batch is the next slice
        // of the 30 days.
        let first = events - left;
        let batch: Vec<UsageEvent> = (first..first + n)
            .map(|k| {
                let mut e = event(&mut rng, &apis, &routes);
                e.timestamp_ms = START_MS + (k as u64 * 30 * DAY_MS) / events as u64;
                e
            })
            .collect();
        inserting += ship(&store, &batch).await;
        left -= n;
    }
    println!(
        "  insert: {:.0} events/s ({:.1} s in {}-event inserts, generation not counted)",
        events as f64 / inserting.as_secs_f64(),
        inserting.as_secs_f64(),
        BATCH
    );

    let params = TimeSeriesParams {
        from: Some("2026-01-01T00:00:00Z"),
        to: Some("2026-01-31T00:00:00Z"),
        bucket: Some("day"),
        ..TimeSeriesParams::default()
    };
    let series = TimeSeriesQuery::parse(params).unwrap();
    let calls: u64 = store
        .time_series(&series)
        .await
        .unwrap()
        .points
        .iter()
        .map(|p| p.calls)
        .sum();
    assert_eq!(calls, events as u64, "the series counts every event");
    measure("30-day daily time series", || async {
        store.time_series(&series).await.unwrap();
    })
    .await;
    let top = TopQuery::parse(params, Some("app"), Some("10")).unwrap();
    measure("top 10 apps over 30 days", || async {
        store.top(&top).await.unwrap();
    })
    .await;
    let one_api = TimeSeriesQuery::parse(TimeSeriesParams {
        api: Some("api-03"),
        ..params
    })
    .unwrap();
    measure("30-day daily time series of one API", || async {
        store.time_series(&one_api).await.unwrap();
    })
    .await;
    // No rollup answers these: every event of the range is read.
    let summary = SummaryQuery::parse(params.from, params.to, None).unwrap();
    measure("30-day summary, exact percentiles (raw events)", || async {
        store.summary(&summary).await.unwrap();
    })
    .await;
    let one_key = TimeSeriesQuery::parse(TimeSeriesParams {
        app: Some("app_0007"),
        key: Some("tg_live_0007"),
        ..params
    })
    .unwrap();
    measure("30-day daily series of one key (raw events)", || async {
        store.time_series(&one_key).await.unwrap();
    })
    .await;

    insert_cost(&store, &mut rng, &apis, &routes).await;
    drop_database(kind, &url, &database).await;
}

/// Microseconds per event of 10,000-event batches, each one second of traffic
/// (after the 30 days the queries read).
async fn insert_cost(
    store: &UsageStore,
    rng: &mut StdRng,
    apis: &[(Text, Text)],
    routes: &[Vec<Text>],
) {
    const EVENTS: usize = 10_000;
    /// Two minutes of traffic: the embedded store folds its queued events into
    /// the rollups about once a minute of it, inside an insert.
    const SECONDS: u64 = 120;
    let mut times = Vec::new();
    let mut total = Duration::ZERO;
    for second in 0..=SECONDS {
        let batch: Vec<UsageEvent> = (0..EVENTS)
            .map(|i| {
                let mut e = event(rng, apis, routes);
                e.timestamp_ms = START_MS + 31 * DAY_MS + second * 1000 + (i / 10) as u64;
                e
            })
            .collect();
        let took = ship(store, &batch).await;
        if second > 0 {
            // The first batch warms up.
            total += took;
            times.push(took / EVENTS as u32);
        }
    }
    // What is still queued is folded at the next query: counted too.
    let t = Instant::now();
    if let UsageStore::Embedded(s) = store {
        s.fold().await.expect("fold");
    }
    let last_fold = t.elapsed();
    total += last_fold;
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  insert cost at 10,000 calls/s: mean {:.2} µs per event with every fold \
         (last fold {:.0} ms); per batch p50 {:.2} µs, p95 {:.2} µs, max {:.2} µs per event \
         ({} batches of {EVENTS})",
        us(total) / (SECONDS as f64 * EVENTS as f64),
        last_fold.as_secs_f64() * 1e3,
        us(times[times.len() / 2]),
        us(times[(times.len() * 95).div_ceil(100) - 1]),
        us(times[times.len() - 1]),
        times.len()
    );
}

async fn drop_database(kind: &str, url: &str, database: &str) {
    if kind == "clickhouse" {
        let _ = reqwest::Client::new()
            .post(format!("{url}/"))
            .body(format!("DROP DATABASE IF EXISTS {database}"))
            .send()
            .await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("USAGE_STORE").ok();
    let count = |default: usize| {
        std::env::var("USAGE_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if only.as_deref().is_none_or(|s| s == "clickhouse") {
        bench("clickhouse", count(10_000_000)).await;
    }
    if only.as_deref().is_none_or(|s| s == "embedded") {
        bench("embedded", count(1_000_000)).await;
    }
}
