//! Retention: usage older than the configured number of days is removed.
//!
//! ClickHouse drops whole monthly partitions (cheap, no rewrite), so a month goes
//! once every day of it is older than the cut-off: data lives between the
//! configured days and a month longer. Raw events and the rollups have their own
//! cut-offs. The embedded store deletes the raw events older than the raw
//! cut-off and the rollup rows whose bucket ended before the rollup cut-off.
//! Dropping is idempotent, so every process may run it.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::error::UsageError;
use crate::store::UsageStore;

/// How often retention runs.
pub const INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// How long usage is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days of raw events.
    pub raw_days: u32,
    /// Days of rollups.
    pub rollup_days: u32,
}

/// What one run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Monthly partitions dropped, as `table:YYYYMM` (ClickHouse).
    pub partitions_dropped: Vec<String>,
    /// Raw events deleted (embedded store).
    pub events_deleted: u64,
    /// Rollup rows deleted (embedded store).
    pub rollup_rows_deleted: u64,
}

/// The first month (as `YYYYMM`) that may still hold data newer than
/// `days` before `now`: every partition before it is entirely older.
pub(crate) fn oldest_kept_month(now_ms: i64, days: u32) -> u32 {
    let cutoff = DateTime::<Utc>::from_timestamp_millis(now_ms - i64::from(days) * 86_400_000)
        .unwrap_or_default();
    cutoff.year() as u32 * 100 + cutoff.month()
}

/// The cut-off in milliseconds.
pub(crate) fn cutoff_ms(now_ms: i64, days: u32) -> i64 {
    now_ms - i64::from(days) * 86_400_000
}

impl UsageStore {
    /// Removes usage older than the policy keeps.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        policy: RetentionPolicy,
    ) -> Result<RetentionReport, UsageError> {
        match self {
            Self::Embedded(s) => Ok(RetentionReport {
                partitions_dropped: Vec::new(),
                events_deleted: s.delete_before(cutoff_ms(now_ms, policy.raw_days)).await?,
                rollup_rows_deleted: s
                    .delete_rollups_before(cutoff_ms(now_ms, policy.rollup_days))
                    .await?,
            }),
            Self::ClickHouse(s) => s.apply_retention(now_ms, policy).await,
        }
    }
}

/// Runs retention now and then every [`INTERVAL`] until the task is aborted.
pub async fn run(store: UsageStore, policy: RetentionPolicy) {
    let mut ticker = tokio::time::interval(INTERVAL);
    loop {
        ticker.tick().await;
        match store
            .apply_retention(Utc::now().timestamp_millis(), policy)
            .await
        {
            Ok(r) if r == RetentionReport::default() => {}
            Ok(r) => tracing::info!(
                partitions = ?r.partitions_dropped,
                events = r.events_deleted,
                rollup_rows = r.rollup_rows_deleted,
                "usage retention removed old data"
            ),
            Err(e) => tracing::warn!(error = %e, "usage retention failed; trying again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_months_entirely_older_than_the_cutoff_go() {
        let apr_15 = 1_776_211_200_000; // 2026-04-15T00:00:00Z
        // 30 days before: 2026-03-16, so March stays and February goes.
        assert_eq!(oldest_kept_month(apr_15, 30), 202_603);
        assert_eq!(oldest_kept_month(apr_15, 365), 202_504);
        assert_eq!(cutoff_ms(apr_15, 1), apr_15 - 86_400_000);
    }
}
