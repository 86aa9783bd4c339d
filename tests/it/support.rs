//! `TestApp`: the real components in this process, on loopback port 0, with
//! typed helpers for the admin API and the gateway.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate::app::{self, Mode, Running};
use tollgate_core::Settings;
use tollgate_testkit::{Db, TestClickHouse, TestDb};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Which pair of stores a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// SQLite control plane, embedded usage store.
    Embedded,
    /// PostgreSQL control plane, ClickHouse usage store.
    Scaled,
}

pub struct TestApp {
    pub running: Running,
    pub http: reqwest::Client,
    db: TestDb,
    clickhouse: Option<TestClickHouse>,
}

/// Settings for a test on `stack`: loopback port 0 everywhere, quick flushes.
pub async fn test_settings(stack: Stack) -> (Settings, TestDb, Option<TestClickHouse>) {
    let db = TestDb::new(match stack {
        Stack::Embedded => Db::Sqlite,
        Stack::Scaled => Db::Postgres,
    })
    .await;
    let mut settings = Settings::for_data_dir(&db.data_dir());
    settings.database_url = db.url.clone();
    settings.admin_token = Some(ADMIN_TOKEN.to_owned());
    settings.upstream_timeout = Duration::from_millis(500);
    settings.usage_flush_interval = Duration::from_millis(100);
    settings.config_poll_interval = Duration::from_millis(200);
    settings.node_name = "test".to_owned();
    let clickhouse = match stack {
        Stack::Embedded => None,
        Stack::Scaled => {
            let ch = TestClickHouse::new().await;
            settings.clickhouse_url = Some(ch.url.clone());
            settings.clickhouse_database = ch.database.clone();
            Some(ch)
        }
    };
    (settings, db, clickhouse)
}

impl TestApp {
    pub async fn start(stack: Stack) -> Self {
        let (settings, db, clickhouse) = test_settings(stack).await;
        Self::start_with(settings, db, clickhouse).await
    }

    pub async fn start_with(
        settings: Settings,
        db: TestDb,
        clickhouse: Option<TestClickHouse>,
    ) -> Self {
        let (store, usage) = app::open_stores(&settings).await.expect("open stores");
        let running = app::start(&settings, Mode::All, store, usage)
            .await
            .expect("start app");
        Self {
            running,
            http: reqwest::Client::new(),
            db,
            clickhouse,
        }
    }

    pub async fn stop(self) {
        self.stop_then(|_| async {}).await;
    }

