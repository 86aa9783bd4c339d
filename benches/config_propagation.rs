//! Configuration propagation at scale, and the gateway's memory by key count.
//!
//! On a fresh PostgreSQL database: 1,000 APIs (routes), 100 plans of 10 APIs
//! each, 10,000 apps with 10 keys each (100,000 keys), every app subscribed to a
//! plan. A portal process (the admin API) and a gateway process run on it, with
//! polling set to 30 s so only LISTEN/NOTIFY delivers changes. Then, 100 times:
//! a new key is created through the admin API, and the time until the gateway
//! accepts it is measured (a call every ~0.2 ms on one keep-alive connection).
//! Finally the gateway's resident memory is read with 100,000 keys and, after
//! adding 900,000 more and restarting it, with 1,000,000.
//!
//!   cargo bench --bench config_propagation
//!
//! Needs PostgreSQL (TOLLGATE_TEST_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/postgres), creates and drops its own database.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

mod support;
use support::{Proc, TempPgDatabase, migrate, percentile};

const TOKEN: &str = "bench-admin-token-0123456789";
const APIS: i64 = 1_000;
const PLANS: i64 = 100;
const APPS: i64 = 10_000;
const CHANGES: usize = 100;
/// Only LISTEN/NOTIFY delivers changes; the admin API takes the bench token.
const ENV: &[(&str, &str)] = &[
    ("TOLLGATE_CONFIG_POLL_INTERVAL_MS", "30000"),
    ("TOLLGATE_ADMIN_TOKEN", TOKEN),
];

/// Adds apps (10 keys each, one subscription each) numbered `from..to`.
async fn seed_apps(pool: &sqlx::PgPool, from: i64, to: i64) {
    let now = 1_767_225_600_000_i64;
    sqlx::query(
        "INSERT INTO apps (id, developer_id, name, created_at, updated_at) \
         SELECT 'app_b' || i, 'usr_bench', 'App ' || i, $3, $3 FROM generate_series($1, $2 - 1) i",
    )
    .bind(from)
    .bind(to)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO api_keys (id, app_id, key_hash, prefix, status, created_at) \
         SELECT 'key_b' || k, 'app_b' || (k / 10), encode(sha256(('bench-key-' || k)::bytea), 'hex'), \
                'tg_live_bnch', 'active', $3 \
         FROM generate_series($1 * 10, $2 * 10 - 1) k",
    )
    .bind(from)
    .bind(to)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (id, app_id, plan_id, status, created_at, updated_at) \
         SELECT 'sub_b' || i, 'app_b' || i, 'plan_b' || (i % $3), 'active', $4, $4 \
         FROM generate_series($1, $2 - 1) i",
    )
    .bind(from)
    .bind(to)
    .bind(PLANS)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
}

async fn seed(pool: &sqlx::PgPool, upstream: &str) {
    let now = 1_767_225_600_000_i64;
    sqlx::query(
        "INSERT INTO apis (id, name, slug, base_path, upstreams, visibility, created_at, updated_at) \
         SELECT 'api_b' || i, 'API ' || i, 'api-' || i, '/api' || i, $2, 'public', $3, $3 \
         FROM generate_series(0, $1 - 1) i",
    )
    .bind(APIS)
    .bind(format!("[\"{upstream}\"]"))
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO plans (id, name, price_minor, currency, billing_interval, status, created_at, updated_at) \
         SELECT 'plan_b' || i, 'Plan ' || i, 0, 'USD', 'month', 'active', $2, $2 FROM generate_series(0, $1 - 1) i",
    )
    .bind(PLANS)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO plan_apis (plan_id, api_id) \
         SELECT 'plan_b' || (i / 10), 'api_b' || i FROM generate_series(0, $1 - 1) i",
    )
    .bind(APIS)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, name, role, created_at, updated_at) \
         VALUES ('usr_bench', 'bench@example.com', 'Bench', 'developer', $1, $1)",
    )
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    seed_apps(pool, 0, APPS).await;
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let database = TempPgDatabase::create("tollgate_bench").await;
    let db = database.url.clone();
    let data = tempfile::tempdir().unwrap();
    let upstream = tollgate_testkit::upstream::Upstream::echo().await;

    migrate(&db, data.path());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db)
        .await
        .unwrap();
    let t = Instant::now();
    seed(&pool, &upstream.url()).await;
    println!(
        "seeded {APIS} APIs, {PLANS} plans, {APPS} apps, {} keys in {:.1} s",
        APPS * 10,
        t.elapsed().as_secs_f64()
    );

    let portal = Proc::start(&["portal"], &db, data.path(), ENV);
    let t = Instant::now();
    let gateway = Proc::start(&["gateway"], &db, data.path(), ENV);
    let start_100k = t.elapsed();
    let admin_api = portal.printed("Admin API:");
    let gw = gateway.printed("Gateway:");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    // A seeded key works: the configuration is loaded.
    let probe = http
        .get(format!("{gw}/api5/x"))
        .header("x-api-key", "bench-key-0")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(probe, 200, "a seeded key must work");

    let mut samples = Vec::with_capacity(CHANGES);
    let mut posts = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let app = format!("app_b{}", i * 97 % APPS as usize);
        let created = Instant::now();
        let resp = http
            .post(format!("{admin_api}/apps/{app}/keys"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: serde_json::Value = resp.json().await.unwrap();
        posts.push(created.elapsed());
        let key = body["key"].as_str().unwrap().to_owned();
        let api = (i * 97 % APPS as usize) % PLANS as usize * 10;
        loop {
            let status = http
                .get(format!("{gw}/api{api}/x"))
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap()
                .status();
            if status == 200 {
                break;
            }
            assert_eq!(status, 401, "only unknown-key refusals are expected");
            assert!(
                created.elapsed() < Duration::from_secs(10),
                "change {i} never arrived"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(created.elapsed());
    }
    samples.sort();
    posts.sort();
    println!(
        "  of which the admin API's answer to the POST: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&posts, 0.50).as_secs_f64() * 1e3,
        percentile(&posts, 0.99).as_secs_f64() * 1e3,
    );
    let rss_100k = gateway.rss_mib();
    let metrics = http
        .get(gateway.printed("Metrics:"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reloads: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_config_reloads_total"))
        .collect();
    println!(
        "propagation over {CHANGES} changes (admin API POST -> accepted by the other process): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {reloads:?}",
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
    println!(
        "gateway with {} keys, {APIS} routes: RSS {rss_100k:.0} MiB, started (full load) in {:.2} s",
        APPS * 10,
        start_100k.as_secs_f64()
    );
    gateway.stop();

    let t = Instant::now();
    seed_apps(&pool, APPS, APPS * 10).await;
    println!(
        "seeded {} more keys in {:.1} s",
        APPS * 90,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let gateway = Proc::start(&["gateway"], &db, data.path(), ENV);
    let start_1m = t.elapsed();
    let gw = gateway.printed("Gateway:");
    // Key 999,999 belongs to app 99,999, subscribed to plan 99 (APIs 990-999).
    let status = http
        .get(format!("{gw}/api990/x"))
        .header("x-api-key", "bench-key-999999")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "the millionth key works");
    println!(
        "gateway with {} keys, {APIS} routes: RSS {:.0} MiB, started (full load) in {:.2} s",
        APPS * 100,
        gateway.rss_mib(),
        start_1m.as_secs_f64()
    );
    gateway.stop();
    portal.stop();
    pool.close().await;
    database.drop().await;
}
