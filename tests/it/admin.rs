//! The admin REST API: authentication, validation, conflicts, unknown ids, and
//! the OpenAPI document.

use serde_json::{Value, json};

use crate::on_both_stacks;
use crate::support::{Stack, TestApp, test_settings};

fn error(body: &Value) -> (&str, Option<&str>) {
    (
        body["error"]["code"].as_str().unwrap_or_default(),
        body["error"]["field"].as_str(),
    )
}

async fn crud_and_errors(stack: Stack) {
    let app = TestApp::start(stack).await;

    // Create, read, list, patch, delete an API.
    let api = app
        .create("/admin/apis", json!({"name": "Weather", "slug": "weather", "base_path": "/weather", "upstreams": ["http://127.0.0.1:9"]}))
        .await;
    let id = api["id"].as_str().unwrap();
    assert!(id.starts_with("api_"));
    let (s, got) = app.admin("GET", &format!("/admin/apis/{id}"), None).await;
    assert_eq!((s, &got), (200, &api));
    let (s, list) = app.admin("GET", "/admin/apis", None).await;
    assert_eq!((s, list["data"].as_array().unwrap().len()), (200, 1));
    let (s, patched) = app
        .admin(
            "PATCH",
            &format!("/admin/apis/{id}"),
            Some(json!({"name": "Weather 2"})),
        )
        .await;
    assert_eq!((s, patched["name"].as_str()), (200, Some("Weather 2")));

    // Validation: 422 with the field named.
    for (body, field) in [
        (
            json!({"name": "X", "slug": "Bad Slug", "base_path": "/x", "upstreams": ["http://a"]}),
            "slug",
        ),
        (
            json!({"name": "X", "slug": "x", "base_path": "x", "upstreams": ["http://a"]}),
            "base_path",
        ),
        (
            json!({"name": "X", "slug": "x", "base_path": "/x", "upstreams": []}),
            "upstreams",
        ),
        (
            json!({"name": "X", "slug": "x", "base_path": "/x", "upstreams": ["ftp://a"]}),
            "upstreams[0]",
        ),
        (
            json!({"slug": "x", "base_path": "/x", "upstreams": ["http://a"]}),
            "name",
        ),
        (
            json!({"name": "X", "slug": 7, "base_path": "/x", "upstreams": ["http://a"]}),
            "slug",
        ),
        (
            json!({"name": "X", "slug": "x", "base_path": "/x", "upstreams": ["http://a"], "colour": 1}),
            "colour",
        ),
    ] {
        let (s, b) = app.admin("POST", "/admin/apis", Some(body.clone())).await;
        assert_eq!(s, 422, "{body} -> {b}");
        assert_eq!(
            error(&b),
            ("validation_failed", Some(field)),
            "{body} -> {b}"
        );
    }
    let (s, b) = app
        .admin(
            "POST",
            "/admin/plans",
            Some(json!({"name": "P", "apis": ["nope"]})),
        )
        .await;
    assert_eq!(
        (s, error(&b)),
        (422, ("validation_failed", Some("apis[0]")))
    );
    let (s, b) = app
        .admin(
            "POST",
            "/admin/apps",
            Some(json!({"developer_id": "usr_nope", "name": "A"})),
        )
        .await;
    assert_eq!(
        (s, error(&b)),
        (422, ("validation_failed", Some("developer_id")))
    );
    let (s, b) = app
        .admin(
            "POST",
            "/admin/developers",
            Some(json!({"email": "not-an-email", "name": "A"})),
        )
        .await;
    assert_eq!((s, error(&b)), (422, ("validation_failed", Some("email"))));

    // Malformed JSON is a 400.
    let resp = app
        .http
        .post(app.admin_url("/admin/apis"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );

    // Conflicts: 409.
    let (s, b) = app
        .admin("POST", "/admin/apis", Some(json!({"name": "W", "slug": "weather", "base_path": "/w2", "upstreams": ["http://a"]})))
        .await;
    assert_eq!((s, error(&b).0), (409, "conflict"));
    let (s, b) = app
        .admin("POST", "/admin/apis", Some(json!({"name": "W", "slug": "w2", "base_path": "/weather", "upstreams": ["http://a"]})))
        .await;
    assert_eq!((s, error(&b).0), (409, "conflict"));
    app.create(
        "/admin/developers",
        json!({"email": "ada@example.com", "name": "Ada"}),
    )
    .await;
    let (s, b) = app
        .admin(
            "POST",
            "/admin/developers",
            Some(json!({"email": "ADA@example.com", "name": "Ada"})),
        )
        .await;
    assert_eq!((s, error(&b).0), (409, "conflict"));

    // Unknown ids: 404, for every kind.
    for path in [
        "/admin/apis/api_nope",
        "/admin/plans/plan_nope",
        "/admin/developers/usr_nope",
        "/admin/apps/app_nope",
        "/admin/apps/app_nope/keys",
        "/admin/keys/key_nope",
        "/admin/subscriptions/sub_nope",
        "/admin/no-such-route",
    ] {
        let (s, b) = app.admin("GET", path, None).await;
        assert_eq!((s, error(&b).0), (404, "not_found"), "{path}: {b}");
    }
    let (s, _) = app.admin("DELETE", "/admin/keys/key_nope", None).await;
    assert_eq!(s, 404);
    let (s, b) = app.admin("PUT", "/admin/apis", None).await;
    assert_eq!((s, error(&b).0), (405, "method_not_allowed"));

    // Plans with subscriptions cannot be deleted; the API can.
    let p = app.provision("billing", "http://127.0.0.1:9").await;
    let (s, b) = app
        .admin("DELETE", &format!("/admin/plans/{}", p.plan_id), None)
        .await;
    assert_eq!((s, error(&b).0), (409, "conflict"));
    let (s, _) = app
        .admin("DELETE", &format!("/admin/apis/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app.admin("GET", &format!("/admin/apis/{id}"), None).await;
    assert_eq!(s, 404);

    // Keys: the full key only at creation, the hash never.
    let (s, keys) = app
        .admin("GET", &format!("/admin/apps/{}/keys", p.app_id), None)
        .await;
    assert_eq!(s, 200);
    let listed = keys["data"][0].clone();
    assert!(
        listed.get("key").is_none() && listed.get("key_hash").is_none(),
        "{listed}"
    );
    assert!(p.key.starts_with(listed["prefix"].as_str().unwrap()));

    // Subscription status changes; cancelled is final.
    let path = format!("/admin/subscriptions/{}", p.subscription_id);
    let (s, b) = app
        .admin("PATCH", &path, Some(json!({"status": "paused"})))
        .await;
    assert_eq!((s, error(&b)), (422, ("validation_failed", Some("status"))));
    let (s, b) = app
        .admin("PATCH", &path, Some(json!({"status": "cancelled"})))
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("cancelled")));
    let (s, b) = app
        .admin("PATCH", &path, Some(json!({"status": "active"})))
        .await;
    assert_eq!((s, error(&b).0), (409, "conflict"));

    // Usage parameters are validated.
    let (s, b) = app
        .admin("GET", "/admin/usage/summary?from=yesterday", None)
        .await;
    assert_eq!((s, error(&b)), (422, ("validation_failed", Some("from"))));
    let (s, b) = app
        .admin(
            "GET",
            "/admin/usage/summary?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!((s, error(&b)), (422, ("validation_failed", Some("to"))));
    let (s, b) = app
        .admin(
            "GET",
            "/admin/usage/summary?from=2026-01-01T00:00:00Z&dimension=x",
            None,
        )
        .await;
    assert_eq!(
        (s, error(&b)),
        (422, ("validation_failed", Some("dimension")))
    );
    for (query, field) in [
        ("from=2026-01-01T00:00:00Z&bucket=week", "bucket"),
        ("from=2026-01-01T00:00:00Z&status_class=9xx", "status_class"),
        ("from=2026-01-01T00:00:00Z&app=x%27%20OR%201", "app"),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&bucket=minute",
            "bucket",
        ),
        ("from=2026-01-01T00:00:00Z&group=api", "group"),
    ] {
        let (s, b) = app
            .admin("GET", &format!("/admin/usage/timeseries?{query}"), None)
            .await;
        assert_eq!(
            (s, error(&b)),
            (422, ("validation_failed", Some(field))),
            "{query}"
        );
    }
    for (query, field) in [
        ("from=2026-01-01T00:00:00Z", "dimension"),
        ("from=2026-01-01T00:00:00Z&dimension=country", "dimension"),
        ("from=2026-01-01T00:00:00Z&dimension=app&limit=0", "limit"),
        ("from=2026-01-01T00:00:00Z&dimension=app&limit=ten", "limit"),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z&dimension=app",
            "to",
        ),
    ] {
        let (s, b) = app
            .admin("GET", &format!("/admin/usage/top?{query}"), None)
            .await;
        assert_eq!(
            (s, error(&b)),
            (422, ("validation_failed", Some(field))),
            "{query}"
        );
    }
    app.stop().await;
}
on_both_stacks!(crud_and_errors, super::crud_and_errors);

