//! The gateway over real sockets: admin-API setup, proxying, every refusal,
//! propagation of changes, and exact usage counts.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::{Upstream, closed_port};

use crate::on_both_stacks;
use crate::support::{Stack, TestApp};

async fn error_code(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], rid, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    (
        status,
        body["error"]["code"].as_str().unwrap().to_owned(),
        body,
    )
}

async fn proxies_and_refuses(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("echo", &upstream.url()).await;
    let mut calls = 0u64;

    // A call through the gateway returns the upstream's answer.
    let resp = app
        .http
        .post(app.gateway("/echo/things/42?color=blue&n=1"))
        .header("x-api-key", &p.key)
        .header("x-request-id", "my-request-1")
        .header("x-custom", "kept")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    calls += 1;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "my-request-1");
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/things/42");
    assert_eq!(echoed["query"], "color=blue&n=1");
    assert_eq!(echoed["body"], "hello upstream");
    let headers = &echoed["headers"];
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["x-request-id"], "my-request-1");
    assert!(
        headers.get("x-api-key").is_none(),
        "the key reached the upstream: {headers}"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    let trace = headers["traceparent"].as_str().unwrap();
    assert!(trace.starts_with("00-") && trace.len() == 55, "{trace}");

    // The key also works as `apikey` and as a bearer token, and never reaches the upstream.
    let resp = app
        .http
        .get(app.gateway("/echo"))
        .header("apikey", &p.key)
        .send()
        .await
        .unwrap();
    calls += 1;
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["path"], "/");
    assert!(echoed["headers"].get("apikey").is_none());
    assert!(
        echoed["headers"]["x-request-id"]
            .as_str()
            .is_some_and(|r| r.len() == 32)
    );
    let resp = app
        .http
        .get(app.gateway("/echo/b"))
        .bearer_auth(&p.key)
        .send()
        .await
        .unwrap();
    calls += 1;
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert!(echoed["headers"].get("authorization").is_none());
    assert_eq!(upstream.hits(), 3);

    // Missing key, wrong key.
    let (s, code, _) = error_code(app.call("/echo/x", None).await).await;
    calls += 1;
    assert_eq!((s, code.as_str()), (401, "missing_key"));
    let (s, code, _) = error_code(app.call("/echo/x", Some("tg_live_notarealkey")).await).await;
    calls += 1;
    assert_eq!((s, code.as_str()), (401, "invalid_key"));

    // Unknown path.
    let (s, code, _) = error_code(app.call("/nothing-here", Some(&p.key)).await).await;
    calls += 1;
    assert_eq!((s, code.as_str()), (404, "no_route"));
    let (s, _, _) = error_code(app.call("/echoes", Some(&p.key)).await).await;
    calls += 1;
    assert_eq!(s, 404, "a base path matches only on a segment boundary");

    // A key whose app has no subscription to this API.
    let other = app.provision("other", &upstream.url()).await;
    let (s, code, _) = error_code(app.call("/echo/x", Some(&other.key)).await).await;
    calls += 1;
    assert_eq!((s, code.as_str()), (403, "no_subscription"));
    assert_eq!(upstream.hits(), 3, "refused calls never reach the upstream");

    // Every answered call was metered once: proxied and refused alike.
    app.expect_usage(None, calls).await;
    app.expect_usage(Some("echo"), calls - 2).await;

    // The same calls as a time series of the last two hours, by the admin API:
    // all of them, and those of the key's app (refused before authentication,
    // a 404 has no app).
    let from = (chrono::Utc::now() - chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let series = |filter: String| {
        let app = &app;
        let from = from.clone();
        async move {
            let url = format!("/admin/usage/timeseries?from={from}&bucket=minute{filter}");
            let (s, series) = app.admin("GET", &url, None).await;
            assert_eq!(s, 200, "{series}");
            let points = series["points"].as_array().unwrap().clone();
            assert!((120..=121).contains(&points.len()), "every minute present");
            let total = |field: &str| {
                points
                    .iter()
                    .map(|p| p[field].as_u64().unwrap())
                    .sum::<u64>()
            };
            (total("calls"), total("client_errors"), total("errors"))
        }
    };
    assert_eq!(series(String::new()).await, (calls, calls - 3, 0));
    assert_eq!(series(format!("&app={}", p.app_id)).await, (3, 0, 0));
    let (s, top) = app
        .admin(
            "GET",
            &format!("/admin/usage/top?from={from}&dimension=api"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{top}");
    assert_eq!(top["entries"][0]["key"], "echo");
    assert_eq!(top["entries"][0]["calls"], calls - 2);
    app.stop().await;
}
on_both_stacks!(proxies_and_refuses, super::proxies_and_refuses);

async fn upstream_failures(stack: Stack) {
    let app = TestApp::start(stack).await;
    let down = closed_port().await;
    let p = app.provision("down", &format!("http://{down}")).await;
    let (s, code, _) = error_code(app.call("/down/x", Some(&p.key)).await).await;
    assert_eq!((s, code.as_str()), (502, "upstream_unreachable"));

    // Upstream timeout is 500 ms in tests; this upstream takes 3 s.
    let slow = Upstream::slow(Duration::from_secs(3)).await;
    let q = app.provision("slow", &slow.url()).await;
    let started = std::time::Instant::now();
    let (s, code, _) = error_code(app.call("/slow/x", Some(&q.key)).await).await;
    assert_eq!((s, code.as_str()), (504, "upstream_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the gateway waited for the slow upstream"
    );
    app.expect_usage(None, 2).await;
    app.stop().await;
}
on_both_stacks!(upstream_failures, super::upstream_failures);

async fn changes_apply_within_a_second(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("live", &upstream.url()).await;
    let second = Duration::from_secs(1);

    // A new key works at once (within a second).
    let key = app
        .create(&format!("/admin/apps/{}/keys", p.app_id), json!({}))
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    assert!(
        app.wait_status("/live/x", Some(&key), 200, second)
            .await
            .is_some(),
        "new key not accepted within 1 s"
    );

    // A revoked key is refused within a second.
    let (status, revoked) = app
        .admin("DELETE", &format!("/admin/keys/{}", p.key_id), None)
        .await;
    assert_eq!((status, revoked["status"].as_str()), (200, Some("revoked")));
    assert!(
        app.wait_status("/live/x", Some(&p.key), 401, second)
            .await
            .is_some(),
        "revoked key still accepted after 1 s"
    );
    assert_eq!(
        app.call("/live/x", Some(&key)).await.status(),
        200,
        "other keys of the app keep working"
    );

    // A key with an expiry works until then, and is refused as expired after.
    let expires = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let short = app
        .create(
            &format!("/admin/apps/{}/keys", p.app_id),
            json!({"expires_at": expires}),
        )
        .await;
    let short = short["key"].as_str().unwrap().to_owned();
    assert!(
        app.wait_status("/live/x", Some(&short), 200, second)
            .await
            .is_some()
    );
    assert!(
        app.wait_status("/live/x", Some(&short), 401, Duration::from_secs(3))
            .await
            .is_some()
    );
    let resp = app.call("/live/x", Some(&short)).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "expired_key"
    );

    // A suspended subscription is refused within a second, and comes back.
    let path = format!("/admin/subscriptions/{}", p.subscription_id);
    let (status, _) = app
        .admin("PATCH", &path, Some(json!({"status": "suspended"})))
        .await;
    assert_eq!(status, 200);
    assert!(
        app.wait_status("/live/x", Some(&key), 403, second)
            .await
            .is_some(),
        "suspension not applied within 1 s"
    );
    let resp = app.call("/live/x", Some(&key)).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "subscription_suspended"
    );
    app.admin("PATCH", &path, Some(json!({"status": "active"})))
        .await;
    assert!(
        app.wait_status("/live/x", Some(&key), 200, second)
            .await
            .is_some()
    );

    // A new API is routed within a second.
    let (status, _) = app
        .admin(
            "PATCH",
            &format!("/admin/plans/{}", p.plan_id),
            Some(json!({"apis": ["live"]})),
        )
        .await;
    assert_eq!(status, 200);
    app.create("/admin/apis", json!({"name": "Fresh", "slug": "fresh", "base_path": "/fresh", "upstreams": [upstream.url()]}))
        .await;
    app.admin(
        "PATCH",
        &format!("/admin/plans/{}", p.plan_id),
        Some(json!({"apis": ["live", "fresh"]})),
    )
    .await;
    assert!(
        app.wait_status("/fresh/y", Some(&key), 200, second)
            .await
            .is_some(),
        "new API not routed within 1 s"
    );
    app.stop().await;
}
on_both_stacks!(
    changes_apply_within_a_second,
    super::changes_apply_within_a_second
);

async fn keeps_serving_when_the_database_goes_away(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("steady", &upstream.url()).await;
    assert_eq!(app.call("/steady/x", Some(&p.key)).await.status(), 200);
    // Close the store's pool: every later database access fails.
    app.running.store.close().await;
    for _ in 0..5 {
        assert_eq!(app.call("/steady/x", Some(&p.key)).await.status(), 200);
    }
    assert_eq!(
        app.call("/steady/x", Some("tg_live_wrong")).await.status(),
        401
    );
    app.stop().await;
}
on_both_stacks!(
    keeps_serving_when_the_database_goes_away,
    super::keeps_serving_when_the_database_goes_away
);

async fn usage_events_describe_each_call(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("meter", &upstream.url()).await;
    let resp = app
        .http
        .post(app.gateway("/meter/items?x=1"))
        .header("x-api-key", &p.key)
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent_back = resp.bytes().await.unwrap().len() as f64;
    let refused = app
        .call("/meter/items", Some("tg_live_wrongwrongwrong"))
        .await;
    assert_eq!(refused.status(), 401);
    let unrouted = app.call("/elsewhere", None).await;
    assert_eq!(unrouted.status(), 404);

    let events = tollgate_testkit::eventually(Duration::from_secs(3), || async {
        let e = app.usage_events().await;
        (e.len() >= 3).then_some(e)
    })
    .await
    .expect("three usage events");
    assert_eq!(events.len(), 3, "{events:#?}");
    let ok = &events[0];
    assert_eq!(ok["api_slug"], "meter");
    assert_eq!(ok["route"], "/meter");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["status"], 200.0);
    assert_eq!(ok["bytes_in"], 14.0);
    assert_eq!(ok["bytes_out"], sent_back);
    assert_eq!(ok["app_id"], p.app_id.as_str());
    assert_eq!(ok["plan_id"], p.plan_id.as_str());
    assert_eq!(ok["subscription_id"], p.subscription_id.as_str());
    assert!(ok["developer_id"].as_str().unwrap().starts_with("usr_"));
    assert!(
        p.key.starts_with(ok["key_prefix"].as_str().unwrap())
            && ok["key_prefix"].as_str().unwrap().len() == 12
    );
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["node"], "test");
    assert_eq!(ok["error_code"], "");
    assert!(ok["latency_us"].as_f64().unwrap() >= ok["upstream_latency_us"].as_f64().unwrap());
    assert!(ok["upstream_latency_us"].as_f64().unwrap() > 0.0);

    let bad = &events[1];
    assert_eq!(
        (bad["status"].as_f64(), bad["error_code"].as_str()),
        (Some(401.0), Some("invalid_key"))
    );
    assert_eq!(
        (bad["api_slug"].as_str(), bad["app_id"].as_str()),
        (Some("meter"), Some(""))
    );
    let lost = &events[2];
    assert_eq!(
        (lost["status"].as_f64(), lost["error_code"].as_str()),
        (Some(404.0), Some("no_route"))
    );
    assert_eq!(lost["api_slug"], "");
    let ids: std::collections::HashSet<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    app.stop().await;
}
on_both_stacks!(
    usage_events_describe_each_call,
    super::usage_events_describe_each_call
);

