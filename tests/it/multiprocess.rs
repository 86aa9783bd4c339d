//! Several processes on one PostgreSQL: a portal (admin API) and two gateways.
//! Polling is set to 30 s, so only LISTEN/NOTIFY can deliver changes in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_testkit::upstream::Upstream;

use crate::cli::{Process, RemoteAdmin, configured};
use crate::support::{Stack, test_settings};

/// Polling this slow leaves LISTEN/NOTIFY as the only way a change arrives in time.
fn no_polling(mut cmd: tokio::process::Command) -> tokio::process::Command {
    cmd.env("TOLLGATE_CONFIG_POLL_INTERVAL_MS", "30000");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_honour_changes_within_a_second() {
    let (settings, db, ch) = test_settings(Stack::Scaled).await;
    let ch = ch.unwrap();
    let portal = Process::spawn(no_polling(configured("portal", &settings, Some(&ch)))).await;
    let gw1 = Process::spawn(no_polling(configured("gateway", &settings, Some(&ch)))).await;
    let gw2 = Process::spawn(no_polling(configured("gateway", &settings, Some(&ch)))).await;
    let gateways = [gw1.printed("Gateway:"), gw2.printed("Gateway:")];
    assert_ne!(gateways[0], gateways[1]);
    let http = reqwest::Client::new();
    let remote = RemoteAdmin::of(&portal);
    let upstream = Upstream::echo().await;
    let app_id = remote.provision("shared", &upstream.url(), json!({})).await;

    // A new key, created in the portal process, reaches both gateways within a second.
    let calls = AtomicU64::new(0);
    for round in 0..3 {
        let key = remote.key(&app_id).await;
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
    let url = format!("/usage/summary?from={from}");
    let total = tollgate_testkit::eventually(Duration::from_secs(5), || async {
        let v = remote.get(&url).await;
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
        // Every change since start was patched in from the change log, none
        // needed a whole reload.
        let reloads = |kind: &str| -> f64 {
            let prefix = format!(r#"tollgate_config_reloads_total{{kind="{kind}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no {kind} reload counter:\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(reloads("incremental") >= 3.0, "{text}");
        assert_eq!(reloads("full"), 0.0, "{text}");
    }

    for p in [gw1, gw2, portal] {
        assert!(p.terminate().await.success());
    }
    db.cleanup().await;
    ch.cleanup().await;
}
