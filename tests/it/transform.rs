//! JSON body mapping over real sockets, with the usage events it produces.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::Upstream;

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
