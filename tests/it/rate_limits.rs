//! Rate limits over real sockets: local GCRA, Redis cluster mode with several
//! gateway processes, and Redis failure modes.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::{Upstream, closed_port};

use crate::cli::{Process, RemoteAdmin, configured};
use crate::support::{Stack, TestApp, redis_url, test_settings};

async fn limited_plan(
    app: &TestApp,
    slug: &str,
    upstream: &str,
    limits: Value,
) -> (String, Vec<String>) {
    app.create("/admin/apis", json!({"name": slug, "slug": slug, "base_path": format!("/{slug}"), "upstreams": [upstream]}))
        .await;
    let plan = app
        .create(
            "/admin/plans",
            json!({"name": slug, "apis": [slug], "rate_limits": limits}),
        )
        .await;
    let dev = app
        .create(
            "/admin/developers",
            json!({"email": format!("{slug}@example.com"), "name": "D"}),
        )
        .await;
    let a = app
        .create(
            "/admin/apps",
            json!({"developer_id": dev["id"], "name": "A"}),
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_owned();
    app.create(
        "/admin/subscriptions",
        json!({"app_id": app_id, "plan_id": plan["id"]}),
    )
    .await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let k = app
            .create(&format!("/admin/apps/{app_id}/keys"), json!({}))
            .await;
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    app.synced().await;
    (app_id, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limits_per_app_and_per_key() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let (_, keys) = limited_plan(
        &app,
        "perapp",
        &upstream.url(),
        json!([{"limit": 3, "window": "minute"}]),
    )
    .await;

    for left in [2, 1, 0] {
        let resp = app.call("/perapp/x", Some(&keys[left % 2])).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["ratelimit-limit"], "3");
        assert_eq!(
            resp.headers()["ratelimit-remaining"],
            left.to_string().as_str()
        );
        let reset: u64 = resp.headers()["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    // Both keys of the app share the budget.
    for key in &keys {
        let resp = app.call("/perapp/x", Some(key)).await;
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=20).contains(&retry),
            "one call every 20 s: retry after {retry}"
        );
        assert_eq!(resp.headers()["ratelimit-remaining"], "0");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    assert_eq!(upstream.hits(), 3, "refused calls never reach the upstream");

    // Per key: each key has its own budget.
    let (_, keys) = limited_plan(
        &app,
        "perkey",
        &upstream.url(),
        json!([{"limit": 2, "window": "hour", "per": "key"}]),
    )
    .await;
    for key in &keys {
        assert_eq!(app.call("/perkey/x", Some(key)).await.status(), 200);
        assert_eq!(app.call("/perkey/x", Some(key)).await.status(), 200);
        assert_eq!(app.call("/perkey/x", Some(key)).await.status(), 429);
    }

    // Refused calls are metered like any other answer: 3 + 2 + 2 * 3.
    app.expect_usage(None, 11).await;

    // Burst: 5 per second with a burst of 1 admits one call, then one each 200 ms.
    let (_, keys) = limited_plan(
        &app,
        "burst",
        &upstream.url(),
        json!([{"limit": 5, "window": "second", "burst": 1}]),
    )
    .await;
    assert_eq!(app.call("/burst/x", Some(&keys[0])).await.status(), 200);
    assert_eq!(app.call("/burst/x", Some(&keys[0])).await.status(), 429);
    let later = app
        .wait_status("/burst/x", Some(&keys[0]), 200, Duration::from_secs(2))
        .await;
    assert!(later.is_some(), "the steady rate admits another call");
    app.stop().await;
}

#[tokio::test]
async fn plan_rate_limits_are_validated() {
    let app = TestApp::start(Stack::Embedded).await;
    app.create(
        "/admin/apis",
        json!({"name": "v", "slug": "v", "base_path": "/v", "upstreams": ["http://127.0.0.1:9"]}),
    )
    .await;
    for (limits, field) in [
        (
            json!([{"limit": 0, "window": "minute"}]),
            "rate_limits[0].limit",
        ),
        (
            json!([{"limit": 5, "window": "fortnight"}]),
            "rate_limits[0].window",
        ),
        (
            json!([{"limit": 5, "window": "second", "burst": 0}]),
            "rate_limits[0].burst",
        ),
        (
            json!([{"limit": 5, "window": "second", "per": "galaxy"}]),
            "rate_limits[0].per",
        ),
    ] {
        let (s, b) = app
            .admin(
                "POST",
                "/admin/plans",
                Some(json!({"name": "P", "apis": ["v"], "rate_limits": limits})),
            )
            .await;
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    let plan = app
        .create(
            "/admin/plans",
            json!({"name": "P", "apis": ["v"], "rate_limits": [{"limit": 5, "window": "second"}]}),
        )
        .await;
    assert_eq!(
        plan["rate_limits"],
        json!([{"limit": 5, "window": "second", "per": "app"}])
    );
    let (s, p) = app
        .admin(
            "PATCH",
            &format!("/admin/plans/{}", plan["id"].as_str().unwrap()),
            Some(json!({"rate_limits": []})),
        )
        .await;
    assert_eq!((s, p["rate_limits"].clone()), (200, json!([])));
    app.stop().await;
}

async fn redis_failure(closed: bool) {
    let (mut settings, db, ch) = test_settings(Stack::Embedded).await;
    settings.redis_url = Some(format!("redis://{}", closed_port().await));
    settings.redis_timeout = Duration::from_millis(100);
    settings.rate_limit_fail_closed = closed;
    let app = TestApp::start_with(settings, db, ch).await;
    let upstream = Upstream::echo().await;
    let (_, keys) = limited_plan(
        &app,
        "down",
        &upstream.url(),
        json!([{"limit": 2, "window": "minute"}]),
    )
    .await;
    if closed {
        let resp = app.call("/down/x", Some(&keys[0])).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"]["code"],
            "rate_limiter_unavailable"
        );
        assert_eq!(upstream.hits(), 0);
    } else {
        // Open: this gateway's own limits apply.
        assert_eq!(app.call("/down/x", Some(&keys[0])).await.status(), 200);
        assert_eq!(app.call("/down/x", Some(&keys[0])).await.status(), 200);
        assert_eq!(app.call("/down/x", Some(&keys[0])).await.status(), 429);
    }
    let stats = &app.running.gateway.as_ref().unwrap().rate_limiter().stats;
    assert!(
        stats
            .redis_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    app.stop().await;
}

#[tokio::test]
async fn redis_down_fails_open_to_local_limits() {
    redis_failure(false).await;
}

#[tokio::test]
async fn redis_down_fails_closed_with_503() {
    redis_failure(true).await;
}

/// Counts 200s over `calls` decided calls (200 or 429) spread round-robin over
/// `gateways`. A 401 or 403 means that gateway has not loaded the key or the
/// subscription yet; it uses no budget, so the call is retried.
async fn admitted(http: &reqwest::Client, gateways: &[String], key: &str, calls: usize) -> usize {
    let mut ok = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for i in 0..calls {
        loop {
            let url = format!("{}/cluster/x", gateways[i % gateways.len()]);
            let resp = http.get(url).header("x-api-key", key).send().await.unwrap();
            match resp.status().as_u16() {
                200 => ok += 1,
                429 => {}
                401 | 403 if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                other => panic!("unexpected status {other}"),
            }
            break;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_limits_through_redis() {
    let (settings, db, ch) = test_settings(Stack::Scaled).await;
    let ch = ch.unwrap();
    let spawn = |mode: &str, redis: bool| {
        let mut cmd = configured(mode, &settings, Some(&ch));
        cmd.env("TOLLGATE_CONFIG_POLL_INTERVAL_MS", "200");
        if redis {
            cmd.env("TOLLGATE_REDIS_URL", redis_url());
        }
        Process::spawn(cmd)
    };
    let portal = spawn("portal", false).await;
    let clustered = [
        spawn("gateway", true).await,
        spawn("gateway", true).await,
        spawn("gateway", true).await,
    ];
    let alone = [spawn("gateway", false).await, spawn("gateway", false).await];
    let http = reqwest::Client::new();
    let remote = RemoteAdmin::of(&portal);
    let upstream = Upstream::echo().await;
    let limits = json!({"rate_limits": [{"limit": 10, "window": "hour"}]});
    let app_id = remote.provision("cluster", &upstream.url(), limits).await;
    let key = remote.key(&app_id).await;

    let gw = |ps: &[Process]| ps.iter().map(|p| p.printed("Gateway:")).collect::<Vec<_>>();
    let (clustered_urls, alone_urls) = (gw(&clustered), gw(&alone));
    for url in clustered_urls.iter().chain(&alone_urls) {
        let ready = tollgate_testkit::eventually(Duration::from_secs(3), || async {
            let s = http
                .get(format!("{url}/cluster/x"))
                .send()
                .await
                .unwrap()
                .status();
            (s == 401).then_some(())
        })
        .await;
        assert!(ready.is_some(), "{url} never routed the API");
    }

    // Three gateways on one Redis admit the plan's limit together, not three times it.
    assert_eq!(admitted(&http, &clustered_urls, &key, 30).await, 10);
    // Two gateways without Redis each admit the limit on their own.
    assert_eq!(admitted(&http, &alone_urls, &key, 30).await, 20);

    for p in clustered.into_iter().chain(alone).chain([portal]) {
        assert!(p.terminate().await.success());
    }
    db.cleanup().await;
    ch.cleanup().await;
}