#[tokio::test]
async fn accepted_keys_record_their_last_use() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("used", &upstream.url()).await;
    let (_, before) = app
        .admin("GET", &format!("/admin/keys/{}", p.key_id), None)
        .await;
    assert!(before["last_used_at"].is_null());
    assert_eq!(app.call("/used/x", Some(&p.key)).await.status(), 200);
    // Written every 5 s, off the request path.
    let seen = tollgate_testkit::eventually(Duration::from_secs(8), || async {
        let (_, key) = app
            .admin("GET", &format!("/admin/keys/{}", p.key_id), None)
            .await;
        key["last_used_at"].as_str().map(str::to_owned)
    })
    .await;
    assert!(seen.is_some(), "last_used_at was never written");
    app.stop().await;
}

/// The value of one sample in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_api_and_class() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("metered", &upstream.url()).await;
    app.admin(
        "PATCH",
        &format!("/admin/plans/{}", p.plan_id),
        Some(json!({"rate_limits": [{"limit": 2, "window": "hour"}]})),
    )
    .await;
    app.synced().await;
    for _ in 0..3 {
        app.call("/metered/x", Some(&p.key)).await;
    }
    app.call("/metered/x", None).await;
    app.call("/nowhere", None).await;
    app.expect_usage(None, 5).await;

    // Unauthenticated, on the admin listener.
    let resp = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    assert_eq!(
        get(r#"tollgate_requests_total{api="metered",class="2xx"}"#),
        2.0
    );
    assert_eq!(
        get(r#"tollgate_requests_total{api="metered",class="4xx"}"#),
        2.0
    );
    assert_eq!(
        get(r#"tollgate_requests_total{api="_unrouted",class="4xx"}"#),
        1.0
    );
    assert_eq!(
        get(r#"tollgate_request_duration_seconds_count{api="metered"}"#),
        4.0
    );
    assert_eq!(
        get(r#"tollgate_upstream_duration_seconds_count{api="metered"}"#),
        2.0
    );
    assert_eq!(
        get(r#"tollgate_rate_limit_decisions_total{decision="allowed"}"#),
        2.0
    );
    assert_eq!(
        get(r#"tollgate_rate_limit_decisions_total{decision="refused"}"#),
        1.0
    );
    assert_eq!(get("tollgate_usage_events_written_total"), 5.0);
    assert_eq!(
        get(r#"tollgate_usage_events_dropped_total{reason="queue_full"}"#),
        0.0
    );
    assert_eq!(get("tollgate_usage_queue_depth"), 0.0);
    assert_eq!(get("tollgate_usage_events_spooled_total"), 5.0);
    assert_eq!(
        get(r#"tollgate_usage_events_dropped_total{reason="spool_full"}"#),
        0.0
    );
    assert_eq!(
        get("tollgate_usage_spool_segments"),
        0.0,
        "shipped, deleted"
    );
    assert_eq!(get("tollgate_usage_spool_bytes"), 0.0);
    assert!(get("tollgate_usage_insert_duration_seconds_count") >= 1.0);
    assert_eq!(get("tollgate_config_keys"), 1.0);
    assert_eq!(get("tollgate_config_apis"), 1.0);
    assert_eq!(
        get(r#"tollgate_upstream_targets_healthy{api="metered"}"#),
        1.0
    );
    assert_eq!(
        get(r#"tollgate_quota_decisions_total{decision="exceeded"}"#),
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_openapi_document() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("ops", &upstream.url()).await;
    let doc = json!({"openapi": "3.0.3", "info": {"title": "Ops", "version": "1"}, "paths": {
        "/users/{id}": {"get": {}, "delete": {}},
        "/users/me": {"get": {}},
        "/users": {"post": {}}
    }});
    let (s, _) = app.patch_api(&p.api_id, json!({"openapi": doc})).await;
    assert_eq!(s, 200);

    assert_eq!(app.call("/ops/users/42", Some(&p.key)).await.status(), 200);
    assert_eq!(app.call("/ops/users/me", Some(&p.key)).await.status(), 200);
    let (s, code, _) = error_code(app.call("/ops/admin", Some(&p.key)).await).await;
    assert_eq!((s, code.as_str()), (404, "no_route"));
    let resp = app.call("/ops/users", Some(&p.key)).await;
    assert_eq!(resp.headers()["allow"], "POST");
    let (s, code, _) = error_code(resp).await;
    assert_eq!((s, code.as_str()), (405, "method_not_allowed"));
    assert_eq!(upstream.hits(), 2);

    // Usage events name the operation's template.
    let events = tollgate_testkit::eventually(Duration::from_secs(3), || async {
        let e = app.usage_events().await;
        (e.len() >= 4).then_some(e)
    })
    .await
    .unwrap();
    let routes: Vec<&str> = events
        .iter()
        .map(|e| e["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        ["/ops/users/{id}", "/ops/users/me", "/ops", "/ops/users"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_targets_are_retried_then_taken_out_of_rotation() {
    let app = TestApp::start(Stack::Embedded).await;
    let live = Upstream::echo().await;
    let dead = closed_port().await;
    let p = app.provision("lb", &live.url()).await;
    let (s, b) = app.patch_api(&p.api_id, json!({"upstreams": [format!("http://{dead}"), live.url()],
                        "policies": {"upstream": {"max_failures": 2, "cooldown_ms": 60000, "retries": 1}}})).await;
    assert_eq!(s, 200, "{b}");

    // GETs that land on the dead target are retried on the live one.
    for _ in 0..6 {
        assert_eq!(app.call("/lb/x", Some(&p.key)).await.status(), 200);
    }
    assert_eq!(live.hits(), 6);
    // A POST with a body is never sent twice: when it lands on the dead target it fails.
    // The dead target is out of rotation by now (two failures), so it lands on the live one.
    let resp = app
        .http
        .post(app.gateway("/lb/x"))
        .header("x-api-key", &p.key)
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Consistent hashing by a header keeps a client on one target.
    let other = Upstream::echo().await;
    let (s, b) = app.patch_api(&p.api_id, json!({"upstreams": [live.url(), other.url()],
                    "policies": {"upstream": {"balance": "consistent_hash", "hash_header": "x-user"}}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["policies"]["upstream"]["balance"], "consistent_hash");
    let (before_live, before_other) = (live.hits(), other.hits());
    for _ in 0..10 {
        let resp = app
            .http
            .get(app.gateway("/lb/x"))
            .header("x-api-key", &p.key)
            .header("x-user", "u-42")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let moved = (live.hits() - before_live, other.hits() - before_other);
    assert!(
        moved == (10, 0) || moved == (0, 10),
        "one user, one target: {moved:?}"
    );

    // With every target failing, calls are refused at once with 503.
    let dead2 = closed_port().await;
    app.patch_api(&p.api_id, json!({"upstreams": [format!("http://{dead}"), format!("http://{dead2}")],
                    "policies": {"upstream": {"max_failures": 1, "cooldown_ms": 60000, "retries": 1}}})).await;
    let (s, code, _) = error_code(app.call("/lb/x", Some(&p.key)).await).await;
    assert_eq!((s, code.as_str()), (502, "upstream_unreachable"));
    let (s, code, _) = error_code(app.call("/lb/x", Some(&p.key)).await).await;
    assert_eq!((s, code.as_str()), (503, "upstream_unavailable"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_targets_out_and_bring_them_back() {
    let app = TestApp::start(Stack::Embedded).await;
    let live = Upstream::echo().await;
    let down = closed_port().await;
    let p = app.provision("probe", &live.url()).await;
    let (s, b) = app.patch_api(&p.api_id, json!({"upstreams": [format!("http://{down}"), live.url()],
                        "policies": {"upstream": {"retries": 0, "health_check":
                            {"path": "/health", "interval_ms": 100, "timeout_ms": 200, "healthy": 1, "unhealthy": 1}}}})).await;
    assert_eq!(s, 200, "{b}");
    let metrics = |app: &TestApp| {
        let url = app.admin_url("/metrics");
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let healthy = |n: f64| {
        let metrics = &metrics;
        let app = &app;
        async move {
            tollgate_testkit::eventually(Duration::from_secs(3), || async {
                (sample(
                    &metrics(app).await,
                    r#"tollgate_upstream_targets_healthy{api="probe"}"#,
                ) == Some(n))
                .then_some(())
            })
            .await
        }
    };
    assert!(
        healthy(1.0).await.is_some(),
        "the dead target was never taken out"
    );
    // No retries: every call must land on the live target to succeed.
    for _ in 0..6 {
        assert_eq!(app.call("/probe/x", Some(&p.key)).await.status(), 200);
    }
    // The dead target comes back to life: the probes bring it into rotation.
    let revived = Upstream::echo_on(down).await;
    assert!(
        healthy(2.0).await.is_some(),
        "the revived target was never brought back"
    );
    for _ in 0..6 {
        assert_eq!(app.call("/probe/x", Some(&p.key)).await.status(), 200);
    }
    assert!(
        revived.hits() >= 3,
        "the revived target takes calls (and probes): {}",
        revived.hits()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("ws", &upstream.url()).await;
    let addr = app.running.gateway_addr.unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: gateway\r\nx-api-key: {}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        p.key
    );
    conn.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).await.unwrap(),
            1,
            "connection closed during the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");

    // Bytes now flow both ways through the gateway.
    for message in ["ping", "and pong"] {
        conn.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, message.as_bytes());
    }

    // The call is metered once, when the tunnel closes, with the bytes it
    // carried each way (12 up, 12 echoed back).
    assert!(
        app.usage_events()
            .await
            .iter()
            .all(|e| e["status"] != 101.0),
        "an open tunnel has no event yet"
    );
    drop(conn);
    let event = tollgate_testkit::eventually(Duration::from_secs(3), || async {
        app.usage_events()
            .await
            .into_iter()
            .find(|e| e["status"] == 101.0)
    })
    .await
    .expect("the upgraded call is metered when its tunnel closes");
    assert_eq!(
        (event["bytes_in"].as_f64(), event["bytes_out"].as_f64()),
        (Some(12.0), Some(12.0))
    );
    assert_eq!(event["route"], "/ws");

    // Without a key the upgrade is refused like any call.
    let mut anon = tokio::net::TcpStream::connect(addr).await.unwrap();
    anon.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 12];
    anon.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 401");

    // A tunnel still open at shutdown is closed and metered before the usage
    // writer drains.
    let mut open = tokio::net::TcpStream::connect(addr).await.unwrap();
    open.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(open.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    open.write_all(b"12345").await.unwrap();
    let mut echoed = [0u8; 5];
    open.read_exact(&mut echoed).await.unwrap();
    let gateway = app.running.gateway.clone().unwrap();
    assert_eq!(gateway.open_tunnels(), 1);
    app.stop_then(|usage| async move {
        let q = tollgate_analytics::SummaryQuery::parse(
            Some(&(chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339()),
            None,
            None,
        )
        .unwrap();
        let summary = usage.summary(&q).await.unwrap();
        assert_eq!(
            summary.by_status_class.get("1xx"),
            Some(&2),
            "both upgraded calls are metered: {summary:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_can_answer_on_their_hosts_only() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("hosted", &upstream.url()).await;
    let (s, b) = app
        .patch_api(&p.api_id, json!({"hosts": ["api.example.com"]}))
        .await;
    assert_eq!((s, b["hosts"].clone()), (200, json!(["api.example.com"])));
    let call = |host: &'static str| {
        app.http
            .get(app.gateway("/hosted/x"))
            .header("host", host)
            .header("x-api-key", &p.key)
            .send()
    };
    assert_eq!(call("api.example.com").await.unwrap().status(), 200);
    assert_eq!(
        call("API.example.com:8000").await.unwrap().status(),
        200,
        "case and port do not matter"
    );
    assert_eq!(call("other.example.com").await.unwrap().status(), 404);

    // The same base path on other hosts is another API; one API may take every
    // other host, and host-specific APIs win over it.
    let on_b = Upstream::echo().await;
    let elsewhere = Upstream::echo().await;
    app.create(
        "/admin/apis",
        json!({"name": "B", "slug": "hosted-b", "base_path": "/hosted", "hosts": ["b.example.com"],
               "upstreams": [on_b.url()], "policies": {"keyless": true}}),
    )
    .await;
    app.create(
        "/admin/apis",
        json!({"name": "Any", "slug": "hosted-any", "base_path": "/hosted",
               "upstreams": [elsewhere.url()], "policies": {"keyless": true}}),
    )
    .await;
    let (status, body) = app
        .admin(
            "POST",
            "/admin/apis",
            Some(json!({"name": "Any 2", "slug": "hosted-any2", "base_path": "/hosted", "upstreams": [elsewhere.url()]})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("every host"),
        "{body}"
    );
    tollgate_testkit::eventually(Duration::from_secs(2), || async {
        (call("other.example.com").await.unwrap().status() == 200).then_some(())
    })
    .await
    .expect("the any-host API answers other hosts");
    assert_eq!(call("b.example.com").await.unwrap().status(), 200);
    assert_eq!(call("api.example.com").await.unwrap().status(), 200);
    assert_eq!((upstream.hits(), on_b.hits(), elsewhere.hits()), (3, 1, 1));

    let (s, b) = app
        .patch_api(&p.api_id, json!({"hosts": ["Not A Host"]}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("hosts[0]")));
    app.stop().await;
}

/// An upstream that answers every request with a chunked body: `first`, then
/// `then` after `pause`, repeated `times` times, then the end.
async fn trickling_upstream(pause: Duration, times: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let start = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n";
                if conn.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..times {
                    tokio::time::sleep(pause).await;
                    if conn.write_all(b"4\r\nthen\r\n").await.is_err() {
                        return;
                    }
                }
                let _ = conn.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_run_under_read_and_total_timeouts() {
    let app = TestApp::start(Stack::Embedded).await;
    // Silent for 2 s after the first chunk; the API's read timeout is 200 ms.
    let stalling = trickling_upstream(Duration::from_secs(2), 1).await;
    let p = app.provision("stall", &stalling).await;
    let (s, _) = app
        .patch_api(
            &p.api_id,
            json!({"policies": {"upstream": {"read_timeout_ms": 200}}}),
        )
        .await;
    assert_eq!(s, 200);
    let body = app
        .http
        .get(app.gateway("/stall/x"))
        .header("x-api-key", &p.key)
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200, "the head arrives in time");
    assert!(
        body.bytes().await.is_err(),
        "a body whose upstream went silent past the read timeout is cut"
    );

    // A chunk every 100 ms for 3 s never trips the read timeout, but the total
    // timeout of 500 ms cuts it.
    let trickling = trickling_upstream(Duration::from_millis(100), 30).await;
    let q = app.provision("trickle", &trickling).await;
    let resp = app
        .http
        .get(app.gateway("/trickle/x"))
        .header("x-api-key", &q.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (s, _) = app
        .patch_api(
            &q.api_id,
            json!({"policies": {"upstream": {"read_timeout_ms": 1000, "total_timeout_ms": 500}}}),
        )
        .await;
    assert_eq!(s, 200);
    // The stream that started before the change may finish; new calls are cut.
    let whole = resp.bytes().await.unwrap();
    assert_eq!(
        whole.len(),
        5 + 30 * 4,
        "before the change the stream ran to its end"
    );
    let cut_calls = std::sync::atomic::AtomicU64::new(0);
    tollgate_testkit::eventually(Duration::from_secs(3), || async {
        cut_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let resp = app
            .http
            .get(app.gateway("/trickle/x"))
            .header("x-api-key", &q.key)
            .send()
            .await
            .unwrap();
        resp.bytes().await.is_err().then_some(())
    })
    .await
    .expect("the total timeout cuts a long stream");

    // Invalid timeouts are refused with the field named.
    let (s, b) = app
        .patch_api(
            &q.api_id,
            json!({"policies": {"upstream": {"timeout_ms": 0}}}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("policies.upstream.timeout_ms"))
    );
    // Every call is metered once, cut or not.
    app.expect_usage(
        None,
        2 + cut_calls.load(std::sync::atomic::Ordering::SeqCst),
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_and_speak_http2() {
    let tls = tollgate_testkit::tls::TlsUpstream::start().await;

    // A certificate from a CA the gateway does not trust is refused.
    let app = TestApp::start(Stack::Embedded).await;
    let p = app.provision("secure", &tls.url()).await;
    let (s, code, _) = error_code(app.call("/secure/x", Some(&p.key)).await).await;
    assert_eq!((s, code.as_str()), (502, "upstream_unreachable"));
    app.stop().await;

    // Trusting the CA (TOLLGATE_UPSTREAM_CA_FILE): verified, and HTTP/2 by ALPN.
    let (mut settings, db, ch) = crate::support::test_settings(Stack::Embedded).await;
    settings.upstream_ca_file = Some(tls.ca_file.clone());
    let app = TestApp::start_with(settings, db, ch).await;
    let p = app.provision("secure", &tls.url()).await;
    let resp = app.call("/secure/things", Some(&p.key)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["version"], "HTTP/2.0", "{body}");
    assert_eq!(body["path"], "/things");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_targets_speak_http1_or_h2c_as_configured() {
    let upstream = tollgate_testkit::tls::H2cUpstream::start().await;
    let app = TestApp::start(Stack::Embedded).await;
    let p = app.provision("plain", &upstream.url()).await;
    let version = || async {
        let resp = app.call("/plain/v", Some(&p.key)).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["version"].as_str().unwrap().to_owned()
    };
    assert_eq!(version().await, "HTTP/1.1", "HTTP/1.1 by default");
    let (s, b) = app
        .patch_api(
            &p.api_id,
            json!({"policies": {"upstream": {"protocol": "h2c"}}}),
        )
        .await;
    assert_eq!(
        (s, b["policies"]["upstream"]["protocol"].as_str()),
        (200, Some("h2c"))
    );
    tollgate_testkit::eventually(Duration::from_secs(2), || async {
        (version().await == "HTTP/2.0").then_some(())
    })
    .await
    .expect("h2c after the change");
    let (s, b) = app
        .patch_api(
            &p.api_id,
            json!({"policies": {"upstream": {"protocol": "spdy"}}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    app.stop().await;
}

/// A raw HTTP/1.1 upstream that answers by path with every framing an answer
/// can have, counting the connections it accepts.
async fn framing_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: head, then a Content-Length body.
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end;
                        }
                        let mut chunk = [0u8; 8192];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|n| n.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        let mut chunk = [0u8; 8192];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..end + 4 + length).skip(end + 4).collect();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let answer: Vec<u8> = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n".to_vec(),
                        "/big" => {
                            let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
                            a.extend(std::iter::repeat_n(b'b', 100_000));
                            a
                        }
                        "/echo" => {
                            let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-method: {}\r\n\r\n", body.len(), head.split(' ').next().unwrap()).into_bytes();
                            a.extend_from_slice(&body);
                            a
                        }
                        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 50000\r\n\r\n".to_vec(),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow".to_vec()
                        }
                        "/conflict" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec(),
                        "/headers" => b"HTTP/1.1 200 OK\r\nX-Upper: A b\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nX-Request-Id: from-upstream\r\nVary: Accept-Encoding\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                        _ => {
                            // Until close: no length, no chunks.
                            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\nto the end").await;
                            return;
                        }
                    };
                    if conn.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_every_framing_reach_the_client_whole() {
    use std::sync::atomic::Ordering;
    let (upstream, accepted) = framing_upstream().await;
    let app = TestApp::start(Stack::Embedded).await;
    let p = app.provision("f", &upstream).await;
    let get = |path: &'static str| app.call(path, Some(&p.key));

    let resp = get("/f/chunked").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "abcdefg");
    let resp = get("/f/big").await;
    assert_eq!(resp.headers()["content-length"], "100000");
    assert_eq!(resp.bytes().await.unwrap().len(), 100_000);
    let connections = accepted.load(Ordering::SeqCst);
    assert_eq!(
        connections, 1,
        "chunked and long answers leave the connection reusable"
    );

    // A HEAD answer has a length and no body; the connection stays usable.
    let resp = app
        .http
        .head(app.gateway("/f/head"))
        .header("x-api-key", &p.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "50000");
    assert_eq!(get("/f/chunked").await.text().await.unwrap(), "abcdefg");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // Bodies go up whole: small ones with the head, large ones streamed.
    for size in [0usize, 10, 64 * 1024, 300 * 1024] {
        let sent = vec![b's'; size];
        let resp = app
            .http
            .post(app.gateway("/f/echo"))
            .header("x-api-key", &p.key)
            .body(sent.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{size} bytes");
        assert_eq!(resp.headers()["x-method"], "POST");
        assert_eq!(resp.bytes().await.unwrap(), sent, "{size} bytes");
    }

    // An answer that runs until the upstream closes reaches the client whole.
    assert_eq!(get("/f/close").await.text().await.unwrap(), "to the end");
    // One that is not valid HTTP/1.1 is a 502 with a code.
    let (status, code, _) = error_code(get("/f/conflict").await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unreachable"));
    // Every call is metered once.
    app.expect_usage(None, 10).await;
    app.stop().await;
}

/// A GET over a new HTTP/2 (prior knowledge) connection, with the key.
async fn h2_get(
    addr: std::net::SocketAddr,
    path: &str,
    key: &str,
) -> http::Response<hyper::body::Incoming> {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut sender, h2) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(h2);
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("x-api-key", key)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_headers_pass_through_less_hop_by_hop_ones() {
    use tokio::io::AsyncWriteExt;
    let (upstream, _) = framing_upstream().await;
    let app = TestApp::start(Stack::Embedded).await;
    let p = app.provision("f", &upstream).await;
    app.create(
        "/admin/apis",
        json!({"name": "c", "slug": "c", "base_path": "/c", "upstreams": [upstream],
               "policies": {"keyless": true, "cors": {"allow_origins": ["https://app.example"]}}}),
    )
    .await;
    app.synced().await;
    let addr = app.running.gateway_addr.unwrap();
    // What every path must give: the upstream's headers in order, less the
    // hop-by-hop ones and those its `Connection` names; the gateway's
    // request id in place of the upstream's.
    let check = |head: &str| {
        let lines: Vec<&str> = head.split("\r\n").collect();
        let has = |l: &str| lines.contains(&l);
        assert!(has("x-upper: a b"), "{head}");
        assert!(
            !head.contains("x-secret") && !head.contains("keep-alive"),
            "{head}"
        );
        let cookies: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("set-cookie"))
            .collect();
        assert_eq!(cookies, [&"set-cookie: a=1", &"set-cookie: b=2"], "{head}");
        let ids: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("x-request-id"))
            .collect();
        assert_eq!(ids.len(), 1, "{head}");
        assert!(!ids[0].contains("from-upstream"), "{head}");
        assert!(has("vary: accept-encoding"), "{head}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("date: ")).count(),
            1,
            "{head}"
        );
    };

    // The listener's own HTTP/1.1 path copies the lines.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let call = format!(
        "GET /f/headers HTTP/1.1\r\nHost: g\r\nx-api-key: {}\r\n\r\n",
        p.key
    );
    conn.write_all(call.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut conn, &mut buf, false).await;
    check(&head);
    assert!(head.contains("\r\ncontent-length: 2\r\n"), "{head}");
    assert_eq!(body, b"ok");

    // CORS adds `Vary: Origin` beside the upstream's `Vary`.
    let call = "GET /c/headers HTTP/1.1\r\nHost: g\r\nOrigin: https://app.example\r\n\r\n";
    conn.write_all(call.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut conn, &mut buf, false).await;
    check(&head);
    assert!(head.contains("\r\nvary: origin\r\n"), "{head}");
    assert!(
        head.contains("\r\naccess-control-allow-origin: https://app.example\r\n"),
        "{head}"
    );

    // hyper's server (HTTP/2 here) writes the same headers.
    let resp = h2_get(addr, "/f/headers", &p.key).await;
    assert_eq!(resp.status(), 200);
    let mut head = String::new();
    for (name, value) in resp.headers() {
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap().to_ascii_lowercase()
        ));
    }
    check(&head);
    app.stop().await;
}

/// Reads one HTTP/1.1 answer off `conn`: its head (lowercased) and its body,
/// framed by `Content-Length` or chunks (none for a bodiless answer).
async fn read_answer(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    bodiless: bool,
) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    async fn more(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "connection closed mid-answer: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        more(conn, buf).await;
    };
    let head = String::from_utf8(buf.drain(..end + 4).collect())
        .unwrap()
        .to_ascii_lowercase();
    if bodiless {
        return (head, Vec::new());
    }
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length: ")
            .map(|n| n.trim().parse::<usize>().unwrap())
    });
    let mut body = Vec::new();
    if let Some(n) = length {
        while buf.len() < n {
            more(conn, buf).await;
        }
        body.extend(buf.drain(..n));
    } else {
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        loop {
            let line = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                more(conn, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line]).unwrap(), 16).unwrap();
            while buf.len() < line + 2 + size + 2 {
                more(conn, buf).await;
            }
            body.extend_from_slice(&buf[line + 2..line + 2 + size]);
            assert_eq!(&buf[line + 2 + size..line + 4 + size], b"\r\n");
            buf.drain(..line + 4 + size);
            if size == 0 {
                break;
            }
        }
    }
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_answers_http1_and_hands_the_rest_to_hyper() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, _) = framing_upstream().await;
    let app = TestApp::start(Stack::Embedded).await;
    let p = app.provision("f", &upstream).await;
    let addr = app.running.gateway_addr.unwrap();
    let key = &p.key;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();

    // Pipelined calls, one write: answered in order on the one connection.
    let pipelined = format!(
        "GET /f/chunked HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n\
         POST /f/echo HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\ncontent-length: 5\r\n\r\nhello\
         GET /f/big HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n"
    );
    conn.write_all(pipelined.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut conn, &mut buf, false).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(head.contains("\r\nx-request-id: "), "{head}");
    assert_eq!(body, b"abcdefg");
    let (head, body) = read_answer(&mut conn, &mut buf, false).await;
    assert!(head.contains("x-method: post"), "{head}");
    assert_eq!(body, b"hello");
    let (head, body) = read_answer(&mut conn, &mut buf, false).await;
    assert!(head.contains("content-length: 100000"), "{head}");
    assert_eq!(body.len(), 100_000);

    // A body that comes in pieces is waited for.
    let head = format!(
        "POST /f/echo HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\ncontent-length: 10\r\n\r\n12345"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.write_all(b"67890").await.unwrap();
    assert_eq!(
        read_answer(&mut conn, &mut buf, false).await.1,
        b"1234567890"
    );

    // The gateway's own answers: a refusal, and a HEAD answer's head alone.
    conn.write_all(b"GET /f/chunked HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_answer(&mut conn, &mut buf, false).await;
    assert!(head.starts_with("http/1.1 401 unauthorized\r\n"), "{head}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "missing_key", "{body}");
    let call = format!("HEAD /f/head HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n");
    conn.write_all(call.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut conn, &mut buf, true).await;
    assert!(head.contains("content-length: 50000"), "{head}");

    // Idle for longer than a connection keeps its buffers (1 s): it is
    // parked, and served again for the next calls. (`parked` stays parked
    // until the gateway stops, below.)
    let mut parked = tokio::net::TcpStream::connect(addr).await.unwrap();
    let call = format!("GET /f/chunked HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n");
    parked.write_all(call.as_bytes()).await.unwrap();
    let mut parked_buf = Vec::new();
    read_answer(&mut parked, &mut parked_buf, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let two = format!(
        "POST /f/echo HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\ncontent-length: 3\r\n\r\nabc\
         GET /f/chunked HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n"
    );
    conn.write_all(two.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut conn, &mut buf, false).await.1, b"abc");
    assert_eq!(read_answer(&mut conn, &mut buf, false).await.1, b"abcdefg");

    // An upload too large to read whole hands the connection to hyper, which
    // streams it up and answers the calls after it.
    let mut calls = format!(
        "POST /f/echo HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\ncontent-length: 70000\r\n\r\n"
    )
    .into_bytes();
    calls.extend(std::iter::repeat_n(b'u', 70_000));
    calls.extend_from_slice(
        format!("GET /f/chunked HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
    );
    conn.write_all(&calls).await.unwrap();
    assert_eq!(
        read_answer(&mut conn, &mut buf, false).await.1,
        vec![b'u'; 70_000]
    );
    assert_eq!(read_answer(&mut conn, &mut buf, false).await.1, b"abcdefg");
    assert!(buf.is_empty());

    // `Connection: close`: answered, then closed.
    let mut closing = tokio::net::TcpStream::connect(addr).await.unwrap();
    let call = format!(
        "GET /f/chunked HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
    );
    closing.write_all(call.as_bytes()).await.unwrap();
    let mut closing_buf = Vec::new();
    assert_eq!(
        read_answer(&mut closing, &mut closing_buf, false).await.1,
        b"abcdefg"
    );
    let mut rest = Vec::new();
    closing.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty() && closing_buf.is_empty());

    // HTTP/1.0 and malformed heads go to hyper.
    let mut old = tokio::net::TcpStream::connect(addr).await.unwrap();
    let call = format!("GET /f/chunked HTTP/1.0\r\nx-api-key: {key}\r\n\r\n");
    old.write_all(call.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    old.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("abcdefg"), "{answer}");
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET /f/chunked HTTP/1.1\r\nno colon here\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    bad.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");

    // HTTP/2 with prior knowledge goes to hyper.
    let resp = h2_get(addr, "/f/chunked", key).await;
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "abcdefg");

    // Every answered call is metered once (the 400 never reached the pipeline).
    app.expect_usage(None, 14).await;

    // At shutdown idle kept-alive connections, parked or not, are closed,
    // not waited for.
    let call = format!("GET /f/chunked HTTP/1.1\r\nHost: g\r\nx-api-key: {key}\r\n\r\n");
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(call.as_bytes()).await.unwrap();
    let mut idle_buf = Vec::new();
    read_answer(&mut idle, &mut idle_buf, false).await;
    let stopped = std::time::Instant::now();
    app.stop().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "stopping waited for an idle connection"
    );
    for conn in [&mut idle, &mut parked] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_whole_call_in_time_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// True when the gateway closes `conn` without answering (within a
    /// bound far above the client timeout).
    async fn closed_unanswered(conn: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
    let (upstream, _) = framing_upstream().await;
    let (mut settings, db, clickhouse) = crate::support::test_settings(Stack::Embedded).await;
    // Longer than a connection waits before it is parked (1 s), so the idle
    // connections below time out parked and the dribbled head unparked.
    settings.client_timeout = Duration::from_millis(1200);
    let app = TestApp::start_with(settings, db, clickhouse).await;
    let p = app.provision("f", &upstream).await;
    let addr = app.running.gateway_addr.unwrap();
    let slow = format!(
        "GET /f/slow HTTP/1.1\r\nHost: g\r\nx-api-key: {}\r\n\r\n",
        p.key
    );

    // Only the wait for a call is bounded: calls that take longer upstream
    // than the client timeout are answered, and the connection kept.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        conn.write_all(slow.as_bytes()).await.unwrap();
        let (head, body) = read_answer(&mut conn, &mut buf, false).await;
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert_eq!(body, b"slow");
    }
    // Then idle past the timeout: closed.
    assert!(
        closed_unanswered(&mut conn).await,
        "an idle connection is closed"
    );

    // A connection that never sends a call.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_unanswered(&mut conn).await,
        "a silent connection is closed"
    );

    // A head sent one byte at a time, each well within the timeout but the
    // whole not: the bound is on the whole call, so it is never answered.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    for byte in b"GET /f/ HTTP/1.1\r\nHost: g\r\n\r\n" {
        if conn.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed_unanswered(&mut conn).await,
        "a dribbled head is not answered"
    );

    // A connection handed to hyper (HTTP/1.0, kept alive) is bounded the
    // same way while it waits for a head.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let call = format!(
        "GET /f/echo HTTP/1.0\r\nHost: g\r\nConnection: keep-alive\r\nx-api-key: {}\r\n\r\n",
        p.key
    );
    let mut buf = Vec::new();
    for _ in 0..2 {
        conn.write_all(call.as_bytes()).await.unwrap();
        let (head, _) = read_answer(&mut conn, &mut buf, false).await;
        assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    }
    assert!(
        closed_unanswered(&mut conn).await,
        "an idle handed-off connection is closed"
    );

    // HTTP/2 (hyper keeps a connection without streams open): calls apart
    // by less than the timeout keep it, however long it lives; then idle,
    // it is shut down.
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut sender, h2) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let h2 = tokio::spawn(h2);
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{addr}/f/echo"))
            .header("x-api-key", p.key.as_str())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), h2).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "an idle HTTP/2 connection is shut down: {ended:?}"
    );
    app.stop().await;
}
