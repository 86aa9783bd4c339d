//! Usage queries: parameters are parsed and checked here, then each store turns
//! them into SQL with bound values (never spliced user input).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::UsageError;
use crate::latency::LatencyHistogram;

/// Longest range one summary may cover.
const MAX_RANGE_DAYS: i64 = 366;

/// A checked summary request: `[from, to)` in milliseconds, optionally one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryQuery {
    /// Start, inclusive, milliseconds since the epoch.
    pub from_ms: i64,
    /// End, exclusive, milliseconds since the epoch.
    pub to_ms: i64,
    /// Only this API slug.
    pub api: Option<String>,
}

fn parse_time(param: &'static str, value: &str) -> Result<DateTime<Utc>, UsageError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| UsageError::Invalid {
            param,
            message: format!("{value:?} is not an RFC 3339 time such as 2026-01-31T00:00:00Z"),
        })
}

impl SummaryQuery {
    /// Parses `from`, `to` (RFC 3339) and `api` (a slug) as given in a URL.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        api: Option<&str>,
    ) -> Result<Self, UsageError> {
        let from = parse_time(
            "from",
            from.ok_or(UsageError::Invalid {
                param: "from",
                message: "is required (RFC 3339 start time, inclusive)".into(),
            })?,
        )?;
        let to = match to {
            Some(t) => parse_time("to", t)?,
            None => Utc::now(),
        };
        if to <= from {
            return Err(UsageError::Invalid {
                param: "to",
                message: "must be after from".into(),
            });
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            return Err(UsageError::Invalid {
                param: "to",
                message: format!("the range may cover at most {MAX_RANGE_DAYS} days"),
            });
        }
        let api = match api.filter(|a| !a.is_empty()) {
            Some(a)
                if a.len() <= 63
                    && a.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Some(a.to_owned())
            }
            Some(a) => {
                return Err(UsageError::Invalid {
                    param: "api",
                    message: format!("{a:?} is not an API slug"),
                });
            }
            None => None,
        };
        Ok(Self {
            from_ms: from.timestamp_millis(),
            to_ms: to.timestamp_millis(),
            api,
        })
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Usage of one API over the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiUsage {
    /// The API slug; `null` for calls that matched no API.
    pub api: Option<String>,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with status 400 or above.
    pub errors: u64,
    /// Calls beyond a soft quota's included calls.
    pub overage_calls: u64,
    /// Total latency percentiles.
    pub latency_ms: LatencyMs,
}

/// Totals over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    /// Start, inclusive (RFC 3339).
    pub from: String,
    /// End, exclusive (RFC 3339).
    pub to: String,
    /// Calls answered.
    pub total_calls: u64,
    /// Per API, busiest first.
    pub by_api: Vec<ApiUsage>,
    /// Calls by status class (`2xx`, `4xx`, …).
    pub by_status_class: BTreeMap<String, u64>,
}

impl UsageSummary {
    /// Assembles a summary from per-API rows and per-class counts.
    pub(crate) fn assemble(
        q: &SummaryQuery,
        by_api: Vec<ApiUsage>,
        classes: Vec<(u16, u64)>,
    ) -> Self {
        let fmt = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let total_calls = by_api.iter().map(|a| a.calls).sum();
        Self {
            from: fmt(q.from_ms),
            to: fmt(q.to_ms),
            total_calls,
            by_api,
            by_status_class: classes
                .into_iter()
                .map(|(class, n)| (format!("{class}xx"), n))
                .collect(),
        }
    }
}

/// Most points one time series may have.
const MAX_POINTS: i64 = 10_000;

/// The width of a time-series bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Bucket {
    /// Width in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    fn parse(value: &str) -> Result<Self, UsageError> {
        match value {
            "minute" => Ok(Self::Minute),
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            other => Err(UsageError::Invalid {
                param: "bucket",
                message: format!("{other:?} is not a bucket; use minute, hour or day"),
            }),
        }
    }
}

/// Which calls a usage query counts; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this API (slug).
    pub api: Option<String>,
    /// Only this app (id).
    pub app: Option<String>,
    /// Only this plan (id).
    pub plan: Option<String>,
    /// Only this developer (id).
    pub developer: Option<String>,
    /// Only this subscription (id).
    pub subscription: Option<String>,
    /// Only this status class: 1 to 5 (`2` for 2xx).
    pub status_class: Option<u8>,
    /// Only calls made with this key (its visible prefix, e.g. `tg_live_AbCd`;
    /// combine with `app`: prefixes are short, so unique within an app only).
    pub key: Option<String>,
    /// Only calls a quota counted: leaves out calls the gateway refused for a
    /// rate limit or a used-up quota (they never reached, or never passed, the
    /// quota check).
    pub quota_counted: bool,
}

