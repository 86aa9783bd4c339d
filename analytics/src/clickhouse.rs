//! The ClickHouse usage store.
//!
//! Written for both Debian's ClickHouse 18.16 (used in tests) and current
//! releases: RowBinary inserts with row validation switchable by configuration,
//! client-side `?` binds, `quantiles(...)(toFloat64(x))` so the result type is
//! the same on every version, and no SQL newer than 18.16.

use ::clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::error::UsageError;
use crate::event::UsageEvent;
use crate::latency::{self, LatencyHistogram};
use crate::query::{
    ApiUsage, Bucket, BucketRow, LatencyMs, SummaryQuery, TimeSeries, TimeSeriesQuery, TopList,
    TopQuery, UsageFilter, UsageSummary,
};
use crate::retention::{RetentionPolicy, RetentionReport, oldest_kept_month};
use crate::rollup::{self, FilterValue, ROLLUPS, Source};

/// Schema files, applied in order and recorded in `tollgate_migrations`.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_usage_events.sql",
        include_str!("../../migrations/clickhouse/0001_usage_events.sql"),
    ),
    (
        2,
        "0002_overage.sql",
        include_str!("../../migrations/clickhouse/0002_overage.sql"),
    ),
    (
        3,
        "0003_rollups.sql",
        include_str!("../../migrations/clickhouse/0003_rollups.sql"),
    ),
    (
        4,
        "0004_batch_id.sql",
        include_str!("../../migrations/clickhouse/0004_batch_id.sql"),
    ),
    (
        5,
        "0005_query_rollups.sql",
        include_str!("../../migrations/clickhouse/0005_query_rollups.sql"),
    ),
];

/// Usage events in ClickHouse.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    server: Client,
    url: String,
    database: String,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

#[derive(Row, Serialize)]
struct EventRow<'a> {
    #[serde(with = "::clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    event_time: u32,
    timestamp_ms: u64,
    node: &'a str,
    api_id: &'a str,
    api_slug: &'a str,
    route: &'a str,
    method: &'a str,
    status: u16,
    latency_us: u32,
    upstream_latency_us: u32,
    bytes_in: u64,
    bytes_out: u64,
    app_id: &'a str,
    key_prefix: &'a str,
    developer_id: &'a str,
    plan_id: &'a str,
    subscription_id: &'a str,
    client_ip: &'a str,
    error_code: &'a str,
    overage: u8,
    batch_id: &'a str,
}

impl<'a> EventRow<'a> {
    fn new(e: &'a UsageEvent, batch_id: &'a str) -> Self {
        Self {
            event_id: e.id,
            event_time: (e.timestamp_ms / 1000) as u32,
            timestamp_ms: e.timestamp_ms,
            node: &e.node,
            api_id: &e.api_id,
            api_slug: &e.api_slug,
            route: &e.route,
            method: &e.method,
            status: e.status,
            latency_us: e.latency_us,
            upstream_latency_us: e.upstream_latency_us,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            app_id: &e.app_id,
            key_prefix: &e.key_prefix,
            developer_id: &e.developer_id,
            plan_id: &e.plan_id,
            subscription_id: &e.subscription_id,
            client_ip: &e.client_ip,
            error_code: &e.error_code,
            overage: u8::from(e.overage),
            batch_id,
        }
    }
}

#[derive(Row, Deserialize)]
struct ApiRow {
    api_slug: String,
    calls: u64,
    errors: u64,
    overage: u64,
    q: Vec<f64>,
}

#[derive(Row, Deserialize)]
struct ClassRow {
    class: u16,
    n: u64,
}

#[derive(Row, Deserialize)]
struct StoredId {
    #[serde(with = "::clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
}

#[derive(Row, Deserialize)]
struct VersionRow {
    version: u32,
}

impl ClickHouseStore {
    /// A store on `url`, database `database` (created by [`ClickHouseStore::migrate`]).
    pub fn new(
        url: &str,
        database: &str,
        user: Option<&str>,
        password: Option<&str>,
        validation: bool,
    ) -> Self {
        let mut server = Client::default().with_url(url).with_validation(validation);
        if let Some(u) = user {
            server = server.with_user(u);
        }
        if let Some(p) = password {
            server = server.with_password(p);
        }
        Self {
            // An insert feeds the raw table and the rollup views; with this
            // setting (known since 18.x) the views are computed in parallel.
            client: server
                .clone()
                .with_database(database)
                .with_setting("parallel_view_processing", "1"),
            server,
            url: url.to_owned(),
            database: database.to_owned(),
        }
    }

