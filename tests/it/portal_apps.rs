//! The portal's apps, keys, subscriptions and usage pages over real sockets,
//! on both stacks, with a running gateway: what a developer does in the
//! portal reaches the gateway within a second; nobody sees or changes another
//! developer's apps, keys, subscriptions or usage.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::{Answer, Scripted};

use crate::on_both_stacks;
use crate::portal_support::{Browser, Outbox, Page};
use crate::support::{Stack, TestApp, test_settings};

const PASSWORD: &str = "correct horse battery";
const WITHIN: Duration = Duration::from_secs(1);

async fn start(stack: Stack) -> (TestApp, Outbox) {
    let (settings, db, ch) = test_settings(stack).await;
    let outbox = Outbox::new(&settings.data_dir);
    (TestApp::start_with(settings, db, ch).await, outbox)
}

/// A signed-in developer's browser.
async fn developer(app: &TestApp, outbox: &Outbox, who: &str) -> Browser {
    let email = format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple());
    let mut b = Browser::new(&app.portal(""));
    b.sign_up_verified(outbox, &email, PASSWORD).await;
    b.log_in(&email, PASSWORD).await;
    b
}

/// An API on `upstream` at `/{slug}` and an active plan covering it with
/// `included` calls per month. Returns the plan id.
async fn api_and_plan(app: &TestApp, slug: &str, upstream: &str, included: i64) -> String {
    app.create(
        "/admin/apis",
        json!({"name": format!("{slug} API"), "slug": slug, "base_path": format!("/{slug}"), "upstreams": [upstream]}),
    )
    .await;
    let plan = app
        .create(
            "/admin/plans",
            json!({"name": format!("{slug} starter"), "apis": [slug], "included_calls": included}),
        )
        .await;
    plan["id"].as_str().unwrap().to_owned()
}

