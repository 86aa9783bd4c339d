//! The embedded usage store: a SQLite file for single-node use.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use std::sync::{Arc, OnceLock};

use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Arguments, AssertSqlSafe, Row};

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

/// Most rows per INSERT statement (20 columns each, well under SQLite's bind
/// limit of 32,766). A power of two: see [`statement_rows`].
const ROWS_PER_STATEMENT: usize = 512;

/// Columns of one row, in the order of [`insert_sql`]'s placeholders.
const COLUMNS: usize = 20;

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
                "INSERT OR IGNORE INTO usage_events (id, timestamp_ms, node, api_id, api_slug, route, method, \
                 status, latency_us, upstream_latency_us, bytes_in, bytes_out, app_id, key_prefix, \
                 developer_id, plan_id, subscription_id, client_ip, error_code, overage) VALUES ",
            );
            let row = format!("({})", vec!["?"; COLUMNS].join(","));
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
        let mut rest = events;
        for rows in statement_rows(events.len()) {
            let (chunk, after) = rest.split_at(rows);
            rest = after;
            let mut args = SqliteArguments::default();
            args.reserve(rows * COLUMNS, 0);
            for e in chunk {
                bind_event(&mut args, e).map_err(sqlx::Error::Encode)?;
            }
            sqlx::query_with(AssertSqlSafe(insert_sql(rows)), args)
                .execute(&mut *tx)
                .await?;
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
                   AND (?8 IS NULL OR status / 100 = ?8) AND (?9 IS NULL OR subscription_id = ?9)
                   AND (?10 IS NULL OR key_prefix = ?10)
                   AND (?11 = 0 OR error_code NOT IN ('rate_limited', 'rate_limiter_unavailable', 'quota_exceeded'))
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
        .bind(f.subscription.as_deref())
        .bind(f.key.as_deref())
        .bind(f.quota_counted)
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
        // SQLite divides integers as integers.
        let column = q.dimension.column().unwrap_or("status / 100");
        // The column is fixed text chosen by the dimension; values are bound.
        let sql = format!(
            "SELECT CAST({column} AS TEXT) AS key, COUNT(*) AS calls, SUM(status >= 500) AS errors,
                    SUM(status >= 400 AND status < 500) AS client_errors, SUM(bytes_out) AS bytes_out
             FROM usage_events
             WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2
               AND (?3 IS NULL OR api_slug = ?3) AND (?4 IS NULL OR app_id = ?4)
               AND (?5 IS NULL OR plan_id = ?5) AND (?6 IS NULL OR developer_id = ?6)
               AND (?7 IS NULL OR status / 100 = ?7) AND (?9 IS NULL OR subscription_id = ?9)
               AND (?10 IS NULL OR key_prefix = ?10)
               AND (?11 = 0 OR error_code NOT IN ('rate_limited', 'rate_limiter_unavailable', 'quota_exceeded'))
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
            .bind(f.subscription.as_deref())
            .bind(f.key.as_deref())
            .bind(f.quota_counted)
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

/// Binds one event's columns. Texts are shared with the event, not copied.
fn bind_event(args: &mut SqliteArguments, e: &UsageEvent) -> Result<(), sqlx::error::BoxDynError> {
    let mut id = uuid::Uuid::encode_buffer();
    args.add(Arc::<str>::from(&*e.id.hyphenated().encode_lower(&mut id)))?;
    args.add(e.timestamp_ms as i64)?;
    for text in [&e.node, &e.api_id, &e.api_slug, &e.route, &e.method] {
        args.add(text.clone())?;
    }
    args.add(i64::from(e.status))?;
    args.add(i64::from(e.latency_us))?;
    args.add(i64::from(e.upstream_latency_us))?;
    args.add(e.bytes_in as i64)?;
    args.add(e.bytes_out as i64)?;
    for text in [
        &e.app_id,
        &e.key_prefix,
        &e.developer_id,
        &e.plan_id,
        &e.subscription_id,
        &e.client_ip,
        &e.error_code,
    ] {
        args.add(text.clone())?;
    }
    args.add(i64::from(e.overage))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(sql.ends_with("?),(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
    }
}
