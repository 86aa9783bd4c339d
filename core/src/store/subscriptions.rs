//! Subscriptions of apps to plans.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Change, Store, text_enum, ts};
use crate::error::{StoreError, StoreResult, ValidationError};
use crate::id::{IdKind, new_id};
use crate::model::{NewSubscription, PlanStatus, Subscription, SubscriptionStatus};
use crate::time::Timestamp;

pub(super) fn subscription(row: &AnyRow) -> StoreResult<Subscription> {
    Ok(Subscription {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        plan_id: row.try_get("plan_id")?,
        status: text_enum(row, "status", SubscriptionStatus::parse)?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

impl Store {
    /// Subscribes an app to an offered plan. An app holds at most one live
    /// (not cancelled) subscription per plan.
    pub async fn create_subscription(&self, input: NewSubscription) -> StoreResult<Subscription> {
        let status = input.status.unwrap_or(SubscriptionStatus::Active);
        if status == SubscriptionStatus::Cancelled {
            return Err(ValidationError::new(
                "status",
                "a new subscription must be active, pending or suspended",
            )
            .into());
        }
        let plan = match self.get_plan(&input.plan_id).await {
            Err(StoreError::NotFound { .. }) => {
                return Err(ValidationError::new(
                    "plan_id",
                    format!("no plan has the id {:?}", input.plan_id),
                )
                .into());
            }
            other => other?,
        };
        if plan.status != PlanStatus::Active {
            return Err(ValidationError::new(
                "plan_id",
                format!(
                    "plan {} is {}; only active plans take new subscriptions",
                    plan.id, plan.status
                ),
            )
            .into());
        }
        if let Err(StoreError::NotFound { .. }) = self.get_app(&input.app_id).await {
            return Err(ValidationError::new(
                "app_id",
                format!("no app has the id {:?}", input.app_id),
            )
            .into());
        }
        let mut tx = self.begin_write().await?;
        let live = sqlx::query(
            "SELECT id FROM subscriptions WHERE app_id = $1 AND plan_id = $2 AND status <> 'cancelled'",
        )
        .bind(&input.app_id)
        .bind(&input.plan_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = live {
            let id: String = row.try_get(0)?;
            return Err(StoreError::Conflict(format!(
                "app {} already has subscription {id} to plan {}",
                input.app_id, input.plan_id
            )));
        }
        let now = Timestamp::now();
        let s = Subscription {
            id: new_id(IdKind::Subscription),
            app_id: input.app_id,
            plan_id: input.plan_id,
            status,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO subscriptions (id, app_id, plan_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id)
        .bind(&s.app_id)
        .bind(&s.plan_id)
        .bind(s.status.as_str())
        .bind(now.0)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        let v = self
            .bump_version(&mut tx, &[Change::App(s.app_id.clone())])
            .await?;
        self.commit_change(tx, v).await?;
        Ok(s)
    }

    /// One subscription by id.
    pub async fn get_subscription(&self, id: &str) -> StoreResult<Subscription> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("subscription", id))?;
        subscription(&row)
    }

    /// Subscriptions, all or one app's, oldest first.
    pub async fn list_subscriptions(&self, app_id: Option<&str>) -> StoreResult<Vec<Subscription>> {
        let rows = match app_id {
            Some(app) => {
                sqlx::query("SELECT * FROM subscriptions WHERE app_id = $1 ORDER BY created_at, id")
                    .bind(app)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM subscriptions ORDER BY created_at, id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(subscription).collect()
    }

    /// Moves a subscription to a new status; the gateway applies it within a
    /// second. Cancelled is final.
    pub async fn set_subscription_status(
        &self,
        id: &str,
        status: SubscriptionStatus,
    ) -> StoreResult<Subscription> {
        let mut s = self.get_subscription(id).await?;
        if s.status == status {
            return Ok(s);
        }
        if s.status == SubscriptionStatus::Cancelled {
            return Err(StoreError::Conflict(format!(
                "subscription {id} is cancelled; create a new subscription instead"
            )));
        }
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE subscriptions SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        let v = self
            .bump_version(&mut tx, &[Change::App(s.app_id.clone())])
            .await?;
        self.commit_change(tx, v).await?;
        s.status = status;
        s.updated_at = now;
        Ok(s)
    }
}
