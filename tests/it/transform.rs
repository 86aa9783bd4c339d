//! JSON body mapping, the response cache and aggregation routes over real
//! sockets, with the usage events they produce.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::{Answer, Scripted, Upstream};

use crate::on_both_stacks;
use crate::support::{Stack, TestApp};

async fn set_policies(app: &TestApp, api_id: &str, policies: Value) {
    let (s, b) = app.patch_api(api_id, json!({"policies": policies})).await;
    assert_eq!(s, 200, "{b}");
}

/// Waits for exactly `n` usage events and returns them, oldest first.
async fn events(app: &TestApp, n: usize) -> Vec<Value> {
    let events = tollgate_testkit::eventually(Duration::from_secs(3), || async {
        let e = app.usage_events().await;
        (e.len() >= n).then_some(e)
    })
    .await
    .unwrap_or_default();
    assert_eq!(events.len(), n, "{events:#?}");
    events
}

/// A second app (own developer) subscribed to `plan_id`; returns its key.
async fn second_key(app: &TestApp, plan_id: &str) -> String {
    let dev = app
        .create(
            "/admin/developers",
            json!({"email": format!("other-{}@example.com", uuid::Uuid::new_v4().simple()), "name": "Other"}),
        )
        .await;
    let other = app
        .create(
            "/admin/apps",
            json!({"developer_id": dev["id"], "name": "Other"}),
        )
        .await;
    app.create(
        "/admin/subscriptions",
        json!({"app_id": other["id"], "plan_id": plan_id}),
    )
    .await;
    let key = app
        .create(
            &format!("/admin/apps/{}/keys", other["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    app.synced().await;
    key["key"].as_str().unwrap().to_owned()
}

async fn json_bodies_are_mapped_both_ways(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("jb", &upstream.url()).await;
    set_policies(
        &app,
        &p.api_id,
        json!({"transform": {
            "request_body": {"remove": ["debug"], "rename": {"user.mail": "user.email"}, "add": {"source": "gw", "meta.v": 2}},
            "response_body": {"remove": ["method"], "rename": {"body": "received"}, "add": {"mapped": true}}
        }}),
    )
    .await;
    let post = |ct: &'static str, body: &'static str| {
        app.http
            .post(app.gateway("/jb/signup"))
            .header("x-api-key", &p.key)
            .header("content-type", ct)
            .header("accept-encoding", "gzip")
            .body(body)
            .send()
    };

    let sent = r#"{"user": {"mail": "a@example.com", "name": "Ann"}, "debug": true}"#;
    let resp = post("application/json", sent).await.unwrap();
    assert_eq!(resp.status(), 200);
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let raw = resp.bytes().await.unwrap();
    assert_eq!(length, raw.len(), "Content-Length fits the mapped answer");
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert!(answer.get("method").is_none() && answer.get("body").is_none());
    assert_eq!(answer["mapped"], true);
    let received = answer["received"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(received).unwrap(),
        json!({"user": {"email": "a@example.com", "name": "Ann"}, "source": "gw", "meta": {"v": 2}})
    );
    assert_eq!(
        answer["headers"]["content-length"],
        received.len().to_string(),
        "the upstream gets the mapped body's length"
    );
    assert!(
        answer["headers"].get("accept-encoding").is_none(),
        "mapped answers are asked for uncompressed"
    );

    // Bodies that are not JSON pass untouched.
    let resp = post("text/plain", r#"{"debug": true}"#).await.unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["received"], r#"{"debug": true}"#);

    // A body that says JSON but is not: 400, and the upstream never sees it.
    let hits = upstream.hits();
    let resp = post("application/json", "{not json").await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_body");
    assert_eq!(upstream.hits(), hits);

    let events = events(&app, 3).await;
    let mapped = events
        .iter()
        .find(|e| e["bytes_out"] == raw.len() as f64)
        .expect("an event with the mapped answer's length");
    assert_eq!(mapped["bytes_in"], sent.len() as f64, "the client's bytes");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["error_code"] == "invalid_body")
            .count(),
        1
    );

    // Past the cap the gateway fails closed: 413 for requests, 502 for answers.
    set_policies(
        &app,
        &p.api_id,
        json!({"max_body_bytes": 100, "transform": {
            "request_body": {"remove": ["debug"]}, "response_body": {"remove": ["secret"]}
        }}),
    )
    .await;
    let resp = post("application/json", r#"{"padding": "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}"#).await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = post("application/json", r#"{"debug": 1}"#).await.unwrap();
    assert_eq!(resp.status(), 502, "the echo's answer is over 100 bytes");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "response_transform_failed");

    // Field paths are checked.
    let (s, b) = app
        .patch_api(
            &p.api_id,
            json!({"policies": {"transform": {"request_body": {"remove": ["user..email"]}}}}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("policies.transform.request_body.remove")),
        "{b}"
    );
    app.stop().await;
}
on_both_stacks!(
    json_bodies_are_mapped_both_ways,
    super::json_bodies_are_mapped_both_ways
);

async fn cached_answers_still_pass_every_check(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Scripted::start().await;
    upstream.set(
        "/item",
        Answer::json(json!({"n": 1})).header("cache-control", "public, max-age=60"),
    );
    upstream.set(
        "/nostore",
        Answer::json(json!({"n": 2})).header("cache-control", "no-store"),
    );
    upstream.set(
        "/private",
        Answer::json(json!({"n": 3})).header("cache-control", "private, max-age=60"),
    );
    let p = app.provision("cached", &upstream.url()).await;
    set_policies(
        &app,
        &p.api_id,
        json!({"cache": {"ttl_secs": 60, "vary": ["accept-language"]}}),
    )
    .await;
    let get = |path: &'static str, key: String, lang: Option<&'static str>| {
        let mut req = app.http.get(app.gateway(path)).header("x-api-key", key);
        if let Some(l) = lang {
            req = req.header("accept-language", l);
        }
        req.send()
    };
    let mut calls = 0;
    let mut hits = 0;
    let mut expect =
        async |path: &'static str, key: &str, lang: Option<&'static str>, x_cache: &str| {
            let resp = get(path, key.to_owned(), lang).await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.headers()["x-cache"], x_cache, "{path} {lang:?}");
            calls += 1;
            if x_cache == "HIT" {
                hits += 1;
            }
            resp.json::<Value>().await.unwrap()
        };

    assert_eq!(
        expect("/cached/item", &p.key, None, "MISS").await,
        json!({"n": 1})
    );
    assert_eq!(
        expect("/cached/item", &p.key, None, "HIT").await,
        json!({"n": 1})
    );
    assert_eq!(upstream.hits("/item"), 1);
    // Another query or a varied header is another answer.
    expect("/cached/item?page=2", &p.key, None, "MISS").await;
    expect("/cached/item", &p.key, Some("de"), "MISS").await;
    expect("/cached/item", &p.key, Some("de"), "HIT").await;
    assert_eq!(upstream.hits("/item"), 3);
    // Another app never gets this app's answer.
    let other = second_key(&app, &p.plan_id).await;
    expect("/cached/item", &other, None, "MISS").await;
    expect("/cached/item", &other, None, "HIT").await;
    assert_eq!(upstream.hits("/item"), 4);
    // no-store and private answers are never kept.
    for path in ["/cached/nostore", "/cached/private"] {
        expect(path, &p.key, None, "MISS").await;
        expect(path, &p.key, None, "MISS").await;
    }
    assert_eq!(
        (upstream.hits("/nostore"), upstream.hits("/private")),
        (2, 2)
    );

    // HEAD is served from GET's answer, with its length and no body.
    let head = app
        .http
        .head(app.gateway("/cached/item"))
        .header("x-api-key", &p.key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(head.headers()["content-length"], "7");
    calls += 1;
    hits += 1;

    // A hit still needs a valid key...
    let resp = get("/cached/item", "tg_live_wrongwrongwrong".into(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("x-cache").is_none());
    calls += 1;
    // ...and counts against the plan's rate limits.
    let (s, b) = app
        .admin(
            "PATCH",
            &format!("/admin/plans/{}", p.plan_id),
            Some(json!({"rate_limits": [{"limit": 2, "window": "hour"}]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    app.synced().await;
    for remaining in ["1", "0"] {
        let resp = get("/cached/item", p.key.clone(), None).await.unwrap();
        assert_eq!(resp.headers()["x-cache"], "HIT");
        assert_eq!(resp.headers()["ratelimit-remaining"], remaining);
        calls += 1;
        hits += 1;
    }
    let resp = get("/cached/item", p.key.clone(), None).await.unwrap();
    assert_eq!(resp.status(), 429);
    calls += 1;
    assert_eq!(upstream.hits("/item"), 4, "hits never reach the upstream");

    // One usage event per call; hits have no upstream latency.
    let events = events(&app, calls).await;
    let served_from_cache = events
        .iter()
        .filter(|e| e["status"] == 200.0 && e["upstream_latency_us"] == 0.0)
        .count();
    assert_eq!(served_from_cache, hits);
    let hit = events
        .iter()
        .find(|e| e["status"] == 200.0 && e["upstream_latency_us"] == 0.0 && e["method"] == "GET")
        .unwrap();
    assert_eq!(hit["bytes_out"], 7.0);
    assert_eq!(hit["app_id"], p.app_id.as_str());
    app.stop().await;
}
on_both_stacks!(
    cached_answers_still_pass_every_check,
    super::cached_answers_still_pass_every_check
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_caches_are_shared_but_not_with_foreign_credentials() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Scripted::start().await;
    upstream.set("/news", Answer::json(json!({"headline": "x"})));
    upstream.set("/live", Answer::json(json!({"live": true})));
    upstream.set(
        "/personal",
        Answer::json(json!({"me": 1})).header("vary", "authorization"),
    );
    let p = app.provision("open", &upstream.url()).await;
    // Only /news caches (a route override); the whole API is keyless.
    let doc = json!({"openapi": "3.0.3", "info": {"title": "O", "version": "1"}, "paths": {
        "/news": {"get": {"x-tollgate-policies": {"cache": {"ttl_secs": 300}}}},
        "/live": {"get": {}},
        "/personal": {"get": {"x-tollgate-policies": {"cache": {}}}}
    }});
    let (s, b) = app
        .patch_api(
            &p.api_id,
            json!({"openapi": doc, "policies": {"keyless": true}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let call = |path: &'static str, header: Option<(&'static str, &'static str)>| {
        let mut req = app.http.get(app.gateway(path));
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        req.send()
    };
    let x_cache = |r: &reqwest::Response| {
        r.headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let first = call("/open/news", None).await.unwrap();
    assert_eq!(x_cache(&first).as_deref(), Some("MISS"));
    let second = call("/open/news", Some(("user-agent", "someone-else")))
        .await
        .unwrap();
    assert_eq!(
        x_cache(&second).as_deref(),
        Some("HIT"),
        "keyless answers are shared"
    );
    // Credentials the gateway does not consume bypass the shared cache.
    for h in [
        ("cookie", "session=abc"),
        ("authorization", "Bearer user-token"),
    ] {
        let r = call("/open/news", Some(h)).await.unwrap();
        assert_eq!(x_cache(&r).as_deref(), Some("MISS"), "{h:?}");
    }
    assert_eq!(upstream.hits("/news"), 3);
    // An answer that varies on a header the key does not hold is not kept.
    for _ in 0..2 {
        let r = call("/open/personal", None).await.unwrap();
        assert_eq!(x_cache(&r).as_deref(), Some("MISS"));
    }
    assert_eq!(upstream.hits("/personal"), 2);
    // Routes without the override are not cached at all.
    let r = call("/open/live", None).await.unwrap();
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, None));

    // Cache settings are checked.
    for (cache, field) in [
        (json!({"ttl_secs": 0}), "policies.cache.ttl_secs"),
        (
            json!({"vary": ["Accept Language"]}),
            "policies.cache.vary[0]",
        ),
        (
            json!({"max_bytes": 4096, "max_entry_bytes": 8192}),
            "policies.cache.max_entry_bytes",
        ),
    ] {
        let (s, b) = app
            .patch_api(&p.api_id, json!({"policies": {"cache": cache}}))
            .await;
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    let (s, b) = app
        .patch_api(&p.api_id, json!({"policies": {"cache": {"ttl": 5}}}))
        .await;
    assert_eq!(s, 422, "unknown fields are refused: {b}");
    app.stop().await;
}

async fn aggregation_routes_merge_their_calls(stack: Stack) {
    let app = TestApp::start(stack).await;
    let upstream = Scripted::start().await;
    upstream.set("/users/me", Answer::json(json!({"id": 7, "secret": "s"})));
    upstream.set("/orders", Answer::json(json!([1, 2])));
    upstream.set("/broken", Answer::json(json!({})).status(503));
    upstream.set("/html", Answer::text("<html>"));
    upstream.set(
        "/slow",
        Answer::json(json!({})).delay(Duration::from_secs(3)),
    );
    let elsewhere = Scripted::start().await;
    elsewhere.set("/status.json", Answer::json(json!({"up": true})));
    let p = app.provision("agg", &upstream.url()).await;
    set_policies(
        &app,
        &p.api_id,
        json!({
            "transform": {"response_body": {"remove": ["profile.secret"]}},
            "aggregate": [
                {"path": "/dashboard", "calls": [
                    {"name": "profile", "path": "/users/me"},
                    {"name": "orders", "path": "/orders?limit=5", "timeout_ms": 2000},
                    {"name": "status", "path": elsewhere.url() + "/status.json"}
                ]},
                {"path": "/partial", "on_failure": "partial", "calls": [
                    {"name": "profile", "path": "/users/me"},
                    {"name": "slow", "path": "/slow", "timeout_ms": 100},
                    {"name": "html", "path": "/html"}
                ]},
                {"path": "/strict", "calls": [
                    {"name": "profile", "path": "/users/me"},
                    {"name": "broken", "path": "/broken"}
                ]}
            ]
        }),
    )
    .await;
    let get = |path: &'static str| {
        app.http
            .get(app.gateway(path))
            .header("x-api-key", &p.key)
            .send()
    };

    let resp = get("/agg/dashboard?lang=de").await.unwrap();
    assert_eq!(resp.status(), 200);
    let merged: Value = resp.json().await.unwrap();
    assert_eq!(
        merged,
        json!({"profile": {"id": 7}, "orders": [1, 2], "status": {"up": true}})
    );
    let seen = upstream.last("/orders").unwrap();
    assert_eq!(seen.query.as_deref(), Some("limit=5&lang=de"));
    assert_eq!(seen.headers["x-tollgate-app-id"], p.app_id.as_str());
    assert!(seen.headers.get("x-api-key").is_none());
    assert_eq!(
        elsewhere.last("/status.json").unwrap().query,
        None,
        "absolute URLs are called as written"
    );

    let resp = get("/agg/partial").await.unwrap();
    assert_eq!(resp.status(), 200);
    let partial: Value = resp.json().await.unwrap();
    assert_eq!(partial["profile"], json!({"id": 7}));
    assert!(partial.get("slow").is_none() && partial.get("html").is_none());
    assert_eq!(
        partial["errors"],
        json!([
            {"name": "slow", "reason": "timed out after 100 ms"},
            {"name": "html", "reason": "the answer is not JSON"}
        ])
    );

    let resp = get("/agg/strict").await.unwrap();
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "aggregate_failed");
    assert_eq!(
        err["error"]["failed"],
        json!([{"name": "broken", "reason": "status 503"}])
    );
    assert!(err["error"]["message"].as_str().unwrap().contains("broken"));

    // Every check still applies; other methods are refused.
    let hits = upstream.hits("/users/me");
    let resp = app.call("/agg/dashboard", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(upstream.hits("/users/me"), hits);
    let resp = app
        .http
        .post(app.gateway("/agg/dashboard"))
        .header("x-api-key", &p.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");

    // One usage event per client call, however many upstream calls it made.
    let events = events(&app, 5).await;
    let mut statuses: Vec<u64> = events
        .iter()
        .map(|e| e["status"].as_f64().unwrap() as u64)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 401, 405, 502]);
    for e in events.iter().filter(|e| e["status"] == 200.0) {
        assert_eq!(e["route"], "/agg");
        assert_eq!(e["app_id"], p.app_id.as_str());
        assert!(e["upstream_latency_us"].as_f64().unwrap() > 0.0);
    }
    let failed = events.iter().find(|e| e["status"] == 502.0).unwrap();
    assert_eq!(failed["error_code"], "aggregate_failed");
    app.stop().await;
}
on_both_stacks!(
    aggregation_routes_merge_their_calls,
    super::aggregation_routes_merge_their_calls
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_settings_are_checked() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("aggcheck", &upstream.url()).await;
    let call = |name: &str, path: &str| json!({"name": name, "path": path});
    for (aggregate, field) in [
        (
            json!([{"path": "dashboard", "calls": [call("a", "/a")]}]),
            "policies.aggregate[0].path",
        ),
        (
            json!([{"path": "/d", "calls": []}]),
            "policies.aggregate[0].calls",
        ),
        (
            json!([{"path": "/d", "calls": [call("errors", "/a")]}]),
            "policies.aggregate[0].calls[0].name",
        ),
        (
            json!([{"path": "/d", "calls": [call("a", "/a"), call("a", "/b")]}]),
            "policies.aggregate[0].calls[1].name",
        ),
        (
            json!([{"path": "/d", "calls": [call("a", "ftp://x/y")]}]),
            "policies.aggregate[0].calls[0].path",
        ),
        (
            json!([{"path": "/d", "calls": [{"name": "a", "path": "/a", "timeout_ms": 0}]}]),
            "policies.aggregate[0].calls[0].timeout_ms",
        ),
        (
            json!([{"path": "/d", "calls": [call("a", "/a")]}, {"path": "/d", "calls": [call("b", "/b")]}]),
            "policies.aggregate[1].path",
        ),
    ] {
        let (s, b) = app
            .patch_api(&p.api_id, json!({"policies": {"aggregate": aggregate}}))
            .await;
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    let (s, b) = app
        .patch_api(
            &p.api_id,
            json!({"policies": {"aggregate": [{"path": "/d", "calls": [call("a", "/a")], "on_failure": "ignore"}]}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    app.stop().await;
}