#[tokio::test]
async fn the_admin_token_is_required() {
    let app = TestApp::start(Stack::Embedded).await;
    let resp = app
        .http
        .get(app.admin_url("/admin/apis"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let resp = app
        .http
        .get(app.admin_url("/admin/apis"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    app.stop().await;

    // With no token configured every call is refused, saying how to set one.
    let (mut settings, db, ch) = test_settings(Stack::Embedded).await;
    settings.admin_token = None;
    let app = TestApp::start_with(settings, db, ch).await;
    let resp = app
        .http
        .get(app.admin_url("/admin/apis"))
        .bearer_auth("anything-at-all-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "admin_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TOLLGATE_ADMIN_TOKEN")
    );
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let app = TestApp::start(Stack::Embedded).await;
    let (s, doc) = app.admin("GET", "/admin/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let routes = [
        ("/admin/apis", &["get", "post"][..]),
        ("/admin/apis/{id}", &["get", "patch", "delete"]),
        ("/admin/plans", &["get", "post"]),
        ("/admin/plans/{id}", &["get", "patch", "delete"]),
        ("/admin/developers", &["get", "post"]),
        ("/admin/developers/{id}", &["get"]),
        ("/admin/apps", &["get", "post"]),
        ("/admin/apps/{id}", &["get"]),
        ("/admin/apps/{id}/keys", &["get", "post"]),
        ("/admin/apps/{id}/client-secret", &["post"]),
        ("/admin/keys/{id}", &["get", "delete"]),
        ("/admin/subscriptions", &["get", "post"]),
        ("/admin/subscriptions/{id}", &["get", "patch"]),
        ("/admin/subscriptions/{id}/approve", &["post"]),
        ("/admin/subscriptions/{id}/reject", &["post"]),
        ("/admin/usage/summary", &["get"]),
        ("/admin/usage/timeseries", &["get"]),
        ("/admin/usage/top", &["get"]),
        ("/admin/openapi.json", &["get"]),
    ];
    for (path, methods) in routes {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in methods {
            assert!(
                item.get(*m).is_some(),
                "{m} {path} missing from the OpenAPI document"
            );
        }
    }
    assert_eq!(
        paths.len(),
        routes.len(),
        "the document lists routes the API does not serve"
    );
    // Every $ref resolves.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn portal_serves_start_page_and_health() {
    let app = TestApp::start(Stack::Embedded).await;
    app.create(
        "/admin/apis",
        json!({"name": "Public <b>API</b>", "slug": "pub", "base_path": "/pub", "upstreams": ["http://127.0.0.1:9"]}),
    )
    .await;
    app.create(
        "/admin/apis",
        json!({"name": "Secret", "slug": "secret", "base_path": "/secret", "upstreams": ["http://127.0.0.1:9"], "visibility": "private"}),
    )
    .await;
    let resp = app.http.get(app.portal("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("<title>Tollgate developer portal</title>"));
    assert!(
        html.contains("Public &#60;b&#62;API&#60;/b&#62;")
            || html.contains("Public &lt;b&gt;API&lt;/b&gt;"),
        "names are escaped"
    );
    assert!(!html.contains("Secret"), "private APIs are not listed");
    let health = app.http.get(app.portal("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let css = app
        .http
        .get(app.portal("/assets/tollgate.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let missing = app.http.get(app.portal("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("Page not found"));
    app.running.store.close().await;
    let health = app.http.get(app.portal("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    app.stop().await;
}
