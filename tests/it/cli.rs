//! The `tollgate` binary as an operator runs it: help, configuration errors,
//! `migrate`, `up --demo` and graceful shutdown.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{ADMIN_TOKEN, Stack, test_settings};

pub fn tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for var in [
        "DATABASE_URL",
        "CLICKHOUSE_URL",
        "TOLLGATE_ADMIN_TOKEN",
        "TOLLGATE_DATA_DIR",
        "TOLLGATE_REDIS_URL",
        "TOLLGATE_QUOTA_COUNTER",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("TOLLGATE_LOG", "warn")
        .env("TOLLGATE_GATEWAY_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_PORTAL_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_ADMIN_ADDR", "127.0.0.1:0")
        .kill_on_drop(true);
    cmd
}

/// `cmd` with every file the process writes limited to `bytes`: past it the
/// operating system refuses the write (EFBIG), as a full disk does (ENOSPC).
/// See [`tollgate_testkit::file_limit`].
pub fn file_size_limited(cmd: Command, bytes: u64) -> Command {
    let mut limited = Command::from(tollgate_testkit::file_limit::file_size_limited(
        cmd.as_std(),
        bytes,
    ));
    limited.kill_on_drop(true);
    limited
}

/// A running `tollgate` process and the lines it printed up to "Press Ctrl-C".
pub struct Process {
    pub child: Child,
    pub lines: Vec<String>,
    /// What it printed after "Press Ctrl-C" (access log lines, say).
    pub later: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// What it wrote to standard error (logs) so far.
    pub errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub async fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout).lines();
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = errors.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut lines = Vec::new();
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = reader.next_line().await {
                let done = line.starts_with("Press Ctrl-C");
                lines.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(started, Ok(true)) {
            let _ = child.start_kill();
            let _ = child.wait().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "tollgate did not start; stdout: {lines:?}; stderr: {:?}",
                errors.lock().unwrap()
            );
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        let later = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = later.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            later,
            errors,
        }
    }

    /// The value printed after `label` (e.g. `Gateway:`).
    pub fn printed(&self, label: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("{label} not printed: {:?}", self.lines))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("tollgate exits after SIGTERM")
            .unwrap()
    }
}

