//! Everything the gateway serves from, read in one go.

use std::collections::HashMap;

use futures_util::TryStreamExt;
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

/// One app's part of the configuration: what the gateway replaces when the app,
/// one of its keys or one of its subscriptions changes.
#[derive(Debug, Clone)]
pub struct AppSlice {
    /// The app.
    pub app: AppRecord,
    /// Its active keys.
    pub keys: Vec<KeyRecord>,
    /// Its subscriptions that are not cancelled.
    pub subscriptions: Vec<SubscriptionRecord>,
}

/// What a plan grants, as subscriptions carry it.
struct PlanTerms {
    api_ids: Vec<String>,
    rate_limits: Vec<RateLimit>,
    quota: Option<(i64, bool, BillingInterval, QuotaAnchor)>,
}

/// Plan terms from plan rows and `(plan_id, api_id)` coverage rows.
fn plan_terms(
    plans: &[sqlx::any::AnyRow],
    coverage: &[sqlx::any::AnyRow],
) -> StoreResult<HashMap<String, PlanTerms>> {
    let mut terms = HashMap::with_capacity(plans.len());
    for row in plans {
        let id: String = row.try_get("id")?;
        let quota = match row.try_get::<Option<i64>, _>("included_calls")? {
            Some(included) => {
                let interval: String = row.try_get("billing_interval")?;
                Some((
                    included,
                    row.try_get::<i64, _>("overage")? != 0,
                    interval
                        .parse()
                        .map_err(|e| StoreError::Corrupt(format!("plans.billing_interval: {e}")))?,
                    text_enum(row, "quota_anchor", QuotaAnchor::parse)?,
                ))
            }
            None => None,
        };
        terms.insert(
            id,
            PlanTerms {
                api_ids: Vec::new(),
                rate_limits: super::plans::rate_limits(row)?,
                quota,
            },
        );
    }
    for c in coverage {
        let plan_id: String = c.try_get(0)?;
        if let Some(t) = terms.get_mut(&plan_id) {
            t.api_ids.push(c.try_get(1)?);
        }
    }
    Ok(terms)
}

fn subscription_record(
    row: &sqlx::any::AnyRow,
    terms: &HashMap<String, PlanTerms>,
) -> StoreResult<SubscriptionRecord> {
    let plan_id: String = row.try_get("plan_id")?;
    let created: i64 = row.try_get("created_at")?;
    let plan = terms.get(&plan_id);
    Ok(SubscriptionRecord {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        status: text_enum(row, "status", SubscriptionStatus::parse)?,
        api_ids: plan.map(|t| t.api_ids.clone()).unwrap_or_default(),
        rate_limits: plan.map(|t| t.rate_limits.clone()).unwrap_or_default(),
        quota: plan
            .and_then(|t| t.quota)
            .map(|(included, overage, interval, anchor)| QuotaRule {
                included,
                overage,
                interval,
                anchor,
                subscription_start: created,
            }),
        plan_id,
    })
}

fn key_record(row: &sqlx::any::AnyRow) -> StoreResult<KeyRecord> {
    let hash: String = row.try_get("key_hash")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        hash: KeyHash::from_hex(&hash)
            .ok_or_else(|| StoreError::Corrupt("api_keys.key_hash".into()))?,
        prefix: row.try_get("prefix")?,
        app_id: row.try_get("app_id")?,
        developer_id: row.try_get("developer_id")?,
        expires_at: opt_ts(row, "expires_at")?,
    })
}

fn app_record(row: &sqlx::any::AnyRow) -> StoreResult<AppRecord> {
    let hash: Option<String> = row.try_get("client_secret_hash")?;
    Ok(AppRecord {
        id: row.try_get("id")?,
        developer_id: row.try_get("developer_id")?,
        client_secret_hash: hash.as_deref().and_then(KeyHash::from_hex),
    })
}

/// Active keys with their app's developer (a macro so queries can extend it with `concat!`).
macro_rules! active_keys {
    () => {
        "SELECT k.id, k.key_hash, k.prefix, k.app_id, a.developer_id, k.expires_at \
         FROM api_keys k JOIN apps a ON a.id = k.app_id WHERE k.status = 'active'"
    };
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
        // Streamed: with a million keys, holding every row at once would double
        // the memory a reload needs.
        let mut keys = Vec::new();
        let mut rows = sqlx::query(active_keys!()).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            keys.push(key_record(&row)?);
        }
        drop(rows);
        keys.shrink_to_fit();
        let plans = sqlx::query(
            "SELECT id, rate_limits, included_calls, overage, billing_interval, quota_anchor FROM plans",
        )
        .fetch_all(&self.pool)
        .await?;
        let coverage =
            sqlx::query("SELECT plan_id, api_id FROM plan_apis ORDER BY plan_id, api_id")
                .fetch_all(&self.pool)
                .await?;
        let terms = plan_terms(&plans, &coverage)?;
        let subscriptions = sqlx::query(
            "SELECT id, app_id, plan_id, status, created_at FROM subscriptions WHERE status <> 'cancelled' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| subscription_record(row, &terms))
        .collect::<StoreResult<Vec<_>>>()?;
        let apps = sqlx::query("SELECT id, developer_id, client_secret_hash FROM apps")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(app_record)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(GatewayConfig {
            version,
            apps,
            apis,
            keys,
            subscriptions,
        })
    }

    /// The APIs with these ids that exist (a missing one was deleted).
    pub async fn load_apis(&self, ids: &[String]) -> StoreResult<Vec<Api>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = sqlx::query("SELECT * FROM apis WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            {
                out.push(api(&row)?);
            }
        }
        Ok(out)
    }

    /// One app's keys and subscriptions; `None` when the app no longer exists.
    pub async fn load_app_slice(&self, app_id: &str) -> StoreResult<Option<AppSlice>> {
        let Some(app) =
            sqlx::query("SELECT id, developer_id, client_secret_hash FROM apps WHERE id = $1")
                .bind(app_id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let app = app_record(&app)?;
        let keys = sqlx::query(concat!(active_keys!(), " AND k.app_id = $1"))
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_record)
            .collect::<StoreResult<Vec<_>>>()?;
        let sub_rows = sqlx::query(
            "SELECT id, app_id, plan_id, status, created_at FROM subscriptions \
             WHERE app_id = $1 AND status <> 'cancelled' ORDER BY id",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        let plans = sqlx::query(
            "SELECT id, rate_limits, included_calls, overage, billing_interval, quota_anchor FROM plans \
             WHERE id IN (SELECT plan_id FROM subscriptions WHERE app_id = $1 AND status <> 'cancelled')",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        let coverage = sqlx::query(
            "SELECT plan_id, api_id FROM plan_apis \
             WHERE plan_id IN (SELECT plan_id FROM subscriptions WHERE app_id = $1 AND status <> 'cancelled') \
             ORDER BY plan_id, api_id",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        let terms = plan_terms(&plans, &coverage)?;
        let subscriptions = sub_rows
            .iter()
            .map(|row| subscription_record(row, &terms))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(AppSlice {
            app,
            keys,
            subscriptions,
        }))
    }

    /// Apps with a live (not cancelled) subscription to a plan.
    pub async fn apps_of_plan(&self, plan_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query(
            "SELECT DISTINCT app_id FROM subscriptions WHERE plan_id = $1 AND status <> 'cancelled'",
        )
        .bind(plan_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
    }
}
