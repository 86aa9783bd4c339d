//! Plans and the APIs they cover.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_billing::{BillingInterval, Currency, Money};

use super::{Change, Store, text_enum, ts};
use crate::error::{StoreError, StoreResult};
use crate::id::{IdKind, new_id};
use crate::model::{NewPlan, Plan, PlanPatch, PlanStatus, QuotaAnchor, RateLimit};
use crate::time::Timestamp;

/// Reads the `rate_limits` JSON column.
pub(super) fn rate_limits(row: &AnyRow) -> StoreResult<Vec<RateLimit>> {
    let text: String = row.try_get("rate_limits")?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("plans.rate_limits: {e}")))
}

fn rate_limits_json(limits: &[RateLimit]) -> String {
    serde_json::to_string(limits).expect("rate limits always serialize")
}

pub(super) fn plan(row: &AnyRow, apis: Vec<String>) -> StoreResult<Plan> {
    let currency: String = row.try_get("currency")?;
    let interval: String = row.try_get("billing_interval")?;
    Ok(Plan {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        apis,
        price: Money {
            amount_minor: row.try_get("price_minor")?,
            currency: currency
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("plans.currency: {e}")))?,
        },
        billing_interval: interval
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("plans.billing_interval: {e}")))?,
        included_calls: row.try_get("included_calls")?,
        rate_limits: rate_limits(row)?,
        overage: row.try_get::<i64, _>("overage")? != 0,
        quota_anchor: text_enum(row, "quota_anchor", QuotaAnchor::parse)?,
        approval_required: row.try_get::<i64, _>("approval_required")? != 0,
        status: text_enum(row, "status", PlanStatus::parse)?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

impl Store {
    /// Creates a plan over existing APIs (named by slug).
    pub async fn create_plan(&self, input: NewPlan) -> StoreResult<Plan> {
        input.validate()?;
        let now = Timestamp::now();
        let currency = match &input.currency {
            Some(c) => c.parse().map_err(|e: tollgate_billing::PriceError| {
                crate::ValidationError::new("currency", e.to_string())
            })?,
            None => Currency::usd(),
        };
        let mut tx = self.begin_write().await?;
        let api_ids = self.api_ids_for_slugs(&mut tx, &input.apis).await?;
        let p = Plan {
            id: new_id(IdKind::Plan),
            name: input.name.trim().to_owned(),
            apis: Vec::new(),
            price: Money {
                amount_minor: input.price_minor.unwrap_or(0),
                currency,
            },
            billing_interval: input.billing_interval.unwrap_or(BillingInterval::Month),
            included_calls: input.included_calls,
            rate_limits: input.rate_limits.unwrap_or_default(),
            overage: input.overage.unwrap_or(false),
            quota_anchor: input.quota_anchor.unwrap_or(QuotaAnchor::Calendar),
            approval_required: input.approval_required.unwrap_or(false),
            status: input.status.unwrap_or(PlanStatus::Active),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO plans (id, name, price_minor, currency, billing_interval, included_calls, rate_limits, \
             overage, quota_anchor, status, created_at, updated_at, approval_required) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.price.amount_minor)
        .bind(p.price.currency.code())
        .bind(p.billing_interval.as_str())
        .bind(p.included_calls)
        .bind(rate_limits_json(&p.rate_limits))
        .bind(i64::from(p.overage))
        .bind(p.quota_anchor.as_str())
        .bind(p.status.as_str())
        .bind(now.0)
        .bind(now.0)
        .bind(i64::from(p.approval_required))
        .execute(&mut *tx)
        .await?;
        set_plan_apis(&mut tx, &p.id, &api_ids).await?;
        let v = self
            .bump_version(&mut tx, &[Change::Plan(p.id.clone())])
            .await?;
        self.commit_change(tx, v).await?;
        self.get_plan(&p.id).await
    }