fn id_param(param: &'static str, value: Option<&str>) -> Result<Option<String>, UsageError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v)
            if v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
        {
            Ok(Some(v.to_owned()))
        }
        Some(v) => Err(UsageError::Invalid {
            param,
            message: format!("{v:?} is not an id (letters, digits, '_', '-', '.')"),
        }),
    }
}

/// A checked time-series request: `[from, to)` widened to whole buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSeriesQuery {
    /// Start of the first bucket (ms).
    pub from_ms: i64,
    /// End of the last bucket, exclusive (ms).
    pub to_ms: i64,
    /// Bucket width.
    pub bucket: Bucket,
    /// Which calls count.
    pub filter: UsageFilter,
}

/// URL parameters of a time-series request, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeSeriesParams<'a> {
    /// RFC 3339 start (required).
    pub from: Option<&'a str>,
    /// RFC 3339 end (now when absent).
    pub to: Option<&'a str>,
    /// `minute`, `hour` (default) or `day`.
    pub bucket: Option<&'a str>,
    /// API slug.
    pub api: Option<&'a str>,
    /// App id.
    pub app: Option<&'a str>,
    /// Plan id.
    pub plan: Option<&'a str>,
    /// Developer id.
    pub developer: Option<&'a str>,
    /// `2xx`, `4xx`, … or `2`, `4`, ….
    pub status_class: Option<&'a str>,
    /// Subscription id.
    pub subscription: Option<&'a str>,
    /// Key prefix.
    pub key: Option<&'a str>,
}

impl TimeSeriesQuery {
    /// Parses and checks URL parameters.
    pub fn parse(p: TimeSeriesParams<'_>) -> Result<Self, UsageError> {
        let range = SummaryQuery::parse(p.from, p.to, p.api)?;
        let bucket = Bucket::parse(p.bucket.unwrap_or("hour"))?;
        let width = bucket.millis();
        let from_ms = range.from_ms.div_euclid(width) * width;
        let to_ms = (range.to_ms + width - 1).div_euclid(width) * width;
        let points = (to_ms - from_ms) / width;
        if points > MAX_POINTS {
            return Err(UsageError::Invalid {
                param: "bucket",
                message: format!(
                    "{points} buckets is more than {MAX_POINTS}; use a coarser bucket or a shorter range"
                ),
            });
        }
        Ok(Self {
            from_ms,
            to_ms,
            bucket,
            filter: UsageFilter::parse(&p, range.api)?,
        })
    }
}

impl UsageFilter {
    /// The filters of `p`; the API slug was checked with the range.
    fn parse(p: &TimeSeriesParams<'_>, api: Option<String>) -> Result<Self, UsageError> {
        let status_class = match p.status_class.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let digit = s.strip_suffix("xx").unwrap_or(s);
                match digit.parse::<u8>() {
                    Ok(c @ 1..=5) => Some(c),
                    _ => {
                        return Err(UsageError::Invalid {
                            param: "status_class",
                            message: format!("{s:?} is not a status class; use 1xx to 5xx"),
                        });
                    }
                }
            }
        };
        Ok(Self {
            api,
            app: id_param("app", p.app)?,
            plan: id_param("plan", p.plan)?,
            developer: id_param("developer", p.developer)?,
            subscription: id_param("subscription", p.subscription)?,
            status_class,
            key: id_param("key", p.key)?,
            quota_counted: false,
        })
    }
}

/// One bucket of a time series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket (RFC 3339).
    pub t: String,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with a 5xx status.
    pub errors: u64,
    /// Calls answered with a 4xx status.
    pub client_errors: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Latency percentiles (0 in empty buckets): nearest rank, within 1/64 of
    /// the exact value (see [`crate::latency`]).
    pub latency_ms: LatencyMs,
}

/// A bucket's numbers as a store returns them, keyed by bucket start (ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BucketRow {
    pub calls: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: LatencyHistogram,
}

