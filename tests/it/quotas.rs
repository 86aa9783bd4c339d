//! Quotas over real sockets: hard and soft, plan changes, and several gateway
//! processes leasing from one counter — in the database or in Redis.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_core::config::QuotaCounterKind;
use tollgate_testkit::upstream::{Upstream, closed_port};

use crate::cli::{Process, RemoteAdmin, configured};
use crate::on_both_stacks;
use crate::support::{
    Stack, TestApp, drop_redis_quota_counters, redis_quota_counters, redis_url, test_settings,
};

/// An in-process app (SQLite, embedded usage store) whose quota counters live in Redis.
async fn app_on_redis_counter(redis: String) -> TestApp {
    let (mut settings, db, ch) = test_settings(Stack::Embedded).await;
    settings.redis_url = Some(redis);
    settings.quota_counter = QuotaCounterKind::Redis;
    TestApp::start_with(settings, db, ch).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_quota_refuses_then_an_upgrade_applies_within_a_second() {
    hard_quota_refuses_then_an_upgrade_applies(TestApp::start(Stack::Embedded).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_quota_in_redis_refuses_then_an_upgrade_applies_within_a_second() {
    let app = app_on_redis_counter(redis_url()).await;
    let sub = hard_quota_refuses_then_an_upgrade_applies(app).await;
    let counters = redis_quota_counters(&sub).await;
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(counters[0].1, 7, "{counters:?}");
    drop_redis_quota_counters(&sub).await;
}

/// Returns the subscription's id.
async fn hard_quota_refuses_then_an_upgrade_applies(app: TestApp) -> String {
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
    p.subscription_id
}

async fn soft_quota_marks_overage(stack: Stack) {
    soft_quota_marks_overage_on(TestApp::start(stack).await).await;
}
on_both_stacks!(soft_quota_marks_overage, super::soft_quota_marks_overage);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_quota_in_redis_marks_overage() {
    let sub = soft_quota_marks_overage_on(app_on_redis_counter(redis_url()).await).await;
    let counters = redis_quota_counters(&sub).await;
    // Leased in blocks of 100, the unused rest given back at shutdown.
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(counters[0].1, 7, "{counters:?}");
    drop_redis_quota_counters(&sub).await;
}

/// Returns the subscription's id.
async fn soft_quota_marks_overage_on(app: TestApp) -> String {
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
    p.subscription_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_counter_admits_calls_as_unknown() {
    let app = app_on_redis_counter(format!("redis://{}", closed_port().await)).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("down", &upstream.url()).await;
    app.admin(
        "PATCH",
        &format!("/admin/plans/{}", p.plan_id),
        Some(json!({"included_calls": 1})),
    )
    .await;
    app.synced().await;
    // Quotas never stop the gateway serving: all three pass the hard quota of 1.
    for _ in 0..3 {
        assert_eq!(app.call("/down/x", Some(&p.key)).await.status(), 200);
    }
    assert_eq!(upstream.hits(), 3);
    let stats = &app.running.gateway.as_ref().unwrap().quotas().stats;
    assert_eq!(stats.unknown.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(stats.leases.load(std::sync::atomic::Ordering::Relaxed), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_hard_quota_and_counters_survive_restarts() {
    three_gateways_share_one_hard_quota(QuotaCounterKind::Database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_hard_quota_in_redis_and_counters_survive_restarts() {
    three_gateways_share_one_hard_quota(QuotaCounterKind::Redis).await;
}

async fn three_gateways_share_one_hard_quota(counter: QuotaCounterKind) {
    let (settings, db, ch) = test_settings(Stack::Scaled).await;
    let ch = ch.unwrap();
    let spawn = |mode: &str| {
        let mut cmd = configured(mode, &settings, Some(&ch));
        cmd.env("TOLLGATE_QUOTA_LEASE_SIZE", "10");
        if counter == QuotaCounterKind::Redis {
            cmd.env("TOLLGATE_QUOTA_COUNTER", "redis")
                .env("TOLLGATE_REDIS_URL", redis_url());
        }
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

    // Counters live in the database or in Redis: a gateway started afterwards still refuses.
    for g in gateways {
        assert!(g.terminate().await.success());
    }
    let pool = sqlx::PgPool::connect(&settings.database_url).await.unwrap();
    let sub: String = sqlx::query_scalar("SELECT id FROM subscriptions WHERE app_id = $1")
        .bind(&app_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let in_database: Vec<i64> =
        sqlx::query_scalar("SELECT leased FROM quota_counters WHERE subscription_id = $1")
            .bind(&sub)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    let in_redis: Vec<i64> = redis_quota_counters(&sub)
        .await
        .into_iter()
        .map(|(_, leased)| leased)
        .collect();
    match counter {
        QuotaCounterKind::Database => assert_eq!((in_database, in_redis), (vec![50], vec![])),
        QuotaCounterKind::Redis => assert_eq!((in_database, in_redis), (vec![], vec![50])),
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
    drop_redis_quota_counters(&sub).await;
    db.cleanup().await;
    ch.cleanup().await;
}
