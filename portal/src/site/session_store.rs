//! tower-sessions over the control-plane store (`sessions` table), so
//! sessions work on SQLite and PostgreSQL alike and any portal node can serve
//! any visitor.

use std::collections::HashMap;

use async_trait::async_trait;
use tollgate_core::Store;
use tollgate_core::store::SessionRow;
use tollgate_core::time::Timestamp;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result};
use tower_sessions::{ExpiredDeletion, SessionStore};

/// The session key holding the signed-in user's id.
pub const USER_ID: &str = "user_id";

/// Sessions in the control-plane database.
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    store: Store,
}

impl DbSessionStore {
    /// Sessions in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn row(record: &Record) -> Result<SessionRow> {
    let expires_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
    Ok(SessionRow {
        id: record.id.to_string(),
        data: serde_json::to_string(&record.data).map_err(|e| Error::Encode(e.to_string()))?,
        user_id: record
            .data
            .get(USER_ID)
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        expires_at: Timestamp(i64::try_from(expires_ms).unwrap_or(i64::MAX)),
    })
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> Result<()> {
        // A fresh id clashing with a stored one is astronomically unlikely
        // (128 random bits), but a clash must never merge two sessions.
        loop {
            if self
                .store
                .insert_session(&row(record)?)
                .await
                .map_err(backend)?
            {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> Result<()> {
        self.store
            .save_session(&row(record)?)
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> Result<Option<Record>> {
        let Some(r) = self
            .store
            .load_session(&id.to_string(), Timestamp::now())
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let data: HashMap<String, serde_json::Value> =
            serde_json::from_str(&r.data).map_err(|e| Error::Decode(e.to_string()))?;
        let expiry_date =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.expires_at.0) * 1_000_000)
                .map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> Result<()> {
        self.store
            .delete_session(&id.to_string())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl ExpiredDeletion for DbSessionStore {
    async fn delete_expired(&self) -> Result<()> {
        let n = self
            .store
            .delete_expired_sessions(Timestamp::now())
            .await
            .map_err(backend)?;
        if n > 0 {
            tracing::debug!(sessions = n, "expired sessions deleted");
        }
        Ok(())
    }
}
