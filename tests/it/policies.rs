//! Per-API access policies over real sockets: keyless APIs, IP lists, CORS,
//! body size limits, and the trusted identity headers upstreams receive.

use serde_json::{Value, json};
use tollgate_testkit::upstream::Upstream;

use crate::support::{Stack, TestApp};

async fn set_policies(app: &TestApp, api_id: &str, policies: Value) {
    let (s, b) = app.patch_api(api_id, json!({"policies": policies})).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_ip_lists_and_trusted_headers() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("pol", &upstream.url()).await;

    // Trusted identity headers reach the upstream; spoofed ones do not.
    let resp = app
        .http
        .get(app.gateway("/pol/x"))
        .header("x-api-key", &p.key)
        .header("x-tollgate-app-id", "app_forged")
        .header("x-tollgate-role", "admin")
        .send()
        .await
        .unwrap();
    let echoed: Value = resp.json().await.unwrap();
    let h = &echoed["headers"];
    assert_eq!(h["x-tollgate-app-id"], p.app_id.as_str());
    assert_eq!(h["x-tollgate-plan-id"], p.plan_id.as_str());
    assert_eq!(h["x-tollgate-subscription-id"], p.subscription_id.as_str());
    assert!(
        h["x-tollgate-developer-id"]
            .as_str()
            .unwrap()
            .starts_with("usr_")
    );
    assert!(h.get("x-tollgate-role").is_none());

    // Keyless: no key needed, metered anonymously, no identity headers.
    set_policies(&app, &p.api_id, json!({"keyless": true})).await;
    let resp = app.call("/pol/open", None).await;
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert!(echoed["headers"].get("x-tollgate-app-id").is_none());

    // IP lists: the test client is 127.0.0.1.
    set_policies(&app, &p.api_id, json!({"ip_deny": ["127.0.0.0/8"]})).await;
    let resp = app.call("/pol/x", Some(&p.key)).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "ip_denied"
    );
    set_policies(&app, &p.api_id, json!({"ip_allow": ["10.0.0.0/8"]})).await;
    assert_eq!(app.call("/pol/x", Some(&p.key)).await.status(), 403);
    set_policies(
        &app,
        &p.api_id,
        json!({"ip_allow": ["127.0.0.1/32", "::1/128"]}),
    )
    .await;
    assert_eq!(app.call("/pol/x", Some(&p.key)).await.status(), 200);

    // Invalid policies are refused with the field named.
    for (policies, field) in [
        (json!({"ip_allow": ["10.0.0.0/33"]}), "policies.ip_allow[0]"),
        (
            json!({"cors": {"allow_origins": ["not an origin"]}}),
            "policies.cors.allow_origins[0]",
        ),
        (
            json!({"cors": {"allow_origins": ["*"], "allow_credentials": true}}),
            "policies.cors.allow_credentials",
        ),
        (json!({"max_body_bytes": 0}), "policies.max_body_bytes"),
        (json!({"keyles": true}), "policies.keyles"),
    ] {
        let (s, b) = app
            .patch_api(&p.api_id, json!({"policies": policies}))
            .await;
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_responses() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("web", &upstream.url()).await;
    set_policies(&app, &p.api_id,
        json!({"cors": {"allow_origins": ["https://app.example.com"], "expose_headers": ["ratelimit-remaining"], "max_age_secs": 300}}),
    )
    .await;

    // The preflight is answered by the gateway, without a key, and never reaches the upstream.
    let resp = app
        .http
        .request(reqwest::Method::OPTIONS, app.gateway("/web/items"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(resp.headers()["access-control-max-age"], "300");
    assert!(
        resp.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-api-key")
    );
    assert_eq!(upstream.hits(), 0);

    // The actual call carries the CORS headers, even when refused.
    let resp = app
        .http
        .get(app.gateway("/web/items"))
        .header("origin", "https://app.example.com")
        .header("x-api-key", &p.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "ratelimit-remaining"
    );
    let resp = app
        .http
        .get(app.gateway("/web/items"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    // Other origins get no CORS headers.
    let resp = app
        .http
        .get(app.gateway("/web/items"))
        .header("origin", "https://evil.example")
        .header("x-api-key", &p.key)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("small", &upstream.url()).await;
    set_policies(&app, &p.api_id, json!({"max_body_bytes": 1000})).await;

    let post = |body: reqwest::Body| {
        app.http
            .post(app.gateway("/small/upload"))
            .header("x-api-key", &p.key)
            .body(body)
            .send()
    };
    assert_eq!(post(vec![b'a'; 1000].into()).await.unwrap().status(), 200);
    let resp = post(vec![b'a'; 1001].into()).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "an announced oversized body never reaches the upstream"
    );

    // A chunked body without a length is cut off once it passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b'b'; 100])).collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = post(stream).await.unwrap();
    assert_eq!(resp.status(), 413);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_change_headers_query_and_path() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("tx", &upstream.url()).await;
    set_policies(&app, &p.api_id,
        json!({"transform": {
            "request_headers": {"remove": ["x-debug"], "rename": {"x-client": "x-client-name"}, "add": {"x-source": "tollgate"}},
            "response_headers": {"remove": ["content-length"], "add": {"x-served-by": "edge"}},
            "query": {"remove": ["token"], "add": {"v": "2"}},
            "path": {"strip_prefix": "/v1", "add_prefix": "/internal"}
        }}),
    )
    .await;
    let resp = app
        .http
        .get(app.gateway("/tx/v1/items?token=abc&q=x"))
        .header("x-api-key", &p.key)
        .header("x-debug", "1")
        .header("x-client", "mobile")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "edge");
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["path"], "/internal/items");
    assert_eq!(echoed["query"], "q=x&v=2");
    let h = &echoed["headers"];
    assert!(h.get("x-debug").is_none());
    assert_eq!(h["x-client-name"], "mobile");
    assert_eq!(h["x-source"], "tollgate");

    for (transform, field) in [
        (
            json!({"request_headers": {"add": {"bad header": "x"}}}),
            "policies.transform.request_headers",
        ),
        (
            json!({"path": {"add_prefix": "api/"}}),
            "policies.transform.path.add_prefix",
        ),
    ] {
        let (s, b) = app
            .patch_api(&p.api_id, json!({"policies": {"transform": transform}}))
            .await;
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_override_their_apis_policies() {
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("mixed", &upstream.url()).await;
    let doc = json!({"openapi": "3.0.3", "info": {"title": "M", "version": "1"}, "paths": {
        "/status": {"x-tollgate-policies": {"keyless": true}, "get": {}},
        "/upload": {"post": {"x-tollgate-policies": {"max_body_bytes": 10}}, "get": {}},
        "/private": {"get": {}}
    }});
    let (s, b) = app
        .patch_api(
            &p.api_id,
            json!({"openapi": doc, "policies": {"max_body_bytes": 1000}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // /status is keyless; the rest of the API still needs a key.
    assert_eq!(app.call("/mixed/status", None).await.status(), 200);
    assert_eq!(app.call("/mixed/private", None).await.status(), 401);
    // POST /upload allows 10 bytes; the API's 1000-byte limit holds elsewhere.
    let post = |path: &str, n: usize| {
        app.http
            .post(app.gateway(path))
            .header("x-api-key", &p.key)
            .body(vec![b'x'; n])
            .send()
    };
    assert_eq!(post("/mixed/upload", 11).await.unwrap().status(), 413);
    assert_eq!(post("/mixed/upload", 10).await.unwrap().status(), 200);

    // Invalid overrides are refused with their place named.
    let bad = json!({"openapi": "3.0.3", "paths": {"/x": {"get": {"x-tollgate-policies": {"ip_allow": ["nope"]}}}}});
    let (s, b) = app.patch_api(&p.api_id, json!({"openapi": bad})).await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("openapi.paths./x.get.x-tollgate-policies"),
        "{b}"
    );
    app.stop().await;
}
