//! Test support: every test gets its own database on the real services, and
//! small upstream servers to proxy to. Used by integration tests only.
//!
//! The services are found through `TOLLGATE_TEST_DATABASE_URL` (a PostgreSQL
//! server; default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `TOLLGATE_TEST_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`). A service
//! that cannot be reached fails the test with a message that says how to start
//! it (`scripts/test.sh` starts everything); nothing is skipped silently.

pub mod browser;
pub mod file_limit;
pub mod github;
pub mod jwt_keys;
pub mod oidc;
pub mod proxy;
pub mod smtp;
pub mod tls;
pub mod upstream;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::Connection;

/// Which control-plane database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// A database of its own for one test; dropped by [`TestDb::cleanup`].
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL for the store.
    pub url: String,
    /// Which database.
    pub kind: Db,
    /// Temporary directory (holds the SQLite file; usable as a data dir).
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

fn postgres_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// URL of the test ClickHouse server's HTTP interface.
pub fn clickhouse_url() -> String {
    std::env::var("TOLLGATE_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned())
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

impl TestDb {
    /// Creates an empty database of the given kind.
    pub async fn new(kind: Db) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        match kind {
            Db::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("tollgate.db").display()),
                kind,
                dir,
                pg_name: None,
            },
            Db::Postgres => {
                let admin = postgres_admin_url();
                let name = unique_name("tg_test");
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "cannot reach the test PostgreSQL at {admin}: {e}\n\
                         start it (scripts/test.sh does) or set TOLLGATE_TEST_DATABASE_URL"
                        )
                    });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("TOLLGATE_TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                let url = url.to_string();
                Self {
                    url,
                    kind,
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// The temporary directory, usable as a data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Drops a PostgreSQL test database (connections to it are terminated).
    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// A ClickHouse database of its own for one test.
#[derive(Debug)]
pub struct TestClickHouse {
    /// HTTP URL of the server.
    pub url: String,
    /// Name of the (not yet created) database.
    pub database: String,
}

impl TestClickHouse {
    /// Picks a fresh database name on the test server, checking it answers.
    pub async fn new() -> Self {
        let url = clickhouse_url();
        let ok = reqwest::get(format!("{url}/?query=SELECT%201"))
            .await
            .map(|r| r.status().is_success());
        if !matches!(ok, Ok(true)) {
            panic!(
                "cannot reach the test ClickHouse at {url}: {ok:?}\n\
                 start it (scripts/test.sh does) or set TOLLGATE_TEST_CLICKHOUSE_URL"
            );
        }
        Self {
            url,
            database: unique_name("tg_test"),
        }
    }

    /// Runs a query and returns the response text.
    pub async fn query(&self, sql: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .body(sql.to_owned())
            .send()
            .await
            .expect("clickhouse reachable");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "clickhouse query failed: {sql}: {text}"
        );
        text
    }

    /// Drops the database.
    pub async fn cleanup(self) {
        let _ = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .body(format!("DROP DATABASE IF EXISTS {}", self.database))
            .send()
            .await;
    }
}

/// Polls `check` until it returns `Some` or `deadline` passes; never sleeps a
/// fixed time to wait for readiness.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
