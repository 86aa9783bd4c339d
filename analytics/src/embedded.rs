//! The embedded usage store: a SQLite file for single-node use.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use std::sync::{Arc, Mutex, OnceLock};

use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Arguments, AssertSqlSafe, Row};

use std::collections::{BTreeMap, HashMap};

use sqlx::Sqlite;
use sqlx::sqlite::SqliteRow;

use crate::error::UsageError;
use crate::event::{Text, UsageEvent};
use crate::latency::{self, LatencyHistogram};
use crate::query::{
    ApiUsage, Bucket, BucketRow, LatencyMs, SummaryQuery, TimeSeries, TimeSeriesQuery, TopList,
    TopQuery, UsageFilter, UsageSummary,
};
use crate::record::SpooledRecord;
use crate::rollup::{self, FilterValue, ROLLUPS, Source};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/embedded-usage");

/// Usage events in a SQLite file.
#[derive(Clone, Debug)]
pub struct EmbeddedStore {
    pool: SqlitePool,
    path: PathBuf,
    /// The numbers of the routes and customers in `usage_routes` and
    /// `usage_customers` (see migration `0005_compact_events.sql`), as far as
    /// this process has met them. Only numbers of committed rows enter;
    /// neither table ever loses a row.
    refs: Arc<Mutex<[HashMap<RefKey, i64>; 2]>>,
}

/// The texts a route or a customer is made of, in its table's column order.
type RefKey = [Text; REF_COLUMNS];

/// Columns of `usage_routes` and of `usage_customers` besides their number.
const REF_COLUMNS: usize = 5;

/// The two tables of texts that repeat from call to call, which an event row
/// refers to by number.
#[derive(Clone, Copy)]
enum Ref {
    /// Node, API, route and method: `usage_routes`.
    Route = 0,
    /// App, key, developer, plan and subscription: `usage_customers`.
    Customer = 1,
}

impl Ref {
    /// The event's texts for this table.
    fn texts(self, e: &UsageEvent) -> [&Text; REF_COLUMNS] {
        match self {
            Self::Route => [&e.node, &e.api_id, &e.api_slug, &e.route, &e.method],
            Self::Customer => [
                &e.app_id,
                &e.key_prefix,
                &e.developer_id,
                &e.plan_id,
                &e.subscription_id,
            ],
        }
    }

    /// Adds a row for `key`, or finds the one there, and returns its number.
    fn upsert_sql(self) -> &'static str {
        match self {
            Self::Route => {
                "INSERT INTO usage_routes (node, api_id, api_slug, route, method) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT DO UPDATE SET node = excluded.node RETURNING route_ref"
            }
            Self::Customer => {
                "INSERT INTO usage_customers (app_id, key_prefix, developer_id, plan_id, \
                 subscription_id) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT DO UPDATE SET app_id = excluded.app_id RETURNING customer_ref"
            }
        }
    }
}

/// Most rows per INSERT statement (12 columns each, well under SQLite's bind
/// limit of 32,766). A power of two: see [`statement_rows`].
const ROWS_PER_STATEMENT: usize = 512;

/// Columns of one row, in the order of [`insert_sql`]'s placeholders.
const COLUMNS: usize = 12;

/// Statement sizes for `n` rows: full statements, then the rest as powers of
/// two. So only ten distinct INSERT statements exist; each is prepared once per
/// connection and then taken from sqlx's statement cache, instead of a new
/// statement (parsed and planned for thousands of placeholders) per batch.
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

