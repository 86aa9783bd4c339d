//! Configuration as a file: the DB-less gateway (`tollgate gateway
//! --config-file`) with hot reload, and `tollgate config dump/apply/check`
//! against both databases.

use std::path::Path;
use std::time::Duration;

use tollgate_core::declarative::Document;
use tollgate_core::key::{self, GeneratedKey};
use tollgate_testkit::upstream::Upstream;
use tollgate_testkit::{Db, TestDb, eventually};

use crate::cli::{Process, tollgate};
use crate::support::{drop_redis_quota_counters, redis_quota_counters, redis_url};

fn key_entry(id: &str, key: &GeneratedKey, status: &str) -> String {
    format!(
        "      - id: {id}\n        prefix: {}\n        hash: {}\n        status: {status}\n",
        key.prefix,
        key.hash.to_hex()
    )
}

/// A configuration with one API on `upstream`, a plan with a hard quota of
/// `included` calls, one developer and one app holding `keys`.
fn config(upstream: &str, included: u32, keys: &str) -> String {
    format!(
        r#"format: 1
apis:
  - id: api_echo
    name: Echo
    slug: echo
    base_path: /echo
    upstreams: [{upstream}]
plans:
  - id: plan_basic
    name: Basic
    apis: [echo]
    included_calls: {included}
developers:
  - id: usr_ada
    email: ada@example.com
    name: Ada
apps:
  - id: app_ada
    developer: usr_ada
    name: Ada's app
    keys:
{keys}    subscriptions:
      - id: sub_ada
        plan: plan_basic
"#
    )
}

/// Replaces the file the way editors and config management do: write a new
/// file, rename it over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status(client: &reqwest::Client, url: &str, key: &GeneratedKey) -> u16 {
    client
        .get(url)
        .header("x-api-key", &key.key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbless_gateway_serves_the_file_and_follows_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::echo().await;
    let first = key::generate();
    let second = key::generate();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(
        &file,
        config(
            &upstream.url(),
            1000,
            &key_entry("key_one", &first, "active"),
        ),
    )
    .unwrap();

    let mut cmd = tollgate();
    cmd.env("TOLLGATE_DATA_DIR", dir.path().join("data"))
        .env("TOLLGATE_LOG", "info")
        .arg("gateway")
        .arg("--config-file")
        .arg(&file);
    let gw = Process::spawn(cmd).await;
    assert!(gw.printed("Config:").contains("tollgate.yaml"));
    let url = format!("{}/echo/hello", gw.printed("Gateway:"));
    let client = reqwest::Client::new();
    assert_eq!(status(&client, &url, &first).await, 200);
    assert_eq!(upstream.hits(), 1);
    assert_eq!(status(&client, &url, &second).await, 401);

    // Revoke the first key and add a second one: the running gateway follows.
    replace(
        &file,
        &config(
            &upstream.url(),
            1000,
            &(key_entry("key_one", &first, "revoked") + &key_entry("key_two", &second, "active")),
        ),
    );
    eventually(Duration::from_secs(5), || async {
        (status(&client, &url, &second).await == 200).then_some(())
    })
    .await
    .expect("the second key works after the file changed");
    assert_eq!(status(&client, &url, &first).await, 401);

    // A broken file is reported with its place and the last good one keeps serving.
    let good = config(
        &upstream.url(),
        1000,
        &key_entry("key_two", &second, "active"),
    );
    replace(
        &file,
        &good.replace(&upstream.url(), "ftp://upstream.example"),
    );
    let logged = eventually(Duration::from_secs(5), || async {
        gw.errors
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("apis[0].upstreams[0]"))
            .cloned()
    })
    .await
    .expect("the problem is logged with its place in the file");
    assert!(logged.contains("not an upstream URL"), "{logged}");
    assert_eq!(status(&client, &url, &second).await, 200);

    // Fixed, with a quota of the calls made so far: the next call is refused.
    let used = u32::try_from(upstream.hits()).unwrap();
    replace(
        &file,
        &config(
            &upstream.url(),
            used,
            &key_entry("key_two", &second, "active"),
        ),
    );
    eventually(Duration::from_secs(5), || async {
        (status(&client, &url, &second).await == 429).then_some(())
    })
    .await
    .expect("the quota from the fixed file applies");
    assert_eq!(gw.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn an_invalid_file_stops_the_gateway_at_start_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    let k = key::generate();
    let text = config("ftp://nowhere", 10, &key_entry("key_one", &k, "active"))
        .replace("apis: [echo]", "apis: [echo, nope]");
    std::fs::write(&file, text).unwrap();
    let out = tollgate()
        .env("TOLLGATE_DATA_DIR", dir.path().join("data"))
        .arg("gateway")
        .arg("--config-file")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml is not a valid Tollgate configuration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  apis[0].upstreams[0]: \"ftp://nowhere\" is not an upstream URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  plans[0].apis[1]: no API with slug \"nope\""),
        "{stderr}"
    );

    let out = tollgate()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(
        &file,
        config(
            "http://127.0.0.1:9",
            10,
            &key_entry("key_one", &k, "active"),
        ),
    )
    .unwrap();
    let out = tollgate()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("is valid: 1 APIs, 1 plans, 1 developers, 1 apps, 1 keys")
    );
}