impl BucketRow {
    /// Adds another row's numbers (of the same bucket).
    pub(crate) fn merge(&mut self, other: &Self) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.client_errors += other.client_errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.latency.merge(&other.latency);
    }
}

/// A time series, every bucket of the range present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeSeries {
    /// `minute`, `hour` or `day`.
    pub bucket: &'static str,
    /// The points, oldest first.
    pub points: Vec<SeriesPoint>,
}

impl TimeSeries {
    /// Every bucket of the query's range, zero where the store had nothing;
    /// latency percentiles from each bucket's histogram.
    pub(crate) fn fill(q: &TimeSeriesQuery, mut rows: BTreeMap<i64, BucketRow>) -> Self {
        let width = q.bucket.millis();
        let points = (0..(q.to_ms - q.from_ms) / width)
            .map(|i| {
                let t = q.from_ms + i * width;
                let r = rows.remove(&t).unwrap_or_default();
                let [p50, p95, p99] = r.latency.percentiles_ms([50, 95, 99]);
                SeriesPoint {
                    t: DateTime::<Utc>::from_timestamp_millis(t)
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    calls: r.calls,
                    errors: r.errors,
                    client_errors: r.client_errors,
                    bytes_in: r.bytes_in,
                    bytes_out: r.bytes_out,
                    latency_ms: LatencyMs { p50, p95, p99 },
                }
            })
            .collect();
        Self {
            bucket: match q.bucket {
                Bucket::Minute => "minute",
                Bucket::Hour => "hour",
                Bucket::Day => "day",
            },
            points,
        }
    }
}

/// What a top-N list ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// APIs, by slug.
    Api,
    /// Routes (operation templates).
    Route,
    /// Apps, by id.
    App,
    /// Developers, by id.
    Developer,
    /// Plans, by id.
    Plan,
    /// Status classes (`2xx`, `4xx`, …).
    StatusClass,
}

impl Dimension {
    fn parse(value: &str) -> Result<Self, UsageError> {
        Ok(match value {
            "api" => Self::Api,
            "route" => Self::Route,
            "app" => Self::App,
            "developer" => Self::Developer,
            "plan" => Self::Plan,
            "status_class" => Self::StatusClass,
            other => {
                return Err(UsageError::Invalid {
                    param: "dimension",
                    message: format!(
                        "{other:?} is not a dimension; use api, route, app, developer, plan or status_class"
                    ),
                });
            }
        })
    }

    /// The column that holds it, shared by the raw events and the rollups of
    /// both stores (fixed text, never user input); `None` for the status class,
    /// which each store spells its own way.
    pub(crate) fn column(self) -> Option<&'static str> {
        match self {
            Self::Api => Some("api_slug"),
            Self::Route => Some("route"),
            Self::App => Some("app_id"),
            Self::Developer => Some("developer_id"),
            Self::Plan => Some("plan_id"),
            Self::StatusClass => None,
        }
    }

    /// Its name in answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Route => "route",
            Self::App => "app",
            Self::Developer => "developer",
            Self::Plan => "plan",
            Self::StatusClass => "status_class",
        }
    }
}

/// Longest top-N list.
const MAX_LIMIT: u32 = 1000;

/// A checked top-N request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopQuery {
    /// Start, inclusive (ms), widened to a whole hour.
    pub from_ms: i64,
    /// End, exclusive (ms), widened to a whole hour.
    pub to_ms: i64,
    /// What to rank.
    pub dimension: Dimension,
    /// How many entries (1 to 1000, default 10).
    pub limit: u32,
    /// Which calls count.
    pub filter: UsageFilter,
}

