//! What the process-level benchmarks share: a `tollgate` child process that
//! reports its listeners, and percentiles.

#![allow(dead_code)] // each benchmark uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `tollgate` process.
pub struct Proc {
    pub child: Child,
    printed: Vec<String>,
}

impl Proc {
    /// Runs `tollgate ARGS` on `db` and `data`, listeners on free loopback
    /// ports, with extra environment `env`; returns once it says it is ready.
    pub fn start(args: &[&str], db: &str, data: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(args)
            .env("DATABASE_URL", db)
            .env("TOLLGATE_DATA_DIR", data)
            .env(
                "TOLLGATE_LOG",
                std::env::var("BENCH_TOLLGATE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("TOLLGATE_GATEWAY_ADDR", "127.0.0.1:0")
            .env("TOLLGATE_PORTAL_ADDR", "127.0.0.1:0")
            .env("TOLLGATE_ADMIN_ADDR", "127.0.0.1:0")
            .env_remove("CLICKHOUSE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tollgate");
        let mut printed = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.starts_with("Press Ctrl-C");
            printed.push(line);
            if done {
                break;
            }
        }
        // Keep draining so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, printed }
    }

    /// What it printed after `label` (e.g. `Gateway:`).
    pub fn printed(&self, label: &str) -> String {
        self.printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("{label} not printed: {:?}", self.printed))
    }

    /// Resident memory, MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024.0
    }

    /// SIGTERM, then waits for it to exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// `tollgate migrate` on `db`; panics with its output when it fails.
pub fn migrate(db: &str, data: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("migrate")
        .env("DATABASE_URL", db)
        .env("TOLLGATE_DATA_DIR", data)
        .env_remove("CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of its own on the test PostgreSQL server
/// (`TOLLGATE_TEST_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
pub struct TempPgDatabase {
    /// Its connection URL.
    pub url: String,
    name: String,
    admin: sqlx::PgPool,
}

impl TempPgDatabase {
    /// Creates `{prefix}_{pid}`.
    pub async fn create(prefix: &str) -> Self {
        let admin_url = std::env::var("TOLLGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("{prefix}_{}", std::process::id());
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin,
        }
    }

    /// Drops it, ending any session still on it.
    pub async fn drop(self) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

/// The `p` quantile (0..=1) of sorted samples (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}
