//! The embedded usage store: a SQLite file for single-node use.
//!
//! Raw events are kept as blocks (`usage_event_blocks`, migration
//! `0006_event_blocks.sql`): one row per record of the spool's encoding
//! ([`crate::record`]), so a batch from the spool is stored as the records the
//! spool wrote, without a row or an index entry per event. The rollups are
//! SQLite tables, folded from the blocks not yet in them. Queries the rollups
//! cannot answer read the blocks whose time span meets their range and decode
//! them here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments, AssertSqlSafe, Row, Sqlite};
use uuid::Uuid;

use crate::error::UsageError;
use crate::event::{Text, UsageEvent};
use crate::latency::LatencyHistogram;
use crate::query::{
    ApiUsage, Bucket, BucketRow, LatencyMs, SummaryQuery, TimeSeries, TimeSeriesQuery, TopList,
    TopQuery, UsageFilter, UsageSummary,
};
use crate::record::{self, DecodeError, EventFields, SpooledRecord, encode_records, field};
use crate::rollup::{self, FilterValue, ROLLUPS, Source};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/embedded-usage");

/// Usage events in a SQLite file.
#[derive(Clone, Debug)]
pub struct EmbeddedStore {
    pool: SqlitePool,
    path: PathBuf,
}

/// The start of the name of the store's SQLite worker threads (at most 15
/// bytes of a thread's name are kept).
const WORKER_NAME: &str = "usage-sqlite-";

/// Most rows per multi-row statement of the rollups' writes (well under
/// SQLite's bind limit of 32,766). A power of two: see [`statement_rows`].
const ROWS_PER_STATEMENT: usize = 512;

/// Statement sizes for `n` rows: full statements, then the rest as powers of
/// two. So only ten distinct statements exist per rollup; each is prepared
/// once per connection and then taken from sqlx's statement cache, instead of
/// a new statement (parsed and planned for thousands of placeholders) per
/// batch.
fn statement_rows(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let rows = if n >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else if n > 0 {
            1 << n.ilog2()
        } else {
            return None;
        };
        n -= rows;
        Some(rows)
    })
}

/// A stored record that does not decode: the store's file was damaged or
/// written by a newer Tollgate.
fn corrupt(e: DecodeError) -> UsageError {
    UsageError::Sqlite(sqlx::Error::Decode(Box::new(e)))
}

