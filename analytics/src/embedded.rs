//! The embedded usage store: a SQLite file for single-node use.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::UsageError;
use crate::event::UsageEvent;
use crate::query::{ApiUsage, LatencyMs, SummaryQuery, UsageSummary};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/embedded-usage");

/// Usage events in a SQLite file.
#[derive(Clone, Debug)]
pub struct EmbeddedStore {
    pool: SqlitePool,
    path: PathBuf,
}

/// Rows per INSERT statement (20 columns each, well under SQLite's bind limit).
const ROWS_PER_STATEMENT: usize = 500;

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
        })
    }

    /// The file the events live in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the schema.
    pub async fn migrate(&self) -> Result<(), UsageError> {
        MIGRATIONS.run(&self.pool).await?;
        Ok(())
    }

    /// Writes a batch in one transaction; an event already stored (same id) is skipped.
    pub async fn insert(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT OR IGNORE INTO usage_events (id, timestamp_ms, node, api_id, api_slug, route, method, \
                 status, latency_us, upstream_latency_us, bytes_in, bytes_out, app_id, key_prefix, \
                 developer_id, plan_id, subscription_id, client_ip, error_code, overage) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(e.id.to_string())
                    .push_bind(e.timestamp_ms as i64)
                    .push_bind(&e.node)
                    .push_bind(&e.api_id)
                    .push_bind(&e.api_slug)
                    .push_bind(&e.route)
                    .push_bind(&e.method)
                    .push_bind(i64::from(e.status))
                    .push_bind(i64::from(e.latency_us))
                    .push_bind(i64::from(e.upstream_latency_us))
                    .push_bind(e.bytes_in as i64)
                    .push_bind(e.bytes_out as i64)
                    .push_bind(&e.app_id)
                    .push_bind(&e.key_prefix)
                    .push_bind(&e.developer_id)
                    .push_bind(&e.plan_id)
                    .push_bind(&e.subscription_id)
                    .push_bind(&e.client_ip)
                    .push_bind(&e.error_code)
                    .push_bind(i64::from(e.overage));
            });
            qb.build().execute(&mut *tx).await?;
        }
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
    /// A time series from the raw events, with exact nearest-rank latency
    /// percentiles per bucket.
    pub async fn time_series(
        &self,
        q: &crate::query::TimeSeriesQuery,
    ) -> Result<crate::query::TimeSeries, UsageError> {
        let f = &q.filter;
        let rows = sqlx::query(
            "WITH f AS (
                 SELECT (timestamp_ms / ?1) * ?1 AS b, status, latency_us, bytes_in, bytes_out
                 FROM usage_events
                 WHERE timestamp_ms >= ?2 AND timestamp_ms < ?3
                   AND (?4 IS NULL OR api_slug = ?4) AND (?5 IS NULL OR app_id = ?5)
                   AND (?6 IS NULL OR plan_id = ?6) AND (?7 IS NULL OR developer_id = ?7)
                   AND (?8 IS NULL OR status / 100 = ?8)
             ), r AS (
                 SELECT b, status, latency_us, bytes_in, bytes_out,
                        ROW_NUMBER() OVER (PARTITION BY b ORDER BY latency_us) AS rn,
                        COUNT(*) OVER (PARTITION BY b) AS n
                 FROM f
             )
             SELECT b, MAX(n) AS calls, SUM(status >= 500) AS errors,
                    SUM(status >= 400 AND status < 500) AS client_errors,
                    SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out,
                    MIN(CASE WHEN rn * 100 >= n * 50 THEN latency_us END) AS p50,
                    MIN(CASE WHEN rn * 100 >= n * 95 THEN latency_us END) AS p95,
                    MIN(CASE WHEN rn * 100 >= n * 99 THEN latency_us END) AS p99
             FROM r GROUP BY b ORDER BY b",
        )
        .bind(q.bucket.millis())
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(f.api.as_deref())
        .bind(f.app.as_deref())
        .bind(f.plan.as_deref())
        .bind(f.developer.as_deref())
        .bind(f.status_class.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        let ms = |us: i64| us as f64 / 1000.0;
        let mut buckets = std::collections::BTreeMap::new();
        for r in &rows {
            let count = |c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
            buckets.insert(
                r.try_get::<i64, _>("b")?,
                crate::query::BucketRow {
                    calls: count("calls")?,
                    errors: count("errors")?,
                    client_errors: count("client_errors")?,
                    bytes_in: count("bytes_in")?,
                    bytes_out: count("bytes_out")?,
                    latency_ms: [
                        ms(r.try_get("p50")?),
                        ms(r.try_get("p95")?),
                        ms(r.try_get("p99")?),
                    ],
                },
            );
        }
        Ok(crate::query::TimeSeries::fill(q, &buckets))
    }
}

impl EmbeddedStore {
    /// The busiest APIs, routes, apps, developers, plans or status classes.
    pub async fn top(
        &self,
        q: &crate::query::TopQuery,
    ) -> Result<crate::query::TopList, UsageError> {
        let f = &q.filter;
        let column = q.dimension.column(true);
        // The column is fixed text chosen by the dimension; values are bound.
        let sql = format!(
            "SELECT CAST({column} AS TEXT) AS key, COUNT(*) AS calls, SUM(status >= 500) AS errors,
                    SUM(status >= 400 AND status < 500) AS client_errors, SUM(bytes_out) AS bytes_out
             FROM usage_events
             WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2
               AND (?3 IS NULL OR api_slug = ?3) AND (?4 IS NULL OR app_id = ?4)
               AND (?5 IS NULL OR plan_id = ?5) AND (?6 IS NULL OR developer_id = ?6)
               AND (?7 IS NULL OR status / 100 = ?7)
             GROUP BY key ORDER BY calls DESC, key LIMIT ?8"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(f.api.as_deref())
            .bind(f.app.as_deref())
            .bind(f.plan.as_deref())
            .bind(f.developer.as_deref())
            .bind(f.status_class.map(i64::from))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        let count =
            |r: &sqlx::sqlite::SqliteRow, c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
        let rows = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<Option<String>, _>("key")?.unwrap_or_default(),
                    count(r, "calls")?,
                    count(r, "errors")?,
                    count(r, "client_errors")?,
                    count(r, "bytes_out")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(crate::query::TopList::assemble(
            q.dimension,
            rows.into_iter(),
        ))
    }
}

impl EmbeddedStore {
    /// Deletes raw events older than `cutoff_ms`; returns how many.
    pub async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, UsageError> {
        let done = sqlx::query("DELETE FROM usage_events WHERE timestamp_ms < ?1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
