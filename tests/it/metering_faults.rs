//! Metering under faults, with real `tollgate` processes on PostgreSQL and
//! ClickHouse: ClickHouse unreachable for a minute, SIGTERM and SIGKILL under
//! load, a full spool, a disk that refuses the spool's writes. ClickHouse is shared by every test, so it is "stopped"
//! by cutting a TCP proxy of this test's own between Tollgate and it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Command;
use tokio::task::JoinHandle;
use tollgate_testkit::proxy::TcpProxy;
use tollgate_testkit::upstream::Upstream;
use tollgate_testkit::{TestClickHouse, TestDb};

use crate::cli::{Process, RemoteAdmin, configured, file_size_limited};
use crate::support::{Stack, test_settings};

/// Calls from a few keep-alive connections, counting the answers received.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// When each answer had been read in full.
    answered_at: Arc<Mutex<Vec<Instant>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// `conns` loops calling `url` with `key`, a short pause between calls.
    /// A loop ends at the first failed call (the gateway has gone) or when stopped.
    fn start(url: String, key: String, conns: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let answered_at = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..conns)
            .map(|_| {
                let (url, key) = (url.clone(), key.clone());
                let (stop, served, failed, answered_at) = (
                    stop.clone(),
                    served.clone(),
                    failed.clone(),
                    answered_at.clone(),
                );
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    while !stop.load(Ordering::SeqCst) {
                        let answer = async {
                            let resp = http.get(&url).header("x-api-key", &key).send().await?;
                            let status = resp.status();
                            // The event is finished when the body has been sent.
                            resp.bytes().await?;
                            Ok::<_, reqwest::Error>(status)
                        };
                        match answer.await {
                            Ok(status) => {
                                assert_eq!(status, 200, "the gateway refused a call");
                                served.fetch_add(1, Ordering::SeqCst);
                                answered_at.lock().unwrap().push(Instant::now());
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            served,
            failed,
            answered_at,
            tasks,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits until `n` more calls have been answered (a minute at most).
    async fn until_more(&self, n: u64) {
        let want = self.served() + n;
        let ok = tollgate_testkit::eventually(Duration::from_secs(60), || async {
            (self.served() >= want).then_some(())
        })
        .await;
        assert!(ok.is_some(), "the load stalled at {} calls", self.served());
    }

    /// Stops and waits for every loop; returns (answered, failed, answer times).
    async fn finish(self) -> (u64, u64, Vec<Instant>) {
        self.stop.store(true, Ordering::SeqCst);
        self.ended().await
    }

    /// Waits for every loop to end by itself (the gateway has gone).
    async fn ended(self) -> (u64, u64, Vec<Instant>) {
        for t in self.tasks {
            t.await.expect("load task");
        }
        let times = self.answered_at.lock().unwrap().clone();
        (
            self.served.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            times,
        )
    }
}

async fn clickhouse_addr() -> SocketAddr {
    let url = tollgate_testkit::clickhouse_url();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    tokio::net::lookup_host(host)
        .await
        .expect("ClickHouse address")
        .next()
        .expect("ClickHouse address")
}

/// Rows in this test's raw usage table.
async fn stored(ch: &TestClickHouse) -> u64 {
    ch.query(&format!("SELECT count() FROM {}.usage_events", ch.database))
        .await
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the raw table holds exactly `n` rows (a minute at most), then
/// checks it stays there.
async fn expect_stored(ch: &TestClickHouse, n: u64, what: &str) {
    let seen = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        (stored(ch).await == n).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "{what}: ClickHouse holds {} events for {n} calls served",
        stored(ch).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored(ch).await, n, "{what}: counted twice");
}

/// One value of the process's `/metrics` (a line starting `name `).
async fn metric(process: &Process, name: &str) -> f64 {
    let text = reqwest::get(process.printed("Metrics:"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// What every test here runs on: its own PostgreSQL and ClickHouse
/// databases, a TCP proxy of its own in front of ClickHouse (to "stop" it),
/// and an echo upstream.
struct Rig {
    settings: tollgate_core::Settings,
    db: TestDb,
    ch: TestClickHouse,
    proxy: TcpProxy,
    upstream: Upstream,
}

impl Rig {
    async fn new() -> Self {
        let (settings, db, ch) = test_settings(Stack::Scaled).await;
        Self {
            settings,
            db,
            ch: ch.expect("the scaled stack has ClickHouse"),
            proxy: TcpProxy::start(clickhouse_addr().await).await,
            upstream: Upstream::echo().await,
        }
    }

    /// A `tollgate up` on this rig whose ClickHouse traffic goes through the
    /// proxy, with `extra` settings.
    fn up(&self, extra: &[(&str, &str)]) -> Command {
        let mut cmd = configured("up", &self.settings, Some(&self.ch));
        cmd.env("CLICKHOUSE_URL", self.proxy.url());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `cmd` and, with `provision`, an API on the echo upstream and a
    /// key for it. Returns the process, the call URL and the key.
    async fn launch(&self, cmd: Command, provision: bool) -> (Process, String, String) {
        let process = Process::spawn(cmd).await;
        let url = format!("{}/metered/call", process.printed("Gateway:"));
        let admin = RemoteAdmin::of(&process);
        let key = if provision {
            let app = admin
                .provision("metered", &self.upstream.url(), json!({}))
                .await;
            admin.key(&app).await
        } else {
            String::new()
        };
        (process, url, key)
    }

    /// [`Self::up`], then [`Self::launch`].
    async fn start(&self, extra: &[(&str, &str)], provision: bool) -> (Process, String, String) {
        self.launch(self.up(extra), provision).await
    }

    async fn cleanup(self) {
        self.db.cleanup().await;
        self.ch.cleanup().await;
    }
}

/// Waits until the gateway accepts `key` (a new key reaches it within a
/// second); returns the calls answered meanwhile (each one metered).
async fn accepted(url: &str, key: &str) -> u64 {
    let http = reqwest::Client::new();
    let answered = AtomicU64::new(0);
    let ok = tollgate_testkit::eventually(Duration::from_secs(5), || async {
        let resp = http.get(url).header("x-api-key", key).send().await.ok()?;
        let status = resp.status();
        resp.bytes().await.ok()?;
        answered.fetch_add(1, Ordering::SeqCst);
        (status == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "the gateway never accepted the new key");
    answered.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_away_for_a_minute_loses_no_call() {
    let rig = Rig::new().await;
    let (process, url, key) = rig.start(&[], true).await;
    let before = accepted(&url, &key).await;

    let load = Load::start(url, key, 4);
    load.until_more(200).await;
    rig.proxy.cut();
    let cut_at = load.served();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let during = load.served() - cut_at;
    // While ClickHouse is away the events wait on disk.
    assert!(metric(&process, "tollgate_usage_spool_bytes").await > 0.0);
    assert!(metric(&process, "tollgate_usage_write_failures_total").await > 0.0);
    assert!(rig.proxy.refused() > 0, "Tollgate never tried ClickHouse");
    rig.proxy.restore();
    load.until_more(200).await;
    let (served, failed, _) = load.finish().await;
    assert_eq!(failed, 0, "calls failed while ClickHouse was away");
    assert!(during > 100, "only {during} calls during the outage");

    expect_stored(&rig.ch, before + served, "after the outage").await;
    assert_eq!(
        metric(
            &process,
            "tollgate_usage_events_dropped_total{reason=\"spool_full\"}"
        )
        .await,
        0.0
    );
    assert!(process.terminate().await.success());
    assert_eq!(
        stored(&rig.ch).await,
        before + served,
        "counted twice at shutdown"
    );
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_counts_every_call() {
    let rig = Rig::new().await;
    // A long flush interval: most events are still in the queue or the spool
    // when the signal comes.
    let (process, url, key) = rig
        .start(&[("TOLLGATE_USAGE_FLUSH_INTERVAL_MS", "600000")], true)
        .await;
    let before = accepted(&url, &key).await;
    let load = Load::start(url, key, 4);
    load.until_more(500).await;
    let status = process.terminate().await;
    assert!(status.success());
    let (served, failed, _) = load.ended().await;
    assert_eq!(failed, 4, "every connection ends when the gateway stops");
    assert_eq!(
        stored(&rig.ch).await,
        before + served,
        "SIGTERM under load lost or doubled calls"
    );
    rig.cleanup().await;
}

/// SIGKILL loses at most what was recorded since the spool's last sync; the
/// restarted process ships the rest, counting nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_at_most_the_last_sync_interval() {
    const SYNC_MS: u64 = 200;
    let rig = Rig::new().await;
    let sync = SYNC_MS.to_string();
    let extra = [
        ("TOLLGATE_USAGE_FLUSH_INTERVAL_MS", "1000"),
        ("TOLLGATE_USAGE_SPOOL_SYNC_INTERVAL_MS", sync.as_str()),
    ];
    let (mut process, url, key) = rig.start(&extra, true).await;
    let before = accepted(&url, &key).await;
    let load = Load::start(url, key, 4);
    load.until_more(1000).await;
    process.child.start_kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    process.child.wait().await.unwrap();
    let (served, failed, times) = load.ended().await;
    assert_eq!(failed, 4);
    let served = before + served;

    // The next start replays the spool.
    let (again, _, _) = rig.start(&extra, false).await;
    let shipped = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        let replayed = metric(&again, "tollgate_usage_spool_replayed_segments_total").await;
        let bytes = metric(&again, "tollgate_usage_spool_bytes").await;
        (replayed > 0.0 && bytes == 0.0).then_some(())
    })
    .await;
    assert!(
        shipped.is_some(),
        "the restarted process did not ship the spool"
    );
    let kept = stored(&rig.ch).await;
    assert!(kept <= served, "{kept} events stored for {served} calls");
    let lost = served - kept;
    // Calls answered in the last sync intervals before the kill: the loss
    // bound, with room for a pass delayed on this shared machine.
    let window = Duration::from_millis(5 * SYNC_MS);
    let recent = times
        .iter()
        .filter(|t| killed_at.duration_since(**t) <= window)
        .count() as u64;
    let per_sync = recent as f64 / 5.0;
    eprintln!(
        "SIGKILL: {served} calls served, {kept} stored, {lost} lost; \
         {per_sync:.0} calls per {SYNC_MS} ms sync interval at the end"
    );
    assert!(
        lost <= recent,
        "lost {lost} calls; only {recent} were answered in the last {window:?}"
    );
    assert!(again.terminate().await.success());
    assert_eq!(
        stored(&rig.ch).await,
        kept,
        "counted twice after the restart"
    );
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_keeps_serving_and_counts_what_it_drops() {
    let rig = Rig::new().await;
    let (process, url, key) = rig
        .start(&[("TOLLGATE_USAGE_SPOOL_MAX_BYTES", "32768")], true)
        .await;
    let before = accepted(&url, &key).await;
    rig.proxy.cut();
    let cut_at = Instant::now();
    let load = Load::start(url, key, 4);
    let dropped = "tollgate_usage_events_dropped_total{reason=\"spool_full\"}";
    let full = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        (metric(&process, dropped).await > 0.0).then_some(())
    })
    .await;
    assert!(full.is_some(), "the spool never filled");
    // Serving goes on with the spool full.
    load.until_more(300).await;
    rig.proxy.restore();
    let (served, failed, _) = load.finish().await;
    assert_eq!(failed, 0, "calls failed with the spool full");
    let dropped_n = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        let d = metric(&process, dropped).await as u64;
        let kept = stored(&rig.ch).await;
        (kept + d == before + served).then_some(d)
    })
    .await;
    assert!(
        dropped_n.is_some(),
        "stored {} + dropped {} != served {}",
        stored(&rig.ch).await,
        metric(&process, dropped).await,
        before + served
    );
    assert!(metric(&process, "tollgate_usage_spool_bytes").await <= 32768.0);
    let logs = process.errors.lock().unwrap().join("\n");
    let warnings = logs.matches("usage spool full").count() as u64;
    let most = 1 + cut_at.elapsed().as_secs() / 10;
    assert!(
        (1..=most).contains(&warnings),
        "{warnings} drop warnings in {:?}, expected one per 10 s: {logs}",
        cut_at.elapsed()
    );
    assert!(process.terminate().await.success());
    rig.cleanup().await;
}

/// The operating system refuses the spool's writes: a file size limit of
/// 16 KiB (RLIMIT_FSIZE, whose EFBIG stands in for a full disk's ENOSPC) with
/// segments sealed only by size (8 MiB), so every segment grows until a write
/// is refused. ClickHouse is away meanwhile, so the segments pile up on disk.
/// Serving goes on; the events of each refused write are dropped and counted,
/// every other one is stored exactly once; the spool writes again after each
/// refusal; the error is logged once per ten seconds, not once per refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_refuses_the_spools_writes_keeps_serving_and_counts_what_it_drops() {
    const LIMIT: u64 = 16 << 10;
    let rig = Rig::new().await;
    // Short passes make small records: a refused write drops few events.
    let extra = [
        ("TOLLGATE_USAGE_FLUSH_INTERVAL_MS", "600000"),
        ("TOLLGATE_USAGE_SPOOL_SYNC_INTERVAL_MS", "20"),
    ];
    let cmd = file_size_limited(rig.up(&extra), LIMIT);
    let (process, url, key) = rig.launch(cmd, true).await;
    let before = accepted(&url, &key).await;
    rig.proxy.cut();
    let cut_at = Instant::now();
    let load = Load::start(url, key, 4);
    let dropped = "tollgate_usage_events_dropped_total{reason=\"spool_error\"}";
    let segments = "tollgate_usage_spool_segments";
    // A segment ends only when a write to it is refused; the next one is
    // written after it: four segments are three refusals, and writing on.
    let piled = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        (metric(&process, segments).await >= 4.0).then_some(())
    })
    .await;
    assert!(
        piled.is_some(),
        "the spool stopped at {} segments; {} events dropped",
        metric(&process, segments).await,
        metric(&process, dropped).await
    );
    assert!(metric(&process, dropped).await > 0.0);
    load.until_more(300).await;
    rig.proxy.restore();
    load.until_more(300).await;
    let (served, failed, _) = load.finish().await;
    assert_eq!(failed, 0, "calls failed while the disk refused writes");
    let served = before + served;

    // Every event is either in the spool or counted as dropped...
    let settled = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        let d = metric(&process, dropped).await as u64;
        let s = metric(&process, "tollgate_usage_events_spooled_total").await as u64;
        (s + d == served).then_some(d)
    })
    .await;
    let dropped_n = settled.unwrap_or_else(|| {
        panic!("{served} calls served, but the spool neither holds nor counts some")
    });
    assert!(
        dropped_n < served / 2,
        "{dropped_n} of {served} events dropped"
    );
    // ...and the segments sealed by a refused write ship once ClickHouse is
    // back, without waiting for a restart (the one being written stays).
    let shipped = tollgate_testkit::eventually(Duration::from_secs(60), || async {
        (metric(&process, segments).await <= 1.0).then_some(())
    })
    .await;
    assert!(
        shipped.is_some(),
        "segments sealed by a refused write were not shipped"
    );
    // A refused write leaves no torn record behind: nothing reads as corrupt.
    assert_eq!(
        metric(&process, "tollgate_usage_spool_corrupt_tails_total").await,
        0.0
    );
    for reason in ["queue_full", "spool_full"] {
        let name = format!("tollgate_usage_events_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&process, &name).await, 0.0, "{name}");
    }
    let logs = process.errors.lock().unwrap().join("\n");
    let errors = logs.matches("File too large").count() as u64;
    let most = 1 + cut_at.elapsed().as_secs() / 10;
    eprintln!(
        "disk refusing writes: {served} calls served, {dropped_n} events dropped, \
         {errors} error lines in {:?}",
        cut_at.elapsed()
    );
    assert!(
        (1..=most).contains(&errors),
        "{errors} disk error lines in {:?}, expected one per 10 s: {logs}",
        cut_at.elapsed()
    );
    assert!(
        logs.contains("cannot write the usage spool"),
        "the refused write is not logged: {logs}"
    );
    // Shutdown ships the segment being written: stored + dropped = served.
    assert!(process.terminate().await.success());
    assert_eq!(
        stored(&rig.ch).await + dropped_n,
        served,
        "stored + dropped != served ({dropped_n} dropped)"
    );
    rig.cleanup().await;
}
