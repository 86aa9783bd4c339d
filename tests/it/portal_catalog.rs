//! The portal's catalog and API pages over real sockets, on both stacks:
//! search, docs rendered from OpenAPI (escaped), samples, plans, subscribing
//! (free at once, approval by the admin with an e-mail, paid refused),
//! a key shown once, try-it through the running gateway, and authorization
//! between developers.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::upstream::Upstream;

use crate::on_both_stacks;
use crate::portal_support::{Browser, Outbox, Page};
use crate::support::{Stack, TestApp, test_settings};

const PASSWORD: &str = "correct horse battery";

async fn start(stack: Stack) -> (TestApp, Outbox) {
    let (settings, db, ch) = test_settings(stack).await;
    let outbox = Outbox::new(&settings.data_dir);
    (TestApp::start_with(settings, db, ch).await, outbox)
}

fn unique_email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Undoes askama's HTML escaping of text in a page.
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
}

fn notes_doc() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Notes API", "version": "2.1", "description": "Keep notes. <script>alert('info')</script>"},
        "tags": [{"name": "notes", "description": "<img src=x onerror=alert(1)>"}],
        "paths": {
            "/notes/{id}": {
                "get": {
                    "tags": ["notes"], "operationId": "getNote", "summary": "Read a note",
                    "description": "Returns the note. <script>alert('op')</script>",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}, "example": 7}],
                    "responses": {"200": {"description": "The note", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}}}}}
                }
            },
            "/notes": {
                "post": {
                    "tags": ["notes"], "operationId": "addNote",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}}}},
                    "responses": {"201": {"description": "Created"}}
                }
            }
        },
        "components": {"schemas": {"Note": {"type": "object", "required": ["text"], "properties": {
            "text": {"type": "string", "description": "The text </td><script>alert('field')</script>", "example": "it's \"quoted\""},
            "pinned": {"type": "boolean"}
        }}}}
    })
}

