//! The portal in a real browser: headless Chromium over WebDriver. A new
//! developer's journey from the landing page, with the verification mail read
//! from a real SMTP sink, and log-in through a real local OpenID Connect
//! provider. Each main page is saved as a screenshot
//! (`target/test-artifacts/browser/`).

use std::time::{Duration, Instant};

use tollgate_core::config::{SignInKind, SignInProvider, SmtpSettings, SmtpTls};
use tollgate_testkit::browser::Chrome;
use tollgate_testkit::oidc::{OidcProvider, Person};
use tollgate_testkit::smtp::SmtpSink;

use crate::on_both_stacks;
use crate::portal_support::link_in;
use crate::support::{Stack, TestApp, test_settings};

const PASSWORD: &str = "correct horse battery";

fn stack_name(stack: Stack) -> &'static str {
    match stack {
        Stack::Embedded => "embedded",
        Stack::Scaled => "scaled",
    }
}

/// A small API with an OpenAPI document and a free plan, as an admin would
/// publish it.
async fn publish_weather(app: &TestApp, upstream: &str) {
    app.create(
        "/admin/apis",
        serde_json::json!({
            "name": "Weather", "slug": "weather", "base_path": "/weather", "upstreams": [upstream],
            "openapi": {
                "openapi": "3.0.3",
                "info": {"title": "Weather", "version": "1.0.0", "description": "Forecasts by city."},
                "paths": {"/forecast": {"get": {
                    "tags": ["forecasts"], "summary": "Today's forecast",
                    "parameters": [{"name": "city", "in": "query", "schema": {"type": "string"}, "example": "Lisbon"}],
                    "responses": {"200": {"description": "The forecast"}}
                }}}
            }
        }),
    )
    .await;
    app.create(
        "/admin/plans",
        serde_json::json!({"name": "Starter", "apis": ["weather"], "included_calls": 1000}),
    )
    .await;
}

