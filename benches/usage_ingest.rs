//! Ingest: events per second from one node into ClickHouse through the usage
//! writer alone — queue, spool (encode, append, sync), shipper (read, decode,
//! RowBinary insert) — with no gateway in front.
//!
//! Records `INGEST_EVENTS` realistic events (default 3,000,000: 40 APIs with
//! skewed traffic, 2,000 apps, mixed statuses and latencies) as fast as the
//! queue takes them, and times from the first event until ClickHouse has
//! confirmed the last one; then checks that ClickHouse holds exactly that many.
//!
//!   cargo bench --bench usage_ingest
//!   INGEST_EVENTS=5000000 INGEST_BATCH=10000 cargo bench --bench usage_ingest
//!
//! `INGEST_BATCH` defaults to the writer's default batch size (a full segment).
//!
//! ClickHouse at TOLLGATE_TEST_CLICKHOUSE_URL (default http://127.0.0.1:8123), in
//! a database of its own that is dropped at the end; the spool in a temporary
//! directory.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate_analytics::event::Text;
use tollgate_analytics::writer::WriterSettings;
use tollgate_analytics::{UsageEvent, UsageStore, UsageWriter};
use tollgate_core::Settings;

const APIS: usize = 40;
const APPS: usize = 2_000;

/// Texts shared like the gateway shares them (from its snapshot).
struct Texts {
    apis: Vec<(Text, Text, Text)>,
    apps: Vec<(Text, Text, Text, Text, Text)>,
    node: Text,
    get: Text,
    post: Text,
    ok: Text,
    limited: Text,
}

fn texts() -> Texts {
    Texts {
        apis: (0..APIS)
            .map(|i| {
                (
                    format!("api_{i:02}").into(),
                    format!("api-{i:02}").into(),
                    format!("/api-{i:02}").into(),
                )
            })
            .collect(),
        apps: (0..APPS)
            .map(|a| {
                (
                    format!("app_{a:04}").into(),
                    format!("usr_{:03}", a / 5).into(),
                    format!("plan_{}", a % 4).into(),
                    format!("sub_{a:04}").into(),
                    format!("tg_live_{a:04}").into(),
                )
            })
            .collect(),
        node: "bench".into(),
        get: "GET".into(),
        post: "POST".into(),
        ok: "".into(),
        limited: "rate_limited".into(),
    }
}

