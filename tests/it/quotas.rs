//! Quotas over real sockets: hard and soft, plan changes, and several gateway
//! processes leasing from one counter.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::Upstream;

use crate::cli::{Process, RemoteAdmin, configured};
use crate::on_both_stacks;
use crate::support::{Stack, TestApp, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_quota_refuses_then_an_upgrade_applies_within_a_second() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("hard", &upstream.url()).await;
    let (s, _) = app
        .admin(
            "PATCH",
            &format!("/admin/plans/{}", p.plan_id),
            Some(json!({"included_calls": 5})),
        )
        .await;
    assert_eq!(s, 200);
    app.synced().await;

    for _ in 0..5 {
        assert_eq!(app.call("/hard/x", Some(&p.key)).await.status(), 200);
    }
    let resp = app.call("/hard/x", Some(&p.key)).await;
    assert_eq!(resp.status(), 429);
    let retry: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 31 * 86_400, "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("5 included calls") && message.contains("resets at"),
        "{message}"
    );
    assert_eq!(upstream.hits(), 5);

    // An upgrade applies within a second.
    app.admin(
        "PATCH",
        &format!("/admin/plans/{}", p.plan_id),
        Some(json!({"included_calls": 7})),
    )
    .await;
    assert!(
        app.wait_status("/hard/x", Some(&p.key), 200, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert_eq!(app.call("/hard/x", Some(&p.key)).await.status(), 200);
    assert_eq!(app.call("/hard/x", Some(&p.key)).await.status(), 429);
    assert_eq!(upstream.hits(), 7);
    app.stop().await;
}

async fn soft_quota_marks_overage(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("soft", &upstream.url()).await;
    app.admin(
        "PATCH",
        &format!("/admin/plans/{}", p.plan_id),
        Some(json!({"included_calls": 3, "overage": true})),
    )
    .await;
    app.synced().await;
    for _ in 0..7 {
        assert_eq!(app.call("/soft/x", Some(&p.key)).await.status(), 200);
    }
    app.expect_usage(Some("soft"), 7).await;
    let from = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, summary) = app
        .admin(
            "GET",
            &format!("/admin/usage/summary?from={from}&api=soft"),
            None,
        )
        .await;
    assert_eq!(summary["by_api"][0]["overage_calls"], 4, "{summary}");
    app.stop().await;
}
on_both_stacks!(soft_quota_marks_overage, super::soft_quota_marks_overage);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_hard_quota_and_counters_survive_restarts() {
    let (settings, db, ch) = test_settings(Stack::Scaled).await;
    let ch = ch.unwrap();
    let spawn = |mode: &str| {
        let mut cmd = configured(mode, &settings, Some(&ch));
        cmd.env("TOLLGATE_QUOTA_LEASE_SIZE", "10");
        Process::spawn(cmd)
    };
    let portal = spawn("portal").await;
    let http = reqwest::Client::new();
    let remote = RemoteAdmin::of(&portal);
    let upstream = Upstream::echo().await;
    let app_id = remote
        .provision("quota", &upstream.url(), json!({"included_calls": 50}))
        .await;
    let key = remote.key(&app_id).await;

    let gateways = [
        spawn("gateway").await,
        spawn("gateway").await,
        spawn("gateway").await,
    ];
    let urls: Vec<String> = gateways.iter().map(|g| g.printed("Gateway:")).collect();
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..150 {
        let resp = http
            .get(format!("{}/quota/x", urls[i % 3]))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                assert_eq!(
                    resp.json::<Value>().await.unwrap()["error"]["code"],
                    "quota_exceeded"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (admitted, refused),
        (50, 100),
        "three gateways together admit exactly the included calls"
    );
    assert_eq!(upstream.hits(), 50);

    // Counters live in the database: a gateway started afterwards still refuses.
    for g in gateways {
        assert!(g.terminate().await.success());
    }
    let fresh = spawn("gateway").await;
    let resp = http
        .get(format!("{}/quota/x", fresh.printed("Gateway:")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);

    // The usage store saw every answer.
    let from = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = format!("/usage/summary?from={from}&api=quota");
    let total = tollgate_testkit::eventually(Duration::from_secs(5), || async {
        let v = remote.get(&url).await;
        (v["total_calls"].as_u64() == Some(151)).then_some(())
    })
    .await;
    assert!(total.is_some(), "usage does not add up to 151 calls");
    for p in [fresh, portal] {
        assert!(p.terminate().await.success());
    }
    db.cleanup().await;
    ch.cleanup().await;
}
