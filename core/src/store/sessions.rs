//! Portal browser sessions: opaque JSON records by id, with an expiry.
//!
//! The portal's session layer owns the format of `data`; the store keeps the
//! signed-in user's id beside it so all of a user's sessions can be ended at
//! once (after a password change or reset).

use sqlx::Row;

use super::Store;
use crate::error::{StoreError, StoreResult};
use crate::time::Timestamp;

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The session id (the cookie's value).
    pub id: String,
    /// The session's data, JSON.
    pub data: String,
    /// The signed-in user, if any.
    pub user_id: Option<String>,
    /// When the session stops being valid.
    pub expires_at: Timestamp,
}

impl Store {
    /// Inserts a new session; `Ok(false)` when the id is taken already.
    pub async fn insert_session(&self, s: &SessionRow) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO sessions (id, data, user_id, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.data)
        .bind(&s.user_id)
        .bind(s.expires_at.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts or replaces a session.
    pub async fn save_session(&self, s: &SessionRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, data, user_id, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, user_id = excluded.user_id, \
             expires_at = excluded.expires_at",
        )
        .bind(&s.id)
        .bind(&s.data)
        .bind(&s.user_id)
        .bind(s.expires_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session that has not expired by `now`.
    pub async fn load_session(&self, id: &str, now: Timestamp) -> StoreResult<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT id, data, user_id, expires_at FROM sessions WHERE id = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok::<_, StoreError>(SessionRow {
                id: r.try_get("id")?,
                data: r.try_get("data")?,
                user_id: r.try_get("user_id")?,
                expires_at: Timestamp(r.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    /// Deletes one session.
    pub async fn delete_session(&self, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of a user except `keep`; returns how many ended.
    pub async fn delete_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes sessions that expired before `now`; returns how many.
    pub async fn delete_expired_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The number of live sessions of a user.
    pub async fn count_user_sessions(&self, user_id: &str, now: Timestamp) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1 AND expires_at > $2",
        )
        .bind(user_id)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}