    /// `URL/database`, for logs.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.url, self.database)
    }

    /// Creates the database and applies schema files not yet applied.
    pub async fn migrate(&self) -> Result<(), UsageError> {
        // The database name was checked to be an identifier by the settings.
        self.server
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await?;
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS tollgate_migrations (version UInt32, name String, \
                 applied_at DateTime('UTC')) ENGINE = MergeTree ORDER BY version",
            )
            .execute()
            .await?;
        let applied: Vec<u32> = self
            .client
            .query("SELECT version FROM tollgate_migrations ORDER BY version")
            .fetch_all::<VersionRow>()
            .await?
            .into_iter()
            .map(|r| r.version)
            .collect();
        for (version, file, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for statement in statements(sql) {
                self.client
                    .query(&statement)
                    .execute()
                    .await
                    .map_err(|source| UsageError::ClickHouseMigration { file, source })?;
            }
            self.client
                .query("INSERT INTO tollgate_migrations (version, name, applied_at) VALUES (?, ?, now())")
                .bind(*version)
                .bind(*file)
                .execute()
                .await?;
            tracing::info!(file, "applied ClickHouse migration");
        }
        Ok(())
    }

    /// Writes a batch in one INSERT (one block: all or nothing), tagged with
    /// `batch_id` so a later [`ClickHouseStore::insert_once`] can find it.
    pub async fn insert(&self, batch_id: &str, events: &[UsageEvent]) -> Result<(), UsageError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<EventRow<'_>>("usage_events").await?;
        for e in events {
            insert.write(&EventRow::new(e, batch_id)).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Writes a batch that may have been written before (a replay, or a retry
    /// after an insert whose answer was lost): only the events of the batch not
    /// already stored are inserted. Returns how many were inserted. Costs a scan
    /// of the batch's time range, so it is for replays, not every batch.
    pub async fn insert_once(
        &self,
        batch_id: &str,
        events: &[UsageEvent],
    ) -> Result<usize, UsageError> {
        let (Some(first), Some(last)) = (
            events.iter().map(|e| e.timestamp_ms).min(),
            events.iter().map(|e| e.timestamp_ms).max(),
        ) else {
            return Ok(0);
        };
        let stored: Vec<StoredId> = self
            .client
            .query(
                "SELECT event_id FROM usage_events \
                 WHERE event_time >= toDateTime(?) AND event_time <= toDateTime(?) AND batch_id = ?",
            )
            .bind(first / 1000)
            .bind(last / 1000)
            .bind(batch_id)
            .fetch_all()
            .await?;
        let stored: std::collections::HashSet<uuid::Uuid> =
            stored.into_iter().map(|r| r.event_id).collect();
        let missing: Vec<UsageEvent> = events
            .iter()
            .filter(|e| !stored.contains(&e.id))
            .cloned()
            .collect();
        self.insert(batch_id, &missing).await?;
        Ok(missing.len())
    }

    /// Totals, per-API latency quantiles and status classes over a range.
    pub async fn summary(&self, q: &SummaryQuery) -> Result<UsageSummary, UsageError> {
        let filter = if q.api.is_some() {
            " AND api_slug = ?"
        } else {
            ""
        };
        let from = q.from_ms.max(0) as u64;
        let to = q.to_ms.max(0) as u64;
        let mut per_api = self
            .client
            .query(&format!(
                "SELECT api_slug, count() AS calls, countIf(status >= 400) AS errors, countIf(overage = 1) AS overage, \
             quantiles(0.5, 0.95, 0.99)(toFloat64(latency_us)) AS q \
             FROM usage_events WHERE timestamp_ms >= ? AND timestamp_ms < ?{filter} \
             GROUP BY api_slug ORDER BY calls DESC, api_slug"
            ))
            .bind(from)
            .bind(to);
        let mut per_class = self
            .client
            .query(&format!(
                "SELECT toUInt16(intDiv(status, 100)) AS class, count() AS n \
             FROM usage_events WHERE timestamp_ms >= ? AND timestamp_ms < ?{filter} \
             GROUP BY class ORDER BY class"
            ))
            .bind(from)
            .bind(to);
        if let Some(api) = &q.api {
            per_api = per_api.bind(api.as_str());
            per_class = per_class.bind(api.as_str());
        }
        let by_api = per_api
            .fetch_all::<ApiRow>()
            .await?
            .into_iter()
            .map(|r| {
                let at = |i: usize| r.q.get(i).copied().unwrap_or(0.0) / 1000.0;
                ApiUsage {
                    api: Some(r.api_slug.clone()).filter(|s| !s.is_empty()),
                    calls: r.calls,
                    errors: r.errors,
                    overage_calls: r.overage,
                    latency_ms: LatencyMs {
                        p50: at(0),
                        p95: at(1),
                        p99: at(2),
                    },
                }
            })
            .collect();
        let classes = per_class
            .fetch_all::<ClassRow>()
            .await?
            .into_iter()
            .map(|r| (r.class, r.n))
            .collect();
        Ok(UsageSummary::assemble(q, by_api, classes))
    }
}

/// Appends the filter's conditions (fixed text; the values are bound by
/// [`bind_filter`] in the same order).
fn push_filter(sql: &mut String, f: &UsageFilter, raw: bool) {
    let status_class = if raw {
        "toUInt8(intDiv(status, 100))"
    } else {
        "status_class"
    };
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
fn bind_filter(
    mut query: ::clickhouse::query::Query,
    f: &UsageFilter,
) -> ::clickhouse::query::Query {
    for (_, value) in rollup::conditions(f, "") {
        query = match value {
            FilterValue::Text(v) => query.bind(v),
            FilterValue::Class(c) => query.bind(c),
        };
    }
    query
}

#[derive(Row, Deserialize)]
struct SeriesRow {
    ts: u64,
    calls: u64,
    errors: u64,
    client_errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    latency_buckets: Vec<u16>,
    latency_calls: Vec<u64>,
}

impl ClickHouseStore {
    /// A time series from the smallest rollup that holds the bucket and the
    /// filter (see [`crate::rollup`]), or the raw events.
    pub async fn time_series(&self, q: &TimeSeriesQuery) -> Result<TimeSeries, UsageError> {
        let f = &q.filter;
        let bucket = match q.bucket {
            Bucket::Minute => "toStartOfMinute",
            Bucket::Hour => "toStartOfHour",
            Bucket::Day => "toStartOfDay",
        };
        // Fixed SQL fragments only; every value is bound.
        let source = rollup::series_source(q.bucket, f);
        let mut sql = match source {
            Source::Raw => {
                let histogram = format!("sumMap([{}], [toUInt64(1)])", latency::BUCKET_SQL);
                format!(
                    "SELECT toUInt64(toUnixTimestamp({bucket}(event_time))) * 1000 AS ts, count() AS calls, \
                     countIf(status >= 500) AS errors, countIf(status >= 400 AND status < 500) AS client_errors, \
                     sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out, \
                     tupleElement({histogram}, 1) AS latency_buckets, tupleElement({histogram}, 2) AS latency_calls \
                     FROM usage_events WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)"
                )
            }
            Source::Rollup(r) => {
                let histogram = "sumMap(latencyMap.bucket, latencyMap.calls)";
                format!(
                    "SELECT toUInt64(toUnixTimestamp(t)) * 1000 AS ts, sum(calls) AS calls, \
                     sum(errors) AS errors, sum(client_errors) AS client_errors, \
                     sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out, \
                     tupleElement({histogram}, 1) AS latency_buckets, tupleElement({histogram}, 2) AS latency_calls \
                     FROM {} WHERE t >= toDateTime(?) AND t < toDateTime(?)",
                    r.table
                )
            }
        };
        push_filter(&mut sql, f, source == Source::Raw);
        sql.push_str(" GROUP BY ts ORDER BY ts");
        let mut query = self
            .client
            .query(&sql)
            .bind((q.from_ms / 1000) as u64)
            .bind((q.to_ms / 1000) as u64);
        query = bind_filter(query, f);
        let rows = query
            .fetch_all::<SeriesRow>()
            .await?
            .into_iter()
            .map(|r| {
                let mut latency = LatencyHistogram::default();
                for (&b, &n) in r.latency_buckets.iter().zip(&r.latency_calls) {
                    latency.add(b, n);
                }
                (
                    r.ts as i64,
                    BucketRow {
                        calls: r.calls,
                        errors: r.errors,
                        client_errors: r.client_errors,
                        bytes_in: r.bytes_in,
                        bytes_out: r.bytes_out,
                        latency,
                    },
                )
            })
            .collect();
        Ok(TimeSeries::fill(q, rows))
    }
}

#[derive(Row, Deserialize)]
struct TopRow {
    key: String,
    calls: u64,
    errors: u64,
    client_errors: u64,
    bytes_out: u64,
}

impl ClickHouseStore {
    /// The busiest APIs, routes, apps, developers, plans or status classes:
    /// whole days from a day rollup, ragged hours from an hour rollup (see
    /// [`crate::rollup::top_pieces`]), or the raw events.
    pub async fn top(&self, q: &TopQuery) -> Result<TopList, UsageError> {
        let f = &q.filter;
        let pieces = rollup::top_pieces(q.from_ms, q.to_ms, q.dimension, f);
        // Fixed SQL fragments only; every value is bound, piece by piece.
        let parts: Vec<String> = pieces
            .iter()
            .map(|p| {
                let raw = p.source == Source::Raw;
                let column = q.dimension.column().unwrap_or(if raw {
                    "intDiv(status, 100)"
                } else {
                    "status_class"
                });
                let mut sql = match p.source {
                    Source::Raw => format!(
                        "SELECT toString({column}) AS key, count() AS n, countIf(status >= 500) AS e, \
                         countIf(status >= 400 AND status < 500) AS ce, sum(bytes_out) AS bo \
                         FROM usage_events WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)"
                    ),
                    Source::Rollup(r) => format!(
                        "SELECT toString({column}) AS key, sum(calls) AS n, sum(errors) AS e, \
                         sum(client_errors) AS ce, sum(bytes_out) AS bo \
                         FROM {} WHERE t >= toDateTime(?) AND t < toDateTime(?)",
                        r.table
                    ),
                };
                push_filter(&mut sql, f, raw);
                sql.push_str(" GROUP BY key");
                sql
            })
            .collect();
        let sql = format!(
            "SELECT key, sum(n) AS calls, sum(e) AS errors, sum(ce) AS client_errors, sum(bo) AS bytes_out \
             FROM ({}) GROUP BY key ORDER BY calls DESC, key LIMIT ?",
            parts.join(" UNION ALL ")
        );
        let mut query = self.client.query(&sql);
        for p in &pieces {
            query = query
                .bind((p.from_ms / 1000) as u64)
                .bind((p.to_ms / 1000) as u64);
            query = bind_filter(query, f);
        }
        let rows = query.bind(q.limit).fetch_all::<TopRow>().await?;
        Ok(TopList::assemble(
            q.dimension,
            rows.into_iter()
                .map(|r| (r.key, r.calls, r.errors, r.client_errors, r.bytes_out)),
        ))
    }
}

#[derive(Row, Deserialize)]
struct PartitionRow {
    table: String,
    partition: String,
}

impl ClickHouseStore {
    /// Drops the monthly partitions of raw events and of every rollup that are
    /// entirely older than the policy keeps.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        policy: RetentionPolicy,
    ) -> Result<RetentionReport, UsageError> {
        let raw_keep = oldest_kept_month(now_ms, policy.raw_days);
        let rollup_keep = oldest_kept_month(now_ms, policy.rollup_days);
        let parts = self
            .server
            .query(
                "SELECT DISTINCT table, partition FROM system.parts \
                 WHERE database = ? AND active AND has(?, table) ORDER BY table, partition",
            )
            .bind(self.database.as_str())
            .bind(
                std::iter::once("usage_events")
                    .chain(ROLLUPS.iter().map(|r| r.table))
                    .collect::<Vec<_>>(),
            )
            .fetch_all::<PartitionRow>()
            .await?;
        let mut report = RetentionReport::default();
        for part in parts {
            // Partitions are toYYYYMM values; anything else is not ours to drop.
            let Ok(month) = part.partition.parse::<u32>() else {
                continue;
            };
            let keep = if part.table == "usage_events" {
                raw_keep
            } else {
                rollup_keep
            };
            if month >= keep {
                continue;
            }
            // Table and partition come from the closed list above and a parsed
            // number: nothing from outside reaches this text.
            self.client
                .query(&format!(
                    "ALTER TABLE {} DROP PARTITION {month}",
                    part.table
                ))
                .execute()
                .await?;
            report
                .partitions_dropped
                .push(format!("{}:{month}", part.table));
        }
        Ok(report)
    }
}

/// Splits a schema file into statements: `--` comments dropped, `;` separated.
fn statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_files_split_into_statements() {
        let s = super::statements(
            "-- c\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- d\nSELECT 1\n",
        );
        assert_eq!(s, ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]);
    }

    #[test]
    fn the_views_bucket_latency_as_the_queries_do() {
        let (_, _, sql) = super::MIGRATIONS[4];
        // Two per view and per backfill: six rollups.
        assert_eq!(sql.matches(crate::latency::BUCKET_SQL).count(), 24);
    }
}