#[tokio::test]
async fn help_and_version_explain_the_commands() {
    let out = tollgate().arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in ["up", "gateway", "portal", "migrate", "--config"] {
        assert!(help.contains(cmd), "--help does not mention {cmd}:\n{help}");
    }
    let out = tollgate().args(["up", "--help"]).output().await.unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("--demo"));
    let out = tollgate().arg("--version").output().await.unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("tollgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn invalid_configuration_gives_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    // (environment, arguments, what the one line must say)
    type Case<'a> = (Vec<(&'a str, String)>, Vec<String>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("TOLLGATE_GATEWAY_ADDR", "nonsense".into())],
            vec![],
            "invalid setting TOLLGATE_GATEWAY_ADDR",
        ),
        (
            vec![("DATABASE_URL", "mysql://db/x".into())],
            vec![],
            "invalid setting DATABASE_URL",
        ),
        (
            vec![("TOLLGATE_ADMIN_TOKEN", "short".into())],
            vec![],
            "invalid setting TOLLGATE_ADMIN_TOKEN",
        ),
        (
            vec![("TOLLGATE_UPSTREAM_TIMEOUT_MS", "soon".into())],
            vec![],
            "invalid setting TOLLGATE_UPSTREAM_TIMEOUT_MS",
        ),
        (
            vec![(
                "TOLLGATE_UPSTREAM_CA_FILE",
                dir.path().join("not-a-ca.pem").display().to_string(),
            )],
            vec![],
            "holds no PEM certificate",
        ),
        (
            vec![("TOLLGATE_QUOTA_COUNTER", "redis".into())],
            vec![],
            "invalid setting TOLLGATE_QUOTA_COUNTER: \"redis\" needs a Redis; set TOLLGATE_REDIS_URL",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                dir.path().join("bad.toml").display().to_string(),
            ],
            "unknown setting \"gateway_port\"",
        ),
    ];
    std::fs::write(dir.path().join("bad.toml"), "gateway_port = 1\n").unwrap();
    std::fs::write(dir.path().join("not-a-ca.pem"), "hello\n").unwrap();
    for (env, args, expected) in cases {
        let mut cmd = tollgate();
        cmd.env("TOLLGATE_DATA_DIR", dir.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.args(&args).arg("up").output().await.unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?} {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

async fn migrate_creates_schemas(stack: Stack) {
    let (settings, db, ch) = test_settings(stack).await;
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", &settings.data_dir)
        .env("DATABASE_URL", &settings.database_url);
    if let Some(ch) = &ch {
        cmd.env("CLICKHOUSE_URL", &ch.url)
            .env("TOLLGATE_CLICKHOUSE_DATABASE", &ch.database);
    }
    cmd.arg("migrate");
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "migrate is idempotent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = tollgate_core::Store::connect(&settings.database_url)
        .await
        .unwrap();
    assert_eq!(store.config_version().await.unwrap(), 0);
    store.close().await;
    match &ch {
        Some(ch) => {
            let tables = ch
                .query(&format!(
                    "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
                    ch.database
                ))
                .await;
            assert!(tables.contains("usage_events"), "{tables}");
        }
        None => assert!(settings.data_dir.join("usage.db").exists()),
    }
    db.cleanup().await;
    if let Some(ch) = ch {
        ch.cleanup().await;
    }
}
crate::on_both_stacks!(migrate_creates_schemas, super::migrate_creates_schemas);

/// Runs a printed `curl` command line and returns its output.
async fn run_curl(line: &str) -> String {
    let cmd = line.strip_prefix("Try: ").expect("line starts with Try: ");
    assert!(cmd.starts_with("curl "));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} --silent --show-error --fail"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn demo_prints_a_curl_that_works_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut cmd = tollgate();
        cmd.env("TOLLGATE_DATA_DIR", dir.path())
            .args(["up", "--demo"]);
        Process::spawn(cmd)
    };
    let first = start().await;
    let try_line = first
        .lines
        .iter()
        .find(|l| l.starts_with("Try: curl "))
        .expect("a Try: curl line")
        .clone();
    let answer = run_curl(&try_line).await;
    assert!(
        answer.contains("Hello from the Tollgate demo API"),
        "{answer}"
    );

    // The printed admin token opens the admin API.
    let token = first.printed("Admin token:");
    let admin = first.printed("Admin API:");
    let resp = reqwest::Client::new()
        .get(format!("{admin}/apis"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let portal = first.printed("Portal:");
    assert!(
        reqwest::get(&portal)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Demo API")
    );
    assert!(first.terminate().await.success());

    // A second run on the same data dir reuses the demo: same key, same token.
    let second = start().await;
    assert_eq!(second.printed("Admin token:"), token);
    let again = second
        .lines
        .iter()
        .find(|l| l.starts_with("Try: curl "))
        .unwrap()
        .clone();
    assert_eq!(
        again.split('\'').nth(1),
        try_line.split('\'').nth(1),
        "the demo key changed"
    );
    assert!(run_curl(&again).await.contains("Hello"));
    let resp = reqwest::Client::new()
        .get(format!("{}/apis", second.printed("Admin API:")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let apis: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        apis["data"].as_array().unwrap().len(),
        1,
        "the demo API was created twice"
    );
    assert!(second.terminate().await.success());

    // A configured token wins over the demo's.
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", dir.path())
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["up", "--demo"]);
    let third = Process::spawn(cmd).await;
    assert_eq!(third.printed("Admin token:"), ADMIN_TOKEN);
    assert!(third.terminate().await.success());
}

async fn sigterm_drains_usage(stack: Stack) {
    let (settings, db, ch) = test_settings(stack).await;
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", &settings.data_dir)
        .env("DATABASE_URL", &settings.database_url)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        // Nothing is written before shutdown unless shutdown drains.
        .env("TOLLGATE_USAGE_FLUSH_INTERVAL_MS", "600000")
        .arg("up");
    if let Some(ch) = &ch {
        cmd.env("CLICKHOUSE_URL", &ch.url)
            .env("TOLLGATE_CLICKHOUSE_DATABASE", &ch.database);
    }
    let process = Process::spawn(cmd).await;
    let gateway = process.printed("Gateway:");
    let http = reqwest::Client::new();
    let calls = 137u64;
    for i in 0..calls {
        let resp = http
            .get(format!("{gateway}/nowhere/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    assert!(process.terminate().await.success());

    let usage = tollgate_analytics::UsageStore::open(&settings)
        .await
        .unwrap();
    let from = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let q = tollgate_analytics::SummaryQuery::parse(Some(&from), None, None).unwrap();
    assert_eq!(
        usage.summary(&q).await.unwrap().total_calls,
        calls,
        "calls lost at shutdown"
    );
    db.cleanup().await;
    if let Some(ch) = ch {
        ch.cleanup().await;
    }
}
crate::on_both_stacks!(sigterm_drains_usage, super::sigterm_drains_usage);

#[tokio::test]
async fn json_access_log_has_one_line_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", dir.path())
        .env("TOLLGATE_ACCESS_LOG", "json")
        .arg("up");
    let process = Process::spawn(cmd).await;
    let gateway = process.printed("Gateway:");
    for i in 0..3 {
        let resp = reqwest::get(format!("{gateway}/nothing/{i}"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    let later = process.later.clone();
    let lines = tollgate_testkit::eventually(Duration::from_secs(3), || {
        let later = later.clone();
        async move {
            let lines = later.lock().unwrap().clone();
            (lines.len() >= 3).then_some(lines)
        }
    })
    .await
    .expect("three access log lines");
    for line in &lines[..3] {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["status"], 404);
        assert_eq!(v["error_code"], "no_route");
        assert_eq!(v["method"], "GET");
        assert!(v["id"].as_str().is_some_and(|id| id.len() == 36));
    }
    assert!(process.terminate().await.success());
}

/// A `tollgate MODE` process on one test's databases (its PostgreSQL or SQLite,
/// and ClickHouse when given), with the test admin token and quick usage flushes.
/// Callers add their own settings with `.env(…)`.
pub fn configured(
    mode: &str,
    settings: &tollgate_core::Settings,
    ch: Option<&tollgate_testkit::TestClickHouse>,
) -> Command {
    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", &settings.data_dir)
        .env("DATABASE_URL", &settings.database_url)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_USAGE_FLUSH_INTERVAL_MS", "100")
        .arg(mode);
    if let Some(ch) = ch {
        cmd.env("CLICKHOUSE_URL", &ch.url)
            .env("TOLLGATE_CLICKHOUSE_DATABASE", &ch.database);
    }
    cmd
}

/// The admin API of a running `tollgate` process.
pub struct RemoteAdmin {
    http: reqwest::Client,
    base: String,
}

impl RemoteAdmin {
    /// The admin API `process` printed.
    pub fn of(process: &Process) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: process.printed("Admin API:"),
        }
    }

    /// POSTs `body` to `path` (under `/admin`), asserting 201; returns the object.
    pub async fn create(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "POST {path}: {body}");
        body
    }

    /// GETs `path` (under `/admin`) as JSON.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An API at `/{slug}` on `upstream`, a plan over it (with `plan` fields
    /// added), a developer, an app and an active subscription. Returns the app id.
    pub async fn provision(&self, slug: &str, upstream: &str, plan: serde_json::Value) -> String {
        self.create(
            "/apis",
            serde_json::json!({"name": slug, "slug": slug, "base_path": format!("/{slug}"), "upstreams": [upstream]}),
        )
        .await;
        let mut body = serde_json::json!({"name": slug, "apis": [slug]});
        if let (Some(b), Some(extra)) = (body.as_object_mut(), plan.as_object()) {
            b.extend(extra.clone());
        }
        let plan = self.create("/plans", body).await;
        let dev = self
            .create(
                "/developers",
                serde_json::json!({"email": format!("{slug}@example.com"), "name": slug}),
            )
            .await;
        let app = self
            .create(
                "/apps",
                serde_json::json!({"developer_id": dev["id"], "name": "App"}),
            )
            .await;
        self.create(
            "/subscriptions",
            serde_json::json!({"app_id": app["id"], "plan_id": plan["id"]}),
        )
        .await;
        app["id"].as_str().unwrap().to_owned()
    }

    /// A new key of `app_id`.
    pub async fn key(&self, app_id: &str) -> String {
        let key = self
            .create(&format!("/apps/{app_id}/keys"), serde_json::json!({}))
            .await;
        key["key"].as_str().unwrap().to_owned()
    }
}
