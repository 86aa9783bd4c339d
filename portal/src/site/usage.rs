//! Usage of one app, or of one of its keys: calls over time (a server-drawn
//! SVG chart, no script needed), errors, latency p50/p95 per bucket, calls per
//! API, and each subscription's quota against its plan's included calls with
//! the date it resets. Numbers come from the analytics crate's queries, so the
//! page reads the same on the embedded store and on ClickHouse.
//!
//! Who may see what is decided by [`super::apps::owned_app`]: only the app's
//! developer; a key of another app is a 404 like an unknown one.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tollgate_analytics::{SeriesPoint, TimeSeriesParams, TimeSeriesQuery, TopQuery};
use tollgate_core::StoreError;
use tollgate_core::model::{App, SubscriptionStatus};
use tollgate_core::quota::period;
use tollgate_core::store::QuotaRule;
use tollgate_core::time::Timestamp;

use super::Site;
use super::apps::{api_names, owned_app, when};
use super::error::SiteError;
use super::views::{Layout, render};
use super::visitor::Visitor;

/// A period the page offers: its URL value, its label, its length and the
/// bucket width its chart uses.
struct Period {
    value: &'static str,
    label: &'static str,
    hours: i64,
    bucket: &'static str,
}

const PERIODS: &[Period] = &[
    Period {
        value: "24h",
        label: "24 hours",
        hours: 24,
        bucket: "hour",
    },
    Period {
        value: "7d",
        label: "7 days",
        hours: 7 * 24,
        bucket: "hour",
    },
    Period {
        value: "30d",
        label: "30 days",
        hours: 30 * 24,
        bucket: "day",
    },
];