/// Creates an app in the portal; returns its id.
async fn create_app(b: &mut Browser, name: &str) -> String {
    let r = b.submit("/apps", "/apps", &[("name", name)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id = r
        .location()
        .strip_prefix("/apps/")
        .and_then(|rest| rest.strip_suffix("?notice=created"))
        .unwrap_or_else(|| panic!("unexpected redirect {}", r.location()))
        .to_owned();
    assert!(id.starts_with("app_"), "{id}");
    id
}

/// Subscribes an app through the admin API; returns the subscription id.
async fn subscribe(app: &TestApp, app_id: &str, plan_id: &str) -> String {
    let s = app
        .create(
            "/admin/subscriptions",
            json!({"app_id": app_id, "plan_id": plan_id}),
        )
        .await;
    s["id"].as_str().unwrap().to_owned()
}

/// The key shown on a new-key page.
fn shown_key(page: &Page) -> String {
    let marker = "value=\"tg_live_";
    let start = page.body.find(marker).expect("the page shows a key") + "value=\"".len();
    let end = start + page.body[start..].find('"').unwrap();
    page.body[start..end].to_owned()
}

/// Issues a key from the app page; returns (key id, key).
async fn create_key(app: &TestApp, b: &mut Browser, app_id: &str) -> (String, String) {
    let r = b
        .submit(
            &format!("/apps/{app_id}"),
            &format!("/apps/{app_id}/keys"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.title(), "Your new key · Tollgate");
    assert_eq!(r.headers["cache-control"], "no-store");
    let key = shown_key(&r);
    (key_id(app, app_id, &key).await, key)
}

/// The id of `key` of `app_id`, from the admin API (by prefix).
async fn key_id(app: &TestApp, app_id: &str, key: &str) -> String {
    let (status, keys) = app
        .admin("GET", &format!("/admin/apps/{app_id}/keys"), None)
        .await;
    assert_eq!(status, 200);
    keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| key.starts_with(k["prefix"].as_str().unwrap()))
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .expect("the key is listed")
}

/// Asserts that `key` gets `status` on `path` within a second.
async fn gateway_answers(app: &TestApp, path: &str, key: &str, status: u16) {
    let took = app.wait_status(path, Some(key), status, WITHIN).await;
    assert!(
        took.is_some(),
        "{path} with {}… did not answer {status} within 1 s (last: {})",
        &key[..12],
        app.call(path, Some(key)).await.status()
    );
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .or_else(|| body["code"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn apps_keys_and_the_gateway(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let upstream = Scripted::start().await;
    upstream.set("/today", Answer::json(json!({"sun": true})));
    let plan = api_and_plan(&app, "weather", &upstream.url(), 1000).await;
    let mut b = developer(&app, &outbox, "ada").await;

    // No apps yet: a useful empty state, and the header links to the apps.
    let apps = b.get("/apps").await;
    assert_eq!((apps.status, apps.title()), (200, "Your apps · Tollgate"));
    assert!(apps.body.contains("You have no apps yet"));
    assert!(apps.body.contains("<a href=\"/apps\">Apps</a>"));

    // A name is required; the form comes back with the message.
    let r = b.submit("/apps", "/apps", &[("name", "  ")]).await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("The name must not be empty"), "{}", r.body);

    let app_id = create_app(&mut b, "Ada's <weather> app").await;
    let page = b.get(&format!("/apps/{app_id}?notice=created")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.title(), "Ada&#39;s &#60;weather&#62; app · Tollgate");
    assert!(page.body.contains("Your app is created"));
    assert!(page.body.contains("This app has no keys yet"));
    assert!(page.body.contains("not subscribed to any API yet"));
    assert!(!page.body.contains("<weather>"), "names are escaped");

    // A key: shown once, with a copy button that the script reveals.
    let sub = subscribe(&app, &app_id, &plan).await;
    let (first_id, first) = create_key(&app, &mut b, &app_id).await;
    let shown = b
        .submit(
            &format!("/apps/{app_id}"),
            &format!("/apps/{app_id}/keys"),
            &[],
        )
        .await;
    assert!(shown.body.contains("data-copy=\"new-key\" hidden"));
    let script = shown.body.find("/assets/copy.").expect("the copy script");
    let src = &shown.body[script..script + shown.body[script..].find('"').unwrap()];
    let js = b.get(src).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert!(js.body.contains("navigator.clipboard"));
    assert!(
        shown.body.contains(&format!("{}/weather", app.gateway(""))),
        "a call to try, with the gateway URL"
    );
    let second = shown_key(&shown);
    let second_id = key_id(&app, &app_id, &second).await;
    // The new key works through the gateway within a second.
    gateway_answers(&app, "/weather/today", &first, 200).await;
    gateway_answers(&app, "/weather/today", &second, 200).await;

    // The list: prefix, status, created and last-used times; never the key.
    let page = b.get(&format!("/apps/{app_id}")).await;
    assert!(page.body.contains(&format!("{}…", &first[..12])));
    assert!(!page.body.contains(&first) && !page.body.contains(&second));
    assert!(page.body.contains("Active"));
    assert!(page.body.contains("Last used"));
    assert!(
        page.body.contains("weather starter"),
        "the subscription's plan"
    );
    assert!(page.body.contains("weather API"), "the subscription's API");

    // Rotation with an overlap: the form offers the periods, 24 hours first choice.
    let form = b
        .get(&format!("/apps/{app_id}/keys/{first_id}/rotate"))
        .await;
    assert_eq!(
        (form.status, form.title()),
        (200, "Rotate a key · Tollgate")
    );
    assert!(form.body.contains("value=\"24h\" checked"));
    let rotated = b
        .submit(
            &format!("/apps/{app_id}/keys/{first_id}/rotate"),
            &format!("/apps/{app_id}/keys/{first_id}/rotate"),
            &[("overlap", "1h")],
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.body.contains("keeps working until"));
    let third = shown_key(&rotated);
    assert_ne!(third, first);
    gateway_answers(&app, "/weather/today", &third, 200).await;
    // The old key still works during the overlap.
    assert_eq!(app.call("/weather/today", Some(&first)).await.status(), 200);
    let page = b.get(&format!("/apps/{app_id}")).await;
    assert!(
        page.body.contains("Works until"),
        "the old key shows its end"
    );
    // An unknown period is not a form of ours.
    let r = b
        .submit(
            &format!("/apps/{app_id}/keys/{second_id}/rotate"),
            &format!("/apps/{app_id}/keys/{second_id}/rotate"),
            &[("overlap", "forever")],
        )
        .await;
    assert_eq!(r.status, 400);

    // Rotating with "stop at once": the old key is refused within a second.
    let r = b
        .submit(
            &format!("/apps/{app_id}/keys/{second_id}/rotate"),
            &format!("/apps/{app_id}/keys/{second_id}/rotate"),
            &[("overlap", "0")],
        )
        .await;
    assert_eq!(r.status, 200);
    let fourth = shown_key(&r);
    gateway_answers(&app, "/weather/today", &fourth, 200).await;
    gateway_answers(&app, "/weather/today", &second, 401).await;
    assert_eq!(
        error_code(app.call("/weather/today", Some(&second)).await).await,
        "expired_key"
    );
    // An expired key cannot be rotated again.
    let r = b
        .get(&format!("/apps/{app_id}/keys/{second_id}/rotate"))
        .await;
    assert_eq!(r.status, 409);

    // A rotated key works until its overlap ends, then the gateway refuses it.
    // (The portal's shortest overlap is an hour; the store takes any.)
    let third_id = key_id(&app, &app_id, &third).await;
    app.running
        .store
        .rotate_key(&third_id, 3_000)
        .await
        .unwrap();
    app.synced().await;
    assert_eq!(app.call("/weather/today", Some(&third)).await.status(), 200);
    let refused = app
        .wait_status("/weather/today", Some(&third), 401, Duration::from_secs(10))
        .await;
    assert!(
        refused.is_some(),
        "the rotated key still works after its overlap"
    );

    // Revoke: a confirmation page, then refused within a second.
    let confirm = b
        .get(&format!("/apps/{app_id}/keys/{first_id}/revoke"))
        .await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Revoke key"));
    let r = b
        .submit(
            &format!("/apps/{app_id}/keys/{first_id}/revoke"),
            &format!("/apps/{app_id}/keys/{first_id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, format!("/apps/{app_id}?notice=key-revoked").as_str())
    );
    gateway_answers(&app, "/weather/today", &first, 401).await;
    let page = b.get(&format!("/apps/{app_id}")).await;
    assert!(page.body.contains("Revoked"));
    // A revoked key has no rotate or revoke actions, and its forms refuse.
    assert!(!page.body.contains(&format!("keys/{first_id}/revoke")));
    let r = b
        .get(&format!("/apps/{app_id}/keys/{first_id}/revoke"))
        .await;
    assert_eq!(r.status, 409);

    // Rename.
    let r = b
        .submit(
            &format!("/apps/{app_id}"),
            &format!("/apps/{app_id}/rename"),
            &[("name", "")],
        )
        .await;
    assert_eq!(r.status, 422);
    let r = b
        .submit(
            &format!("/apps/{app_id}"),
            &format!("/apps/{app_id}/rename"),
            &[("name", "Forecasts")],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, format!("/apps/{app_id}?notice=renamed").as_str())
    );
    assert_eq!(
        b.get(&format!("/apps/{app_id}")).await.title(),
        "Forecasts · Tollgate"
    );

    // Deleting an app with a live subscription is refused with the way forward.
    let confirm = b.get(&format!("/apps/{app_id}/delete")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Cancel it on the app"));
    let r = b
        .post(
            &format!("/apps/{app_id}/delete"),
            &[("csrf", confirm.csrf().as_str())],
        )
        .await;
    assert_eq!(r.status, 409);

    // Cancel the subscription: a confirmation page, then refused within a second.
    let confirm = b
        .get(&format!("/apps/{app_id}/subscriptions/{sub}/cancel"))
        .await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("loses access to weather API"));
    let r = b
        .post(
            &format!("/apps/{app_id}/subscriptions/{sub}/cancel"),
            &[("csrf", confirm.csrf().as_str())],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (
            303,
            format!("/apps/{app_id}?notice=subscription-cancelled").as_str()
        )
    );
    gateway_answers(&app, "/weather/today", &fourth, 403).await;
    assert_eq!(
        error_code(app.call("/weather/today", Some(&fourth)).await).await,
        "no_subscription"
    );
    let page = b.get(&format!("/apps/{app_id}")).await;
    assert!(page.body.contains("Cancelled"));
    assert!(!page.body.contains(&format!("subscriptions/{sub}/cancel")));

    // Now the app can go; its keys go with it.
    let re_subscribed = subscribe(&app, &app_id, &plan).await;
    gateway_answers(&app, "/weather/today", &fourth, 200).await;
    app.admin(
        "PATCH",
        &format!("/admin/subscriptions/{re_subscribed}"),
        Some(json!({"status": "cancelled"})),
    )
    .await;
    let confirm = b.get(&format!("/apps/{app_id}/delete")).await;
    let r = b
        .post(
            &format!("/apps/{app_id}/delete"),
            &[("csrf", confirm.csrf().as_str())],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/apps?notice=deleted"));
    gateway_answers(&app, "/weather/today", &fourth, 401).await;
    assert_eq!(b.get(&format!("/apps/{app_id}")).await.status, 404);
    let list = b.get("/apps?notice=deleted").await;
    assert!(list.body.contains("The app and its keys are deleted"));
    assert!(list.body.contains("You have no apps yet"));
    app.stop().await;
}
on_both_stacks!(apps_keys_and_the_gateway, super::apps_keys_and_the_gateway);

async fn forms_need_sign_in_and_csrf(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let mut b = developer(&app, &outbox, "grace").await;
    let app_id = create_app(&mut b, "Grace's app").await;
    let (key_id, _) = create_key(&app, &mut b, &app_id).await;
    let posts = [
        "/apps".to_owned(),
        format!("/apps/{app_id}/rename"),
        format!("/apps/{app_id}/delete"),
        format!("/apps/{app_id}/keys"),
        format!("/apps/{app_id}/keys/{key_id}/rotate"),
        format!("/apps/{app_id}/keys/{key_id}/revoke"),
    ];
    // Signed in, but without the token (or with a wrong one): the 403 page, nothing changes.
    for path in &posts {
        let r = b.post(path, &[("name", "x"), ("overlap", "0")]).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("This form has expired"), "{path}");
        let r = b
            .post(path, &[("csrf", "forged"), ("name", "x"), ("overlap", "0")])
            .await;
        assert_eq!(r.status, 403, "{path}");
    }
    let (_, keys) = app
        .admin("GET", &format!("/admin/apps/{app_id}/keys"), None)
        .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert_eq!(keys["data"][0]["status"], "active");
    assert!(keys["data"][0]["expires_at"].is_null());
    assert_eq!(
        b.get(&format!("/apps/{app_id}")).await.title(),
        "Grace&#39;s app · Tollgate"
    );

    // Signed out: every page sends to log in.
    let mut anonymous = Browser::new(&app.portal(""));
    for path in [
        "/apps".to_owned(),
        format!("/apps/{app_id}"),
        format!("/apps/{app_id}/usage"),
        format!("/apps/{app_id}/delete"),
        format!("/apps/{app_id}/keys/{key_id}/rotate"),
        format!("/apps/{app_id}/keys/{key_id}/revoke"),
    ] {
        let r = anonymous.get(&path).await;
        assert_eq!((r.status, r.location()), (303, "/login"), "{path}");
    }
    // A signed-out form post with a valid token of its own session still needs an account.
    let login = anonymous.get("/login").await;
    let token = login.csrf();
    for path in &posts {
        let r = anonymous
            .post(
                path,
                &[("csrf", token.as_str()), ("name", "x"), ("overlap", "0")],
            )
            .await;
        assert_eq!((r.status, r.location()), (303, "/login"), "{path}");
    }
    app.stop().await;
}
on_both_stacks!(
    forms_need_sign_in_and_csrf,
    super::forms_need_sign_in_and_csrf
);

async fn one_developer_never_reaches_anothers(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let upstream = Scripted::start().await;
    upstream.set("/today", Answer::json(json!({"sun": true})));
    let plan = api_and_plan(&app, "weather", &upstream.url(), 1000).await;
    let mut ada = developer(&app, &outbox, "ada").await;
    let mut eve = developer(&app, &outbox, "eve").await;
    let ada_app = create_app(&mut ada, "Ada private app").await;
    let ada_sub = subscribe(&app, &ada_app, &plan).await;
    let (ada_key_id, ada_key) = create_key(&app, &mut ada, &ada_app).await;
    gateway_answers(&app, "/weather/today", &ada_key, 200).await;
    let eve_app = create_app(&mut eve, "Eve app").await;

    // Eve's list does not show Ada's app.
    let list = eve.get("/apps").await;
    assert!(!list.body.contains("Ada private app") && !list.body.contains(&ada_app));

    // Every page of Ada's objects is the same 404 for Eve as an unknown id,
    // also when Eve puts Ada's key or subscription under her own app.
    let pages = [
        format!("/apps/{ada_app}"),
        format!("/apps/{ada_app}/usage"),
        format!("/apps/{ada_app}/usage?key={ada_key_id}"),
        format!("/apps/{ada_app}/delete"),
        format!("/apps/{ada_app}/keys/{ada_key_id}/rotate"),
        format!("/apps/{ada_app}/keys/{ada_key_id}/revoke"),
        format!("/apps/{ada_app}/subscriptions/{ada_sub}/cancel"),
        format!("/apps/{eve_app}/keys/{ada_key_id}/rotate"),
        format!("/apps/{eve_app}/keys/{ada_key_id}/revoke"),
        format!("/apps/{eve_app}/subscriptions/{ada_sub}/cancel"),
        format!("/apps/{eve_app}/usage?key={ada_key_id}"),
        "/apps/app_doesnotexist".to_owned(),
        format!("/apps/{eve_app}/keys/key_doesnotexist/revoke"),
    ];
    let unknown = eve.get("/apps/app_doesnotexist").await;
    for path in &pages {
        let r = eve.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.title(), unknown.title(), "{path}");
        assert!(!r.body.contains("Ada private app"), "{path}");
    }
    // And every form: 404, nothing changes.
    let token = eve.get("/apps").await.csrf();
    let posts = [
        format!("/apps/{ada_app}/rename"),
        format!("/apps/{ada_app}/delete"),
        format!("/apps/{ada_app}/keys"),
        format!("/apps/{ada_app}/keys/{ada_key_id}/rotate"),
        format!("/apps/{ada_app}/keys/{ada_key_id}/revoke"),
        format!("/apps/{ada_app}/subscriptions/{ada_sub}/cancel"),
        format!("/apps/{eve_app}/keys/{ada_key_id}/rotate"),
        format!("/apps/{eve_app}/keys/{ada_key_id}/revoke"),
        format!("/apps/{eve_app}/subscriptions/{ada_sub}/cancel"),
    ];
    for path in &posts {
        let r = eve
            .post(
                path,
                &[
                    ("csrf", token.as_str()),
                    ("name", "Eve's now"),
                    ("overlap", "0"),
                ],
            )
            .await;
        assert_eq!(r.status, 404, "{path}");
    }
    let (_, keys) = app
        .admin("GET", &format!("/admin/apps/{ada_app}/keys"), None)
        .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "no key issued");
    assert_eq!(keys["data"][0]["status"], "active");
    assert!(keys["data"][0]["expires_at"].is_null(), "not rotated");
    let (_, sub) = app
        .admin("GET", &format!("/admin/subscriptions/{ada_sub}"), None)
        .await;
    assert_eq!(sub["status"], "active");
    let (_, a) = app
        .admin("GET", &format!("/admin/apps/{ada_app}"), None)
        .await;
    assert_eq!(a["name"], "Ada private app");
    assert_eq!(
        app.call("/weather/today", Some(&ada_key)).await.status(),
        200
    );
    // Ada still sees all of it.
    assert_eq!(ada.get(&format!("/apps/{ada_app}")).await.status, 200);
    app.stop().await;
}
on_both_stacks!(
    one_developer_never_reaches_anothers,
    super::one_developer_never_reaches_anothers
);

async fn usage_pages(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let upstream = Scripted::start().await;
    upstream.set("/today", Answer::json(json!({"sun": true})));
    upstream.set("/broken", Answer::json(json!({})).status(503));
    let plan = api_and_plan(&app, "weather", &upstream.url(), 100).await;
    let mut b = developer(&app, &outbox, "lin").await;
    let app_id = create_app(&mut b, "Lin app").await;
    subscribe(&app, &app_id, &plan).await;
    let (first_id, first) = create_key(&app, &mut b, &app_id).await;
    let (second_id, second) = create_key(&app, &mut b, &app_id).await;

    // Before any call: the empty state, the period selector, the quota at zero.
    let usage = format!("/apps/{app_id}/usage");
    let r = b.get(&usage).await;
    assert_eq!((r.status, r.title()), (200, "Usage of Lin app · Tollgate"));
    assert!(
        r.body
            .contains("No calls with all keys in the last 24 hours")
    );
    assert!(r.body.contains("0</strong> of 100 calls used"));
    assert!(r.body.contains("Resets "));
    assert!(r.body.contains(&format!("{usage}?period=7d")));
    assert!(!r.body.contains("<svg class=\"chart__svg\""));

    // Four successes and one upstream 503 with the first key, two successes with the second.
    gateway_answers(&app, "/weather/today", &first, 200).await;
    gateway_answers(&app, "/weather/today", &second, 200).await;
    for _ in 0..3 {
        assert_eq!(app.call("/weather/today", Some(&first)).await.status(), 200);
    }
    assert_eq!(
        app.call("/weather/broken", Some(&first)).await.status(),
        503
    );
    assert_eq!(
        app.call("/weather/today", Some(&second)).await.status(),
        200
    );

    let all = wait_for_page(
        &mut b,
        &usage,
        &[
            "<strong>7</strong> of 100 calls used",
            "<span class=\"stat__value\">7</span>",
        ],
    )
    .await;
    assert!(
        all.body.contains("<svg class=\"chart__svg\""),
        "the calls chart"
    );
    assert!(all.body.contains("Calls per hour"));
    assert!(all.body.contains("Latency per hour"));
    assert!(all.body.contains("Latency p50 / p95"));
    assert!(
        stat(&all, "Calls").starts_with('7'),
        "{}",
        stat(&all, "Calls")
    );
    assert!(stat(&all, "Server errors (5xx)").starts_with('1'));
    assert!(all.body.contains("weather API"), "the by-API table");

    // One key's usage.
    let one = b.get(&format!("{usage}?key={second_id}")).await;
    assert_eq!(one.status, 200);
    assert!(one.body.contains(&format!("key {}…", &second[..12])));
    assert!(
        stat(&one, "Calls").starts_with('2'),
        "{}",
        stat(&one, "Calls")
    );
    assert!(stat(&one, "Server errors (5xx)").starts_with('0'));
    let one = b.get(&format!("{usage}?key={first_id}&period=30d")).await;
    assert!(
        stat(&one, "Calls").starts_with('5'),
        "{}",
        stat(&one, "Calls")
    );
    assert!(one.body.contains("Calls per day"));

    // Every period answers; an unknown one is a bad request; an unknown key a 404.
    for period in ["24h", "7d", "30d"] {
        let r = b.get(&format!("{usage}?period={period}")).await;
        assert_eq!(r.status, 200, "{period}");
        assert!(
            r.body.contains(&format!(
                "href=\"{usage}?period={period}\" aria-current=\"page\""
            )),
            "{period}"
        );
    }
    assert_eq!(b.get(&format!("{usage}?period=1y")).await.status, 400);
    assert_eq!(b.get(&format!("{usage}?key=key_nope")).await.status, 404);
    app.stop().await;
}
on_both_stacks!(usage_pages, super::usage_pages);

/// The value of the headline number labelled `label`.
fn stat<'p>(page: &'p Page, label: &str) -> &'p str {
    let marker = format!("<span class=\"stat__label\">{label}</span> <span class=\"stat__value\">");
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {label} figure"))
        + marker.len();
    let end = start + page.body[start..].find('<').unwrap();
    &page.body[start..end]
}

/// Reloads `path` until it contains every needle (usage lands within seconds).
async fn wait_for_page(b: &mut Browser, path: &str, needles: &[&str]) -> Page {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        if needles.iter().all(|n| page.body.contains(n)) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never showed {needles:?}:\n{}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