async fn catalog_search_and_docs(stack: Stack) {
    let (app, _) = start(stack).await;
    app.create(
        "/admin/apis",
        json!({"name": "Notes", "slug": "notes", "base_path": "/notes", "upstreams": ["http://127.0.0.1:9"], "openapi": notes_doc()}),
    )
    .await;
    app.create(
        "/admin/apis",
        json!({"name": "Weather <b>now</b>", "slug": "weather", "base_path": "/weather", "upstreams": ["http://127.0.0.1:9"], "policies": {"keyless": true}}),
    )
    .await;
    app.create(
        "/admin/apis",
        json!({"name": "Secret", "slug": "secret", "base_path": "/secret", "upstreams": ["http://127.0.0.1:9"], "visibility": "private"}),
    )
    .await;
    let mut b = Browser::new(&app.portal(""));

    let all = b.get("/apis").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.title(), "APIs · Tollgate");
    assert!(all.body.contains("href=\"/apis/notes\""));
    assert!(all.body.contains("Weather &#60;b&#62;now&#60;/b&#62;"));
    assert!(
        !all.body.contains("/apis/secret"),
        "private APIs are not listed"
    );
    assert!(
        all.body.contains("href=\"/apis?tag=notes\""),
        "tags to filter by"
    );
    assert!(!all.body.contains("<script>alert"), "{}", all.body);
    assert!(all.session_cookie().is_none(), "browsing stores no session");

    let by_name = b.get("/apis?q=WEATH").await;
    assert!(by_name.body.contains("/apis/weather") && !by_name.body.contains("/apis/notes"));
    let by_description = b.get("/apis?q=keep+notes").await;
    assert!(
        by_description.body.contains("/apis/notes")
            && !by_description.body.contains("/apis/weather\"")
    );
    let by_tag = b.get("/apis?tag=notes").await;
    assert!(by_tag.body.contains("/apis/notes") && !by_tag.body.contains("/apis/weather\""));
    let none = b.get("/apis?q=%3Cscript%3Ezzz").await;
    assert_eq!(none.status, 200);
    assert!(none.body.contains("No API matches"), "{}", none.body);
    assert!(
        none.body.contains("&#60;script&#62;zzz"),
        "the query is escaped"
    );

    let notes = b.get("/apis/notes").await;
    assert_eq!(notes.status, 200);
    assert_eq!(notes.title(), "Notes · Tollgate");
    assert!(
        !notes.body.contains("<script>alert"),
        "hostile text is escaped"
    );
    assert!(
        !notes.body.contains("<img src=x"),
        "hostile text is escaped"
    );
    for needle in [
        "&#60;script&#62;alert(",
        "id=\"op-getnote\"",
        "id=\"op-addnote\"",
        "Read a note",
        "v2.1",
        "required",
    ] {
        assert!(notes.body.contains(needle), "{needle}");
    }
    let text = unescape(&notes.body);
    let base = app.gateway("/notes");
    assert!(
        text.contains(&format!(
            "curl '{base}/notes/7' \\\n  -H 'x-api-key: YOUR_API_KEY'"
        )),
        "the curl sample fills the path from its example"
    );
    for label in [
        "Python (requests)",
        "JavaScript (fetch)",
        "Go",
        "Java",
        "C# (HttpClient)",
        "PHP",
        "Rust (reqwest)",
    ] {
        assert!(
            text.contains(&format!("<summary>{label}</summary>")),
            "{label}"
        );
    }
    // The request body example comes from the resolved schema, quoted per language.
    assert!(
        text.contains(
            "--data-raw '{\n  \"pinned\": true,\n  \"text\": \"it'\\''s \\\"quoted\\\"\"\n}'"
        ),
        "{text}"
    );
    assert!(text.contains("The text </td><script>alert('field')</script>"));
    assert!(
        notes
            .body
            .contains("<a href=\"/login\">Log in</a> to send calls"),
        "try-it needs an account"
    );
    // The chosen language's sample is open.
    let python = b.get("/apis/notes?lang=python").await;
    assert!(
        python
            .body
            .contains("<details class=\"sample\" open>\n    <summary>Python (requests)</summary>")
    );

    let weather = b.get("/apis/weather").await;
    assert_eq!(weather.status, 200);
    assert!(
        weather
            .body
            .contains("This API has no published reference yet")
    );
    assert!(weather.body.contains("No key needed"));
    let text = unescape(&weather.body);
    assert!(
        text.contains(&format!("curl '{}/'\n", app.gateway("/weather"))),
        "a generic sample without a key"
    );
    assert!(weather.body.contains("No plan offers this API yet"));

    assert_eq!(b.get("/apis/secret").await.status, 404, "private");
    assert_eq!(b.get("/apis/nothing").await.status, 404);
    app.stop().await;
}
on_both_stacks!(catalog_and_docs, super::catalog_search_and_docs);

/// Signs up a verified developer and logs in; returns their user id.
async fn developer(app: &TestApp, outbox: &Outbox, who: &str) -> (Browser, String, String) {
    let mut b = Browser::new(&app.portal(""));
    let email = unique_email(who);
    b.sign_up_verified(outbox, &email, PASSWORD).await;
    b.log_in(&email, PASSWORD).await;
    let (_, devs) = app.admin("GET", "/admin/developers", None).await;
    let id = devs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["email"] == email.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (b, id, email)
}

