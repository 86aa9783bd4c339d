//! Everything the gateway serves from, read in one go.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, apis::api, opt_ts, text_enum};
use crate::error::{StoreError, StoreResult};
use crate::key::KeyHash;
use tollgate_billing::BillingInterval;

use crate::model::{Api, QuotaAnchor, RateLimit, SubscriptionStatus};
use crate::time::Timestamp;

/// An active key with its owner, as the gateway needs it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Key id.
    pub id: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Visible prefix, for usage events.
    pub prefix: String,
    /// Owning app.
    pub app_id: String,
    /// The app's developer.
    pub developer_id: String,
    /// When the key stops working.
    pub expires_at: Option<Timestamp>,
}

/// A subscription that is not cancelled, with the APIs its plan covers.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    /// Subscription id.
    pub id: String,
    /// Subscribing app.
    pub app_id: String,
    /// Plan id.
    pub plan_id: String,
    /// Active, pending or suspended.
    pub status: SubscriptionStatus,
    /// Ids of the APIs the plan covers.
    pub api_ids: Vec<String>,
    /// The plan's rate limits.
    pub rate_limits: Vec<RateLimit>,
    /// The plan's quota, when it includes a limited number of calls.
    pub quota: Option<QuotaRule>,
}

/// A subscription's quota: included calls per billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRule {
    /// Calls included per period.
    pub included: i64,
    /// Calls beyond pass as overage (soft) instead of being refused (hard).
    pub overage: bool,
    /// Month or year.
    pub interval: BillingInterval,
    /// Calendar periods, or periods from the subscription's start.
    pub anchor: QuotaAnchor,
    /// When the subscription started (ms), for anchored periods.
    pub subscription_start: i64,
}

/// An app as bearer tokens and the token endpoint need it.
#[derive(Debug, Clone, Default)]
pub struct AppRecord {
    /// App id (also its OAuth2 client id).
    pub id: String,
    /// The app's developer.
    pub developer_id: String,
    /// SHA-256 of the app's client secret, if it has one.
    pub client_secret_hash: Option<KeyHash>,
}

/// The configuration the gateway serves, at one version.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// Version read before the data, so a change made meanwhile triggers another load.
    pub version: i64,
    /// Every API.
    pub apis: Vec<Api>,
    /// Active keys.
    pub keys: Vec<KeyRecord>,
    /// Subscriptions that are not cancelled.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Every app with its developer and OAuth2 client secret hash.
    pub apps: Vec<AppRecord>,
}

impl Store {
    /// Reads the whole gateway configuration.
    pub async fn load_gateway_config(&self) -> StoreResult<GatewayConfig> {
        let version = self.config_version().await?;
        let apis = sqlx::query("SELECT * FROM apis ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(api)
            .collect::<StoreResult<Vec<_>>>()?;

        let key_rows = sqlx::query(
            "SELECT k.id, k.key_hash, k.prefix, k.app_id, a.developer_id, k.expires_at \
             FROM api_keys k JOIN apps a ON a.id = k.app_id WHERE k.status = 'active'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Vec::with_capacity(key_rows.len());
        for row in &key_rows {
            let hash: String = row.try_get("key_hash")?;
            keys.push(KeyRecord {
                id: row.try_get("id")?,
                hash: KeyHash::from_hex(&hash)
                    .ok_or_else(|| StoreError::Corrupt("api_keys.key_hash".into()))?,
                prefix: row.try_get("prefix")?,
                app_id: row.try_get("app_id")?,
                developer_id: row.try_get("developer_id")?,
                expires_at: opt_ts(row, "expires_at")?,
            });
        }

        let sub_rows = sqlx::query(
            "SELECT id, app_id, plan_id, status, created_at FROM subscriptions WHERE status <> 'cancelled' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let coverage = sqlx::query("SELECT plan_id, api_id FROM plan_apis ORDER BY plan_id")
            .fetch_all(&self.pool)
            .await?;
        let mut limits_of_plan: HashMap<String, Vec<RateLimit>> = HashMap::new();
        let mut quota_of_plan: HashMap<String, (i64, bool, BillingInterval, QuotaAnchor)> =
            HashMap::new();
        for row in sqlx::query(
            "SELECT id, rate_limits, included_calls, overage, billing_interval, quota_anchor FROM plans",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        {
            let id: String = row.try_get("id")?;
            if let Some(included) = row.try_get::<Option<i64>, _>("included_calls")? {
                let interval: String = row.try_get("billing_interval")?;
                quota_of_plan.insert(
                    id.clone(),
                    (
                        included,
                        row.try_get::<i64, _>("overage")? != 0,
                        interval
                            .parse()
                            .map_err(|e| StoreError::Corrupt(format!("plans.billing_interval: {e}")))?,
                        text_enum(row, "quota_anchor", QuotaAnchor::parse)?,
                    ),
                );
            }
            limits_of_plan.insert(id, super::plans::rate_limits(row)?);
        }
        let mut apis_of_plan: HashMap<String, Vec<String>> = HashMap::new();
        for c in &coverage {
            apis_of_plan
                .entry(c.try_get(0)?)
                .or_default()
                .push(c.try_get(1)?);
        }
        let mut subscriptions = Vec::with_capacity(sub_rows.len());
        for row in &sub_rows {
            let plan_id: String = row.try_get("plan_id")?;
            let api_ids = apis_of_plan.get(&plan_id).cloned().unwrap_or_default();
            let rate_limits = limits_of_plan.get(&plan_id).cloned().unwrap_or_default();
            let created: i64 = row.try_get("created_at")?;
            let quota =
                quota_of_plan
                    .get(&plan_id)
                    .map(|&(included, overage, interval, anchor)| QuotaRule {
                        included,
                        overage,
                        interval,
                        anchor,
                        subscription_start: created,
                    });
            subscriptions.push(SubscriptionRecord {
                id: row.try_get("id")?,
                app_id: row.try_get("app_id")?,
                plan_id,
                status: text_enum(row, "status", SubscriptionStatus::parse)?,
                rate_limits,
                quota,
                api_ids,
            });
        }
        let apps = sqlx::query("SELECT id, developer_id, client_secret_hash FROM apps")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let hash: Option<String> = r.try_get("client_secret_hash")?;
                Ok(AppRecord {
                    id: r.try_get("id")?,
                    developer_id: r.try_get("developer_id")?,
                    client_secret_hash: hash.as_deref().and_then(KeyHash::from_hex),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(GatewayConfig {
            version,
            apps,
            apis,
            keys,
            subscriptions,
        })
    }
}
