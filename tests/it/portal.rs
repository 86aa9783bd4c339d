//! The developer portal's website over real sockets, on both stacks: pages
//! and assets, sign-up and e-mail verification, log-in and log-out, CSRF,
//! throttling, password reset and change, e-mail change, session cookies.

use crate::on_both_stacks;
use crate::portal_support::{Browser, Outbox, execute_sql, link_in};
use crate::support::{Stack, TestApp, test_settings};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "staple lamp orbit violin";

async fn start(stack: Stack) -> (TestApp, Outbox) {
    let (settings, db, ch) = test_settings(stack).await;
    let outbox = Outbox::new(&settings.data_dir);
    (TestApp::start_with(settings, db, ch).await, outbox)
}

fn browser(app: &TestApp) -> Browser {
    Browser::new(&app.portal(""))
}

fn unique_email(who: &str) -> String {
    format!("{who}-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn pages_and_assets(stack: Stack) {
    let (app, _) = start(stack).await;
    let mut b = browser(&app);

    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.title(), "Tollgate developer portal");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(home.headers[name], value, "{name}");
    }
    assert!(
        home.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(
        home.session_cookie().is_none(),
        "an anonymous page view stores no session"
    );
    // Landmarks and the skip link.
    for needle in [
        "<header",
        "<nav aria-label=\"Main\"",
        "<main id=\"main\"",
        "<footer",
        "href=\"#main\"",
    ] {
        assert!(home.body.contains(needle), "{needle}");
    }

    // The stylesheet: linked under a content hash, cached for a year.
    let start = home.body.find("/assets/tollgate.").unwrap();
    let end = start + home.body[start..].find('"').unwrap();
    let css_url = &home.body[start..end];
    assert!(
        css_url.ends_with(".css") && css_url.len() > "/assets/tollgate..css".len() + 8,
        "{css_url}"
    );
    let css = b.get(css_url).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        css.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(css.body.contains("--brand:"));
    let plain = b.get("/assets/tollgate.css").await;
    assert_eq!(
        (
            plain.status,
            plain.headers["cache-control"].to_str().unwrap()
        ),
        (200, "public, no-cache")
    );
    assert_eq!(plain.body, css.body);
    let icon_start = home.body.find("/assets/favicon.").unwrap();
    let icon_end = icon_start + home.body[icon_start..].find('"').unwrap();
    let icon = b.get(&home.body[icon_start..icon_end]).await;
    assert_eq!(
        (icon.status, icon.headers["content-type"].to_str().unwrap()),
        (200, "image/svg+xml")
    );

    // Unknown assets and pages: the friendly 404 page.
    for path in [
        "/assets/tollgate.000000000000.css",
        "/assets/nope.js",
        "/no/such/page",
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 404, "{path}");
        assert_eq!(p.title(), "Page not found · Tollgate");
        assert!(p.body.contains("Go to the start page"));
    }

    // Every page has its own title.
    for (path, title) in [
        ("/signup", "Sign up · Tollgate"),
        ("/login", "Log in · Tollgate"),
        ("/forgot-password", "Reset your password · Tollgate"),
        ("/signup/check-email", "Check your inbox · Tollgate"),
        ("/forgot-password/sent", "Check your inbox · Tollgate"),
    ] {
        let p = b.get(path).await;
        assert_eq!((p.status, p.title()), (200, title), "{path}");
    }
    // Signed-out visitors are sent to log in.
    let account = b.get("/account").await;
    assert_eq!((account.status, account.location()), (303, "/login"));
    app.stop().await;
}
on_both_stacks!(pages_and_assets_are_served, super::pages_and_assets);