async fn new_app(app: &TestApp, developer_id: &str, name: &str) -> String {
    app.create(
        "/admin/apps",
        json!({"developer_id": developer_id, "name": name}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn secret_in(page: &Page) -> String {
    let marker = "<code class=\"secret\">";
    let start = page.body.find(marker).expect("a new key on the page") + marker.len();
    let end = start + page.body[start..].find('<').unwrap();
    page.body[start..end].to_owned()
}

async fn subscribe(b: &mut Browser, app_id: &str, plan_id: &str) -> Page {
    b.submit(
        "/apis/echo",
        "/apis/echo/subscribe",
        &[("app_id", app_id), ("plan_id", plan_id)],
    )
    .await
}

async fn subscribe_key_try_and_approve(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let upstream = Upstream::echo().await;
    app.create(
        "/admin/apis",
        json!({"name": "Echo", "slug": "echo", "base_path": "/echo", "upstreams": [upstream.url()]}),
    )
    .await;
    let free = app
        .create("/admin/plans", json!({"name": "Starter", "apis": ["echo"], "included_calls": 10000, "rate_limits": [{"limit": 50, "window": "second", "per": "key"}]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gated = app
        .create(
            "/admin/plans",
            json!({"name": "Partner", "apis": ["echo"], "approval_required": true}),
        )
        .await;
    assert_eq!(gated["approval_required"], true);
    let gated = gated["id"].as_str().unwrap().to_owned();
    let paid = app
        .create("/admin/plans", json!({"name": "Pro", "apis": ["echo"], "price_minor": 4900, "included_calls": 100000, "overage": true}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (mut ada, ada_id, ada_email) = developer(&app, &outbox, "ada").await;
    let ada_app = new_app(&app, &ada_id, "Ada's <app>").await;
    let ada_other = new_app(&app, &ada_id, "Ada's second").await;

    let page = ada.get("/apis/echo").await;
    assert_eq!(page.status, 200);
    for needle in [
        "10,000 calls per month",
        "50 calls per second per key",
        "Calls beyond the included ones are refused",
        "Each subscription is approved by the API's team",
        "49.00 USD per month",
        "Billing is not configured yet",
        "Request access",
        "Ada&#39;s &#60;app&#62;",
    ] {
        assert!(page.body.contains(needle), "{needle}: {}", page.body);
    }
    assert_eq!(
        page.body.matches("action=\"/apis/echo/subscribe\"").count(),
        2,
        "the paid plan has no button"
    );

    // CSRF: a form without the token is refused.
    let refused = ada
        .post(
            "/apis/echo/subscribe",
            &[("app_id", &ada_app), ("plan_id", &free)],
        )
        .await;
    assert_eq!(refused.status, 403);
    for action in ["/apis/echo/keys", "/apis/echo/try"] {
        let refused = ada
            .post(
                action,
                &[
                    ("app_id", &ada_app),
                    ("method", "GET"),
                    ("path", "/"),
                    ("csrf", "forged"),
                ],
            )
            .await;
        assert_eq!(refused.status, 403, "{action}");
    }

    // A free plan: active at once, and the gateway admits the app's key within 1 s.
    let done = subscribe(&mut ada, &ada_app, &free).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        done.location(),
        format!("/apis/echo?app={ada_app}&notice=subscribed#plans")
    );
    let again = subscribe(&mut ada, &ada_app, &free).await;
    assert!(again.location().contains("notice=already"));

    let created = ada
        .submit("/apis/echo", "/apis/echo/keys", &[("app_id", &ada_app)])
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = secret_in(&created);
    assert!(key.starts_with("tg_live_"), "{key}");
    let text = unescape(&created.body);
    assert!(
        text.contains(&format!("-H 'x-api-key: {key}'")),
        "the samples carry the new key"
    );
    assert!(!text.contains("-H 'x-api-key: YOUR_API_KEY'"));
    let within = app
        .wait_status("/echo/hello", Some(&key), 200, Duration::from_secs(1))
        .await;
    assert!(
        within.is_some(),
        "the key works through the gateway within 1 s"
    );
    // Shown once: the next view has the placeholder and the prefix only.
    let later = ada.get(&format!("/apis/echo?app={ada_app}")).await;
    assert!(!later.body.contains(&key));
    assert!(
        later.body.contains(&format!("{}…", &key[..12])),
        "{}",
        later.body
    );

    // Try it: a real call through the gateway, status, headers and body shown.
    let tried = ada
        .submit(
            "/apis/echo",
            "/apis/echo/try",
            &[
                ("method", "POST"),
                ("path", "/things?x=1"),
                ("key", &key),
                ("content_type", "application/json"),
                ("body", "{\"n\":1}"),
                ("operation", "generic"),
            ],
        )
        .await;
    assert_eq!(tried.status, 200, "{}", tried.body);
    let text = unescape(&tried.body);
    assert!(text.contains("200 OK"), "{text}");
    assert!(text.contains("\"path\": \"/things\""), "{text}");
    assert!(text.contains("\"body\": \"{\\\"n\\\":1}\""), "{text}");
    assert!(text.contains("x-request-id"), "response headers are shown");
    let unauth = ada
        .submit(
            "/apis/echo",
            "/apis/echo/try",
            &[("method", "GET"), ("path", "/x"), ("key", "")],
        )
        .await;
    assert_eq!(unauth.status, 200);
    assert!(unescape(&unauth.body).contains("401 Unauthorized"));
    let bad = ada
        .submit(
            "/apis/echo",
            "/apis/echo/try",
            &[("method", "GET"), ("path", "//evil.example/")],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("must start with a single /"));

    // A paid plan: a clear refusal, no subscription.
    let refused = subscribe(&mut ada, &ada_app, &paid).await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("Billing is not configured yet"));

    // A plan that needs approval: pending, then approved by the admin, with mail.
    let asked = subscribe(&mut ada, &ada_app, &gated).await;
    assert_eq!(asked.status, 303);
    assert!(asked.location().contains("notice=requested"));
    let asked_other = subscribe(&mut ada, &ada_other, &gated).await;
    assert_eq!(asked_other.status, 303);
    let page = ada
        .get(&format!("/apis/echo?app={ada_app}&notice=requested"))
        .await;
    assert!(page.body.contains("Pending approval"));
    assert!(page.body.contains("The subscription is pending"));
    let pending = |app_id: String| {
        let app = &app;
        async move {
            let (_, subs) = app
                .admin(
                    "GET",
                    &format!("/admin/subscriptions?app_id={app_id}"),
                    None,
                )
                .await;
            subs["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["status"] == "pending")
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = pending(ada_app.clone()).await;
    let second = pending(ada_other.clone()).await;
    let (s, approved) = app
        .admin(
            "POST",
            &format!("/admin/subscriptions/{first}/approve"),
            None,
        )
        .await;
    assert_eq!((s, approved["status"].as_str()), (200, Some("active")));
    let mail = outbox
        .wait_for(&ada_email, "Your subscription to Partner is approved")
        .await;
    assert!(mail.text.contains("Ada's <app>"), "{}", mail.text);
    assert!(
        mail.text.contains(&app.portal("/apis/echo")),
        "{}",
        mail.text
    );
    let (s, again) = app
        .admin(
            "POST",
            &format!("/admin/subscriptions/{first}/approve"),
            None,
        )
        .await;
    assert_eq!(
        (s, again["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (s, rejected) = app
        .admin(
            "POST",
            &format!("/admin/subscriptions/{second}/reject"),
            None,
        )
        .await;
    assert_eq!((s, rejected["status"].as_str()), (200, Some("cancelled")));
    outbox
        .wait_for(&ada_email, "Your subscription to Partner was not approved")
        .await;
    let (s, missing) = app
        .admin("POST", "/admin/subscriptions/sub_nope/approve", None)
        .await;
    assert_eq!(
        (s, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Another developer can neither use nor see Ada's app: the same 404 as an unknown id.
    let (mut bob, bob_id, _) = developer(&app, &outbox, "bob").await;
    let bob_app = new_app(&app, &bob_id, "Bob's").await;
    for app_id in [ada_app.as_str(), "app_unknown"] {
        let r = subscribe(&mut bob, app_id, &free).await;
        assert_eq!(r.status, 404, "subscribe {app_id}");
        let r = bob
            .submit("/apis/echo", "/apis/echo/keys", &[("app_id", app_id)])
            .await;
        assert_eq!(r.status, 404, "key for {app_id}");
        assert_eq!(
            bob.get(&format!("/apis/echo?app={app_id}")).await.status,
            404
        );
    }
    let page = bob.get("/apis/echo").await;
    assert!(
        !page.body.contains("Ada&#39;s"),
        "Bob never sees Ada's apps"
    );
    // A plan that does not cover the API is not offered through it.
    let other_api = app
        .create("/admin/apis", json!({"name": "Other", "slug": "other", "base_path": "/other", "upstreams": [upstream.url()]}))
        .await;
    assert!(other_api["id"].is_string());
    let other_plan = app
        .create(
            "/admin/plans",
            json!({"name": "Other free", "apis": ["other"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(subscribe(&mut bob, &bob_app, &other_plan).await.status, 404);

    // Signed out: subscribing asks to log in.
    let mut anon = Browser::new(&app.portal(""));
    let r = anon
        .submit(
            "/login",
            "/apis/echo/subscribe",
            &[("app_id", &bob_app), ("plan_id", &free)],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    app.stop().await;
}
on_both_stacks!(subscribing_and_try_it, super::subscribe_key_try_and_approve);