    /// Stops the process's components, runs `after` on the stopped app (its
    /// stores are still there to read), then removes the databases.
    pub async fn stop_then<F, Fut>(self, after: F)
    where
        F: FnOnce(tollgate_analytics::UsageStore) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let usage = self.running.usage.clone();
        self.running.stop().await;
        after(usage).await;
        self.db.cleanup().await;
        if let Some(ch) = self.clickhouse {
            ch.cleanup().await;
        }
    }

    pub fn gateway(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.gateway_addr.unwrap())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr.unwrap())
    }

    pub fn portal(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.portal_addr.unwrap())
    }

    /// An admin API call with the token; returns status and JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Creates an object through the admin API, asserting 201; returns it.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, json) = self.admin("POST", path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {json}");
        json
    }

    /// API + free plan + developer + app + active subscription + key, all
    /// through the admin API. Returns (api, app id, subscription id, key).
    pub async fn provision(&self, slug: &str, upstream: &str) -> Provisioned {
        let api = self
            .create("/admin/apis", json!({"name": slug, "slug": slug, "base_path": format!("/{slug}"), "upstreams": [upstream]}))
            .await;
        let plan = self
            .create(
                "/admin/plans",
                json!({"name": format!("{slug} free"), "apis": [slug]}),
            )
            .await;
        let dev = self
            .create("/admin/developers", json!({"email": format!("{slug}-{}@example.com", uuid::Uuid::new_v4().simple()), "name": "Dev"}))
            .await;
        let app = self
            .create(
                "/admin/apps",
                json!({"developer_id": dev["id"], "name": "App"}),
            )
            .await;
        let sub = self
            .create(
                "/admin/subscriptions",
                json!({"app_id": app["id"], "plan_id": plan["id"]}),
            )
            .await;
        let key = self
            .create(
                &format!("/admin/apps/{}/keys", app["id"].as_str().unwrap()),
                json!({}),
            )
            .await;
        self.synced().await;
        Provisioned {
            api_id: api["id"].as_str().unwrap().to_owned(),
            plan_id: plan["id"].as_str().unwrap().to_owned(),
            app_id: app["id"].as_str().unwrap().to_owned(),
            subscription_id: sub["id"].as_str().unwrap().to_owned(),
            key_id: key["id"].as_str().unwrap().to_owned(),
            key: key["key"].as_str().unwrap().to_owned(),
        }
    }

    /// Changes an API through the admin API; once accepted, waits until the
    /// gateway serves the change.
    pub async fn patch_api(&self, api_id: &str, body: Value) -> (u16, Value) {
        let (status, json) = self
            .admin("PATCH", &format!("/admin/apis/{api_id}"), Some(body))
            .await;
        if status == 200 {
            self.synced().await;
        }
        (status, json)
    }

    /// Waits until the gateway serves the configuration now in the store.
    pub async fn synced(&self) {
        let want = self.running.store.config_version().await.unwrap();
        let gateway = self.running.gateway.as_ref().unwrap();
        let done = tollgate_testkit::eventually(Duration::from_secs(1), || async {
            (gateway.version() >= want).then_some(())
        })
        .await;
        assert!(
            done.is_some(),
            "the gateway did not load version {want} within 1 s"
        );
    }

    /// A gateway call with a key in `x-api-key`.
    pub async fn call(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.gateway(path));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send().await.expect("gateway reachable")
    }

    /// Waits until `path` answers `status` with `key`, at most `within`.
    pub async fn wait_status(
        &self,
        path: &str,
        key: Option<&str>,
        status: u16,
        within: Duration,
    ) -> Option<Duration> {
        let start = std::time::Instant::now();
        tollgate_testkit::eventually(within, || async {
            (self.call(path, key).await.status().as_u16() == status).then(|| start.elapsed())
        })
        .await
    }

    /// Usage summary over the last hour.
    pub async fn usage_total(&self, api: Option<&str>) -> u64 {
        let from = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let to = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut path = format!("/admin/usage/summary?from={from}&to={to}");
        if let Some(a) = api {
            path.push_str(&format!("&api={a}"));
        }
        let (status, body) = self.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        body["total_calls"].as_u64().unwrap()
    }

    /// Every usage event stored so far, oldest first, as JSON objects with
    /// numbers as numbers, read straight from the usage store.
    pub async fn usage_events(&self) -> Vec<Value> {
        const COLUMNS: [&str; 17] = [
            "id",
            "node",
            "api_slug",
            "route",
            "method",
            "status",
            "latency_us",
            "upstream_latency_us",
            "bytes_in",
            "bytes_out",
            "app_id",
            "key_prefix",
            "developer_id",
            "plan_id",
            "subscription_id",
            "client_ip",
            "error_code",
        ];
        const NUMBERS: [&str; 5] = [
            "status",
            "latency_us",
            "upstream_latency_us",
            "bytes_in",
            "bytes_out",
        ];
        match &self.clickhouse {
            Some(ch) => {
                let select: Vec<String> = COLUMNS
                    .iter()
                    .map(|c| match *c {
                        "id" => "toString(event_id) AS id".to_owned(),
                        c if NUMBERS.contains(&c) => format!("toFloat64({c}) AS {c}"),
                        c => c.to_owned(),
                    })
                    .collect();
                let text = ch
                    .query(&format!(
                        "SELECT {} FROM {}.usage_events ORDER BY timestamp_ms, event_id FORMAT JSONEachRow",
                        select.join(", "),
                        ch.database
                    ))
                    .await;
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            }
            None => {
                let path = self.db.data_dir().join("usage.db");
                let store = tollgate_analytics::embedded::EmbeddedStore::open(&path)
                    .await
                    .unwrap();
                let events = store.events(0, i64::MAX).await.unwrap();
                events
                    .iter()
                    .map(|e| {
                        let numbers = [
                            u64::from(e.status),
                            u64::from(e.latency_us),
                            u64::from(e.upstream_latency_us),
                            e.bytes_in,
                            e.bytes_out,
                        ];
                        let texts = [
                            &e.node,
                            &e.api_slug,
                            &e.route,
                            &e.method,
                            &e.app_id,
                            &e.key_prefix,
                            &e.developer_id,
                            &e.plan_id,
                            &e.subscription_id,
                            &e.client_ip,
                            &e.error_code,
                        ];
                        let mut o = serde_json::Map::new();
                        o.insert("id".to_owned(), json!(e.id.hyphenated().to_string()));
                        for (c, n) in NUMBERS.iter().zip(numbers) {
                            o.insert((*c).to_owned(), json!(n as f64));
                        }
                        let named = COLUMNS
                            .iter()
                            .filter(|c| **c != "id" && !NUMBERS.contains(c));
                        for (c, t) in named.zip(texts) {
                            o.insert((*c).to_owned(), json!(&**t));
                        }
                        Value::Object(o)
                    })
                    .collect()
            }
        }
    }

    /// Waits until the usage summary reports exactly `n` calls (2 s at most),
    /// then checks it stays there.
    pub async fn expect_usage(&self, api: Option<&str>, n: u64) {
        let seen = tollgate_testkit::eventually(Duration::from_secs(3), || async {
            let got = self.usage_total(api).await;
            (got == n).then_some(got)
        })
        .await;
        let last = self.usage_total(api).await;
        assert_eq!(
            seen,
            Some(n),
            "usage summary never reached {n} calls (last {last})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            self.usage_total(api).await,
            n,
            "usage summary counted more than {n} calls"
        );
    }
}

#[derive(Debug, Clone)]
pub struct Provisioned {
    pub api_id: String,
    pub plan_id: String,
    pub app_id: String,
    pub subscription_id: String,
    pub key_id: String,
    pub key: String,
}

/// The test Redis (`TOLLGATE_TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn redis() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("TOLLGATE_TEST_REDIS_URL is a Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test Redis at {url}: {e}\n\
                 start it (scripts/test.sh does) or set TOLLGATE_TEST_REDIS_URL"
            )
        })
}

/// A subscription's quota counters in the test Redis: (key, calls leased).
pub async fn redis_quota_counters(subscription_id: &str) -> Vec<(String, i64)> {
    let mut conn = redis().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("tollgate:quota:{subscription_id}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let mut counters = Vec::new();
    for key in keys {
        let leased: i64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        counters.push((key, leased));
    }
    counters
}

/// Deletes a subscription's quota counters from the test Redis.
pub async fn drop_redis_quota_counters(subscription_id: &str) {
    let mut conn = redis().await;
    for (key, _) in redis_quota_counters(subscription_id).await {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Declares an async test that runs on both stacks.
#[macro_export]
macro_rules! on_both_stacks {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                $body($crate::support::Stack::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn scaled() {
                $body($crate::support::Stack::Scaled).await;
            }
        }
    };
}