#[derive(Debug, Deserialize, Default)]
pub struct UsageQuery {
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// A link of the period or key selector.
pub struct Choice {
    href: String,
    label: String,
    current: bool,
}

/// A headline number.
pub struct Stat {
    label: &'static str,
    value: String,
    note: String,
}

/// One row of the per-API table.
pub struct ApiRow {
    name: String,
    calls: String,
    client_errors: String,
    errors: String,
}

/// A subscription's quota in its current period.
pub struct QuotaRow {
    plan: String,
    apis: String,
    used: String,
    included: String,
    /// 0 to 100, for the meter.
    percent: u64,
    resets: String,
    note: &'static str,
    over: bool,
}

/// One bucket with calls, for the table under the charts.
pub struct BucketRow {
    t: String,
    calls: String,
    client_errors: String,
    errors: String,
    p50: String,
    p95: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
pub struct UsagePage {
    layout: Layout,
    app_id: String,
    app_name: String,
    /// `all keys` or `key tg_live_AbCd…`.
    scope: String,
    period_label: &'static str,
    periods: Vec<Choice>,
    keys: Vec<Choice>,
    stats: Vec<Stat>,
    calls_chart: Option<Chart>,
    latency_chart: Option<Chart>,
    apis: Vec<ApiRow>,
    quotas: Vec<QuotaRow>,
    buckets: Vec<BucketRow>,
    bucket_label: &'static str,
}

fn rfc3339(ms: i64) -> String {
    Timestamp(ms)
        .to_datetime()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `12,345`
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds, with as many decimals as are worth reading.
fn millis(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".to_owned();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 0.1 {
        "<0.1%".to_owned()
    } else {
        format!("{p:.1}%")
    }
}

/// `GET /apps/{id}/usage?period=24h|7d|30d&key={key id}`
pub async fn usage(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, SiteError> {
    let Some(account) = &visitor.account else {
        return Ok(Redirect::to("/login").into_response());
    };
    let app = owned_app(&site, account, &id).await?;
    let period_value = q
        .period
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("24h");
    let period = PERIODS
        .iter()
        .find(|p| p.value == period_value)
        .ok_or(SiteError::BadRequest)?;
    let keys = site.app.store.list_keys(&app.id).await?;
    let key = match q.key.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => Some(keys.iter().find(|x| x.id == k).ok_or(SiteError::NotFound)?),
    };

    let now = Timestamp::now().0;
    let from = rfc3339(now - period.hours * 3_600_000);
    let to = rfc3339(now);
    let params = TimeSeriesParams {
        from: Some(&from),
        to: Some(&to),
        bucket: Some(period.bucket),
        app: Some(&app.id),
        key: key.map(|k| k.prefix.as_str()),
        ..TimeSeriesParams::default()
    };
    let usage = &site.app.usage;
    let series = usage
        .time_series(&TimeSeriesQuery::parse(params).map_err(SiteError::internal)?)
        .await
        .map_err(SiteError::internal)?;
    let by_api = usage
        .top(&TopQuery::parse(params, Some("api"), Some("50")).map_err(SiteError::internal)?)
        .await
        .map_err(SiteError::internal)?;

    let calls: u64 = series.points.iter().map(|p| p.calls).sum();
    let errors: u64 = series.points.iter().map(|p| p.errors).sum();
    let client_errors: u64 = series.points.iter().map(|p| p.client_errors).sum();
    let bucket_label = if period.bucket == "day" {
        "day"
    } else {
        "hour"
    };
    let mut stats = vec![
        Stat {
            label: "Calls",
            value: count(calls),
            note: format!("in the last {}", period.label),
        },
        Stat {
            label: "Server errors (5xx)",
            value: count(errors),
            note: format!("{} of calls", percent(errors, calls)),
        },
        Stat {
            label: "Client errors (4xx)",
            value: count(client_errors),
            note: format!("{} of calls", percent(client_errors, calls)),
        },
    ];
    if let Some(slowest) = series
        .points
        .iter()
        .filter(|p| p.calls > 0)
        .max_by(|a, b| a.latency_ms.p95.total_cmp(&b.latency_ms.p95))
    {
        stats.push(Stat {
            label: "Latency p50 / p95",
            value: format!(
                "{} / {}",
                millis(slowest.latency_ms.p50),
                millis(slowest.latency_ms.p95)
            ),
            note: format!(
                "slowest {bucket_label}: {}",
                bucket_time(&slowest.t, period.bucket, true)
            ),
        });
    }

    let names = api_names(&site).await?;
    let apis = by_api
        .entries
        .iter()
        .map(|e| ApiRow {
            name: match &e.key {
                Some(slug) => names.get(slug).cloned().unwrap_or_else(|| slug.clone()),
                None => "No API matched".to_owned(),
            },
            calls: count(e.calls),
            client_errors: count(e.client_errors),
            errors: count(e.errors),
        })
        .collect();

    let base = format!("/apps/{}/usage", app.id);
    let key_param = key.map(|k| format!("&key={}", k.id)).unwrap_or_default();
    let periods = PERIODS
        .iter()
        .map(|p| Choice {
            href: format!("{base}?period={}{key_param}", p.value),
            label: p.label.to_owned(),
            current: p.value == period.value,
        })
        .collect();
    let mut key_choices = vec![Choice {
        href: format!("{base}?period={}", period.value),
        label: "All keys".to_owned(),
        current: key.is_none(),
    }];
    key_choices.extend(keys.iter().map(|k| Choice {
        href: format!("{base}?period={}&key={}", period.value, k.id),
        label: format!("{}…", k.prefix),
        current: key.is_some_and(|x| x.id == k.id),
    }));

    let (calls_chart, latency_chart) = if calls == 0 {
        (None, None)
    } else {
        (
            Some(Chart::calls(&series.points, period.bucket)),
            Some(Chart::latency(&series.points, period.bucket)),
        )
    };
    let buckets = series
        .points
        .iter()
        .rev()
        .filter(|p| p.calls > 0)
        .map(|p| BucketRow {
            t: bucket_time(&p.t, period.bucket, true),
            calls: count(p.calls),
            client_errors: count(p.client_errors),
            errors: count(p.errors),
            p50: millis(p.latency_ms.p50),
            p95: millis(p.latency_ms.p95),
        })
        .collect();

    let page = UsagePage {
        layout: visitor
            .layout(&site, Some(&format!("Usage of {}", app.name)))
            .await?,
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        scope: key.map_or_else(|| "all keys".to_owned(), |k| format!("key {}…", k.prefix)),
        period_label: period.label,
        periods,
        keys: key_choices,
        stats,
        calls_chart,
        latency_chart,
        apis,
        quotas: quotas(&site, &app, now, &names).await?,
        buckets,
        bucket_label,
    };
    Ok(render(StatusCode::OK, &page))
}

/// Each live subscription with a quota: calls the quota counted in the
/// current period (refusals for rate limits and the quota itself left out),
/// against the plan's included calls, and when the period ends.
async fn quotas(
    site: &Site,
    app: &App,
    now: i64,
    names: &std::collections::HashMap<String, String>,
) -> Result<Vec<QuotaRow>, SiteError> {
    let store = &site.app.store;
    let mut rows = Vec::new();
    for s in store.list_subscriptions(Some(&app.id)).await? {
        if s.status == SubscriptionStatus::Cancelled {
            continue;
        }
        let plan = match store.get_plan(&s.plan_id).await {
            Ok(p) => p,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(included) = plan.included_calls else {
            continue;
        };
        let rule = QuotaRule {
            included,
            overage: plan.overage,
            interval: plan.billing_interval,
            anchor: plan.quota_anchor,
            subscription_start: s.created_at.0,
        };
        let (start, end) = period(&rule, now);
        let from = rfc3339(start);
        // One second past now: the query's end is exclusive and must follow its start.
        let to = rfc3339(now + 1000);
        let params = TimeSeriesParams {
            from: Some(&from),
            to: Some(&to),
            subscription: Some(&s.id),
            ..TimeSeriesParams::default()
        };
        let mut q =
            TopQuery::parse(params, Some("status_class"), None).map_err(SiteError::internal)?;
        q.filter.quota_counted = true;
        let used: u64 = site
            .app
            .usage
            .top(&q)
            .await
            .map_err(SiteError::internal)?
            .entries
            .iter()
            .map(|e| e.calls)
            .sum();
        let included_u = included.max(0) as u64;
        let over = used > included_u;
        rows.push(QuotaRow {
            apis: plan
                .apis
                .iter()
                .map(|slug| names.get(slug).cloned().unwrap_or_else(|| slug.clone()))
                .collect::<Vec<_>>()
                .join(", "),
            plan: plan.name,
            used: count(used),
            included: count(included_u),
            // Nothing included: any use is all of it.
            percent: used
                .saturating_mul(100)
                .checked_div(included_u)
                .map_or(100, |p| p.min(100)),
            resets: when(Timestamp(end)),
            note: match (plan.overage, over) {
                (true, true) => "Calls past the included ones are billed as overage.",
                (true, false) => "Calls past the included ones pass and are billed as overage.",
                (false, _) => "Calls past the included ones are refused until the reset.",
            },
            over,
        });
    }
    Ok(rows)
}

/// A bucket's start as a label: `14:00` for hours within a day, `Nov 28`
/// for days; `long` adds the date or the time.
fn bucket_time(t: &str, bucket: &str, long: bool) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)) else {
        return t.to_owned();
    };
    let format = match (bucket, long) {
        ("day", _) => "%b %d",
        (_, true) => "%b %d, %H:00",
        (_, false) => "%H:00",
    };
    t.format(format).to_string()
}

