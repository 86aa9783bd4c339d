//! Quota periods: which stretch of time a call's included calls count against.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use tollgate_billing::BillingInterval;

use crate::model::QuotaAnchor;
use crate::store::QuotaRule;

/// Midnight UTC of `year-month-day`, the day clamped to the month's length
/// (an anchor on the 31st falls on the 30th in April, the 28th or 29th in February).
fn day_in_month(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    let mut d = day.clamp(1, 31);
    loop {
        if let Some(date) = NaiveDate::from_ymd_opt(year, month, d) {
            return Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"));
        }
        d -= 1;
    }
}

fn add_months(year: i32, month: u32, n: i32) -> (i32, u32) {
    let total = year * 12 + (month as i32 - 1) + n;
    (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32)
}

/// The period containing `now_ms`: `[start, end)` in milliseconds.
pub fn period(rule: &QuotaRule, now_ms: i64) -> (i64, i64) {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_default();
    let anchor = Utc
        .timestamp_millis_opt(rule.subscription_start)
        .single()
        .unwrap_or_default();
    let step = match rule.interval {
        BillingInterval::Month => 1,
        BillingInterval::Year => 12,
    };
    let (anchor_month, anchor_day) = match (rule.anchor, rule.interval) {
        (QuotaAnchor::Calendar, BillingInterval::Month) => (None, 1),
        (QuotaAnchor::Calendar, BillingInterval::Year) => (Some(1), 1),
        (QuotaAnchor::Subscription, BillingInterval::Month) => (None, anchor.day()),
        (QuotaAnchor::Subscription, BillingInterval::Year) => (Some(anchor.month()), anchor.day()),
    };
    // The latest period start at or before now.
    let (mut y, mut m) = (now.year(), anchor_month.unwrap_or(now.month()));
    let mut start = day_in_month(y, m, anchor_day);
    while start > now {
        (y, m) = add_months(y, m, -step);
        start = day_in_month(y, m, anchor_day);
    }
    let (ny, nm) = add_months(y, m, step);
    let end = day_in_month(ny, nm, anchor_day);
    (start.timestamp_millis(), end.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn rule(interval: BillingInterval, anchor: QuotaAnchor, start: &str) -> QuotaRule {
        QuotaRule {
            included: 10,
            overage: false,
            interval,
            anchor,
            subscription_start: ms(start),
        }
    }

    #[test]
    fn calendar_months_and_years() {
        let r = rule(
            BillingInterval::Month,
            QuotaAnchor::Calendar,
            "2026-01-15T10:00:00Z",
        );
        assert_eq!(
            period(&r, ms("2026-03-31T23:59:59Z")),
            (ms("2026-03-01T00:00:00Z"), ms("2026-04-01T00:00:00Z"))
        );
        assert_eq!(
            period(&r, ms("2026-12-05T00:00:00Z")),
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        let y = rule(
            BillingInterval::Year,
            QuotaAnchor::Calendar,
            "2026-01-15T10:00:00Z",
        );
        assert_eq!(
            period(&y, ms("2026-07-01T00:00:00Z")),
            (ms("2026-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn anchored_periods_follow_the_subscription_start() {
        let r = rule(
            BillingInterval::Month,
            QuotaAnchor::Subscription,
            "2026-01-31T10:00:00Z",
        );
        assert_eq!(
            period(&r, ms("2026-02-10T00:00:00Z")),
            (ms("2026-01-31T00:00:00Z"), ms("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            period(&r, ms("2026-02-28T12:00:00Z")),
            (ms("2026-02-28T00:00:00Z"), ms("2026-03-31T00:00:00Z"))
        );
        assert_eq!(
            period(&r, ms("2026-01-05T00:00:00Z")),
            (ms("2025-12-31T00:00:00Z"), ms("2026-01-31T00:00:00Z"))
        );
        let y = rule(
            BillingInterval::Year,
            QuotaAnchor::Subscription,
            "2024-02-29T00:00:00Z",
        );
        assert_eq!(
            period(&y, ms("2026-03-01T00:00:00Z")),
            (ms("2026-02-28T00:00:00Z"), ms("2027-02-28T00:00:00Z"))
        );
        assert_eq!(
            period(&y, ms("2026-02-01T00:00:00Z")),
            (ms("2025-02-28T00:00:00Z"), ms("2026-02-28T00:00:00Z"))
        );
    }
}