async fn csrf_is_checked_on_every_form(stack: Stack) {
    let (app, _) = start(stack).await;
    let mut b = browser(&app);
    let form = b.get("/signup").await;
    let token = form.csrf();
    let cookie = form.session_cookie().expect("a form page starts a session");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http: no Secure flag: {cookie}"
    );

    for path in [
        "/signup",
        "/login",
        "/logout",
        "/forgot-password",
        "/reset-password/abc",
        "/account/password",
        "/account/email",
    ] {
        for csrf in [None, Some("wrong"), Some("")] {
            let mut fields = vec![("email", "ada@example.com"), ("password", PASSWORD)];
            if let Some(c) = csrf {
                fields.push(("csrf", c));
            }
            let r = b.post(path, &fields).await;
            assert_eq!(r.status, 403, "{path} {csrf:?}");
            assert!(r.body.contains("This form has expired"), "{path}");
            assert_eq!(r.title(), "This form has expired · Tollgate");
        }
    }
    // A token from another session does not work either.
    let mut other = browser(&app);
    let r = other
        .post(
            "/signup",
            &[
                ("csrf", &token),
                ("email", "ada@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    // The right token does.
    let r = b
        .post(
            "/signup",
            &[
                ("csrf", &token),
                ("email", &unique_email("ada")),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    app.stop().await;
}
on_both_stacks!(csrf_refusals, super::csrf_is_checked_on_every_form);

async fn sign_up_verify_log_in_log_out(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let mut b = browser(&app);
    let email = unique_email("ada");

    // Bad input: the form again, the message next to the field, the e-mail kept.
    for (fields, field, message) in [
        (
            vec![("email", "not-an-address"), ("password", PASSWORD)],
            "email",
            "Enter an e-mail address like name@example.com.",
        ),
        (
            vec![("email", ""), ("password", PASSWORD)],
            "email",
            "Enter your e-mail address.",
        ),
        (
            vec![("email", email.as_str()), ("password", "short")],
            "password",
            "Use at least 10 characters.",
        ),
        (
            vec![("email", email.as_str()), ("password", "password123")],
            "password",
            "This password is too common; choose another.",
        ),
        (
            vec![("email", email.as_str()), ("password", email.as_str())],
            "password",
            "Do not use your e-mail address in your password.",
        ),
        (
            vec![("email", email.as_str())],
            "password",
            "Use at least 10 characters.",
        ),
    ] {
        let r = b.submit("/signup", "/signup", &fields).await;
        assert_eq!(r.status, 422, "{fields:?}");
        let expected = format!("<p class=\"field__error\" id=\"{field}-error\">{message}</p>");
        assert!(r.body.contains(&expected), "{fields:?}: {}", r.body);
        assert!(r.body.contains("aria-invalid=\"true\""));
        assert!(!r.body.contains(PASSWORD), "passwords are never sent back");
    }
    // A body no form of ours sends: the friendly 400 page.
    let token = b.get("/signup").await.csrf();
    let r = b
        .post_raw("/signup", "text/plain", format!("csrf={token}&email=a@b.c"))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("We could not read that request"));

    // Sign up: a redirect to "check your inbox" and a verification mail.
    let r = b
        .submit(
            "/signup",
            "/signup",
            &[("email", &email.to_uppercase()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/signup/check-email"),
        "{}",
        r.body
    );
    let mail = outbox.wait_for(&email, "Confirm your e-mail address").await;
    let link = mail.link("/verify-email/");
    assert!(link.starts_with(&app.portal("/verify-email/")), "{link}");
    assert!(
        mail.text
            .contains("From: Tollgate <no-reply@localhost>\r\n"),
        "{}",
        mail.text
    );

    // Not verified yet: log-in is refused and a new link is sent.
    let r = b
        .submit(
            "/login",
            "/login",
            &[("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Please confirm your e-mail address first"),
        "{}",
        r.body
    );
    outbox
        .wait_for_nth(&email, "Confirm your e-mail address", 2)
        .await;

    // Verify in the browser that signed up: the link confirms the address and
    // logs that browser in (it knows the password and reads the mail); it
    // works once.
    let before = b.cookie.clone();
    let r = b.get(&link).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/apps?notice=welcome"),
        "{}",
        r.body
    );
    assert_ne!(b.cookie, before, "a new session id at log-in");
    let apps = b.get("/apps?notice=welcome").await;
    assert!(
        apps.body
            .contains("Your address is confirmed and you are logged in"),
        "{}",
        apps.body
    );
    let r = b.get(&link).await;
    assert_eq!(r.status, 410);
    let r = b.submit("/account", "/logout", &[]).await;
    assert_eq!(r.status, 303);

    // Another browser (the mail opened on a phone) only confirms the address.
    let other = unique_email("phone");
    let r = b
        .submit(
            "/signup",
            "/signup",
            &[("email", &other), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let mail = outbox.wait_for(&other, "Confirm your e-mail address").await;
    let mut phone = browser(&app);
    let r = phone.get(&mail.link("/verify-email/")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Your e-mail address is confirmed"));
    assert_eq!(phone.get("/account").await.status, 303, "not logged in");
    let r = b.get(&link).await;
    assert_eq!(r.status, 410);
    assert!(r.body.contains("This link does not work"));
    assert_eq!(b.get("/verify-email/0000").await.status, 410);

    // Wrong password, unknown address: the same answer.
    for (who, pw) in [
        (email.as_str(), "wrong password!"),
        ("nobody@example.com", PASSWORD),
    ] {
        let r = b
            .submit("/login", "/login", &[("email", who), ("password", pw)])
            .await;
        assert_eq!(r.status, 422);
        assert!(
            r.body
                .contains("That e-mail address and password do not match an account.")
        );
        assert!(
            r.body.contains(&format!("value=\"{who}\"")),
            "the address is kept"
        );
    }

    // Log in: the session id changes, the cookie is HttpOnly and SameSite=Lax.
    let form = b.get("/login").await;
    let before = b.cookie.clone().expect("the log-in form started a session");
    let r = b
        .post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("email", &email),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/account"), "{}", r.body);
    let cookie = r.session_cookie().expect("log-in sets the session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let after = b.cookie.clone().unwrap();
    assert_ne!(before, after, "the session id is rotated at log-in");

    let account = b.get("/account").await;
    assert_eq!(account.status, 200);
    assert_eq!(account.title(), "Your account · Tollgate");
    assert!(account.body.contains(&email));
    assert!(account.body.contains("Log out"));
    // Signed in: the sign-up and log-in pages lead to the account.
    assert_eq!(b.get("/login").await.location(), "/account");
    assert_eq!(b.get("/signup").await.location(), "/account");
    // The pre-log-in id is worthless (no session fixation).
    let mut attacker = browser(&app);
    attacker.cookie = Some(before);
    assert_eq!(attacker.get("/account").await.status, 303);

    // Sign-up with the taken address: the same answer, and the owner is told.
    let mut stranger = browser(&app);
    let r = stranger
        .submit(
            "/signup",
            "/signup",
            &[("email", &email), ("password", "another fine password")],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/signup/check-email"));
    let mail = outbox
        .wait_for(&email, "You already have a Tollgate account")
        .await;
    assert!(mail.text.contains(&app.portal("/forgot-password")));

    // Log out: the session ends on the server too.
    let r = b.submit("/account", "/logout", &[]).await;
    assert_eq!((r.status, r.location()), (303, "/login?notice=logged-out"));
    let mut replay = browser(&app);
    replay.cookie = Some(after);
    assert_eq!(replay.get("/account").await.location(), "/login");
    assert_eq!(b.get("/account").await.location(), "/login");
    let r = b.get("/login?notice=logged-out").await;
    assert!(r.body.contains("You are logged out."));
    app.stop().await;
}
on_both_stacks!(
    accounts_sign_up_to_log_out,
    super::sign_up_verify_log_in_log_out
);

async fn log_in_attempts_are_throttled(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let mut b = browser(&app);
    let email = unique_email("bob");
    b.sign_up_verified(&outbox, &email, PASSWORD).await;

    let per_account = tollgate_portal::site::PER_ACCOUNT;
    for _ in 0..per_account {
        let r = b
            .submit(
                "/login",
                "/login",
                &[("email", &email), ("password", "wrong password!")],
            )
            .await;
        assert_eq!(r.status, 422);
    }
    // Locked: even the right password is refused, without revealing anything.
    let r = b
        .submit(
            "/login",
            "/login",
            &[("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed attempts"));
    assert!(
        r.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(b.get("/account").await.status, 303, "not logged in");
    // Unknown addresses lock the same way.
    let ghost = unique_email("ghost");
    for _ in 0..per_account {
        b.submit(
            "/login",
            "/login",
            &[("email", &ghost), ("password", "wrong password!")],
        )
        .await;
    }
    let r = b
        .submit(
            "/login",
            "/login",
            &[("email", &ghost), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429);

    // Per address: failures across many accounts lock this client out.
    let per_address = tollgate_portal::site::PER_ADDRESS;
    for _ in 2 * per_account..per_address {
        let r = b
            .submit(
                "/login",
                "/login",
                &[
                    ("email", &unique_email("spray")),
                    ("password", "wrong password!"),
                ],
            )
            .await;
        assert_eq!(r.status, 422);
    }
    let r = b
        .submit(
            "/login",
            "/login",
            &[("email", &unique_email("fresh")), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429);
    app.stop().await;
}
on_both_stacks!(login_throttling, super::log_in_attempts_are_throttled);

async fn password_reset(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let email = unique_email("cy");
    let mut b = browser(&app);
    b.sign_up_verified(&outbox, &email, PASSWORD).await;
    let mut other_device = browser(&app);
    other_device.log_in(&email, PASSWORD).await;

    // Unknown and known addresses get the same answer; only the known one gets mail.
    let unknown = unique_email("nobody");
    for who in [unknown.as_str(), email.as_str()] {
        let r = b
            .submit("/forgot-password", "/forgot-password", &[("email", who)])
            .await;
        assert_eq!(
            (r.status, r.location()),
            (303, "/forgot-password/sent"),
            "{who}"
        );
    }
    let r = b
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "not-an-address")],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body
            .contains("Enter an e-mail address like name@example.com.")
    );
    let mail = outbox
        .wait_for(&email, "Reset your Tollgate password")
        .await;
    assert!(
        outbox.to(&unknown, "").is_empty(),
        "no mail to an unknown address"
    );
    let link = mail.link("/reset-password/");
    let path = link.trim_start_matches(&app.portal(""));

    // The form; a weak password is refused next to the field.
    let form = b.get(path).await;
    assert_eq!(
        (form.status, form.title()),
        (200, "Choose a new password · Tollgate")
    );
    let r = b
        .post(path, &[("csrf", &form.csrf()), ("password", "short")])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Use at least 10 characters."));
    let r = b.submit(path, path, &[("password", NEW_PASSWORD)]).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/login?notice=password-reset"),
        "{}",
        r.body
    );
    assert!(
        b.get("/login?notice=password-reset")
            .await
            .body
            .contains("Your password is changed")
    );
    outbox
        .wait_for(&email, "Your Tollgate password was changed")
        .await;

    // Single use; every session of the account ended; the old password is gone.
    assert_eq!(b.get(path).await.status, 410);
    let token = b.get("/login").await.csrf();
    assert_eq!(
        b.post(
            path,
            &[("csrf", &token), ("password", "yet another password")]
        )
        .await
        .status,
        410
    );
    assert_eq!(other_device.get("/account").await.location(), "/login");
    let r = b
        .submit(
            "/login",
            "/login",
            &[("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422);
    b.log_in(&email, NEW_PASSWORD).await;

    // An expired link does not work.
    b.submit("/forgot-password", "/forgot-password", &[("email", &email)])
        .await;
    let mail = outbox
        .wait_for_nth(&email, "Reset your Tollgate password", 2)
        .await;
    let link = mail.link("/reset-password/");
    let path = link.trim_start_matches(&app.portal(""));
    assert_eq!(b.get(path).await.status, 200);
    execute_sql(
        app.running.store.url(),
        "UPDATE account_tokens SET expires_at = 1 WHERE purpose = 'reset_password'",
    )
    .await;
    let r = b.get(path).await;
    assert_eq!(r.status, 410);
    assert!(r.body.contains("Ask for a new link"));
    app.stop().await;
}
on_both_stacks!(password_reset_by_mail, super::password_reset);

async fn change_password_and_email(stack: Stack) {
    let (app, outbox) = start(stack).await;
    let email = unique_email("di");
    let taken = unique_email("taken");
    let mut b = browser(&app);
    b.sign_up_verified(&outbox, &email, PASSWORD).await;
    browser(&app)
        .sign_up_verified(&outbox, &taken, PASSWORD)
        .await;
    b.log_in(&email, PASSWORD).await;
    let mut other_device = browser(&app);
    other_device.log_in(&email, PASSWORD).await;

    // Change the password.
    let r = b
        .submit(
            "/account",
            "/account/password",
            &[
                ("current_password", "not my password"),
                ("new_password", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("<p class=\"field__error\" id=\"current_password-error\">That is not your current password.</p>"));
    let r = b
        .submit(
            "/account",
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "short")],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body
            .contains("id=\"new_password-error\">Use at least 10 characters.")
    );
    let r = b
        .submit(
            "/account",
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/account?notice=password-changed"),
        "{}",
        r.body
    );
    let page = b.get("/account?notice=password-changed").await;
    assert_eq!(page.status, 200, "this session stays signed in");
    assert!(page.body.contains("Your password is changed."));
    assert_eq!(
        other_device.get("/account").await.location(),
        "/login",
        "other sessions end"
    );
    outbox
        .wait_for(&email, "Your Tollgate password was changed")
        .await;

    // Change the e-mail address.
    let new_email = unique_email("di-new");
    let r = b
        .submit(
            "/account",
            "/account/email",
            &[("new_email", &new_email), ("email_password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body
            .contains("id=\"email_password-error\">That is not your current password.")
    );
    assert!(r.body.contains(&format!("value=\"{new_email}\"")));
    let r = b
        .submit(
            "/account",
            "/account/email",
            &[("new_email", "nope"), ("email_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422);
    // A taken address: the same answer; its owner is told.
    let r = b
        .submit(
            "/account",
            "/account/email",
            &[("new_email", &taken), ("email_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/account?notice=email-sent")
    );
    outbox
        .wait_for(&taken, "This address already has a Tollgate account")
        .await;

    let r = b
        .submit(
            "/account",
            "/account/email",
            &[("new_email", &new_email), ("email_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/account?notice=email-sent")
    );
    outbox
        .wait_for(&email, "e-mail address is being changed")
        .await;
    let mail = outbox
        .wait_for(&new_email, "Confirm your new e-mail address")
        .await;
    assert!(
        b.get("/account").await.body.contains(&email),
        "unchanged until confirmed"
    );
    let link = mail.link("/confirm-email/");
    let r = b.get(&link).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Your e-mail address is changed"));
    assert_eq!(b.get(&link).await.status, 410);
    assert!(b.get("/account").await.body.contains(&new_email));

    let mut fresh = browser(&app);
    let r = fresh
        .submit(
            "/login",
            "/login",
            &[("email", &email), ("password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422, "the old address no longer logs in");
    fresh.log_in(&new_email, NEW_PASSWORD).await;
    app.stop().await;
}
on_both_stacks!(account_changes, super::change_password_and_email);

async fn https_portal(stack: Stack) {
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.portal_public_url = Some("https://developers.example.com".to_owned());
    settings.portal_name = "Acme APIs".to_owned();
    settings.smtp_from = "Acme APIs <apis@acme.test>".to_owned();
    let outbox = Outbox::new(&settings.data_dir);
    let app = TestApp::start_with(settings, db, ch).await;
    let mut b = browser(&app);
    let page = b.get("/signup").await;
    assert_eq!(page.title(), "Sign up · Acme APIs");
    let cookie = page.session_cookie().unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let email = unique_email("eve");
    b.post(
        "/signup",
        &[
            ("csrf", &page.csrf()),
            ("email", &email),
            ("password", PASSWORD),
        ],
    )
    .await;
    let mail = outbox
        .wait_for(&email, "Confirm your e-mail address for Acme APIs")
        .await;
    assert!(
        mail.link("/verify-email/")
            .starts_with("https://developers.example.com/verify-email/")
    );
    assert!(mail.text.contains("From: \"Acme APIs\" <apis@acme.test>"));
    app.stop().await;
}
on_both_stacks!(https_portal_cookies_and_links, super::https_portal);

async fn expired_sessions_are_removed(stack: Stack) {
    use tollgate_core::store::SessionRow;
    use tollgate_core::time::Timestamp;
    let (app, _) = start(stack).await;
    let store = &app.running.store;
    let now = Timestamp::now();
    for (id, expires) in [("old", now.0 - 1), ("live", now.0 + 60_000)] {
        store
            .save_session(&SessionRow {
                id: id.into(),
                data: "{}".into(),
                user_id: Some("usr_x".into()),
                expires_at: Timestamp(expires),
            })
            .await
            .unwrap();
    }
    assert!(
        store.load_session("old", now).await.unwrap().is_none(),
        "expired: not loaded"
    );
    let before_expiry = Timestamp(now.0 - 10_000);
    // (The portal's own clean-up may have got there first; either way it goes.)
    store.delete_expired_sessions(now).await.unwrap();
    assert!(
        store
            .load_session("old", before_expiry)
            .await
            .unwrap()
            .is_none(),
        "deleted"
    );
    assert!(store.load_session("live", now).await.unwrap().is_some());
    assert_eq!(store.count_user_sessions("usr_x", now).await.unwrap(), 1);
    app.stop().await;
}
on_both_stacks!(session_cleanup, super::expired_sessions_are_removed);

async fn mail_over_smtp(stack: Stack) {
    use tollgate_core::config::{SmtpSettings, SmtpTls};
    let sink = tollgate_testkit::smtp::SmtpSink::start().await;
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.smtp = Some(SmtpSettings {
        host: "127.0.0.1".to_owned(),
        port: sink.addr.port(),
        tls: SmtpTls::None,
        credentials: None,
    });
    let outbox = Outbox::new(&settings.data_dir);
    let app = TestApp::start_with(settings, db, ch).await;
    let mut b = browser(&app);
    let email = unique_email("smtp");
    let r = b
        .submit(
            "/signup",
            "/signup",
            &[("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let mail = tollgate_testkit::eventually(std::time::Duration::from_secs(5), || async {
        sink.received()
            .into_iter()
            .find(|m| m.to == [email.clone()])
    })
    .await
    .expect("the sink received the verification mail");
    assert_eq!(mail.from, "no-reply@localhost");
    assert!(
        mail.data
            .contains("Subject: Confirm your e-mail address for Tollgate")
    );
    let r = b.get(&link_in(&mail.data, "/verify-email/")).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/apps?notice=welcome"),
        "the link from the SMTP message verifies (and logs in the browser that signed up)"
    );
    assert!(
        outbox.all().is_empty(),
        "with SMTP set, nothing goes to the outbox"
    );
    app.stop().await;
}
on_both_stacks!(mail_goes_over_smtp, super::mail_over_smtp);

async fn client_address_from_proxy_header(stack: Stack) {
    let (mut settings, db, ch) = test_settings(stack).await;
    settings.portal_client_ip_header = Some("x-forwarded-for".to_owned());
    let app = TestApp::start_with(settings, db, ch).await;
    let mut spraying = browser(&app);
    // The proxy appends the client it saw; anything before it is the client's say.
    spraying.extra_header = Some(("x-forwarded-for", "10.9.9.9, 198.51.100.7".to_owned()));
    for _ in 0..tollgate_portal::site::PER_ADDRESS {
        let r = spraying
            .submit(
                "/login",
                "/login",
                &[
                    ("email", &unique_email("spray")),
                    ("password", "wrong password!"),
                ],
            )
            .await;
        assert_eq!(r.status, 422);
    }
    let r = spraying
        .submit(
            "/login",
            "/login",
            &[("email", &unique_email("x")), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429, "198.51.100.7 is locked out");
    // Another client behind the same proxy (same TCP peer) is not.
    let mut neighbour = browser(&app);
    neighbour.extra_header = Some(("x-forwarded-for", "198.51.100.8".to_owned()));
    let r = neighbour
        .submit(
            "/login",
            "/login",
            &[("email", &unique_email("x")), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 422);
    app.stop().await;
}
on_both_stacks!(
    throttling_behind_a_proxy,
    super::client_address_from_proxy_header
);

/// Branding: the logo and the colour from the settings, served hashed and
/// linked from every page (error pages too).
async fn branding(stack: Stack) {
    let (mut settings, db, ch) = test_settings(stack).await;
    let logo = settings.data_dir.join("acme-logo.svg");
    std::fs::create_dir_all(&settings.data_dir).unwrap();
    std::fs::write(
        &logo,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><rect width=\"10\" height=\"10\"/></svg>",
    )
    .unwrap();
    settings.portal_name = "Acme APIs".to_owned();
    settings.portal_logo_file = Some(logo);
    settings.portal_brand_color = Some("#7c2d12".to_owned());
    let app = TestApp::start_with(settings, db, ch).await;
    let mut b = browser(&app);
    for path in ["/", "/login", "/no-such-page"] {
        let page = b.get(path).await;
        let body = &page.body;
        assert!(body.contains("Acme APIs"), "{path}");
        let logo_at = body
            .find("src=\"/assets/brand/logo.")
            .unwrap_or_else(|| panic!("{path}: no logo"));
        let logo_url = &body[logo_at + 5..logo_at + 5 + body[logo_at + 5..].find('"').unwrap()];
        let theme_at = body
            .find("href=\"/assets/brand/theme.")
            .expect("theme stylesheet");
        let theme_url = &body[theme_at + 6..theme_at + 6 + body[theme_at + 6..].find('"').unwrap()];
        let logo = b.get(logo_url).await;
        assert_eq!(logo.status, 200);
        assert_eq!(logo.headers["content-type"], "image/svg+xml");
        assert_eq!(
            logo.headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let theme = b.get(theme_url).await;
        assert_eq!(theme.headers["content-type"], "text/css; charset=utf-8");
        assert!(theme.body.contains("--brand: #7c2d12;"), "{}", theme.body);
    }
    assert_eq!(
        b.get("/assets/brand/logo.000000000000.svg").await.status,
        404
    );
    app.stop().await;
}
on_both_stacks!(branding_from_settings, super::branding);
