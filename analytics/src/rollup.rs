//! The rollup tables both stores keep, and which one answers a query.
//!
//! Two shapes, each per minute, hour and day as the queries need them:
//!
//! - **api** (`usage_api_minute`, `usage_api_hour`, `usage_api_day`): by API,
//!   route and status class — a few hundred rows per bucket whatever the number
//!   of customers; answers unfiltered dashboards and per-API ones.
//! - **app** (`usage_app_day`): by app, developer, plan, subscription and
//!   status class — customer rankings over whole days, a row per customer and
//!   day whatever APIs they call.
//! - **customer** (`usage_customer_hour`, `usage_customer_day`): by app,
//!   developer, plan, subscription, API and status class, without the route —
//!   answers rankings of customers and any series filtered by one.
//!
//! Each row holds calls, errors (5xx), client errors (4xx), bytes in and out,
//! overage calls and a latency histogram ([`crate::latency`]). A query reads the
//! smallest table that holds its dimension and every filter at its bucket width;
//! anything else (a minute series of one app, routes of one app) reads the raw
//! events, and so does any query filtered by a key or by what a quota counted:
//! the rollups keep neither the key nor the error code. Table and column names here are fixed text, never user input.

use crate::query::{Bucket, Dimension, UsageFilter};

/// Which columns a rollup is keyed by (besides its time bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// API, route, status class.
    Api,
    /// App, developer, plan, subscription, status class.
    App,
    /// App, developer, plan, subscription, API, status class.
    Customer,
}

impl Shape {
    /// The key columns, shared by both stores' tables.
    pub(crate) fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Api => &["api_slug", "route", "status_class"],
            Self::App => &[
                "app_id",
                "developer_id",
                "plan_id",
                "subscription_id",
                "status_class",
            ],
            Self::Customer => &[
                "app_id",
                "developer_id",
                "plan_id",
                "subscription_id",
                "api_slug",
                "status_class",
            ],
        }
    }

    fn covers(self, f: &UsageFilter, dimension: Option<Dimension>) -> bool {
        if needs_raw(f) {
            return false;
        }
        let customer_filter = f.app.is_some()
            || f.plan.is_some()
            || f.developer.is_some()
            || f.subscription.is_some();
        match self {
            Self::Api => {
                !customer_filter
                    && matches!(
                        dimension,
                        None | Some(Dimension::Api | Dimension::Route | Dimension::StatusClass)
                    )
            }
            Self::App => {
                f.api.is_none() && !matches!(dimension, Some(Dimension::Api | Dimension::Route))
            }
            Self::Customer => dimension != Some(Dimension::Route),
        }
    }
}

/// One rollup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rollup {
    /// Its key columns.
    pub shape: Shape,
    /// Its time bucket.
    pub grain: Bucket,
    /// The table's name.
    pub table: &'static str,
}

/// Every rollup table, in the order retention and the embedded writer visit them.
pub(crate) const ROLLUPS: [Rollup; 6] = [
    Rollup {
        shape: Shape::Api,
        grain: Bucket::Minute,
        table: "usage_api_minute",
    },
    Rollup {
        shape: Shape::Api,
        grain: Bucket::Hour,
        table: "usage_api_hour",
    },
    Rollup {
        shape: Shape::Api,
        grain: Bucket::Day,
        table: "usage_api_day",
    },
    Rollup {
        shape: Shape::App,
        grain: Bucket::Day,
        table: "usage_app_day",
    },
    Rollup {
        shape: Shape::Customer,
        grain: Bucket::Hour,
        table: "usage_customer_hour",
    },
    Rollup {
        shape: Shape::Customer,
        grain: Bucket::Day,
        table: "usage_customer_day",
    },
];

impl Rollup {
    /// The smallest rollup at `grain` that holds `dimension` and the filter.
    fn find(grain: Bucket, f: &UsageFilter, dimension: Option<Dimension>) -> Option<Self> {
        ROLLUPS
            .into_iter()
            .find(|r| r.grain == grain && r.shape.covers(f, dimension))
    }
}

/// Where (part of) a query's range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A rollup table.
    Rollup(Rollup),
    /// The raw events.
    Raw,
}

/// A time range `[from_ms, to_ms)` and where to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Table.
    pub source: Source,
    /// Start, inclusive (ms).
    pub from_ms: i64,
    /// End, exclusive (ms).
    pub to_ms: i64,
}

/// Where a time series with this bucket and filter is read from.
pub(crate) fn series_source(bucket: Bucket, f: &UsageFilter) -> Source {
    Rollup::find(bucket, f, None).map_or(Source::Raw, Source::Rollup)
}

/// Where a ranking over `[from_ms, to_ms)` (whole hours) is read from: whole
/// days from a day rollup, the hours before the first and after the last
/// whole day from the hour rollup of the same shape, or all from raw events.
pub(crate) fn top_pieces(from_ms: i64, to_ms: i64, d: Dimension, f: &UsageFilter) -> Vec<Piece> {
    let (Some(hours), Some(days)) = (
        Rollup::find(Bucket::Hour, f, Some(d)),
        Rollup::find(Bucket::Day, f, Some(d)),
    ) else {
        return vec![Piece {
            source: Source::Raw,
            from_ms,
            to_ms,
        }];
    };
    let day = Bucket::Day.millis();
    let first_day = (from_ms + day - 1).div_euclid(day) * day;
    let last_day = to_ms.div_euclid(day) * day;
    if first_day >= last_day {
        return vec![Piece {
            source: Source::Rollup(hours),
            from_ms,
            to_ms,
        }];
    }
    [
        (hours, from_ms, first_day),
        (days, first_day, last_day),
        (hours, last_day, to_ms),
    ]
    .into_iter()
    .filter(|(_, from, to)| from < to)
    .map(|(r, from_ms, to_ms)| Piece {
        source: Source::Rollup(r),
        from_ms,
        to_ms,
    })
    .collect()
}

