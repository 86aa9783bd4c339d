//! Log-in through an OpenID Connect provider, against a real local provider
//! (oauth2-mock-server): discovery, PKCE, state and nonce, ID token checks,
//! accounts created, linked by verified address, or claimed from an
//! unproven sign-up; refusals for stale callbacks, unverified addresses and
//! an unreachable provider.

use tollgate_core::config::{SignInKind, SignInProvider};
use tollgate_testkit::github::{FakeGitHub, GitHubAccount};
use tollgate_testkit::oidc::{OidcProvider, Person};

use crate::on_both_stacks;
use crate::portal_support::{Browser, Outbox, Page};
use crate::support::{Stack, TestApp, test_settings};

const PASSWORD: &str = "correct horse battery";

fn oidc(issuer: &str) -> SignInProvider {
    SignInProvider {
        id: "oidc",
        name: "Example SSO".to_owned(),
        kind: SignInKind::Oidc {
            issuer: issuer.to_owned(),
        },
        client_id: "tollgate-portal".to_owned(),
        client_secret: Some("portal-secret".to_owned()),
    }
}

async fn start(stack: Stack, issuer: &str) -> (TestApp, Outbox) {
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.sign_in_providers = vec![oidc(issuer)];
    let outbox = Outbox::new(&settings.data_dir);
    (TestApp::start_with(settings, db, ch).await, outbox)
}

fn unique(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Starts a sign-in and follows the provider back; returns the provider's
/// redirect to the callback (not yet followed).
async fn to_callback(b: &mut Browser) -> String {
    let start = b.get("/login/oidc").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.location().to_owned();
    for (name, want) in [
        ("response_type", Some("code")),
        ("client_id", Some("tollgate-portal")),
        ("code_challenge_method", Some("S256")),
    ] {
        assert_eq!(query_param(&authorize, name).as_deref(), want, "{name}");
    }
    for name in ["state", "nonce", "code_challenge", "redirect_uri"] {
        assert!(
            query_param(&authorize, name).is_some(),
            "{name} in {authorize}"
        );
    }
    assert!(query_param(&authorize, "scope").unwrap().contains("openid"));
    assert!(
        query_param(&authorize, "redirect_uri")
            .unwrap()
            .ends_with("/login/oidc/callback")
    );
    let back = b.get(&authorize).await;
    assert_eq!(back.status, 302, "{}", back.body);
    back.location().to_owned()
}

async fn sign_in(b: &mut Browser) -> Page {
    let callback = to_callback(b).await;
    b.get(&callback).await
}

async fn signed_in_as(b: &mut Browser, email: &str) -> Page {
    let page = b.get("/account").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(email), "{}", page.body);
    page
}

