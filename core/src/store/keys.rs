//! API keys: issued once, stored as SHA-256 hashes, revoked for good.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Change, Store, opt_ts, text_enum, ts};
use crate::error::{StoreError, StoreResult, ValidationError};
use crate::id::{IdKind, new_id};
use crate::key::{self, KeyHash};
use crate::model::{ApiKey, KeyStatus};
use crate::time::Timestamp;

/// A key just issued: the stored record and the full key, shown this once.
#[derive(Clone)]
pub struct IssuedKey {
    /// What is stored.
    pub record: ApiKey,
    /// The key itself; never stored.
    pub secret: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

pub(super) fn api_key(row: &AnyRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        prefix: row.try_get("prefix")?,
        status: text_enum(row, "status", KeyStatus::parse)?,
        created_at: ts(row, "created_at")?,
        last_used_at: opt_ts(row, "last_used_at")?,
        expires_at: opt_ts(row, "expires_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

/// Inserts a freshly generated key in a write transaction.
async fn insert_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    app_id: &str,
    now: Timestamp,
    expires_at: Option<Timestamp>,
) -> StoreResult<IssuedKey> {
    let generated = key::generate();
    let record = ApiKey {
        id: new_id(IdKind::Key),
        app_id: app_id.to_owned(),
        prefix: generated.prefix.clone(),
        status: KeyStatus::Active,
        created_at: now,
        last_used_at: None,
        expires_at,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, app_id, key_hash, prefix, status, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&record.id)
    .bind(&record.app_id)
    .bind(generated.hash.to_hex())
    .bind(&record.prefix)
    .bind(record.status.as_str())
    .bind(now.0)
    .bind(expires_at.map(|t| t.0))
    .execute(&mut **tx)
    .await?;
    Ok(IssuedKey {
        record,
        secret: generated.key,
    })
}

impl Store {
    /// Issues a new key for an app; the gateway accepts it within a second.
    pub async fn issue_key(
        &self,
        app_id: &str,
        expires_at: Option<Timestamp>,
    ) -> StoreResult<IssuedKey> {
        self.get_app(app_id).await?;
        let now = Timestamp::now();
        if let Some(t) = expires_at
            && t <= now
        {
            return Err(ValidationError::new("expires_at", "must be in the future").into());
        }
        let mut tx = self.begin_write().await?;
        let issued = insert_key(&mut tx, app_id, now, expires_at).await?;
        let v = self
            .bump_version(&mut tx, &[Change::App(app_id.to_owned())])
            .await?;
        self.commit_change(tx, v).await?;
        Ok(issued)
    }

    /// Rotates a key: issues a new key for the same app and lets the old one
    /// keep working for `overlap` more (or until its own, earlier expiry), so
    /// clients can move to the new key without an outage. Zero ends the old key
    /// at once. Both changes reach the gateway together, within a second.
    /// A revoked or expired key cannot be rotated (a conflict): issue a new one.
    pub async fn rotate_key(&self, id: &str, overlap_ms: i64) -> StoreResult<IssuedKey> {
        if overlap_ms < 0 {
            return Err(ValidationError::new("overlap", "must not be negative").into());
        }
        let old = self.get_key(id).await?;
        let now = Timestamp::now();
        if old.status == KeyStatus::Revoked {
            return Err(StoreError::Conflict(format!(
                "key {id} is revoked; issue a new key instead"
            )));
        }
        if old.expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::Conflict(format!(
                "key {id} has expired; issue a new key instead"
            )));
        }
        let ends = Timestamp(now.0.saturating_add(overlap_ms));
        let ends = old.expires_at.map_or(ends, |t| t.min(ends));
        let mut tx = self.begin_write().await?;
        // The status condition keeps a revocation made meanwhile in force.
        let done =
            sqlx::query("UPDATE api_keys SET expires_at = $2 WHERE id = $1 AND status = 'active'")
                .bind(id)
                .bind(ends.0)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "key {id} is revoked; issue a new key instead"
            )));
        }
        let issued = insert_key(&mut tx, &old.app_id, now, None).await?;
        let v = self
            .bump_version(&mut tx, &[Change::App(old.app_id.clone())])
            .await?;
        self.commit_change(tx, v).await?;
        Ok(issued)
    }

    /// The keys of an app, newest first.
    pub async fn list_keys(&self, app_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.get_app(app_id).await?;
        let rows = sqlx::query(
            "SELECT id, app_id, prefix, status, created_at, last_used_at, expires_at, revoked_at \
             FROM api_keys WHERE app_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key).collect()
    }

    /// One key by id.
    pub async fn get_key(&self, id: &str) -> StoreResult<ApiKey> {
        let row = sqlx::query(
            "SELECT id, app_id, prefix, status, created_at, last_used_at, expires_at, revoked_at \
             FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("key", id))?;
        api_key(&row)
    }

    /// The key record for presented key text, if any.
    pub async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query(
            "SELECT id, app_id, prefix, status, created_at, last_used_at, expires_at, revoked_at \
             FROM api_keys WHERE key_hash = $1",
        )
        .bind(hash.to_hex())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(api_key).transpose()
    }

    /// Revokes a key for good; the gateway refuses it within a second. Revoking a
    /// revoked key changes nothing.
    pub async fn revoke_key(&self, id: &str) -> StoreResult<ApiKey> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET status = 'revoked', revoked_at = $2 WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(Timestamp::now().0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            let app_id: String = sqlx::query("SELECT app_id FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let v = self.bump_version(&mut tx, &[Change::App(app_id)]).await?;
            self.commit_change(tx, v).await?;
        } else {
            tx.rollback().await?;
        }
        self.get_key(id).await
    }

    /// Records when keys were last accepted by a gateway. Not a configuration
    /// change: the version is not bumped.
    pub async fn touch_keys(&self, key_ids: &[String], at: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for id in key_ids {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(at.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
