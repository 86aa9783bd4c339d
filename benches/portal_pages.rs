//! Portal pages at scale: how long the server takes to answer each main page
//! with 1,000 APIs (each with an OpenAPI document of 12 operations) and 10,000
//! developers (an app, a key and a subscription each) in the store.
//!
//! Seeds a fresh database by SQL, starts `tollgate portal` (release build),
//! logs in as one of the developers, then requests every page 300 times
//! (after 30 warm-up requests) one after another on one keep-alive connection
//! and reports p50/p95/max of the whole exchange on loopback, an upper bound
//! of the render time.
//!
//!   cargo bench --bench portal_pages                      # SQLite, then PostgreSQL
//!   BENCH_DATABASES=sqlite cargo bench --bench portal_pages
//!
//! PostgreSQL: TOLLGATE_TEST_DATABASE_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres); creates and drops its own database.

use std::time::{Duration, Instant};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

mod support;
use support::{Proc, TempPgDatabase, migrate, percentile};

const APIS: i64 = 1_000;
const DEVELOPERS: i64 = 10_000;
const PLANS: i64 = 100;
const RUNS: usize = 300;
const WARM_UP: usize = 30;
const EMAIL: &str = "dev-42@example.com";
const PASSWORD: &str = "correct horse battery";

/// An OpenAPI document like a mid-sized API's: 12 operations over 3 tags,
/// parameters, request and response schemas with examples.
fn openapi(i: i64) -> String {
    let mut paths = serde_json::Map::new();
    for (n, tag) in ["orders", "customers", "invoices"].iter().enumerate() {
        paths.insert(
            format!("/{tag}"),
            serde_json::json!({
                "get": {
                    "tags": [tag], "summary": format!("List {tag}"), "operationId": format!("list_{tag}"),
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}, "description": "Most items to return"},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/Page{n}")}}}}}
                },
                "post": {
                    "tags": [tag], "summary": format!("Create one of the {tag}"), "operationId": format!("create_{tag}"),
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/Item{n}")}, "example": {"name": "Example", "amount": 42}}}},
                    "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/Item{n}")}}}}}
                }
            }),
        );
        paths.insert(
            format!("/{tag}/{{id}}"),
            serde_json::json!({
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"tags": [tag], "summary": format!("One of the {tag}"), "responses": {"200": {"description": "Found", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/Item{n}")}}}}, "404": {"description": "No such item"}}},
                "patch": {"tags": [tag], "summary": "Change it", "requestBody": {"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/Item{n}")}}}}, "responses": {"200": {"description": "Changed"}}}
            }),
        );
    }
    let mut schemas = serde_json::Map::new();
    for n in 0..3 {
        schemas.insert(
            format!("Item{n}"),
            serde_json::json!({"type": "object", "required": ["name"], "properties": {
                "id": {"type": "string", "readOnly": true}, "name": {"type": "string", "example": "Example"},
                "amount": {"type": "integer", "format": "int64"}, "created_at": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}}}}),
        );
        schemas.insert(
            format!("Page{n}"),
            serde_json::json!({"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/Item{n}")}},
                "next_cursor": {"type": "string", "nullable": true}}}),
        );
    }
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": format!("API {i}"), "version": "1.0.0", "description": "Orders, customers and invoices."},
        "tags": [{"name": "orders"}, {"name": "customers"}, {"name": "invoices"}],
        "paths": paths,
        "components": {"schemas": schemas}
    })
    .to_string()
}

/// `WITH RECURSIVE` numbers 0..n, on SQLite and PostgreSQL alike.
fn series(n: i64) -> String {
    format!(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) ",
        n - 1
    )
}

