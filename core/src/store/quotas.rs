//! Shared quota counters that gateways lease blocks of calls from.
//!
//! `leased` counts the calls of a subscription's period handed out to gateways.
//! A lease takes a block at once (so the counter is touched once per block, not
//! per call) and, for a hard quota, never past the plan's included calls; a
//! gateway gives back what it did not use. Leasing runs in one transaction whose
//! UPDATE locks the row, so concurrent gateways never hand out the same calls.

use sqlx::Row;

use super::Store;
use crate::error::StoreResult;

/// A block of calls a gateway may admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLease {
    /// Calls of the period leased before this block (the first call's ordinal).
    pub start: i64,
    /// Calls in the block (may be fewer than asked, or 0, under a hard quota).
    pub granted: i64,
}

impl Store {
    /// Leases up to `want` calls of a subscription's period starting at
    /// `period_start` (ms). With `cap`, the period's leased total never passes it.
    pub async fn lease_quota(
        &self,
        subscription_id: &str,
        period_start: i64,
        want: i64,
        cap: Option<i64>,
    ) -> StoreResult<QuotaLease> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO quota_counters (subscription_id, period_start, leased) VALUES ($1, $2, 0) \
             ON CONFLICT (subscription_id, period_start) DO NOTHING",
        )
        .bind(subscription_id)
        .bind(period_start)
        .execute(&mut *tx)
        .await?;
        let after: i64 = sqlx::query(
            "UPDATE quota_counters SET leased = leased + $3 \
             WHERE subscription_id = $1 AND period_start = $2 RETURNING leased",
        )
        .bind(subscription_id)
        .bind(period_start)
        .bind(want)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let start = after - want;
        let granted = match cap {
            Some(cap) => (cap - start).clamp(0, want),
            None => want,
        };
        if granted < want {
            sqlx::query(
                "UPDATE quota_counters SET leased = leased - $3 \
                 WHERE subscription_id = $1 AND period_start = $2",
            )
            .bind(subscription_id)
            .bind(period_start)
            .bind(want - granted)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(QuotaLease { start, granted })
    }

    /// Gives back `unused` calls of a lease.
    pub async fn release_quota(
        &self,
        subscription_id: &str,
        period_start: i64,
        unused: i64,
    ) -> StoreResult<()> {
        if unused <= 0 {
            return Ok(());
        }
        sqlx::query(
            "UPDATE quota_counters SET leased = CASE WHEN leased > $3 THEN leased - $3 ELSE 0 END \
             WHERE subscription_id = $1 AND period_start = $2",
        )
        .bind(subscription_id)
        .bind(period_start)
        .bind(unused)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Calls of a period leased so far (used, plus blocks gateways still hold).
    pub async fn quota_leased(&self, subscription_id: &str, period_start: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT leased FROM quota_counters WHERE subscription_id = $1 AND period_start = $2",
        )
        .bind(subscription_id)
        .bind(period_start)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }
}
