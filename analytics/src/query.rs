//! Usage queries: parameters are parsed and checked here, then each store turns
//! them into SQL with bound values (never spliced user input).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::UsageError;

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
}