impl TopQuery {
    /// Parses and checks URL parameters (`bucket` is not used: rankings cover the
    /// range widened to whole hours).
    pub fn parse(
        p: TimeSeriesParams<'_>,
        dimension: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Self, UsageError> {
        let range = SummaryQuery::parse(p.from, p.to, p.api)?;
        let dimension = Dimension::parse(dimension.ok_or(UsageError::Invalid {
            param: "dimension",
            message: "is required: api, route, app, developer, plan or status_class".into(),
        })?)?;
        let limit = match limit {
            None => 10,
            Some(l) => match l.parse::<u32>() {
                Ok(n @ 1..=MAX_LIMIT) => n,
                _ => {
                    return Err(UsageError::Invalid {
                        param: "limit",
                        message: format!("{l:?} is not a number from 1 to {MAX_LIMIT}"),
                    });
                }
            },
        };
        let hour = Bucket::Hour.millis();
        Ok(Self {
            from_ms: range.from_ms.div_euclid(hour) * hour,
            to_ms: (range.to_ms + hour - 1).div_euclid(hour) * hour,
            dimension,
            limit,
            filter: UsageFilter::parse(&p, range.api)?,
        })
    }
}

/// One entry of a top-N list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopEntry {
    /// The API slug, route, app id, developer id, plan id or status class
    /// (`null` for calls without one, e.g. the app of a call refused before
    /// authentication).
    pub key: Option<String>,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with a 5xx status.
    pub errors: u64,
    /// Calls answered with a 4xx status.
    pub client_errors: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// A top-N list, busiest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopList {
    /// What was ranked.
    pub dimension: &'static str,
    /// The entries, most calls first (ties by key).
    pub entries: Vec<TopEntry>,
}

impl TopList {
    /// A list from `(key, calls, errors, client errors, bytes out)` rows.
    pub(crate) fn assemble(
        dimension: Dimension,
        rows: impl Iterator<Item = (String, u64, u64, u64, u64)>,
    ) -> Self {
        Self {
            dimension: dimension.name(),
            entries: rows
                .map(|(key, calls, errors, client_errors, bytes_out)| TopEntry {
                    key: Some(key)
                        .filter(|k| !k.is_empty())
                        .map(|k| match dimension {
                            Dimension::StatusClass => format!("{k}xx"),
                            _ => k,
                        }),
                    calls,
                    errors,
                    client_errors,
                    bytes_out,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_ranges() {
        let q = SummaryQuery::parse(
            Some("2026-01-01T00:00:00Z"),
            Some("2026-01-02T00:00:00+00:00"),
            Some("weather"),
        )
        .unwrap();
        assert_eq!(q.to_ms - q.from_ms, 86_400_000);
        assert_eq!(q.api.as_deref(), Some("weather"));

        let e = SummaryQuery::parse(None, None, None).unwrap_err();
        assert!(matches!(e, UsageError::Invalid { param: "from", .. }));
        let e = SummaryQuery::parse(Some("yesterday"), None, None).unwrap_err();
        assert!(matches!(e, UsageError::Invalid { param: "from", .. }));
        let e = SummaryQuery::parse(
            Some("2026-01-02T00:00:00Z"),
            Some("2026-01-01T00:00:00Z"),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, UsageError::Invalid { param: "to", .. }));
        let e =
            SummaryQuery::parse(Some("2026-01-01T00:00:00Z"), None, Some("x'; DROP")).unwrap_err();
        assert!(matches!(e, UsageError::Invalid { param: "api", .. }));
    }

    #[test]
    fn time_series_parameters_are_checked() {
        let p = TimeSeriesParams {
            from: Some("2026-01-01T00:30:00Z"),
            to: Some("2026-01-01T02:10:00Z"),
            bucket: Some("hour"),
            status_class: Some("5xx"),
            app: Some("app_1"),
            ..TimeSeriesParams::default()
        };
        let q = TimeSeriesQuery::parse(p).unwrap();
        assert_eq!(
            (q.to_ms - q.from_ms) / 3_600_000,
            3,
            "widened to whole hours"
        );
        assert_eq!(q.filter.status_class, Some(5));
        let bad = |p: TimeSeriesParams<'_>| match TimeSeriesQuery::parse(p).unwrap_err() {
            UsageError::Invalid { param, .. } => param,
            e => panic!("{e}"),
        };
        assert_eq!(
            bad(TimeSeriesParams {
                bucket: Some("week"),
                ..p
            }),
            "bucket"
        );
        assert_eq!(
            bad(TimeSeriesParams {
                status_class: Some("6xx"),
                ..p
            }),
            "status_class"
        );
        assert_eq!(
            bad(TimeSeriesParams {
                app: Some("a' OR 1=1"),
                ..p
            }),
            "app"
        );
        assert_eq!(
            bad(TimeSeriesParams {
                from: Some("2025-01-01T00:00:00Z"),
                bucket: Some("minute"),
                ..p
            }),
            "bucket",
            "too many points"
        );
        assert_eq!(
            bad(TimeSeriesParams {
                to: Some("2025-01-01T00:00:00Z"),
                ..p
            }),
            "to"
        );
    }
}