/// The INSERT statement for `rows` rows (a power of two up to
/// [`ROWS_PER_STATEMENT`]), built once.
fn insert_sql(rows: usize) -> Arc<str> {
    static SQL: [OnceLock<Arc<str>>; 10] = [const { OnceLock::new() }; 10];
    debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
    SQL[rows.trailing_zeros() as usize]
        .get_or_init(|| {
            let mut sql = String::from(
                "INSERT OR IGNORE INTO usage_event_rows (timestamp_ms, id, route_ref, customer_ref, \
                 status, latency_us, upstream_latency_us, bytes_in, bytes_out, client_ip, \
                 error_code, overage) VALUES ",
            );
            // An empty error code (most calls) is bound as NULL and stored
            // as '': a NULL costs SQLite no copy to bind and none to clear.
            let row = format!("({},coalesce(?,''),?)", ["?"; COLUMNS - 2].join(","));
            sql.push_str(&vec![row; rows].join(","));
            Arc::from(sql)
        })
        .clone()
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
            .pragma("mmap_size", "268435456");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            path: path.to_path_buf(),
            refs: Arc::default(),
        })
    }

    /// The file the events live in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the schema.
    pub async fn migrate(&self) -> Result<(), UsageError> {
        MIGRATIONS.run(&self.pool).await?;
        self.backfill_rollups().await
    }

    /// Rolls up the events stored before the rollups existed, once, in one
    /// transaction with clearing the migration's marker.
    async fn backfill_rollups(&self) -> Result<(), UsageError> {
        let mut tx = self.pool.begin().await?;
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_rollup_backfill")
            .fetch_one(&mut *tx)
            .await?;
        if pending == 0 {
            return Ok(());
        }
        let mut after = (i64::MIN, Vec::<u8>::new());
        loop {
            let rows = sqlx::query(
                "SELECT id, timestamp_ms, api_slug, route, status, latency_us, bytes_in, bytes_out, \
                 app_id, developer_id, plan_id, subscription_id, overage FROM usage_events \
                 WHERE (timestamp_ms, id) > (?1, ?2) ORDER BY timestamp_ms, id LIMIT 50000",
            )
            .bind(after.0)
            .bind(after.1.as_slice())
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last() else { break };
            after = (last.try_get("timestamp_ms")?, last.try_get("id")?);
            let events = rows
                .iter()
                .map(|r| -> Result<UsageEvent, sqlx::Error> {
                    let text = |c: &str| r.try_get::<String, _>(c).map(Text::from);
                    let mut e = UsageEvent::new(r.try_get::<i64, _>("timestamp_ms")?.max(0) as u64);
                    e.api_slug = text("api_slug")?;
                    e.route = text("route")?;
                    e.status = r.try_get::<i64, _>("status")?.clamp(0, 999) as u16;
                    e.latency_us = r
                        .try_get::<i64, _>("latency_us")?
                        .clamp(0, i64::from(u32::MAX)) as u32;
                    e.bytes_in = r.try_get::<i64, _>("bytes_in")?.max(0) as u64;
                    e.bytes_out = r.try_get::<i64, _>("bytes_out")?.max(0) as u64;
                    e.app_id = text("app_id")?;
                    e.developer_id = text("developer_id")?;
                    e.plan_id = text("plan_id")?;
                    e.subscription_id = text("subscription_id")?;
                    e.overage = r.try_get::<i64, _>("overage")? != 0;
                    Ok(e)
                })
                .collect::<Result<Vec<_>, _>>()?;
            write_rollups(&mut tx, &events).await?;
        }
        sqlx::query("DELETE FROM usage_rollup_backfill")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a batch in one transaction, with its new events queued for the
    /// rollups (see [`Self::fold`]); an event already stored (same id) is
    /// skipped and not queued again.
    pub async fn insert(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        self.insert_spooled(events, None).await
    }

    /// As [`Self::insert`], for events decoded from the spool records
    /// `records` (all of them, in order; see [`crate::record`]): when every
    /// event is new the records themselves are queued for the rollups,
    /// without encoding the events again.
    pub async fn insert_spooled(
        &self,
        events: &[UsageEvent],
        records: Option<&[SpooledRecord]>,
    ) -> Result<(), UsageError> {
        debug_assert!(
            records.is_none_or(|r| r.iter().map(|r| r.events).sum::<usize>() == events.len())
        );
        let mut tx = self.pool.begin().await?;
        let (inserted, met) = self.insert_events(&mut tx, events).await?;
        if inserted == events.len() as u64 {
            match records {
                Some(records) => queue_records(&mut tx, records).await?,
                None => queue_for_rollups(&mut tx, events).await?,
            }
            tx.commit().await?;
            self.remember(met);
            return self.fold_if_due().await;
        }
        // Some events were stored before (a replayed batch): start again with
        // only the new ones, so the rollups count each event once.
        tx.rollback().await?;
        let mut tx = self.pool.begin().await?;
        let mut seen = std::collections::HashSet::new();
        let mut new = Vec::new();
        for e in events {
            if !seen.insert(e.id) {
                continue;
            }
            let stored =
                sqlx::query("SELECT 1 FROM usage_event_rows WHERE timestamp_ms = ?1 AND id = ?2")
                    .bind(e.timestamp_ms as i64)
                    .bind(e.id.as_bytes().as_slice())
                    .fetch_optional(&mut *tx)
                    .await?;
            if stored.is_none() {
                new.push(e.clone());
            }
        }
        let (_, met) = self.insert_events(&mut tx, &new).await?;
        queue_for_rollups(&mut tx, &new).await?;
        tx.commit().await?;
        self.remember(met);
        self.fold_if_due().await
    }

    /// Folds the queued events into the rollups once they hold about a minute
    /// of traffic at 10,000 calls/s, or the oldest waited a minute.
    async fn fold_if_due(&self) -> Result<(), UsageError> {
        let (events, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COALESCE(SUM(events), 0), MIN(written_ms) FROM usage_rollup_pending",
        )
        .fetch_one(&self.pool)
        .await?;
        let waited = oldest.is_some_and(|t| now_ms() - t >= FOLD_AFTER_MS);
        if events >= FOLD_EVENTS || waited {
            self.fold().await?;
        }
        Ok(())
    }

    /// Adds every queued event to the rollups and removes it from the queue,
    /// in one transaction (whose first statement takes the write lock, so two
    /// processes never fold the same events). Every rollup row the queued
    /// events touch is written once.
    pub async fn fold(&self) -> Result<(), UsageError> {
        let queued: Option<i64> = sqlx::query_scalar("SELECT 1 FROM usage_rollup_pending LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        if queued.is_none() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let records: Vec<Vec<u8>> =
            sqlx::query_scalar("DELETE FROM usage_rollup_pending RETURNING record")
                .fetch_all(&mut *tx)
                .await?;
        let mut sums = RollupSums::default();
        for record in &records {
            sums.add_record(record)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        }
        sums.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Totals with exact nearest-rank latency percentiles per API.
    pub async fn summary(&self, q: &SummaryQuery) -> Result<UsageSummary, UsageError> {
        // Nearest rank: the p-th percentile is the smallest value whose rank r
        // (1-based, by latency) satisfies r >= p * n.
        let rows = sqlx::query(
            "WITH f AS (
                 SELECT api_slug, status, latency_us, overage FROM usage_events
                 WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 AND (?3 IS NULL OR api_slug = ?3)
             ), r AS (
                 SELECT api_slug, status, latency_us, overage,
                        ROW_NUMBER() OVER (PARTITION BY api_slug ORDER BY latency_us) AS rn,
                        COUNT(*) OVER (PARTITION BY api_slug) AS n
                 FROM f
             )
             SELECT api_slug, MAX(n) AS calls, SUM(status >= 400) AS errors, SUM(overage) AS overage,
                    MIN(CASE WHEN rn * 100 >= n * 50 THEN latency_us END) AS p50,
                    MIN(CASE WHEN rn * 100 >= n * 95 THEN latency_us END) AS p95,
                    MIN(CASE WHEN rn * 100 >= n * 99 THEN latency_us END) AS p99
             FROM r GROUP BY api_slug ORDER BY calls DESC, api_slug",
        )
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(q.api.as_deref())
        .fetch_all(&self.pool)
        .await?;
        let ms = |us: i64| us as f64 / 1000.0;
        let by_api = rows
            .iter()
            .map(|r| -> Result<ApiUsage, sqlx::Error> {
                let slug: String = r.try_get("api_slug")?;
                Ok(ApiUsage {
                    api: Some(slug).filter(|s| !s.is_empty()),
                    calls: r.try_get::<i64, _>("calls")? as u64,
                    errors: r.try_get::<i64, _>("errors")? as u64,
                    overage_calls: r.try_get::<i64, _>("overage")? as u64,
                    latency_ms: LatencyMs {
                        p50: ms(r.try_get("p50")?),
                        p95: ms(r.try_get("p95")?),
                        p99: ms(r.try_get("p99")?),
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let classes = sqlx::query(
            "SELECT status / 100 AS class, COUNT(*) AS n FROM usage_events
             WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2 AND (?3 IS NULL OR api_slug = ?3)
             GROUP BY class ORDER BY class",
        )
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(q.api.as_deref())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("class")? as u16,
                r.try_get::<i64, _>("n")? as u64,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;

        Ok(UsageSummary::assemble(q, by_api, classes))
    }
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
                // One row per bucket and distinct latency, bucketed here.
                let mut sql = String::from(
                    "SELECT (timestamp_ms / ?) * ? AS b, latency_us, COUNT(*) AS calls, \
                     SUM(status >= 500) AS errors, SUM(status >= 400 AND status < 500) AS client_errors, \
                     SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out \
                     FROM usage_events WHERE timestamp_ms >= ? AND timestamp_ms < ?",
                );
                push_filter(&mut sql, f, "status / 100");
                sql.push_str(" GROUP BY b, latency_us");
                let width = q.bucket.millis();
                let query = bind_filter(
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(width)
                        .bind(width)
                        .bind(q.from_ms)
                        .bind(q.to_ms),
                    f,
                );
                for row in query.fetch_all(&self.pool).await? {
                    let mut r = counts(
                        &row,
                        ["calls", "errors", "client_errors", "bytes_in", "bytes_out"],
                    )?;
                    let latency_us = row
                        .try_get::<i64, _>("latency_us")?
                        .clamp(0, i64::from(u32::MAX));
                    r.latency.add(latency::bucket(latency_us as u32), r.calls);
                    buckets.entry(row.try_get("b")?).or_default().merge(&r);
                }
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

/// Appends the filter's conditions (fixed text; values bound by [`bind_filter`]).
fn push_filter(sql: &mut String, f: &UsageFilter, status_class: &'static str) {
    for (column, _) in rollup::conditions(f, status_class) {
        sql.push_str(" AND ");
        sql.push_str(column);
        sql.push_str(" = ?");
    }
    if f.quota_counted {
        sql.push_str(" AND ");
        sql.push_str(rollup::QUOTA_COUNTED);
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

impl EmbeddedStore {
    /// The busiest APIs, routes, apps, developers, plans or status classes:
    /// whole days from a day rollup, ragged hours from an hour rollup (see
    /// [`crate::rollup::top_pieces`]), or the raw events.
    pub async fn top(&self, q: &TopQuery) -> Result<TopList, UsageError> {
        self.fold().await?;
        let f = &q.filter;
        let pieces = rollup::top_pieces(q.from_ms, q.to_ms, q.dimension, f);
        // Fixed SQL fragments only (the column is chosen by the dimension);
        // every value is bound, piece by piece.
        let parts: Vec<String> = pieces
            .iter()
            .map(|p| {
                let mut sql = match p.source {
                    Source::Raw => format!(
                        "SELECT CAST({} AS TEXT) AS key, COUNT(*) AS n, SUM(status >= 500) AS e, \
                         SUM(status >= 400 AND status < 500) AS ce, SUM(bytes_out) AS bo \
                         FROM usage_events WHERE timestamp_ms >= ? AND timestamp_ms < ?",
                        // SQLite divides integers as integers.
                        q.dimension.column().unwrap_or("status / 100")
                    ),
                    Source::Rollup(r) => format!(
                        "SELECT CAST({} AS TEXT) AS key, SUM(calls) AS n, SUM(errors) AS e, \
                         SUM(client_errors) AS ce, SUM(bytes_out) AS bo \
                         FROM {} WHERE t >= ? AND t < ?",
                        q.dimension.column().unwrap_or("status_class"),
                        r.table
                    ),
                };
                let status_class = if p.source == Source::Raw {
                    "status / 100"
                } else {
                    "status_class"
                };
                push_filter(&mut sql, f, status_class);
                sql.push_str(" GROUP BY key");
                sql
            })
            .collect();
        let sql = format!(
            "SELECT key, SUM(n) AS calls, SUM(e) AS errors, SUM(ce) AS client_errors, SUM(bo) AS bytes_out \
             FROM ({}) GROUP BY key ORDER BY calls DESC, key LIMIT ?",
            parts.join(" UNION ALL ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for p in &pieces {
            query = bind_filter(query.bind(p.from_ms).bind(p.to_ms), f);
        }
        let rows = query.bind(i64::from(q.limit)).fetch_all(&self.pool).await?;
        let rows = rows
            .iter()
            .map(|r| {
                let c = counts(
                    r,
                    ["calls", "errors", "client_errors", "calls", "bytes_out"],
                )?;
                Ok((
                    r.try_get::<Option<String>, _>("key")?.unwrap_or_default(),
                    c.calls,
                    c.errors,
                    c.client_errors,
                    c.bytes_out,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(TopList::assemble(q.dimension, rows.into_iter()))
    }
}

impl EmbeddedStore {
    /// Deletes raw events older than `cutoff_ms`; returns how many.
    pub async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, UsageError> {
        let done = sqlx::query("DELETE FROM usage_event_rows WHERE timestamp_ms < ?1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes the rollup rows whose bucket ends at or before `cutoff_ms`;
    /// returns how many.
    pub async fn delete_rollups_before(&self, cutoff_ms: i64) -> Result<u64, UsageError> {
        // Queued events first, so none is folded into a bucket after it went.
        self.fold().await?;
        let mut deleted = 0;
        for r in ROLLUPS {
            // The table name comes from the fixed list of rollups.
            let done = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {} WHERE t <= ?1",
                r.table
            )))
            .bind(cutoff_ms - r.grain.millis())
            .execute(&self.pool)
            .await?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }
}

/// Route and customer numbers met in a transaction, to remember once it
/// commits.
type Met = Vec<(Ref, RefKey, i64)>;

impl EmbeddedStore {
    /// Inserts the events not stored yet; returns how many were inserted, and
    /// the routes and customers first met in this transaction.
    async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        events: &[UsageEvent],
    ) -> Result<(u64, Met), UsageError> {
        let mut met = Vec::new();
        let routes = self.ref_numbers(tx, events, Ref::Route, &mut met).await?;
        let customers = self
            .ref_numbers(tx, events, Ref::Customer, &mut met)
            .await?;
        let mut inserted = 0;
        let mut at = 0;
        for rows in statement_rows(events.len()) {
            let mut args = SqliteArguments::default();
            args.reserve(rows * COLUMNS, 0);
            for i in at..at + rows {
                bind_event(&mut args, &events[i], routes[i], customers[i])
                    .map_err(sqlx::Error::Encode)?;
            }
            at += rows;
            inserted += sqlx::query_with(AssertSqlSafe(insert_sql(rows)), args)
                .execute(&mut **tx)
                .await?
                .rows_affected();
        }
        Ok((inserted, met))
    }

    /// Each event's route or customer number, in order. Events decoded from
    /// one spool record share their texts, so most are matched by the
    /// texts' addresses without hashing them (only while the events are
    /// borrowed, so no address is reused meanwhile); the rest by the texts
    /// in this process's memory, or in (or added to) the table within the
    /// transaction.
    async fn ref_numbers(
        &self,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        events: &[UsageEvent],
        kind: Ref,
        met: &mut Met,
    ) -> Result<Vec<i64>, UsageError> {
        const UNKNOWN: i64 = i64::MIN;
        let key = |e: &UsageEvent| -> RefKey { kind.texts(e).map(Text::clone) };
        let mut by_address: rustc_hash::FxHashMap<[usize; REF_COLUMNS], i64> =
            rustc_hash::FxHashMap::default();
        let mut numbers = Vec::with_capacity(events.len());
        let mut missing = Vec::new();
        {
            let known = self.refs.lock().unwrap_or_else(|p| p.into_inner());
            let known = &known[kind as usize];
            for (i, e) in events.iter().enumerate() {
                let address = kind.texts(e).map(|t| Arc::as_ptr(t).cast::<u8>() as usize);
                let n = *by_address
                    .entry(address)
                    .or_insert_with(|| known.get(&key(e)).copied().unwrap_or(UNKNOWN));
                if n == UNKNOWN {
                    missing.push(i);
                }
                numbers.push(n);
            }
        }
        let mut found: HashMap<RefKey, i64> = HashMap::new();
        for i in missing {
            let texts = key(&events[i]);
            if let Some(n) = found.get(&texts) {
                numbers[i] = *n;
                continue;
            }
            let mut query = sqlx::query_scalar(kind.upsert_sql());
            for text in &texts {
                query = query.bind(text.clone());
            }
            let n: i64 = query.fetch_one(&mut **tx).await?;
            numbers[i] = n;
            found.insert(texts.clone(), n);
            met.push((kind, texts, n));
        }
        Ok(numbers)
    }

    /// Keeps the numbers of routes and customers whose rows are committed.
    fn remember(&self, met: Met) {
        if met.is_empty() {
            return;
        }
        let mut known = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, texts, n) in met {
            known[kind as usize].insert(texts, n);
        }
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

/// Queues the events for the rollups: one row per record of the spool's
/// encoding (up to 1,024 events each).
async fn queue_for_rollups(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    events: &[UsageEvent],
) -> Result<(), UsageError> {
    let mut encoder = crate::record::RecordEncoder::new();
    let mut record = Vec::new();
    let now = now_ms();
    let mut rest = events;
    while !rest.is_empty() {
        let mut n = 0;
        while n < rest.len() && !encoder.is_full() {
            encoder.push(&rest[n]);
            n += 1;
        }
        encoder.finish(&mut record);
        sqlx::query(
            "INSERT INTO usage_rollup_pending (written_ms, events, record) VALUES (?1, ?2, ?3)",
        )
        .bind(now)
        .bind(n as i64)
        .bind(record.as_slice())
        .execute(&mut **tx)
        .await?;
        rest = &rest[n..];
    }
    Ok(())
}

/// Queues spool records, as they are, for the rollups: one row each.
async fn queue_records(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    records: &[SpooledRecord],
) -> Result<(), UsageError> {
    let now = now_ms();
    for record in records.iter().filter(|r| r.events > 0) {
        sqlx::query(
            "INSERT INTO usage_rollup_pending (written_ms, events, record) VALUES (?1, ?2, ?3)",
        )
        .bind(now)
        .bind(record.events as i64)
        .bind(record.bytes.as_slice())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
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

/// Binds one event's columns. Texts are shared with the event, not copied.
fn bind_event(
    args: &mut SqliteArguments,
    e: &UsageEvent,
    route: i64,
    customer: i64,
) -> Result<(), sqlx::error::BoxDynError> {
    args.add(e.timestamp_ms as i64)?;
    args.add(e.id.as_bytes().to_vec())?;
    args.add(route)?;
    args.add(customer)?;
    args.add(i64::from(e.status))?;
    args.add(i64::from(e.latency_us))?;
    args.add(i64::from(e.upstream_latency_us))?;
    args.add(e.bytes_in as i64)?;
    args.add(e.bytes_out as i64)?;
    args.add(e.client_ip.clone())?;
    if e.error_code.is_empty() {
        args.add(None::<Text>)?;
    } else {
        args.add(e.error_code.clone())?;
    }
    args.add(i64::from(e.overage))?;
    Ok(())
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
        let sql = insert_sql(2);
        assert_eq!(sql.matches('?').count(), 2 * COLUMNS);
        assert!(sql.ends_with("?),(?,?,?,?,?,?,?,?,?,?,coalesce(?,''),?)"));
    }
}