impl EmbeddedStore {
    /// Opens (creating when missing) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, UsageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // Queries scan many events: a 64 MiB page cache and memory-mapped
            // reads instead of SQLite's 2 MB cache and a read call per page.
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "268435456")
            // Named so their priority can be lowered (crate::priority).
            .thread_name(|n| format!("{WORKER_NAME}{n}"));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // The connection's worker thread is running by now.
            .after_connect(|_, _| {
                Box::pin(async {
                    crate::priority::lower_threads_named(WORKER_NAME);
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            path: path.to_path_buf(),
        })
    }

    /// The file the events live in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the schema, and moves the events of a store written by an
    /// earlier version into blocks.
    pub async fn migrate(&self) -> Result<(), UsageError> {
        // sqlx takes no lock around SQLite migrations: processes starting
        // together on one file take turns through a lock on a file beside it
        // (released when `lock` is dropped).
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".migrate-lock");
        let lock_path = self.path.with_file_name(name);
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        MIGRATIONS.run(&self.pool).await?;
        let converted = self.convert_legacy().await;
        drop(lock);
        converted
    }

    /// Starts a transaction holding the write lock (`BEGIN IMMEDIATE`), so
    /// that what it reads stays true until it commits (another process's
    /// write waits for it).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, UsageError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Events of the tables before 0006 (the view `usage_events`), in
    /// (time, id) order after `after`, at most `limit`.
    async fn legacy_events(
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        after: &(i64, Vec<u8>),
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, UsageEvent)>, UsageError> {
        let rows = sqlx::query(
            "SELECT * FROM usage_events WHERE (timestamp_ms, id) > (?1, ?2) \
             ORDER BY timestamp_ms, id LIMIT ?3",
        )
        .bind(after.0)
        .bind(after.1.as_slice())
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| -> Result<(Vec<u8>, UsageEvent), sqlx::Error> {
                let text = |c: &str| r.try_get::<String, _>(c).map(Text::from);
                let number = |c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0));
                let id: Vec<u8> = r.try_get("id")?;
                let mut e = UsageEvent::new(number("timestamp_ms")? as u64);
                e.id = Uuid::from_slice(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                e.node = text("node")?;
                e.api_id = text("api_id")?;
                e.api_slug = text("api_slug")?;
                e.route = text("route")?;
                e.method = text("method")?;
                e.status = number("status")?.min(999) as u16;
                e.latency_us = number("latency_us")?.min(i64::from(u32::MAX)) as u32;
                e.upstream_latency_us =
                    number("upstream_latency_us")?.min(i64::from(u32::MAX)) as u32;
                e.bytes_in = number("bytes_in")? as u64;
                e.bytes_out = number("bytes_out")? as u64;
                e.app_id = text("app_id")?;
                e.key_prefix = text("key_prefix")?;
                e.developer_id = text("developer_id")?;
                e.plan_id = text("plan_id")?;
                e.subscription_id = text("subscription_id")?;
                e.client_ip = text("client_ip")?;
                e.error_code = text("error_code")?;
                e.overage = number("overage")? != 0;
                Ok((id, e))
            })
            .collect::<Result<_, _>>()
            .map_err(UsageError::from)
    }

    /// Rolls up the events stored before the rollups existed (0003), when
    /// the migration's marker says so.
    async fn backfill_rollups(tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), UsageError> {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_rollup_backfill")
            .fetch_one(&mut **tx)
            .await?;
        if pending == 0 {
            return Ok(());
        }
        let mut after = (i64::MIN, Vec::<u8>::new());
        loop {
            let rows = Self::legacy_events(tx, &after, 50_000).await?;
            let Some((id, last)) = rows.last() else { break };
            after = (last.timestamp_ms as i64, id.clone());
            let events: Vec<UsageEvent> = rows.into_iter().map(|(_, e)| e).collect();
            write_rollups(tx, &events).await?;
        }
        Ok(())
    }

    /// Moves the events of the tables before 0006 into blocks, all already
    /// in the rollups (those stored before the rollups existed are rolled up,
    /// the ones still queued for them folded, first), and drops those
    /// tables: once, in one transaction holding the write lock, so a second
    /// process starting at the same time finds the work done.
    async fn convert_legacy(&self) -> Result<(), UsageError> {
        let mut tx = self.begin_write().await?;
        let legacy: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_event_rows'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if legacy.is_none() {
            return Ok(());
        }
        Self::backfill_rollups(&mut tx).await?;
        let queued: Vec<Vec<u8>> =
            sqlx::query_scalar("DELETE FROM usage_rollup_pending RETURNING record")
                .fetch_all(&mut *tx)
                .await?;
        let mut sums = RollupSums::default();
        for record in &queued {
            sums.add_record(record).map_err(corrupt)?;
        }
        sums.write(&mut tx).await?;
        let legacy: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_event_rows")
            .fetch_one(&mut *tx)
            .await?;
        if legacy > 0 {
            tracing::info!(
                events = legacy,
                "embedded usage store: moving events to the block format (once, at upgrade)"
            );
        }
        let mut after = (i64::MIN, Vec::<u8>::new());
        let mut moved = 0;
        loop {
            let rows = Self::legacy_events(&mut tx, &after, 50_000).await?;
            let Some((id, last)) = rows.last() else { break };
            after = (last.timestamp_ms as i64, id.clone());
            let events: Vec<UsageEvent> = rows.into_iter().map(|(_, e)| e).collect();
            append(&mut tx, &encode_records(&events)).await?;
            moved += events.len();
        }
        sqlx::query(
            "UPDATE usage_fold_state SET folded_seq = \
             (SELECT COALESCE(MAX(seq), 0) FROM usage_event_blocks)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::raw_sql(
            "DROP VIEW usage_events; DROP TABLE usage_event_rows; DROP TABLE usage_routes; \
             DROP TABLE usage_customers; DROP TABLE usage_rollup_pending; \
             DROP TABLE usage_rollup_backfill;",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if moved > 0 {
            tracing::info!(
                events = moved,
                "embedded usage store: events moved to the block format"
            );
        }
        Ok(())
    }

    /// Writes a batch, without counting any event twice: events already
    /// stored (same id) and repeats within the batch are left out. Returns
    /// how many events were new.
    pub async fn insert(&self, events: &[UsageEvent]) -> Result<usize, UsageError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let new = unseen(&mut tx, events).await?;
        append(&mut tx, &encode_records(&new)).await?;
        tx.commit().await?;
        self.fold_if_due().await?;
        Ok(new.len())
    }

    /// Writes whole spool records, each as a block as it is; returns how
    /// many events were new.
    ///
    /// Without `may_be_stored` the records are known to be new (the
    /// shipper's first attempt at a segment it has not sent before) and are
    /// stored without decoding them. With it, they are decoded and written as
    /// by [`Self::insert`] — still as they are when none of their events was
    /// stored.
    pub async fn insert_records(
        &self,
        records: &[SpooledRecord],
        may_be_stored: bool,
    ) -> Result<usize, UsageError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let inserted = if may_be_stored {
            let mut events = Vec::new();
            for r in records {
                record::decode(&r.bytes, &mut events).map_err(corrupt)?;
            }
            let new = unseen(&mut tx, &events).await?;
            if new.len() == events.len() {
                append(&mut tx, records).await?;
            } else {
                append(&mut tx, &encode_records(&new)).await?;
            }
            new.len()
        } else {
            append(&mut tx, records).await?;
            records.iter().map(|r| r.events).sum()
        };
        tx.commit().await?;
        self.fold_if_due().await?;
        Ok(inserted)
    }

    /// Folds the blocks not yet in the rollups once they hold about a minute
    /// of traffic at 10,000 calls/s, or the oldest waited a minute.
    async fn fold_if_due(&self) -> Result<(), UsageError> {
        let (events, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COALESCE(SUM(events), 0), MIN(written_ms) FROM usage_event_blocks \
             WHERE seq > (SELECT folded_seq FROM usage_fold_state)",
        )
        .fetch_one(&self.pool)
        .await?;
        let waited = oldest.is_some_and(|t| now_ms() - t >= FOLD_AFTER_MS);
        if events >= FOLD_EVENTS || waited {
            self.fold_off_runtime().await?;
        }
        Ok(())
    }

    /// Folds every block not yet in the rollups, in one transaction, on a
    /// thread of its own at the background priority (crate::priority). A
    /// fold reads every event it adds (about a thousand instructions each:
    /// tens of milliseconds for a minute of traffic at 10,000 calls/s); on a
    /// runtime worker it would hold up the calls that worker serves.
    async fn fold_off_runtime(&self) -> Result<(), UsageError> {
        let store = self.clone();
        let runtime = tokio::runtime::Handle::current();
        crate::priority::run_in_background("usage-fold", move || {
            runtime.block_on(async move {
                let mut tx = store.begin_write().await?;
                fold_in(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await?
    }

    /// Adds every block not yet in the rollups to them, in one transaction
    /// (which holds the write lock from its start, so two processes never
    /// fold the same blocks). Every rollup row the blocks touch is written
    /// once.
    pub async fn fold(&self) -> Result<(), UsageError> {
        let queued: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM usage_event_blocks \
             WHERE seq > (SELECT folded_seq FROM usage_fold_state) LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if queued.is_none() {
            return Ok(());
        }
        self.fold_off_runtime().await
    }

    /// Every stored event from `from_ms` (inclusive) to `to_ms` (exclusive),
    /// oldest first (ties by id), all in memory: for tests and exports of a
    /// bounded range.
    pub async fn events(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageEvent>, UsageError> {
        let mut out = Vec::new();
        self.scan(from_ms, to_ms, &UsageFilter::default(), |texts, e| {
            out.push(e.event(texts));
        })
        .await?;
        out.sort_by_key(|e| (e.timestamp_ms, e.id));
        Ok(out)
    }

    /// Calls `each` with every stored event from `from_ms` (inclusive) to
    /// `to_ms` (exclusive) that `f` keeps, and the texts of its record.
    async fn scan(
        &self,
        from_ms: i64,
        to_ms: i64,
        f: &UsageFilter,
        mut each: impl FnMut(&[Text], &EventFields),
    ) -> Result<(), UsageError> {
        let keeps = RawFilter::new(f);
        let mut conn = self.pool.acquire().await?;
        each_stored_event(&mut conn, from_ms, to_ms, |texts, e| {
            if keeps.keeps(texts, e) {
                each(texts, e);
            }
        })
        .await
    }

    /// Totals with exact nearest-rank latency percentiles per API, from the
    /// raw events.
    pub async fn summary(&self, q: &SummaryQuery) -> Result<UsageSummary, UsageError> {
        #[derive(Default)]
        struct Api {
            /// Calls per distinct latency (µs): exact, and bounded by the
            /// distinct latencies rather than the calls.
            latencies: rustc_hash::FxHashMap<u32, u64>,
            calls: u64,
            errors: u64,
            overage: u64,
        }
        let filter = UsageFilter {
            api: q.api.clone(),
            ..UsageFilter::default()
        };
        let mut apis: HashMap<Text, Api> = HashMap::new();
        let mut classes: BTreeMap<u16, u64> = BTreeMap::new();
        self.scan(q.from_ms, q.to_ms, &filter, |texts, e| {
            let slug = &texts[e.texts[field::API_SLUG] as usize];
            let api = match apis.get_mut(slug) {
                Some(api) => api,
                None => apis.entry(slug.clone()).or_default(),
            };
            *api.latencies.entry(e.latency_us).or_default() += 1;
            api.calls += 1;
            api.errors += u64::from(e.status >= 400);
            api.overage += u64::from(e.overage);
            *classes.entry(e.status / 100).or_default() += 1;
        })
        .await?;
        let ms = |us: u32| f64::from(us) / 1000.0;
        let mut by_api: Vec<ApiUsage> = apis
            .into_iter()
            .map(|(slug, api)| {
                let mut latencies: Vec<(u32, u64)> = api.latencies.into_iter().collect();
                latencies.sort_unstable();
                let n = api.calls;
                // Nearest rank: the p-th percentile is the smallest value
                // whose rank r (1-based, by latency) satisfies r >= p * n.
                let rank = |p: u64| {
                    let r = (n * p).div_ceil(100).max(1);
                    let mut below = 0;
                    let at = latencies.iter().find(|(_, calls)| {
                        below += calls;
                        below >= r
                    });
                    ms(at.map_or(0, |(us, _)| *us))
                };
                ApiUsage {
                    api: Some(slug.to_string()).filter(|s| !s.is_empty()),
                    calls: n,
                    errors: api.errors,
                    overage_calls: api.overage,
                    latency_ms: LatencyMs {
                        p50: rank(50),
                        p95: rank(95),
                        p99: rank(99),
                    },
                }
            })
            .collect();
        by_api.sort_by(|a, b| {
            (b.calls, a.api.as_deref().unwrap_or(""))
                .cmp(&(a.calls, b.api.as_deref().unwrap_or("")))
        });
        Ok(UsageSummary::assemble(
            q,
            by_api,
            classes.into_iter().collect(),
        ))
    }
}

/// A filter over raw events, as [`rollup::conditions`] and
/// [`rollup::QUOTA_COUNTED`] put it for SQL.
struct RawFilter<'a> {
    /// (field of [`record::field`], the text it must hold)
    texts: Vec<(usize, &'a str)>,
    class: Option<u8>,
    quota_counted: bool,
}

impl<'a> RawFilter<'a> {
    fn new(f: &'a UsageFilter) -> Self {
        let mut filter = RawFilter {
            texts: Vec::new(),
            class: None,
            quota_counted: f.quota_counted,
        };
        for (column, value) in rollup::conditions(f, "status_class") {
            match value {
                FilterValue::Text(v) => filter.texts.push((field_of(column), v)),
                FilterValue::Class(c) => filter.class = Some(c),
            }
        }
        filter
    }

    fn keeps(&self, texts: &[Text], e: &EventFields) -> bool {
        let text = |field: usize| &*texts[e.texts[field] as usize];
        self.texts.iter().all(|&(field, v)| text(field) == v)
            && self.class.is_none_or(|c| e.status / 100 == u16::from(c))
            && !(self.quota_counted && rollup::QUOTA_REFUSALS.contains(&text(field::ERROR_CODE)))
    }
}

/// The record field of a raw events' column.
fn field_of(column: &str) -> usize {
    match column {
        "api_slug" => field::API_SLUG,
        "route" => field::ROUTE,
        "app_id" => field::APP_ID,
        "developer_id" => field::DEVELOPER_ID,
        "plan_id" => field::PLAN_ID,
        "subscription_id" => field::SUBSCRIPTION_ID,
        "key_prefix" => field::KEY_PREFIX,
        other => unreachable!("no raw events' column {other}"),
    }
}

/// Stores each record as a block.
async fn append(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    records: &[SpooledRecord],
) -> Result<(), UsageError> {
    let now = now_ms();
    for r in records {
        sqlx::query(
            "INSERT INTO usage_event_blocks (first_ms, last_ms, events, written_ms, record) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(r.first_ms as i64)
        .bind(r.last_ms as i64)
        .bind(r.events as i64)
        .bind(now)
        .bind(r.bytes.as_slice())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Calls `each` with every stored event from `from_ms` (inclusive) to
/// `to_ms` (exclusive) and the texts of its record, reading the blocks whose
/// span meets the range.
async fn each_stored_event(
    conn: &mut sqlx::SqliteConnection,
    from_ms: i64,
    to_ms: i64,
    mut each: impl FnMut(&[Text], &EventFields),
) -> Result<(), UsageError> {
    let mut rows =
        sqlx::query("SELECT record FROM usage_event_blocks WHERE last_ms >= ?1 AND first_ms < ?2")
            .bind(from_ms)
            .bind(to_ms)
            .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        record::for_each_event(row.try_get(0)?, |texts, e| {
            if (from_ms..to_ms).contains(&(e.timestamp_ms as i64)) {
                each(texts, e);
            }
        })
        .map_err(corrupt)?;
    }
    Ok(())
}

/// The events of the batch that are not stored yet, each once: the ids of
/// the stored events in the batch's time span are read from the blocks that
/// meet it (an event keeps its time, so a stored copy is in one of them).
async fn unseen(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    events: &[UsageEvent],
) -> Result<Vec<UsageEvent>, UsageError> {
    let times = events.iter().map(|e| e.timestamp_ms as i64);
    let (from, to) = (times.clone().min().unwrap_or(0), times.max().unwrap_or(0));
    let mut stored = HashSet::new();
    each_stored_event(tx, from, to.saturating_add(1), |_, e| {
        stored.insert(e.id);
    })
    .await?;
    Ok(events
        .iter()
        .filter(|e| stored.insert(e.id))
        .cloned()
        .collect())
}

/// Blocks of fewer events than this are merged when folded. The spool
/// writes a record per sync interval (200 ms), so below about 320 calls/s its
/// records are small, and a query over a long range would read a row and a
/// table of texts for every few events.
const SMALL_BLOCK: i64 = 64;

/// Adds the blocks not yet in the rollups to them and marks them folded,
/// within `tx` (which holds the write lock). Small ones among them are
/// merged: their events, in time order, become blocks of up to a record's
/// size, marked folded too.
async fn fold_in(tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), UsageError> {
    let folded: i64 = sqlx::query_scalar("SELECT folded_seq FROM usage_fold_state")
        .fetch_one(&mut **tx)
        .await?;
    let mut sums = RollupSums::default();
    let mut last = folded;
    let mut small: Vec<i64> = Vec::new();
    let mut merged = Vec::new();
    let mut rows = sqlx::query(
        "SELECT seq, events, record FROM usage_event_blocks WHERE seq > ?1 ORDER BY seq",
    )
    .bind(folded)
    .fetch(&mut **tx);
    while let Some(row) = rows.try_next().await? {
        last = row.try_get(0)?;
        let record: &[u8] = row.try_get(2)?;
        sums.add_record(record).map_err(corrupt)?;
        if row.try_get::<i64, _>(1)? < SMALL_BLOCK {
            small.push(last);
            record::decode(record, &mut merged).map_err(corrupt)?;
        }
    }
    drop(rows);
    if last == folded {
        return Ok(());
    }
    sums.write(tx).await?;
    if small.len() > 1 {
        for seq in small {
            sqlx::query("DELETE FROM usage_event_blocks WHERE seq = ?1")
                .bind(seq)
                .execute(&mut **tx)
                .await?;
        }
        merged.sort_by_key(|e| (e.timestamp_ms, e.id));
        append(tx, &encode_records(&merged)).await?;
        last = sqlx::query_scalar("SELECT MAX(seq) FROM usage_event_blocks")
            .fetch_one(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE usage_fold_state SET folded_seq = ?1")
        .bind(last)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl EmbeddedStore {
    /// A time series from the smallest rollup that holds the bucket and the
    /// filter (see [`crate::rollup`]), or the raw events.
    pub async fn time_series(&self, q: &TimeSeriesQuery) -> Result<TimeSeries, UsageError> {
        self.fold().await?;
        let f = &q.filter;
        let mut buckets: BTreeMap<i64, BucketRow> = BTreeMap::new();
        match rollup::series_source(q.bucket, f) {
            Source::Rollup(r) => {
                let mut sql = format!(
                    "SELECT t, calls, errors, client_errors, bytes_in, bytes_out, latency \
                     FROM {} WHERE t >= ? AND t < ?",
                    r.table
                );
                push_filter(&mut sql, f, "status_class");
                let query = bind_filter(
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(q.from_ms)
                        .bind(q.to_ms),
                    f,
                );
                for row in query.fetch_all(&self.pool).await? {
                    let mut latency = LatencyHistogram::default();
                    latency
                        .merge_json(row.try_get("latency")?)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                    buckets
                        .entry(row.try_get("t")?)
                        .or_default()
                        .merge(&BucketRow {
                            latency,
                            ..counts(
                                &row,
                                ["calls", "errors", "client_errors", "bytes_in", "bytes_out"],
                            )?
                        });
                }
            }
            Source::Raw => {
                let width = q.bucket.millis();
                self.scan(q.from_ms, q.to_ms, f, |_, e| {
                    let t = (e.timestamp_ms as i64).div_euclid(width) * width;
                    let b = buckets.entry(t).or_default();
                    b.calls += 1;
                    b.errors += u64::from(e.status >= 500);
                    b.client_errors += u64::from((400..500).contains(&e.status));
                    b.bytes_in += e.bytes_in;
                    b.bytes_out += e.bytes_out;
                    b.latency.record(e.latency_us);
                })
                .await?;
            }
        }
        Ok(TimeSeries::fill(q, buckets))
    }
}

/// The five counts of a row, by column name.
fn counts(row: &SqliteRow, columns: [&str; 5]) -> Result<BucketRow, sqlx::Error> {
    let count = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
    Ok(BucketRow {
        calls: count(columns[0])?,
        errors: count(columns[1])?,
        client_errors: count(columns[2])?,
        bytes_in: count(columns[3])?,
        bytes_out: count(columns[4])?,
        latency: LatencyHistogram::default(),
    })
}

/// Appends the filter's conditions on a rollup (fixed text; values bound by
/// [`bind_filter`]).
fn push_filter(sql: &mut String, f: &UsageFilter, status_class: &'static str) {
    for (column, _) in rollup::conditions(f, status_class) {
        sql.push_str(" AND ");
        sql.push_str(column);
        sql.push_str(" = ?");
    }
}

/// Binds the values of the conditions [`push_filter`] wrote.
fn bind_filter<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    f: &'q UsageFilter,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    for (_, value) in rollup::conditions(f, "") {
        query = match value {
            FilterValue::Text(v) => query.bind(v),
            FilterValue::Class(c) => query.bind(i64::from(c)),
        };
    }
    query
}

/// One entry of a top list being summed: calls, errors, client errors,
/// bytes out.
type TopSums = [u64; 4];

impl EmbeddedStore {
    /// The busiest APIs, routes, apps, developers, plans or status classes:
    /// whole days from a day rollup, ragged hours from an hour rollup (see
    /// [`crate::rollup::top_pieces`]), or the raw events.
    pub async fn top(&self, q: &TopQuery) -> Result<TopList, UsageError> {
        self.fold().await?;
        let f = &q.filter;
        let mut sums: HashMap<String, TopSums> = HashMap::new();
        for p in rollup::top_pieces(q.from_ms, q.to_ms, q.dimension, f) {
            match p.source {
                Source::Rollup(r) => {
                    // Fixed SQL fragments only (the column is chosen by the
                    // dimension); every value is bound.
                    let mut sql = format!(
                        "SELECT CAST({} AS TEXT) AS key, SUM(calls) AS n, SUM(errors) AS e, \
                         SUM(client_errors) AS ce, SUM(bytes_out) AS bo \
                         FROM {} WHERE t >= ? AND t < ?",
                        q.dimension.column().unwrap_or("status_class"),
                        r.table
                    );
                    push_filter(&mut sql, f, "status_class");
                    sql.push_str(" GROUP BY key");
                    let query = bind_filter(
                        sqlx::query(AssertSqlSafe(sql))
                            .bind(p.from_ms)
                            .bind(p.to_ms),
                        f,
                    );
                    for row in query.fetch_all(&self.pool).await? {
                        let c = counts(&row, ["n", "e", "ce", "n", "bo"])?;
                        let key = row.try_get::<Option<String>, _>("key")?.unwrap_or_default();
                        let s = sums.entry(key).or_default();
                        for (s, n) in
                            s.iter_mut()
                                .zip([c.calls, c.errors, c.client_errors, c.bytes_out])
                        {
                            *s += n;
                        }
                    }
                }
                Source::Raw => {
                    let column = q.dimension.column().map(field_of);
                    self.scan(p.from_ms, p.to_ms, f, |texts, e| {
                        let s = match column {
                            Some(field) => {
                                let key = &*texts[e.texts[field] as usize];
                                match sums.get_mut(key) {
                                    Some(s) => s,
                                    None => sums.entry(key.to_owned()).or_default(),
                                }
                            }
                            None => sums.entry((e.status / 100).to_string()).or_default(),
                        };
                        s[0] += 1;
                        s[1] += u64::from(e.status >= 500);
                        s[2] += u64::from((400..500).contains(&e.status));
                        s[3] += e.bytes_out;
                    })
                    .await?;
                }
            }
        }
        let mut rows: Vec<(String, TopSums)> = sums.into_iter().collect();
        rows.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(q.limit as usize);
        Ok(TopList::assemble(
            q.dimension,
            rows.into_iter()
                .map(|(key, [calls, errors, client_errors, bytes_out])| {
                    (key, calls, errors, client_errors, bytes_out)
                }),
        ))
    }
}

impl EmbeddedStore {
    /// Deletes raw events older than `cutoff_ms`; returns how many. Blocks
    /// not yet in the rollups are folded first, in the same transaction, so
    /// no deleted event is missing from them. A block with events on both
    /// sides of the cutoff is written again with the newer ones.
    pub async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, UsageError> {
        let mut tx = self.begin_write().await?;
        fold_in(&mut tx).await?;
        let whole: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM usage_event_blocks WHERE last_ms < ?1 RETURNING events",
        )
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = whole.iter().map(|&n| n.max(0) as u64).sum::<u64>();
        let split: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, record FROM usage_event_blocks WHERE last_ms >= ?1 AND first_ms < ?1",
        )
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await?;
        for (seq, bytes) in split {
            let mut events = Vec::new();
            record::decode(&bytes, &mut events).map_err(corrupt)?;
            let before = events.len();
            events.retain(|e| e.timestamp_ms as i64 >= cutoff_ms);
            deleted += (before - events.len()) as u64;
            // A subset of a record's events encodes as one record; should
            // it not, the rest become blocks of their own, marked folded
            // below like the one they came from.
            let blocks = encode_records(&events);
            let Some((block, rest)) = blocks.split_first() else {
                sqlx::query("DELETE FROM usage_event_blocks WHERE seq = ?1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                continue;
            };
            sqlx::query(
                "UPDATE usage_event_blocks SET first_ms = ?1, last_ms = ?2, events = ?3, \
                 record = ?4 WHERE seq = ?5",
            )
            .bind(block.first_ms as i64)
            .bind(block.last_ms as i64)
            .bind(block.events as i64)
            .bind(block.bytes.as_slice())
            .bind(seq)
            .execute(&mut *tx)
            .await?;
            if !rest.is_empty() {
                append(&mut tx, rest).await?;
                // Every block is in the rollups: `fold_in` ran in this
                // transaction, which holds the write lock.
                sqlx::query(
                    "UPDATE usage_fold_state SET folded_seq = (SELECT MAX(seq) FROM usage_event_blocks)",
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes the rollup rows whose bucket ends at or before `cutoff_ms`;
    /// returns how many.
    pub async fn delete_rollups_before(&self, cutoff_ms: i64) -> Result<u64, UsageError> {
        // Blocks not folded yet first, so none is folded into a bucket after
        // it went.
        let mut tx = self.begin_write().await?;
        fold_in(&mut tx).await?;
        let mut deleted = 0;
        for r in ROLLUPS {
            // The table name comes from the fixed list of rollups.
            let done = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {} WHERE t <= ?1",
                r.table
            )))
            .bind(cutoff_ms - r.grain.millis())
            .execute(&mut *tx)
            .await?;
            deleted += done.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

/// A rollup row's key: bucket start (ms), texts in the shape's column order,
/// status class.
type RollupKey = (i64, Vec<Text>, u8);

/// A rollup row's numbers.
#[derive(Default)]
struct RollupRow {
    counts: BucketRow,
    overage_calls: u64,
}

/// The position of a rollup key column in the order `api_slug`, `route`,
/// `app_id`, `developer_id`, `plan_id`, `subscription_id`.
fn key_position(column: &str) -> usize {
    match column {
        "api_slug" => 0,
        "route" => 1,
        "app_id" => 2,
        "developer_id" => 3,
        "plan_id" => 4,
        _ => 5,
    }
}

/// The text an event holds for a rollup key column.
fn key_text<'e>(e: &'e UsageEvent, column: &str) -> &'e Text {
    match column {
        "api_slug" => &e.api_slug,
        "route" => &e.route,
        "app_id" => &e.app_id,
        "developer_id" => &e.developer_id,
        "plan_id" => &e.plan_id,
        _ => &e.subscription_id,
    }
}

/// Queued events are folded into the rollups once this many are waiting
/// (a minute at 10,000 calls/s)...
const FOLD_EVENTS: i64 = 600_000;
/// ...or once the oldest has waited this long (ms).
const FOLD_AFTER_MS: i64 = 60_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Adds the events to every rollup (used by the backfill).
async fn write_rollups(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    events: &[UsageEvent],
) -> Result<(), UsageError> {
    let mut sums = RollupSums::default();
    sums.add(events);
    sums.write(tx).await
}

/// Events summed per minute, status class and the identity `K` of the texts
/// the rollups are keyed by (addresses or indexes: numbers only, nothing
/// allocated per event), each group with the position of its first event.
struct Groups<K>(rustc_hash::FxHashMap<(i64, K, u8), (usize, RollupRow)>);

impl<K> Default for Groups<K> {
    fn default() -> Self {
        Self(rustc_hash::FxHashMap::default())
    }
}

impl<K: std::hash::Hash + Eq> Groups<K> {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        at: usize,
        texts: K,
        timestamp_ms: u64,
        status: u16,
        latency_us: u32,
        bytes_in: u64,
        bytes_out: u64,
        overage: bool,
    ) {
        let minute = Bucket::Minute.millis();
        let t = (timestamp_ms as i64).div_euclid(minute) * minute;
        let (_, row) = self
            .0
            .entry((t, texts, (status / 100) as u8))
            .or_insert_with(|| (at, RollupRow::default()));
        row.counts.calls += 1;
        row.counts.errors += u64::from(status >= 500);
        row.counts.client_errors += u64::from((400..500).contains(&status));
        row.counts.bytes_in += bytes_in;
        row.counts.bytes_out += bytes_out;
        row.counts.latency.record(latency_us);
        row.overage_calls += u64::from(overage);
    }
}

/// Events summed per rollup table and key in memory, to be written with a few
/// multi-row upserts per table.
#[derive(Default)]
struct RollupSums {
    tables: [HashMap<RollupKey, RollupRow>; ROLLUPS.len()],
}

impl RollupSums {
    /// Adds the events to the sums of every table.
    fn add(&mut self, events: &[UsageEvent]) {
        // Events decoded from one spool record share their texts: they are
        // grouped by the addresses of the texts the rollups are keyed by
        // (nothing hashed but numbers). The events are borrowed meanwhile, so
        // no address is reused by other texts.
        let mut groups = Groups::default();
        for (i, e) in events.iter().enumerate() {
            let texts = [
                &e.api_slug,
                &e.route,
                &e.app_id,
                &e.developer_id,
                &e.plan_id,
                &e.subscription_id,
            ]
            .map(|t| Arc::as_ptr(t).cast::<u8>() as usize);
            groups.add(
                i,
                texts,
                e.timestamp_ms,
                e.status,
                e.latency_us,
                e.bytes_in,
                e.bytes_out,
                e.overage,
            );
        }
        self.add_groups(groups, |_, first, column| {
            key_text(&events[first], column).clone()
        });
    }

    /// Adds the events of a spool record (see [`crate::record`]) to the sums
    /// of every table, read straight from the record: grouped by the indexes
    /// of the keyed texts in the record's table of texts, no event built.
    fn add_record(&mut self, record: &[u8]) -> Result<(), crate::record::DecodeError> {
        use crate::record::field;
        // In the order of `key_position`.
        const KEYED: [usize; 6] = [
            field::API_SLUG,
            field::ROUTE,
            field::APP_ID,
            field::DEVELOPER_ID,
            field::PLAN_ID,
            field::SUBSCRIPTION_ID,
        ];
        let mut groups = Groups::default();
        let mut i = 0;
        let texts = crate::record::for_each_event(record, |_, f| {
            groups.add(
                i,
                KEYED.map(|k| f.texts[k]),
                f.timestamp_ms,
                f.status,
                f.latency_us,
                f.bytes_in,
                f.bytes_out,
                f.overage,
            );
            i += 1;
        })?;
        self.add_groups(groups, |k, _, column| {
            texts[k[key_position(column)] as usize].clone()
        });
        Ok(())
    }

    /// Adds summed groups to every table, each under the texts
    /// `key_text(group key, first event of the group, key column)`.
    fn add_groups<K>(&mut self, groups: Groups<K>, key_text: impl Fn(&K, usize, &str) -> Text) {
        for ((t, k, class), (first, group)) in groups.0 {
            for (r, rows) in ROLLUPS.iter().zip(self.tables.iter_mut()) {
                let texts = &r.shape.columns()[..r.shape.columns().len() - 1];
                // Every grain is a whole number of minutes.
                let width = r.grain.millis();
                let key = (
                    t.div_euclid(width) * width,
                    texts.iter().map(|c| key_text(&k, first, c)).collect(),
                    class,
                );
                let row = rows.entry(key).or_default();
                row.counts.merge(&group.counts);
                row.overage_calls += group.overage_calls;
            }
        }
    }

    /// Adds the sums to the stored rows.
    async fn write(self, tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), UsageError> {
        for (index, rows) in self.tables.into_iter().enumerate() {
            let r = ROLLUPS[index];
            let texts = &r.shape.columns()[..r.shape.columns().len() - 1];
            let mut rows: Vec<(RollupKey, RollupRow)> = rows.into_iter().collect();
            let count = rows.len();
            let mut rest = &mut rows[..];
            for n in statement_rows(count) {
                let (chunk, after) = rest.split_at_mut(n);
                rest = after;
                // The stored histograms of these keys, merged here: one lookup
                // statement per chunk, then the upsert writes the sum.
                let mut args = SqliteArguments::default();
                for ((t, texts, class), _) in chunk.iter() {
                    bind_rollup_key(&mut args, *t, texts, *class).map_err(sqlx::Error::Encode)?;
                }
                let stored = sqlx::query_with(AssertSqlSafe(lookup_sql(index, n)), args)
                    .fetch_all(&mut **tx)
                    .await?;
                if !stored.is_empty() {
                    let mut by_key: HashMap<(i64, Vec<&str>, i64), &str> = HashMap::new();
                    let n_texts = texts.len();
                    for r in &stored {
                        by_key.insert(
                            (
                                r.try_get(0)?,
                                texts_of(r, n_texts)?,
                                r.try_get(n_texts + 1)?,
                            ),
                            r.try_get(n_texts + 2)?,
                        );
                    }
                    for ((t, texts, class), row) in chunk.iter_mut() {
                        let key = (*t, texts.iter().map(|t| &**t).collect(), i64::from(*class));
                        if let Some(json) = by_key.get(&key) {
                            row.counts
                                .latency
                                .merge_json(json)
                                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                        }
                    }
                }
                let mut args = SqliteArguments::default();
                for ((t, texts, class), row) in chunk {
                    bind_rollup_row(&mut args, *t, texts, *class, row)
                        .map_err(sqlx::Error::Encode)?;
                }
                sqlx::query_with(AssertSqlSafe(upsert_sql(index, n)), args)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The key texts of a looked-up rollup row (columns 1..=n).
fn texts_of(r: &SqliteRow, n: usize) -> Result<Vec<&str>, sqlx::Error> {
    (1..=n).map(|i| r.try_get::<&str, _>(i)).collect()
}

fn bind_rollup_key(
    args: &mut SqliteArguments,
    t: i64,
    texts: &[Text],
    class: u8,
) -> Result<(), sqlx::error::BoxDynError> {
    args.add(t)?;
    for text in texts {
        args.add(text.clone())?;
    }
    args.add(i64::from(class))?;
    Ok(())
}

/// The lookup of the stored histograms of `rows` keys in the rollup
/// `ROLLUPS[index]`, built once.
fn lookup_sql(index: usize, rows: usize) -> Arc<str> {
    static SQL: [[OnceLock<Arc<str>>; 10]; ROLLUPS.len()] =
        [const { [const { OnceLock::new() }; 10] }; ROLLUPS.len()];
    SQL[index][rows.trailing_zeros() as usize]
        .get_or_init(|| {
            let r = ROLLUPS[index];
            let key = r.shape.columns().join(", ");
            let values = format!("({})", vec!["?"; r.shape.columns().len() + 1].join(","));
            Arc::from(format!(
                "SELECT t, {key}, latency FROM {table} WHERE (t, {key}) IN (VALUES {values})",
                table = r.table,
                values = vec![values; rows].join(","),
            ))
        })
        .clone()
}

fn bind_rollup_row(
    args: &mut SqliteArguments,
    t: i64,
    texts: &[Text],
    class: u8,
    row: &RollupRow,
) -> Result<(), sqlx::error::BoxDynError> {
    args.add(t)?;
    for text in texts {
        args.add(text.clone())?;
    }
    args.add(i64::from(class))?;
    let c = &row.counts;
    for n in [
        c.calls,
        c.errors,
        c.client_errors,
        c.bytes_in,
        c.bytes_out,
        row.overage_calls,
    ] {
        args.add(n as i64)?;
    }
    args.add(c.latency.to_json())?;
    Ok(())
}

/// The upsert of `rows` rows (a power of two up to [`ROWS_PER_STATEMENT`])
/// into the rollup `ROLLUPS[index]`, built once: counts add up; the latency
/// histogram was merged with the stored one already.
fn upsert_sql(index: usize, rows: usize) -> Arc<str> {
    static SQL: [[OnceLock<Arc<str>>; 10]; ROLLUPS.len()] =
        [const { [const { OnceLock::new() }; 10] }; ROLLUPS.len()];
    debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
    SQL[index][rows.trailing_zeros() as usize]
        .get_or_init(|| {
            let r = ROLLUPS[index];
            let key = r.shape.columns().join(", ");
            let values = format!("({})", vec!["?"; r.shape.columns().len() + 8].join(","));
            Arc::from(format!(
                "INSERT INTO {table} (t, {key}, calls, errors, client_errors, bytes_in, bytes_out, \
                 overage_calls, latency) VALUES {values} \
                 ON CONFLICT (t, {key}) DO UPDATE SET calls = calls + excluded.calls, \
                 errors = errors + excluded.errors, client_errors = client_errors + excluded.client_errors, \
                 bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out, \
                 overage_calls = overage_calls + excluded.overage_calls, latency = excluded.latency",
                table = r.table,
                values = vec![values; rows].join(","),
            ))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table's rows as comparable values.
    fn rows(sums: &RollupSums) -> Vec<Vec<(RollupKey, [u64; 6], String)>> {
        sums.tables
            .iter()
            .map(|t| {
                let mut rows: Vec<_> = t
                    .iter()
                    .map(|(k, r)| {
                        let c = &r.counts;
                        (
                            k.clone(),
                            [
                                c.calls,
                                c.errors,
                                c.client_errors,
                                c.bytes_in,
                                c.bytes_out,
                                r.overage_calls,
                            ],
                            c.latency.to_json(),
                        )
                    })
                    .collect();
                rows.sort_by(|a, b| (a.0.0, &a.0.1, a.0.2).cmp(&(b.0.0, &b.0.1, b.0.2)));
                rows
            })
            .collect()
    }

    #[test]
    fn a_record_folds_as_its_events_do() {
        let events: Vec<UsageEvent> = (0..500u64)
            .map(|i| {
                // Three minutes, two APIs and routes, three apps, every status class.
                let mut e = UsageEvent::new(1_767_225_600_000 + i * 400);
                e.api_slug = ["weather", "maps"][i as usize % 2].into();
                e.route = ["/a", "/b"][i as usize % 2].into();
                e.app_id = format!("app_{}", i % 3).into();
                e.developer_id = format!("dev_{}", i % 3).into();
                e.plan_id = "plan".into();
                e.subscription_id = format!("sub_{}", i % 3).into();
                e.status = [200, 201, 404, 503, 301][i as usize % 5];
                e.latency_us = (i * 37 % 5000) as u32;
                e.bytes_in = i;
                e.bytes_out = 2 * i;
                e.overage = i % 7 == 0;
                e
            })
            .collect();
        let mut enc = crate::record::RecordEncoder::new();
        let mut from_records = RollupSums::default();
        let mut record = Vec::new();
        for chunk in events.chunks(128) {
            for e in chunk {
                enc.push(e);
            }
            enc.finish(&mut record);
            from_records.add_record(&record).unwrap();
        }
        let mut from_events = RollupSums::default();
        from_events.add(&events);
        let (a, b) = (rows(&from_records), rows(&from_events));
        assert_eq!(a, b);
        assert!(
            a.iter()
                .all(|t| t.iter().map(|r| r.1[0]).sum::<u64>() == 500)
        );
        // A damaged record is refused, not half-folded into the answer.
        assert!(
            from_records
                .add_record(&record[..record.len() - 1])
                .is_err()
        );
        assert_eq!(rows(&from_records), a);
    }

    #[test]
    fn batches_split_into_few_statement_sizes() {
        for n in [0, 1, 2, 3, 511, 512, 513, 1000, 10_000] {
            let sizes: Vec<usize> = statement_rows(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n, "{n}: {sizes:?}");
            assert!(
                sizes
                    .iter()
                    .all(|r| r.is_power_of_two() && *r <= ROWS_PER_STATEMENT)
            );
        }
        assert_eq!(
            statement_rows(1000).collect::<Vec<_>>(),
            [512, 256, 128, 64, 32, 8]
        );
    }
}