async fn dump_and_apply_through_the_binary(kind: Db) {
    let db = TestDb::new(kind).await;
    let other = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    let k = key::generate();
    std::fs::write(
        &file,
        config(
            "http://127.0.0.1:9",
            10,
            &key_entry("key_one", &k, "active"),
        ),
    )
    .unwrap();
    let run = |url: &str, args: &[&str]| {
        let mut cmd = tollgate();
        cmd.env("DATABASE_URL", url)
            .env("TOLLGATE_DATA_DIR", dir.path().join("data"))
            .args(args);
        cmd
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let file_arg = file.to_str().unwrap();

    let out = run(&db.url, &["config", "apply", file_arg])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("APIs: 1 created"), "{}", text(&out));
    let out = run(&db.url, &["config", "apply", file_arg])
        .output()
        .await
        .unwrap();
    assert!(
        text(&out).contains("no changes"),
        "applying twice changes nothing: {}",
        text(&out)
    );

    // Dump, then apply the dump to another database: the same configuration.
    let dump = dir.path().join("dump.yaml");
    let out = run(
        &db.url,
        &["config", "dump", "--output", dump.to_str().unwrap()],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dump).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a dump is private to its owner");
    }
    let dumped = Document::parse(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let written = Document::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(dumped.apps[0].keys, written.normalized().apps[0].keys);
    assert_eq!(dumped.apis, written.apis);
    let out = run(&other.url, &["config", "apply", dump.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&other.url, &["config", "dump"]).output().await.unwrap();
    assert_eq!(
        Document::parse(&String::from_utf8(out.stdout).unwrap()).unwrap(),
        dumped
    );

    // A dry run reports without writing; a clash names its place and exits 2.
    let changed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("http://127.0.0.1:9", "http://127.0.0.1:10");
    std::fs::write(&file, &changed).unwrap();
    let out = run(&db.url, &["config", "apply", "--dry-run", file_arg])
        .output()
        .await
        .unwrap();
    assert!(
        text(&out).contains("Dry run") && text(&out).contains("APIs: 0 created, 1 updated"),
        "{}",
        text(&out)
    );
    let out = run(&db.url, &["config", "dump"]).output().await.unwrap();
    let stored = Document::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        stored.apis[0].upstreams,
        ["http://127.0.0.1:9"],
        "a dry run writes nothing"
    );

    let clash = changed.replace("id: api_echo", "id: api_other");
    std::fs::write(&file, clash).unwrap();
    let out = run(&db.url, &["config", "apply", file_arg])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("apis[0].slug: slug \"echo\" is taken by the stored API api_echo"),
        "{}",
        text(&out)
    );
    let out = run(&db.url, &["config", "apply", "--prune", file_arg])
        .output()
        .await
        .unwrap();
    assert!(
        text(&out).contains("APIs: 1 created, 0 updated, 1 deleted"),
        "{}",
        text(&out)
    );

    db.cleanup().await;
    other.cleanup().await;
}

#[tokio::test]
async fn dump_and_apply_on_sqlite() {
    dump_and_apply_through_the_binary(Db::Sqlite).await;
}

#[tokio::test]
async fn dump_and_apply_on_postgres() {
    dump_and_apply_through_the_binary(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbless_gateways_share_quotas_through_redis() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::echo().await;
    let key = key::generate();
    // A subscription id of its own, so the Redis counter is this test's alone.
    let sub = format!("sub_{}", uuid::Uuid::new_v4().simple());
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(
        &file,
        config(&upstream.url(), 20, &key_entry("key_one", &key, "active"))
            .replace("id: sub_ada", &format!("id: {sub}")),
    )
    .unwrap();
    let spawn = |n: usize, counter: &str| {
        let mut cmd = tollgate();
        cmd.env("TOLLGATE_DATA_DIR", dir.path().join(format!("data{n}")))
            .env("TOLLGATE_QUOTA_LEASE_SIZE", "5")
            .env("TOLLGATE_QUOTA_COUNTER", counter)
            .env("TOLLGATE_REDIS_URL", redis_url())
            .arg("gateway")
            .arg("--config-file")
            .arg(&file);
        Process::spawn(cmd)
    };
    let shared = [spawn(1, "redis").await, spawn(2, "redis").await];
    let urls: Vec<String> = shared
        .iter()
        .map(|g| format!("{}/echo/x", g.printed("Gateway:")))
        .collect();
    let client = reqwest::Client::new();
    let mut admitted = 0;
    for i in 0..60 {
        match status(&client, &urls[i % 2], &key).await {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        admitted, 20,
        "two DB-less gateways on one Redis admit the quota once"
    );
    let counters = redis_quota_counters(&sub).await;
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(counters[0].1, 20, "{counters:?}");

    // For contrast: a DB-less gateway on its own database counter admits the
    // quota again.
    let alone = spawn(3, "database").await;
    let url = format!("{}/echo/x", alone.printed("Gateway:"));
    let mut alone_admitted = 0;
    for _ in 0..30 {
        if status(&client, &url, &key).await == 200 {
            alone_admitted += 1;
        }
    }
    assert_eq!(alone_admitted, 20);
    for g in shared.into_iter().chain([alone]) {
        assert_eq!(g.terminate().await.code(), Some(0));
    }
    drop_redis_quota_counters(&sub).await;
}