// ---- charts --------------------------------------------------------------

/// Drawing area, in SVG user units (the chart scales to its container).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A chart drawn on the server: every coordinate computed here, the template
/// only places elements, the stylesheet colours them.
pub struct Chart {
    /// Accessible name and summary.
    title: String,
    description: String,
    bars: Vec<Bar>,
    lines: Vec<Line>,
    grid: Vec<Tick>,
    x_labels: Vec<Tick>,
    /// Legend: CSS class and label.
    legend: Vec<(&'static str, &'static str)>,
    width: f64,
    height: f64,
    plot_left: f64,
    plot_right: f64,
}

/// One stacked bar.
pub struct Bar {
    title: String,
    segments: Vec<Segment>,
}

/// A rectangle of a bar.
pub struct Segment {
    x: String,
    y: String,
    w: String,
    h: String,
    class: &'static str,
}

/// A line of a line chart, with its points marked.
pub struct Line {
    class: &'static str,
    path: String,
    points: Vec<(String, String, String)>,
}

/// A labelled position on an axis.
pub struct Tick {
    pos: String,
    label: String,
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (1 for 0).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn coord(v: f64) -> String {
    format!("{v:.1}")
}

fn axis_label(v: f64, unit: &str) -> String {
    let text = if v >= 1_000_000.0 {
        format!("{}M", trim(v / 1_000_000.0))
    } else if v >= 1_000.0 {
        format!("{}k", trim(v / 1_000.0))
    } else {
        trim(v)
    };
    format!("{text}{unit}")
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Chart {
    fn frame(
        title: String,
        description: String,
        max: f64,
        unit: &str,
        points: &[SeriesPoint],
        bucket: &str,
    ) -> Self {
        let plot_h = HEIGHT - TOP - BOTTOM;
        let grid = [0.0, 0.5, 1.0]
            .iter()
            .map(|f| Tick {
                pos: coord(TOP + plot_h * (1.0 - f)),
                label: axis_label(max * f, unit),
            })
            .collect();
        let n = points.len().max(1);
        let slot = (WIDTH - LEFT - RIGHT) / n as f64;
        // About six labels whatever the number of buckets.
        let every = n.div_ceil(6).max(1);
        let x_labels = points
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0)
            .map(|(i, p)| Tick {
                pos: coord(LEFT + slot * (i as f64 + 0.5)),
                label: bucket_time(&p.t, bucket, n > 25 && bucket == "hour"),
            })
            .collect();
        Self {
            title,
            description,
            bars: Vec::new(),
            lines: Vec::new(),
            grid,
            x_labels,
            legend: Vec::new(),
            width: WIDTH,
            height: HEIGHT,
            plot_left: LEFT,
            plot_right: WIDTH - RIGHT,
        }
    }

    /// Calls per bucket as stacked bars: successes, 4xx, 5xx.
    fn calls(points: &[SeriesPoint], bucket: &str) -> Self {
        let top = points.iter().map(|p| p.calls).max().unwrap_or(0);
        let max = nice_ceiling(top as f64);
        let total: u64 = points.iter().map(|p| p.calls).sum();
        let mut chart = Self::frame(
            format!("Calls per {bucket}"),
            format!(
                "{} calls in {} buckets; the busiest {bucket} had {}.",
                count(total),
                points.len(),
                count(top)
            ),
            max,
            "",
            points,
            bucket,
        );
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot = (WIDTH - LEFT - RIGHT) / points.len().max(1) as f64;
        let w = (slot * 0.8).max(1.0);
        for (i, p) in points.iter().enumerate() {
            if p.calls == 0 {
                continue;
            }
            let x = LEFT + slot * i as f64 + (slot - w) / 2.0;
            let ok = p.calls.saturating_sub(p.errors + p.client_errors);
            let mut base = TOP + plot_h;
            let mut segments = Vec::new();
            for (n, class) in [
                (ok, "chart__ok"),
                (p.client_errors, "chart__client-error"),
                (p.errors, "chart__error"),
            ] {
                if n == 0 {
                    continue;
                }
                let h = plot_h * n as f64 / max;
                base -= h;
                segments.push(Segment {
                    x: coord(x),
                    y: coord(base),
                    w: coord(w),
                    h: coord(h),
                    class,
                });
            }
            chart.bars.push(Bar {
                title: format!(
                    "{}: {} calls, {} client errors, {} server errors",
                    bucket_time(&p.t, bucket, true),
                    count(p.calls),
                    count(p.client_errors),
                    count(p.errors)
                ),
                segments,
            });
        }
        chart.legend = vec![
            ("chart__ok", "Succeeded"),
            ("chart__client-error", "Client errors (4xx)"),
            ("chart__error", "Server errors (5xx)"),
        ];
        chart
    }

    /// Latency p50 and p95 per bucket, as lines over the buckets with calls.
    fn latency(points: &[SeriesPoint], bucket: &str) -> Self {
        let top = points
            .iter()
            .filter(|p| p.calls > 0)
            .map(|p| p.latency_ms.p95)
            .fold(0.0, f64::max);
        let max = nice_ceiling(top);
        let mut chart = Self::frame(
            format!("Latency per {bucket}"),
            format!(
                "Median (p50) and 95th percentile (p95) latency per {bucket}; the highest p95 was {}.",
                millis(top)
            ),
            max,
            " ms",
            points,
            bucket,
        );
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot = (WIDTH - LEFT - RIGHT) / points.len().max(1) as f64;
        for (class, pick) in [
            (
                "chart__p95",
                (|p: &SeriesPoint| p.latency_ms.p95) as fn(&SeriesPoint) -> f64,
            ),
            ("chart__p50", |p: &SeriesPoint| p.latency_ms.p50),
        ] {
            let mut path = String::new();
            let mut marks = Vec::new();
            let mut gap = true;
            for (i, p) in points.iter().enumerate() {
                if p.calls == 0 {
                    gap = true;
                    continue;
                }
                let x = LEFT + slot * (i as f64 + 0.5);
                let y = TOP + plot_h * (1.0 - pick(p) / max);
                path.push_str(&format!(
                    "{}{} {} ",
                    if gap { "M" } else { "L" },
                    coord(x),
                    coord(y)
                ));
                gap = false;
                marks.push((
                    coord(x),
                    coord(y),
                    format!("{}: {}", bucket_time(&p.t, bucket, true), millis(pick(p))),
                ));
            }
            chart.lines.push(Line {
                class,
                path: path.trim_end().to_owned(),
                points: marks,
            });
        }
        chart.legend = vec![("chart__p50", "p50 (median)"), ("chart__p95", "p95")];
        chart
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_analytics::LatencyMs;

    fn point(t: &str, calls: u64, errors: u64, p95: f64) -> SeriesPoint {
        SeriesPoint {
            t: t.to_owned(),
            calls,
            errors,
            client_errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            latency_ms: LatencyMs {
                p50: p95 / 2.0,
                p95,
                p99: p95,
            },
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(100), "100");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(1, 10_000), "<0.1%");
        assert_eq!(percent(0, 0), "0%");
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(axis_label(2500.0, ""), "2.5k");
        assert_eq!(axis_label(0.5, " ms"), "0.5 ms");
    }

    #[test]
    fn bars_stack_to_the_calls() {
        let points = [
            point("2026-01-01T00:00:00Z", 10, 5, 2.0),
            point("2026-01-01T01:00:00Z", 0, 0, 0.0),
            point("2026-01-01T02:00:00Z", 20, 0, 4.0),
        ];
        let chart = Chart::calls(&points, "hour");
        // Empty buckets draw nothing.
        assert_eq!(chart.bars.len(), 2);
        let plot_h = HEIGHT - TOP - BOTTOM;
        let height =
            |b: &Bar| -> f64 { b.segments.iter().map(|s| s.h.parse::<f64>().unwrap()).sum() };
        // The scale tops at 20: the busiest bar fills the plot, the other half of it.
        assert!((height(&chart.bars[1]) - plot_h).abs() < 0.2);
        assert!((height(&chart.bars[0]) - plot_h / 2.0).abs() < 0.2);
        assert_eq!(chart.bars[0].segments.len(), 2, "successes and 5xx");
        assert!(chart.bars[0].title.contains("10 calls"));

        let latency = Chart::latency(&points, "hour");
        // A gap in the calls breaks the line.
        assert_eq!(latency.lines[0].path.matches('M').count(), 2);
        assert_eq!(latency.lines[0].points.len(), 2);
    }
}
