//! Developers' applications.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Change, Store, ts};
use crate::error::{StoreError, StoreResult, ValidationError};
use crate::id::{IdKind, new_id};
use crate::model::{App, NewApp};
use crate::time::Timestamp;

pub(super) fn app(row: &AnyRow) -> StoreResult<App> {
    Ok(App {
        id: row.try_get("id")?,
        developer_id: row.try_get("developer_id")?,
        name: row.try_get("name")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

impl Store {
    /// Creates an app for an existing developer.
    pub async fn create_app(&self, input: NewApp) -> StoreResult<App> {
        input.validate()?;
        let owner = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(&input.developer_id)
            .fetch_optional(&self.pool)
            .await?;
        if owner.is_none() {
            return Err(ValidationError::new(
                "developer_id",
                format!("no developer has the id {:?}", input.developer_id),
            )
            .into());
        }
        let now = Timestamp::now();
        let a = App {
            id: new_id(IdKind::App),
            developer_id: input.developer_id,
            name: input.name.trim().to_owned(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO apps (id, developer_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&a.id)
        .bind(&a.developer_id)
        .bind(&a.name)
        .bind(now.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(a)
    }

    /// One app by id.
    pub async fn get_app(&self, id: &str) -> StoreResult<App> {
        let row = sqlx::query("SELECT * FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("app", id))?;
        app(&row)
    }

    /// Gives an app a new OAuth2 client secret (replacing any old one) and
    /// returns it: the only time it is shown. The client id is the app id.
    pub async fn rotate_client_secret(&self, app_id: &str) -> StoreResult<String> {
        self.get_app(app_id).await?;
        let secret = format!("tg_cs_{}", crate::key::random_token());
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE apps SET client_secret_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(app_id)
            .bind(crate::key::KeyHash::of(&secret).to_hex())
            .bind(Timestamp::now().0)
            .execute(&mut *tx)
            .await?;
        let v = self
            .bump_version(&mut tx, &[Change::App(app_id.to_owned())])
            .await?;
        self.commit_change(tx, v).await?;
        Ok(secret)
    }

    /// Gives an app a new display name. The gateway does not serve names, so
    /// no configuration version is bumped.
    pub async fn rename_app(&self, id: &str, name: &str) -> StoreResult<App> {
        crate::validate::name("name", name)?;
        let now = Timestamp::now();
        let done = sqlx::query("UPDATE apps SET name = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(name.trim())
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("app", id));
        }
        self.get_app(id).await
    }

    /// Deletes an app with its keys and its cancelled subscriptions; the
    /// gateway refuses its keys within a second. An app with a live (not
    /// cancelled) subscription is refused with a conflict: cancel those first,
    /// so ending a (possibly paid) subscription is always a decision of its own.
    pub async fn delete_app(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let live: i64 = sqlx::query(
            "SELECT COUNT(*) FROM subscriptions WHERE app_id = $1 AND status <> 'cancelled'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if live > 0 {
            return Err(StoreError::Conflict(format!(
                "app {id} has {live} live subscription(s); cancel them before deleting the app"
            )));
        }
        // Explicit, rather than relying on ON DELETE CASCADE, which SQLite only
        // honours with foreign keys switched on for the connection.
        for sql in [
            "DELETE FROM api_keys WHERE app_id = $1",
            "DELETE FROM subscriptions WHERE app_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("app", id));
        }
        let v = self
            .bump_version(&mut tx, &[Change::App(id.to_owned())])
            .await?;
        self.commit_change(tx, v).await
    }

    /// Apps, all or one developer's, oldest first.
    pub async fn list_apps(&self, developer_id: Option<&str>) -> StoreResult<Vec<App>> {
        let rows = match developer_id {
            Some(dev) => {
                sqlx::query("SELECT * FROM apps WHERE developer_id = $1 ORDER BY created_at, id")
                    .bind(dev)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM apps ORDER BY created_at, id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(app).collect()
    }
}
