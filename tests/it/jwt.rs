//! JWT bearer tokens at the gateway: RS256 and ES256 from a JWKS, HS256 from a
//! secret in the environment, and every way a token can be wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tollgate_testkit::jwt_keys;
use tollgate_testkit::upstream::{JsonServer, Upstream};

use crate::cli::{Process, RemoteAdmin, tollgate};
use crate::support::{ADMIN_TOKEN, Stack, TestApp};

const ISSUER: &str = "https://issuer.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims, key).unwrap()
}

async fn call(app: &TestApp, token: &str) -> (u16, Value) {
    let resp = app
        .http
        .get(app.gateway("/jwt/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_from_a_jwks() {
    let keys = jwt_keys::generate();
    let jwks = JsonServer::start(keys.jwks.clone()).await;
    let app = TestApp::start(Stack::Embedded).await;
    let upstream = Upstream::echo().await;
    let p = app.provision("jwt", &upstream.url()).await;
    let (s, b) = app.patch_api(&p.api_id, json!({"policies": {"jwt": {"issuer": ISSUER, "audience": "tollgate-test", "jwks_url": jwks.url("/jwks.json")}}})).await;
    assert_eq!(s, 200, "{b}");

    let rsa = EncodingKey::from_rsa_pem(keys.rsa_private_pem.as_bytes()).unwrap();
    let ec = EncodingKey::from_ec_pem(keys.ec_private_pem.as_bytes()).unwrap();
    let claims = |sub: &str, iss: &str, aud: &str, exp: u64| json!({"sub": sub, "iss": iss, "aud": aud, "exp": exp});
    let good = claims(&p.app_id, ISSUER, "tollgate-test", now() + 300);

    let (s, echoed) = call(
        &app,
        &token(Algorithm::RS256, Some("test-rsa"), &rsa, good.clone()),
    )
    .await;
    assert_eq!(s, 200, "{echoed}");
    assert!(
        echoed["headers"].get("authorization").is_none(),
        "the token reached the upstream"
    );
    assert_eq!(echoed["headers"]["x-tollgate-app-id"], p.app_id.as_str());
    let (s, _) = call(
        &app,
        &token(Algorithm::ES256, Some("test-ec"), &ec, good.clone()),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        jwks.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the JWKS is cached"
    );
    // API keys keep working on the same API.
    assert_eq!(app.call("/jwt/x", Some(&p.key)).await.status(), 200);

    let wrong: Vec<(String, &str)> = vec![
        (
            token(
                Algorithm::RS256,
                Some("test-rsa"),
                &rsa,
                claims(&p.app_id, "https://other", "tollgate-test", now() + 300),
            ),
            "issuer",
        ),
        (
            token(
                Algorithm::RS256,
                Some("test-rsa"),
                &rsa,
                claims(&p.app_id, ISSUER, "someone-else", now() + 300),
            ),
            "audience",
        ),
        (
            token(
                Algorithm::RS256,
                Some("test-rsa"),
                &rsa,
                claims(&p.app_id, ISSUER, "tollgate-test", now() - 3600),
            ),
            "expired",
        ),
        (
            token(
                Algorithm::RS256,
                Some("test-rsa"),
                &rsa,
                claims("app_nobody", ISSUER, "tollgate-test", now() + 300),
            ),
            "no app",
        ),
        (
            token(Algorithm::ES256, Some("test-rsa"), &ec, good.clone()),
            "algorithm",
        ),
        (token(Algorithm::RS256, None, &rsa, good.clone()), "no kid"),
        (
            token(Algorithm::RS256, Some("rotated-away"), &rsa, good.clone()),
            "kid",
        ),
        (
            token(
                Algorithm::HS256,
                Some("test-rsa"),
                &EncodingKey::from_secret(b"guess"),
                good.clone(),
            ),
            "algorithm",
        ),
    ];
    for (t, what) in wrong {
        let (s, body) = call(&app, &t).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (401, Some("invalid_token")),
            "{what}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{what}: {message}");
    }
    // A flood of unknown kids does not hammer the issuer: at most one fetch in 2 s.
    assert!(jwks.hits.load(std::sync::atomic::Ordering::SeqCst) <= 2);

    // The issuer rotates its keys: a token with the new kid is accepted once the
    // gateway refetches the JWKS on seeing the unknown kid.
    let mut rotated = keys.jwks.clone();
    rotated["keys"][1]["kid"] = json!("test-ec-2");
    jwks.set(rotated);
    let fresh = token(Algorithm::ES256, Some("test-ec-2"), &ec, good.clone());
    let accepted = tollgate_testkit::eventually(std::time::Duration::from_secs(5), || async {
        (call(&app, &fresh).await.0 == 200).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "the rotated key was never fetched");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_with_a_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", dir.path())
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_TEST_JWT_SECRET", "a-shared-secret-for-tests")
        .arg("up");
    let process = Process::spawn(cmd).await;
    let gateway = process.printed("Gateway:");
    let http = reqwest::Client::new();
    let remote = RemoteAdmin::of(&process);
    let upstream = Upstream::echo().await;
    remote
        .create(
            "/apis",
            json!({"name": "H", "slug": "hs", "base_path": "/hs", "upstreams": [upstream.url()],
                   "policies": {"jwt": {"issuer": ISSUER, "secret_env": "TOLLGATE_TEST_JWT_SECRET", "app_claim": "client_id"}}}),
        )
        .await;
    let plan = remote
        .create("/plans", json!({"name": "H", "apis": ["hs"]}))
        .await;
    let dev = remote
        .create(
            "/developers",
            json!({"email": "hs@example.com", "name": "H"}),
        )
        .await;
    let app = remote
        .create("/apps", json!({"developer_id": dev["id"], "name": "A"}))
        .await;
    remote
        .create(
            "/subscriptions",
            json!({"app_id": app["id"], "plan_id": plan["id"]}),
        )
        .await;

    let claims = json!({"client_id": app["id"], "iss": ISSUER, "exp": now() + 300});
    let good = token(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"a-shared-secret-for-tests"),
        claims.clone(),
    );
    let forged = token(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"not-the-secret"),
        claims,
    );
    let status = |t: String| {
        let req = http.get(format!("{gateway}/hs/x")).bearer_auth(t);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let ok = tollgate_testkit::eventually(std::time::Duration::from_secs(2), || async {
        (status(good.clone()).await == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "a valid HS256 token was refused");
    assert_eq!(status(forged).await, 401);
    assert!(process.terminate().await.success());
}

#[tokio::test]
async fn jwt_policies_are_validated() {
    let app = TestApp::start(Stack::Embedded).await;
    for (jwt, field) in [
        (json!({"issuer": ""}), "policies.jwt.issuer"),
        (json!({"issuer": "x"}), "policies.jwt"),
        (
            json!({"issuer": "x", "jwks_url": "https://a/j", "secret_env": "S"}),
            "policies.jwt",
        ),
        (
            json!({"issuer": "x", "jwks_url": "file:///etc/keys"}),
            "policies.jwt.jwks_url",
        ),
        (
            json!({"issuer": "x", "secret_env": "not a var"}),
            "policies.jwt.secret_env",
        ),
    ] {
        let (s, b) = app
            .admin(
                "POST",
                "/admin/apis",
                Some(json!({"name": "J", "slug": "j", "base_path": "/j", "upstreams": ["http://a"], "policies": {"jwt": jwt}})),
            )
            .await;
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_work_on_every_gateway() {
    let (settings, db, ch) = crate::support::test_settings(Stack::Scaled).await;
    let ch = ch.unwrap();
    let spawn = |mode: &str| {
        let mut cmd = crate::cli::configured(mode, &settings, Some(&ch));
        cmd.env(
            "TOLLGATE_TOKEN_SECRET",
            "0123456789abcdef0123456789abcdef-test",
        );
        Process::spawn(cmd)
    };
    let portal = spawn("portal").await;
    let remote = RemoteAdmin::of(&portal);
    let upstream = Upstream::echo().await;
    let app_id = remote.provision("cc", &upstream.url(), json!({})).await;
    let creds = remote
        .create(&format!("/apps/{app_id}/client-secret"), json!({}))
        .await;
    assert_eq!(creds["client_id"], app_id.as_str());
    let secret = creds["client_secret"].as_str().unwrap().to_owned();
    let (gw1, gw2) = (spawn("gateway").await, spawn("gateway").await);
    let (g1, g2) = (gw1.printed("Gateway:"), gw2.printed("Gateway:"));
    let http = reqwest::Client::new();

    // A token from one gateway works on the other at once.
    let resp = http
        .post(format!("{g1}/oauth/token"))
        .basic_auth(&app_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_u64()),
        (Some("Bearer"), Some(3600))
    );
    let token = body["access_token"].as_str().unwrap().to_owned();
    let resp = http
        .get(format!("{g2}/cc/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert!(echoed["headers"].get("authorization").is_none());
    assert_eq!(echoed["headers"]["x-tollgate-app-id"], app_id.as_str());

    // Credentials in the form work too; wrong ones get RFC 6749 errors.
    let form = |id: &str, secret: &str, grant: &str| {
        http.post(format!("{g2}/oauth/token"))
            .form(&[
                ("grant_type", grant),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
    };
    assert_eq!(
        form(&app_id, &secret, "client_credentials")
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = form(&app_id, "wrong", "client_credentials").await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let resp = form(&app_id, &secret, "password").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );

    // A forged token (another secret) is refused.
    let forged = token_signed_with(b"not-the-gateway-secret-at-all-0000", &app_id);
    let resp = http
        .get(format!("{g1}/cc/x"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_token"
    );

    for p in [gw1, gw2, portal] {
        assert!(p.terminate().await.success());
    }
    db.cleanup().await;
    ch.cleanup().await;
}

fn token_signed_with(secret: &[u8], app_id: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("tollgate".into());
    let claims = json!({"iss": "tollgate", "aud": "tollgate-gateway", "sub": app_id, "iat": now(), "exp": now() + 600});
    encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}
