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
use crate::support::{Stack, TestApp, test_settings};

const PASSWORD: &str = "correct horse battery";

fn stack_name(stack: Stack) -> &'static str {
    match stack {
        Stack::Embedded => "embedded",
        Stack::Scaled => "scaled",
    }
}

/// The link in a mail whose path starts with `prefix`.
fn link_in(mail: &str, prefix: &str) -> String {
    let text = mail.replace("=\r\n", "");
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    let start = text[..at].rfind("http").unwrap();
    let end = at + text[at..].find(char::is_whitespace).unwrap();
    text[start..end].to_owned()
}

async fn journey(stack: Stack) {
    let sink = SmtpSink::start().await;
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.smtp = Some(SmtpSettings {
        host: "127.0.0.1".to_owned(),
        port: sink.addr.port(),
        tls: SmtpTls::None,
        credentials: None,
    });
    let app = TestApp::start_with(settings, db, ch).await;
    let name = stack_name(stack);
    let email = format!("dev-{}@example.com", uuid::Uuid::new_v4().simple());
    let mut chrome = Chrome::start(1280, 900).await;
    let began = Instant::now();

    // The landing page.
    chrome.open(&app.portal("/")).await;
    assert_eq!(chrome.title().await, "Tollgate developer portal");
    chrome.screenshot(&format!("{name}-01-home")).await;

    // Sign up.
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

    // The mail, over SMTP; its link confirms the address.
    let mail = tollgate_testkit::eventually(Duration::from_secs(10), || async {
        sink.received()
            .into_iter()
            .find(|m| m.to == [email.clone()])
    })
    .await
    .expect("the verification mail reached the SMTP sink");
    chrome.open(&link_in(&mail.data, "/verify-email/")).await;
    assert!(
        chrome.source().await.contains("confirmed"),
        "{}",
        chrome.source().await
    );
    chrome.screenshot(&format!("{name}-04-verified")).await;

    // Log in.
    chrome.click_link("Log in").await;
    chrome.wait_for_path("/login").await;
    chrome.type_into("#email", &email).await;
    chrome.type_into("#password", PASSWORD).await;
    chrome
        .click("form[action='/login'] button[type=submit]")
        .await;
    chrome.wait_for_path("/account").await;
    assert!(chrome.text("main").await.contains(&email));
    chrome.screenshot(&format!("{name}-05-account")).await;

    // Log out again, from the header.
    chrome.click("form[action='/logout'] button").await;
    chrome.wait_for_path("/login").await;

    tracing_journey(name, chrome.steps, began.elapsed());
    chrome.close().await;
    app.stop().await;
}
on_both_stacks!(browser_journey, super::journey);

fn tracing_journey(stack: &str, steps: u32, took: Duration) {
    eprintln!(
        "browser journey ({stack}): {steps} steps in {:.1} s",
        took.as_secs_f64()
    );
}

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