/// From the landing page to a first successful call, the way a new developer
/// goes: every page load, click and form submission counts as a step.
async fn journey(stack: Stack) {
    let sink = SmtpSink::start().await;
    let upstream = tollgate_testkit::upstream::Upstream::echo().await;
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.smtp = Some(SmtpSettings {
        host: "127.0.0.1".to_owned(),
        port: sink.addr.port(),
        tls: SmtpTls::None,
        credentials: None,
    });
    let app = TestApp::start_with(settings, db, ch).await;
    publish_weather(&app, &upstream.url()).await;
    let name = stack_name(stack);
    let email = format!("dev-{}@example.com", uuid::Uuid::new_v4().simple());
    let mut chrome = Chrome::start(1280, 900).await;
    let began = Instant::now();

    // 1. The landing page.
    chrome.open(&app.portal("/")).await;
    assert_eq!(chrome.title().await, "Tollgate developer portal");
    chrome.screenshot(&format!("{name}-01-home")).await;

    // 2-3. Sign up.
    chrome.click_link("Create a free account").await;
    chrome.wait_for_path("/signup").await;
    chrome.type_into("#email", &email).await;
    chrome.type_into("#password", PASSWORD).await;
    chrome.screenshot(&format!("{name}-02-signup")).await;
    chrome
        .click("form[action='/signup'] button[type=submit]")
        .await;
    chrome.wait_for_path("/signup/check-email").await;
    chrome.screenshot(&format!("{name}-03-check-email")).await;

    // 4. The mail, over SMTP: its link confirms the address and, opened in
    // the browser that signed up, logs in.
    let mail = tollgate_testkit::eventually(Duration::from_secs(10), || async {
        sink.received()
            .into_iter()
            .find(|m| m.to == [email.clone()])
    })
    .await
    .expect("the verification mail reached the SMTP sink");
    chrome.open(&link_in(&mail.data, "/verify-email/")).await;
    chrome.wait_for_path("/apps").await;
    chrome.wait_for_text("main", "you are logged in").await;

    // 5. An app.
    chrome.type_into("#name", "Weather widget").await;
    chrome
        .click("form[action='/apps'] button[type=submit]")
        .await;
    chrome.wait_for_text("h1", "Weather widget").await;
    chrome.screenshot(&format!("{name}-04-app")).await;

    // 6-7. The catalog, the API's page.
    chrome.click_link("APIs").await;
    chrome.wait_for_path("/apis").await;
    chrome.screenshot(&format!("{name}-05-catalog")).await;
    chrome.click_link("Weather").await;
    chrome.wait_for_path("/apis/weather").await;

    // 8. Subscribe the app to the free plan.
    chrome
        .click("form[action='/apis/weather/subscribe'] button[type=submit]")
        .await;
    chrome.wait_for_text("main", "Your app is subscribed").await;

    // 9. A key for the app: shown once, inside every sample.
    chrome
        .click("form[action='/apis/weather/keys'] button[type=submit]")
        .await;
    let key = chrome.text("code.secret").await;
    assert!(key.starts_with("tg_"), "{key}");
    chrome.screenshot(&format!("{name}-06-api-with-key")).await;

    // 10. Copy the curl sample (its button is there; the text is what it copies).
    assert!(
        chrome
            .find(".sample__body button[data-copy]")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "the copy button shows with JavaScript"
    );
    chrome.steps += 1;
    let curl = chrome
        .client
        .execute(
            "return document.querySelector('pre[data-language=curl]').textContent;",
            vec![],
        )
        .await
        .unwrap();
    let curl = curl.as_str().unwrap().trim().to_owned();
    assert!(
        curl.contains(&key) && curl.contains("/weather/forecast"),
        "{curl}"
    );

    // 11. Run it: the first successful call.
    chrome.steps += 1;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{curl} -s -o /dev/null -w '%{{http_code}}'"))
        .output()
        .expect("run the curl sample");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{curl}");
    let to_first_call = began.elapsed();
    let steps_to_first_call = chrome.steps;

    // The call shows on the app's usage page.
    chrome.click_link("Apps").await;
    chrome.wait_for_text("h1", "Your apps").await;
    chrome.click_link("Usage").await;
    chrome.wait_for_text("h1", "Usage of Weather widget").await;
    let mut used = String::new();
    for _ in 0..50 {
        let main = chrome.text("main").await;
        if !main.contains("No calls with") {
            used = chrome.text(".quota__figure strong").await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        chrome.client.refresh().await.unwrap();
    }
    assert_eq!(used, "1", "one call used of the plan's included calls");
    chrome.screenshot(&format!("{name}-07-usage")).await;

    eprintln!(
        "browser journey ({name}): first 200 after {steps_to_first_call} steps and {:.1} s",
        to_first_call.as_secs_f64()
    );
    assert!(
        steps_to_first_call <= 12,
        "{steps_to_first_call} steps to the first call"
    );
    chrome.close().await;
    app.stop().await;
}
on_both_stacks!(browser_journey, super::journey);

/// Log-in through the OpenID Connect provider, and the pages at phone width.
async fn provider_log_in_and_phone_width(stack: Stack) {
    let mut provider = OidcProvider::start().await;
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.sign_in_providers = vec![SignInProvider {
        id: "oidc",
        name: "Example SSO".to_owned(),
        kind: SignInKind::Oidc {
            issuer: provider.issuer.clone(),
        },
        client_id: "tollgate-portal".to_owned(),
        client_secret: None,
    }];
    let app = TestApp::start_with(settings, db, ch).await;
    let name = stack_name(stack);
    let email = format!("sso-{}@example.com", uuid::Uuid::new_v4().simple());
    provider
        .sign_in_as(&Person::verified("sso-user", &email))
        .await;

    let mut chrome = Chrome::start(390, 844).await;
    chrome.open(&app.portal("/login")).await;
    chrome.screenshot(&format!("{name}-06-login-phone")).await;
    // The page fits the phone's width: nothing scrolls sideways.
    let overflow = chrome
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await
        .expect("run a script");
    assert_eq!(
        overflow,
        serde_json::Value::Bool(false),
        "horizontal scrolling at 390 px"
    );

    chrome.click_link("Continue with Example SSO").await;
    chrome.wait_for_path("/account").await;
    let main = chrome.text("main").await;
    assert!(main.contains(&email), "{main}");
    assert!(main.contains("Signs in with Example SSO"), "{main}");
    chrome.screenshot(&format!("{name}-07-account-phone")).await;
    chrome.close().await;
    app.stop().await;
}
on_both_stacks!(
    browser_provider_log_in,
    super::provider_log_in_and_phone_width
);