fn event(rng: &mut StdRng, t: &Texts, now_ms: u64) -> UsageEvent {
    let mut e = UsageEvent::new(now_ms);
    let api = &t.apis[((rng.random::<f64>().powi(3)) * APIS as f64) as usize % APIS];
    e.api_id.clone_from(&api.0);
    e.api_slug.clone_from(&api.1);
    e.route.clone_from(&api.2);
    let app = &t.apps[((rng.random::<f64>().powi(2)) * APPS as f64) as usize % APPS];
    e.app_id.clone_from(&app.0);
    e.developer_id.clone_from(&app.1);
    e.plan_id.clone_from(&app.2);
    e.subscription_id.clone_from(&app.3);
    e.key_prefix.clone_from(&app.4);
    e.node.clone_from(&t.node);
    let post = rng.random_bool(0.2);
    e.method = if post { t.post.clone() } else { t.get.clone() };
    let roll: f64 = rng.random();
    e.status = if roll < 0.93 {
        200
    } else if roll < 0.97 {
        404
    } else if roll < 0.99 {
        429
    } else {
        503
    };
    e.error_code = if e.status == 429 {
        t.limited.clone()
    } else {
        t.ok.clone()
    };
    e.latency_us = (2000.0 * (rng.random_range(0.0_f64..1.0) * 3.5).exp()) as u32;
    e.upstream_latency_us = e.latency_us.saturating_sub(150);
    e.bytes_in = if post { rng.random_range(50..2000) } else { 0 };
    e.bytes_out = rng.random_range(100..20_000);
    e.client_ip = app.4.clone();
    e
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events = env_or("INGEST_EVENTS", 3_000_000) as u64;
    let batch = env_or(
        "INGEST_BATCH",
        WriterSettings::new(std::path::Path::new("")).batch_size,
    );
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("TOLLGATE_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let database = format!("tg_ingest_{}", std::process::id());
    let mut settings = Settings::for_data_dir(dir.path());
    settings.clickhouse_url = Some(url.clone());
    settings.clickhouse_database = database.clone();
    let store = UsageStore::open(&settings).await.expect("open ClickHouse");
    let writer_settings = WriterSettings {
        batch_size: batch,
        ..WriterSettings::new(dir.path())
    };
    let (recorder, writer) =
        UsageWriter::start(store.clone(), writer_settings.clone()).expect("start the writer");
    let stats = recorder.stats().clone();
    println!(
        "{events} events into {} through the writer (batch {batch}, sync every {} ms, segments sealed every {} ms):",
        store.describe(),
        writer_settings.sync_interval.as_millis(),
        writer_settings.flush_interval.as_millis()
    );

    let t = texts();
    let mut rng = StdRng::seed_from_u64(7);
    let start = Instant::now();
    let start_ms = chrono::Utc::now().timestamp_millis() as u64;
    let room = writer_settings.queue_capacity * 9 / 10;
    let mut last_report = Instant::now();
    for i in 0..events {
        // As fast as the queue takes them, never dropping: wait when it is
        // nearly full (the writer is behind).
        while recorder.queue_depth() >= room {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        recorder.record(event(&mut rng, &t, start_ms + i / 100));
        if i % 4096 == 0 {
            tokio::task::yield_now().await;
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                println!(
                    "  {:>5.1} s: recorded {i}, spooled {}, shipped {}, spool {} MB",
                    start.elapsed().as_secs_f64(),
                    stats.spooled.load(Ordering::Relaxed),
                    stats.written.load(Ordering::Relaxed),
                    stats.spool.bytes.load(Ordering::Relaxed) >> 20
                );
            }
        }
    }
    let recorded = start.elapsed();
    while stats.written.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shipped = start.elapsed();
    let spool_bytes_per_event = {
        // Spooled bytes are gone by now; estimate from one encoded record.
        let mut enc = tollgate_analytics::record::RecordEncoder::new();
        let mut r = StdRng::seed_from_u64(7);
        for _ in 0..1024 {
            enc.push(&event(&mut r, &t, start_ms));
        }
        let mut buf = Vec::new();
        enc.finish(&mut buf);
        buf.len() as f64 / 1024.0
    };
    writer.shutdown().await;
    let dropped = stats.dropped_queue_full.load(Ordering::Relaxed)
        + stats.dropped_spool_full.load(Ordering::Relaxed)
        + stats.dropped_spool_error.load(Ordering::Relaxed);
    let stored: u64 = reqwest::Client::new()
        .post(format!("{url}/"))
        .body(format!("SELECT count() FROM {database}.usage_events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (insert_s, inserts) = {
        // The histogram as /metrics shows it: its _sum and _count.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("insert_seconds", "", stats.insert_seconds.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        (
            value("insert_seconds_sum "),
            value("insert_seconds_count ") as u64,
        )
    };
    println!(
        "  recorded in {:.1} s; all shipped after {:.1} s: {:.0} events/s sustained",
        recorded.as_secs_f64(),
        shipped.as_secs_f64(),
        events as f64 / shipped.as_secs_f64()
    );
    println!(
        "  {} inserts, mean {:.0} ms; {:.1} spool bytes per event; dropped {dropped}; failed inserts {}",
        inserts,
        insert_s / inserts.max(1) as f64 * 1e3,
        spool_bytes_per_event,
        stats.write_failures.load(Ordering::Relaxed)
    );
    assert_eq!(dropped, 0, "events dropped");
    assert_eq!(stored, events, "ClickHouse holds every event exactly once");
    let _ = reqwest::Client::new()
        .post(format!("{url}/"))
        .body(format!("DROP DATABASE IF EXISTS {database}"))
        .send()
        .await;
}