    /// One plan by id, with the slugs of its APIs.
    pub async fn get_plan(&self, id: &str) -> StoreResult<Plan> {
        let row = sqlx::query("SELECT * FROM plans WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("plan", id))?;
        let apis = self.plan_api_slugs(id).await?;
        plan(&row, apis)
    }

    /// Every plan, oldest first.
    pub async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        let rows = sqlx::query("SELECT * FROM plans ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        let links = sqlx::query(
            "SELECT pa.plan_id, a.slug FROM plan_apis pa JOIN apis a ON a.id = pa.api_id \
             ORDER BY a.slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut slugs_of_plan: HashMap<String, Vec<String>> = HashMap::new();
        for l in &links {
            slugs_of_plan
                .entry(l.try_get(0)?)
                .or_default()
                .push(l.try_get(1)?);
        }
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                plan(row, slugs_of_plan.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    async fn plan_api_slugs(&self, plan_id: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT a.slug FROM plan_apis pa JOIN apis a ON a.id = pa.api_id \
             WHERE pa.plan_id = $1 ORDER BY a.slug",
        )
        .bind(plan_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Changes a plan; the gateway applies the new coverage within a second.
    pub async fn update_plan(&self, id: &str, patch: PlanPatch) -> StoreResult<Plan> {
        patch.validate()?;
        let mut p = self.get_plan(id).await?;
        if let Some(v) = patch.name {
            p.name = v.trim().to_owned();
        }
        if let Some(v) = patch.price_minor {
            p.price.amount_minor = v;
        }
        if let Some(v) = patch.currency {
            p.price.currency = v.parse().map_err(|e: tollgate_billing::PriceError| {
                crate::ValidationError::new("currency", e.to_string())
            })?;
        }
        if let Some(v) = patch.billing_interval {
            p.billing_interval = v;
        }
        if let Some(v) = patch.included_calls {
            p.included_calls = v;
        }
        if let Some(v) = patch.rate_limits {
            p.rate_limits = v;
        }
        if let Some(v) = patch.overage {
            p.overage = v;
        }
        if let Some(v) = patch.quota_anchor {
            p.quota_anchor = v;
        }
        if let Some(v) = patch.status {
            p.status = v;
        }
        if let Some(v) = patch.approval_required {
            p.approval_required = v;
        }
        let mut tx = self.begin_write().await?;
        if let Some(slugs) = &patch.apis {
            let ids = self.api_ids_for_slugs(&mut tx, slugs).await?;
            sqlx::query("DELETE FROM plan_apis WHERE plan_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            set_plan_apis(&mut tx, id, &ids).await?;
        }
        sqlx::query(
            "UPDATE plans SET name = $2, price_minor = $3, currency = $4, billing_interval = $5, \
             included_calls = $6, rate_limits = $7, overage = $8, quota_anchor = $9, status = $10, \
             updated_at = $11, approval_required = $12 WHERE id = $1",
        )
        .bind(id)
        .bind(&p.name)
        .bind(p.price.amount_minor)
        .bind(p.price.currency.code())
        .bind(p.billing_interval.as_str())
        .bind(p.included_calls)
        .bind(rate_limits_json(&p.rate_limits))
        .bind(i64::from(p.overage))
        .bind(p.quota_anchor.as_str())
        .bind(p.status.as_str())
        .bind(Timestamp::now().0)
        .bind(i64::from(p.approval_required))
        .execute(&mut *tx)
        .await?;
        let v = self
            .bump_version(&mut tx, &[Change::Plan(id.to_owned())])
            .await?;
        self.commit_change(tx, v).await?;
        self.get_plan(id).await
    }

    /// Deletes a plan nobody is subscribed to; plans with subscriptions are archived instead.
    pub async fn delete_plan(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let subs: i64 = sqlx::query("SELECT COUNT(*) FROM subscriptions WHERE plan_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if subs > 0 {
            return Err(StoreError::Conflict(format!(
                "plan {id} has {subs} subscription(s); archive it instead with PATCH {{\"status\":\"archived\"}}"
            )));
        }
        let done = sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("plan", id));
        }
        let v = self
            .bump_version(&mut tx, &[Change::Plan(id.to_owned())])
            .await?;
        self.commit_change(tx, v).await
    }
}

async fn set_plan_apis(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    plan_id: &str,
    api_ids: &[String],
) -> StoreResult<()> {
    for api_id in api_ids {
        sqlx::query("INSERT INTO plan_apis (plan_id, api_id) VALUES ($1, $2)")
            .bind(plan_id)
            .bind(api_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