async fn seed(pool: &AnyPool, password_hash: &str) {
    let now = 1_767_225_600_000_i64;
    let mut tx = pool.begin().await.unwrap();
    // The documents differ only in their titles: insert one, copy it.
    for i in 0..APIS {
        sqlx::query(
            "INSERT INTO apis (id, name, slug, base_path, upstreams, visibility, openapi, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, '[\"http://127.0.0.1:9\"]', 'public', $5, $6, $6)",
        )
        .bind(format!("api_b{i}"))
        .bind(format!("API {i}"))
        .bind(format!("api-{i}"))
        .bind(format!("/api{i}"))
        .bind(openapi(i))
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let statements = [
        format!(
            "{}INSERT INTO plans (id, name, price_minor, currency, billing_interval, included_calls, status, created_at, updated_at) \
             SELECT 'plan_b' || i, 'Plan ' || i, 0, 'USD', 'month', 10000, 'active', {now}, {now} FROM s",
            series(PLANS)
        ),
        format!(
            "{}INSERT INTO plan_apis (plan_id, api_id) SELECT 'plan_b' || (i / 10), 'api_b' || i FROM s",
            series(APIS)
        ),
        format!(
            "{}INSERT INTO users (id, email, name, role, email_verified_at, created_at, updated_at) \
             SELECT 'usr_b' || i, 'dev-' || i || '@example.com', 'Developer ' || i, 'developer', {now}, {now}, {now} FROM s",
            series(DEVELOPERS)
        ),
        format!(
            "{}INSERT INTO apps (id, developer_id, name, created_at, updated_at) \
             SELECT 'app_b' || i, 'usr_b' || i, 'App ' || i, {now}, {now} FROM s",
            series(DEVELOPERS)
        ),
        format!(
            "{}INSERT INTO api_keys (id, app_id, key_hash, prefix, status, created_at) \
             SELECT 'key_b' || i, 'app_b' || i, 'hash-' || i, 'tg_live_bnch', 'active', {now} FROM s",
            series(DEVELOPERS)
        ),
        format!(
            "{}INSERT INTO subscriptions (id, app_id, plan_id, status, created_at, updated_at) \
             SELECT 'sub_b' || i, 'app_b' || i, 'plan_b' || (i % {PLANS}), 'active', {now}, {now} FROM s",
            series(DEVELOPERS)
        ),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE users SET password_hash = $1 WHERE email = $2")
        .bind(password_hash)
        .bind(EMAIL)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The pages measured, by label and path; all but the log-in page as the
/// signed-in developer.
fn pages() -> Vec<(&'static str, String)> {
    vec![
        ("home (1,000 APIs)", "/".to_owned()),
        ("log in (signed out)", "/login".to_owned()),
        ("account", "/account".to_owned()),
        ("catalog (1,000 APIs)", "/apis".to_owned()),
        ("catalog search", "/apis?q=API+42".to_owned()),
        ("API page (12 operations)", "/apis/api-42".to_owned()),
        (
            "API page, Python samples",
            "/apis/api-42?app=app_b42&lang=python".to_owned(),
        ),
        ("apps", "/apps".to_owned()),
        ("app", "/apps/app_b42".to_owned()),
        (
            "app usage (30 days)",
            "/apps/app_b42/usage?period=30d".to_owned(),
        ),
    ]
}

/// The session cookie an answer sets, as a `Cookie` header value.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tollgate_session="))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

/// Logs in; returns the signed-in session's `Cookie` header value.
async fn log_in(http: &reqwest::Client, portal: &str) -> String {
    let resp = http.get(format!("{portal}/login")).send().await.unwrap();
    let cookie = session_cookie(&resp).expect("the log-in form starts a session");
    let form = resp.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let at = form.find(marker).expect("a CSRF field") + marker.len();
    let csrf = &form[at..at + form[at..].find('"').unwrap()];
    let r = http
        .post(format!("{portal}/login"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf), ("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let signed_in = session_cookie(&r).expect("log-in renews the session");
    assert_eq!(r.status(), 303, "log-in: {}", r.text().await.unwrap());
    signed_in
}

async fn measure(db_label: &str, db: &str) {
    let data = tempfile::tempdir().unwrap();
    migrate(db, data.path());
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(db)
        .await
        .unwrap();
    let t = Instant::now();
    let hash = tollgate_portal::accounts::password::hash(PASSWORD.to_owned())
        .await
        .unwrap();
    seed(&pool, &hash).await;
    pool.close().await;
    println!(
        "{db_label}: seeded {APIS} APIs, {PLANS} plans, {DEVELOPERS} developers (an app, a key, a subscription each) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let portal = Proc::start(&["portal"], db, data.path(), &[]);
    let url = portal.printed("Portal:");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let cookie = log_in(&http, &url).await;

    println!(
        "{:<28} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "p95 ms", "max ms"
    );
    for (label, path) in pages() {
        let mut times = Vec::with_capacity(RUNS);
        for i in 0..WARM_UP + RUNS {
            let t = Instant::now();
            let mut req = http.get(format!("{url}{path}"));
            if path != "/login" {
                req = req.header("cookie", &cookie);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            let took = t.elapsed();
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            if i >= WARM_UP {
                times.push(took);
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{label:<28} {:>9.2} {:>9.2} {:>9.2}",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.95)),
            ms(*times.last().unwrap())
        );
    }
    portal.stop();
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    sqlx::any::install_default_drivers();
    let which = std::env::var("BENCH_DATABASES").unwrap_or_else(|_| "sqlite,postgres".into());
    if which.contains("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("portal.db").display()
        );
        measure("SQLite", &db).await;
    }
    if which.contains("postgres") {
        let database = TempPgDatabase::create("tollgate_pages").await;
        measure("PostgreSQL", &database.url).await;
        database.drop().await;
    }
}