/// Whether a filter needs the raw events: no rollup keeps the key or the error
/// code.
fn needs_raw(f: &UsageFilter) -> bool {
    f.key.is_some() || f.quota_counted
}

/// The condition for calls a quota counted: not refused for a rate limit or
/// the quota itself (the gateway's stable error codes). Raw events only; the
/// same text on both stores.
pub(crate) const QUOTA_COUNTED: &str =
    "error_code NOT IN ('rate_limited', 'rate_limiter_unavailable', 'quota_exceeded')";

/// The error codes [`QUOTA_COUNTED`] leaves out, for a filter applied in Rust
/// (the embedded store's raw events).
pub(crate) const QUOTA_REFUSALS: [&str; 3] =
    ["rate_limited", "rate_limiter_unavailable", "quota_exceeded"];

/// A filter value to bind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FilterValue<'a> {
    /// An id or slug.
    Text(&'a str),
    /// A status class digit.
    Class(u8),
}

/// The filter as `column = ?` conditions, in bind order; `status_class` is
/// the column name to use for the status class (the rollups' column, or an
/// expression over the raw events' status). The key prefix is a raw events'
/// column: a filter with a key never reads a rollup. [`QUOTA_COUNTED`] is not
/// among these (it binds nothing).
pub(crate) fn conditions<'a>(
    f: &'a UsageFilter,
    status_class: &'static str,
) -> Vec<(&'static str, FilterValue<'a>)> {
    let mut out: Vec<(&'static str, FilterValue<'a>)> = [
        ("api_slug", &f.api),
        ("app_id", &f.app),
        ("plan_id", &f.plan),
        ("developer_id", &f.developer),
        ("subscription_id", &f.subscription),
        ("key_prefix", &f.key),
    ]
    .into_iter()
    .filter_map(|(c, v)| v.as_deref().map(|v| (c, FilterValue::Text(v))))
    .collect();
    if let Some(c) = f.status_class {
        out.push((status_class, FilterValue::Class(c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const D: i64 = 86_400_000;

    #[test]
    fn quota_refusals_are_the_codes_the_sql_leaves_out() {
        let listed: Vec<String> = QUOTA_REFUSALS.iter().map(|c| format!("'{c}'")).collect();
        assert_eq!(
            QUOTA_COUNTED,
            format!("error_code NOT IN ({})", listed.join(", "))
        );
    }

    fn app(a: &str) -> UsageFilter {
        UsageFilter {
            app: Some(a.into()),
            ..UsageFilter::default()
        }
    }

    #[test]
    fn queries_read_the_smallest_table_that_holds_them() {
        let none = UsageFilter::default();
        let table = |s: Source| match s {
            Source::Rollup(r) => r.table,
            Source::Raw => "raw",
        };
        assert_eq!(table(series_source(Bucket::Day, &none)), "usage_api_day");
        assert_eq!(
            table(series_source(Bucket::Hour, &app("a"))),
            "usage_customer_hour"
        );
        assert_eq!(table(series_source(Bucket::Minute, &app("a"))), "raw");
        assert_eq!(
            table(series_source(Bucket::Minute, &none)),
            "usage_api_minute"
        );

        assert_eq!(
            table(series_source(Bucket::Day, &app("a"))),
            "usage_app_day"
        );
        let one_api_of_app = UsageFilter {
            api: Some("x".into()),
            ..app("a")
        };
        assert_eq!(
            table(series_source(Bucket::Day, &one_api_of_app)),
            "usage_customer_day"
        );

        // 30 whole days: one piece of the day rollup.
        let p = top_pieces(0, 30 * D, Dimension::App, &none);
        assert_eq!(p.len(), 1);
        assert_eq!(table(p[0].source), "usage_app_day");
        let p = top_pieces(0, 30 * D, Dimension::App, &one_api_of_app);
        assert_eq!(table(p[0].source), "usage_customer_day");
        // Ragged ends: hours, days, hours (each piece from the smallest table
        // of its width).
        let p = top_pieces(5 * H, 2 * D + 3 * H, Dimension::Developer, &none);
        assert_eq!(
            p.iter().map(|p| table(p.source)).collect::<Vec<_>>(),
            [
                "usage_customer_hour",
                "usage_app_day",
                "usage_customer_hour"
            ]
        );
        let p = top_pieces(5 * H, 2 * D + 3 * H, Dimension::Api, &none);
        assert_eq!(
            p.iter()
                .map(|p| (table(p.source), p.from_ms, p.to_ms))
                .collect::<Vec<_>>(),
            [
                ("usage_api_hour", 5 * H, D),
                ("usage_api_day", D, 2 * D),
                ("usage_api_hour", 2 * D, 2 * D + 3 * H),
            ]
        );
        // Less than a whole day: hours only.
        let p = top_pieces(5 * H, D + 3 * H, Dimension::Plan, &none);
        assert_eq!(p.len(), 1);
        assert_eq!(table(p[0].source), "usage_customer_hour");
        // A key or what a quota counted: the raw events, whatever the grain.
        let key = UsageFilter {
            key: Some("tg_live_AAAA".into()),
            ..UsageFilter::default()
        };
        let counted = UsageFilter {
            quota_counted: true,
            ..app("a")
        };
        for f in [&key, &counted] {
            for b in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
                assert_eq!(series_source(b, f), Source::Raw);
            }
            let p = top_pieces(0, 30 * D, Dimension::StatusClass, f);
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].source, Source::Raw);
        }
        // Routes of one app: the raw events.
        let p = top_pieces(0, D, Dimension::Route, &app("a"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].source, Source::Raw);
    }
}
