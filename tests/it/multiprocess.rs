//! Several processes on one PostgreSQL: a portal (admin API) and two gateways.
//! Polling is set to 30 s, so only LISTEN/NOTIFY can deliver changes in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::upstream::Upstream;

use crate::cli::{Process, tollgate};
use crate::support::{ADMIN_TOKEN, Stack, test_settings};

fn configured(
    mode: &str,
    settings: &tollgate_core::Settings,
    ch: &tollgate_testkit::TestClickHouse,
) -> tokio::process::Command {
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", &settings.data_dir)
        .env("DATABASE_URL", &settings.database_url)
        .env("CLICKHOUSE_URL", &ch.url)
        .env("TOLLGATE_CLICKHOUSE_DATABASE", &ch.database)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_CONFIG_POLL_INTERVAL_MS", "30000")
        .env("TOLLGATE_USAGE_FLUSH_INTERVAL_MS", "100")
        .arg(mode);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_honour_changes_within_a_second() {
    let (settings, db, ch) = test_settings(Stack::Scaled).await;
    let ch = ch.unwrap();
    let portal = Process::spawn(configured("portal", &settings, &ch)).await;
    let gw1 = Process::spawn(configured("gateway", &settings, &ch)).await;
    let gw2 = Process::spawn(configured("gateway", &settings, &ch)).await;
    let admin = portal.printed("Admin API:");
    let gateways = [gw1.printed("Gateway:"), gw2.printed("Gateway:")];
    assert_ne!(gateways[0], gateways[1]);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = http
            .post(format!("{admin}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 201);
            resp.json::<Value>().await.unwrap()
        }
    };

    let upstream = Upstream::echo().await;
    post("/apis", json!({"name": "Shared", "slug": "shared", "base_path": "/shared", "upstreams": [upstream.url()]})).await;
    let plan = post("/plans", json!({"name": "Free", "apis": ["shared"]})).await;
    let dev = post(
        "/developers",
        json!({"email": "multi@example.com", "name": "M"}),
    )
    .await;
    let app = post("/apps", json!({"developer_id": dev["id"], "name": "A"})).await;
    post(
        "/subscriptions",
        json!({"app_id": app["id"], "plan_id": plan["id"]}),
    )
    .await;

    // A new key, created in the portal process, reaches both gateways within a second.
    let calls = AtomicU64::new(0);
    for round in 0..3 {
        let key = post(
            &format!("/apps/{}/keys", app["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
        let key = key["key"].as_str().unwrap().to_owned();
        let created = Instant::now();
        for gw in &gateways {
            let seen = tollgate_testkit::eventually(Duration::from_secs(1), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                let resp = http
                    .get(format!("{gw}/shared/x"))
                    .header("x-api-key", &key)
                    .send()
                    .await
                    .unwrap();
                (resp.status() == 200).then_some(())
            })
            .await;
            assert!(
                seen.is_some(),
                "round {round}: gateway {gw} did not accept the new key within 1 s"
            );
        }
        assert!(created.elapsed() < Duration::from_secs(2));
    }

    // Usage from both gateway processes, counted exactly once in ClickHouse.
    let calls = calls.load(Ordering::SeqCst);
    let from = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = format!("{admin}/usage/summary?from={from}");
    let total = tollgate_testkit::eventually(Duration::from_secs(5), || async {
        let v: Value = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["total_calls"].as_u64() == Some(calls)).then_some(calls)
    })
    .await;
    assert_eq!(
        total,
        Some(calls),
        "usage from two gateways does not add up"
    );

    // Each gateway process serves its own metrics on its admin listener.
    for gw in [&gw1, &gw2] {
        let text = http
            .get(gw.printed("Metrics:"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(r#"tollgate_requests_total{api="shared",class="2xx"}"#))
            .unwrap_or_else(|| panic!("no request counter:\n{text}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 3.0, "{line}");
    }

    for p in [gw1, gw2, portal] {
        assert!(p.terminate().await.success());
    }
    db.cleanup().await;
    ch.cleanup().await;
}