async fn provider_sign_in(stack: Stack) {
    let mut provider = OidcProvider::start().await;
    let (app, outbox) = start(stack, &provider.issuer).await;

    // The log-in and sign-up pages offer the provider.
    let mut b = Browser::new(&app.portal(""));
    for path in ["/login", "/signup"] {
        let page = b.get(path).await;
        assert!(
            page.body.contains("href=\"/login/oidc\"")
                && page.body.contains("Continue with Example SSO"),
            "{path}: {}",
            page.body
        );
    }
    assert_eq!(b.get("/login/nope").await.status, 404);

    // A new person: an account is created, verified, without a password.
    let new = unique("new");
    provider
        .sign_in_as(&Person::verified("sub-new", &new))
        .await;
    let before = b.cookie.clone();
    let done = sign_in(&mut b).await;
    assert_eq!(
        (done.status, done.location()),
        (303, "/account"),
        "{}",
        done.body
    );
    assert_ne!(b.cookie, before, "the session id changes at log-in");
    let account = signed_in_as(&mut b, &new).await;
    assert!(
        account.body.contains("Signs in with Example SSO"),
        "{}",
        account.body
    );
    assert!(account.body.contains("Confirmed"));
    assert!(account.body.contains("Add a password"), "{}", account.body);
    // The same person again, from another browser: the same account.
    let mut again = Browser::new(&app.portal(""));
    let done = sign_in(&mut again).await;
    assert_eq!(done.status, 303, "{}", done.body);
    signed_in_as(&mut again, &new).await;
    // No password exists to log in with.
    let mut c = Browser::new(&app.portal(""));
    let r = c
        .submit(
            "/login",
            "/login",
            &[("email", new.as_str()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422);

    // A verified password account with the same address is linked, and its
    // password keeps working.
    let linked = unique("linked");
    let mut owner = Browser::new(&app.portal(""));
    owner.sign_up_verified(&outbox, &linked, PASSWORD).await;
    provider
        .sign_in_as(&Person::verified("sub-linked", &linked))
        .await;
    let mut via = Browser::new(&app.portal(""));
    assert_eq!(sign_in(&mut via).await.status, 303);
    let page = signed_in_as(&mut via, &linked).await;
    assert!(
        page.body.contains("Change your password"),
        "keeps its password"
    );
    owner.log_in(&linked, PASSWORD).await;

    // The address only on the user-info endpoint, in another letter case.
    let info_only = unique("info");
    provider
        .sign_in_as(&Person {
            sub: "sub-info".to_owned(),
            email: info_only.to_uppercase(),
            email_verified: true,
            in_id_token: false,
        })
        .await;
    let mut d = Browser::new(&app.portal(""));
    assert_eq!(sign_in(&mut d).await.status, 303);
    signed_in_as(&mut d, &info_only).await;

    app.stop().await;
}
on_both_stacks!(provider_sign_in_creates_and_links, super::provider_sign_in);

/// Someone signed up with another person's address and never proved it: when
/// the address's owner signs in through the provider, the squatter's password
/// and sessions stop working.
async fn unproven_account_is_claimed(stack: Stack) {
    let mut provider = OidcProvider::start().await;
    let (app, _outbox) = start(stack, &provider.issuer).await;
    let email = unique("claimed");
    let mut squatter = Browser::new(&app.portal(""));
    let r = squatter
        .submit(
            "/signup",
            "/signup",
            &[("email", email.as_str()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    provider
        .sign_in_as(&Person::verified("sub-owner", &email))
        .await;
    let mut owner = Browser::new(&app.portal(""));
    assert_eq!(sign_in(&mut owner).await.status, 303);
    let page = signed_in_as(&mut owner, &email).await;
    assert!(
        page.body.contains("Add a password"),
        "the squatter's password is gone"
    );

    let r = squatter
        .submit(
            "/login",
            "/login",
            &[("email", email.as_str()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("do not match"), "{}", r.body);
    app.stop().await;
}
on_both_stacks!(
    unproven_account_is_claimed_safely,
    super::unproven_account_is_claimed
);

async fn refusals(stack: Stack) {
    let mut provider = OidcProvider::start().await;
    let (app, _outbox) = start(stack, &provider.issuer).await;

    // An address the provider does not vouch for.
    let email = unique("unverified");
    provider
        .sign_in_as(&Person {
            email_verified: false,
            ..Person::verified("sub-unverified", &email)
        })
        .await;
    let mut b = Browser::new(&app.portal(""));
    let r = sign_in(&mut b).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("has not confirmed your e-mail address"),
        "{}",
        r.body
    );
    assert_eq!(b.get("/account").await.status, 303, "not signed in");

    // A callback used twice, or opened in a browser that did not start it.
    provider
        .sign_in_as(&Person::verified("sub-ok", &unique("ok")))
        .await;
    let mut b = Browser::new(&app.portal(""));
    let callback = to_callback(&mut b).await;
    let mut other = Browser::new(&app.portal(""));
    let r = other.get(&callback).await;
    assert_eq!(r.status, 400, "another browser: {}", r.body);
    assert!(r.body.contains("not started in this browser"), "{}", r.body);
    assert_eq!(b.get(&callback).await.status, 303, "its own browser");
    assert_eq!(b.get(&callback).await.status, 400, "used twice");

    // A forged state.
    let mut b = Browser::new(&app.portal(""));
    let callback = to_callback(&mut b).await;
    let state = query_param(&callback, "state").unwrap();
    let forged = callback.replace(&format!("state={state}"), "state=forged");
    assert_eq!(b.get(&forged).await.status, 400);

    // The provider says no.
    let mut b = Browser::new(&app.portal(""));
    b.get("/login/oidc").await;
    let r = b
        .get("/login/oidc/callback?error=access_denied&state=x")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("you may have cancelled"), "{}", r.body);
    app.stop().await;
}
on_both_stacks!(sign_in_refusals, super::refusals);

async fn provider_unreachable(stack: Stack) {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (app, _outbox) = start(stack, &issuer).await;
    let mut b = Browser::new(&app.portal(""));
    let r = b.get("/login/oidc").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("Signing in with Example SSO did not work"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("log in with your e-mail address"),
        "{}",
        r.body
    );
    app.stop().await;
}
on_both_stacks!(sign_in_provider_unreachable, super::provider_unreachable);

/// GitHub (OAuth, not OpenID Connect): the account comes from its REST API,
/// the primary address only when GitHub verified it.
async fn github_sign_in(stack: Stack) {
    let github = FakeGitHub::start("gh-client", "gh-secret").await;
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.sign_in_providers = vec![SignInProvider {
        id: "github",
        name: "GitHub".to_owned(),
        kind: SignInKind::GitHub {
            web_url: github.url.clone(),
            api_url: format!("{}/api/v3", github.url),
        },
        client_id: "gh-client".to_owned(),
        client_secret: Some("gh-secret".to_owned()),
    }];
    let app = TestApp::start_with(settings, db, ch).await;

    let email = unique("octo");
    github.sign_in_as(GitHubAccount {
        id: 4242,
        login: "octo".to_owned(),
        email: email.clone(),
        verified: true,
    });
    let mut b = Browser::new(&app.portal(""));
    let start = b.get("/login/github").await;
    assert_eq!(start.status, 303);
    let authorize = start.location().to_owned();
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", github.url)));
    assert!(
        query_param(&authorize, "scope")
            .unwrap()
            .contains("user:email")
    );
    let back = b.get(&authorize).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let done = b.get(back.location()).await;
    assert_eq!(
        (done.status, done.location()),
        (303, "/account"),
        "{}",
        done.body
    );
    let page = signed_in_as(&mut b, &email).await;
    assert!(page.body.contains("Signs in with GitHub"), "{}", page.body);

    // An address GitHub has not verified is not enough.
    github.sign_in_as(GitHubAccount {
        id: 777,
        login: "squat".to_owned(),
        email: unique("squat"),
        verified: false,
    });
    let mut b = Browser::new(&app.portal(""));
    let authorize = b.get("/login/github").await.location().to_owned();
    let back = b.get(&authorize).await;
    let r = b.get(back.location()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("GitHub has not confirmed"), "{}", r.body);
    app.stop().await;
}
on_both_stacks!(github_sign_in_works, super::github_sign_in);
