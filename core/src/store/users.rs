//! People: developers, admins and analysts.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, text_enum, ts};
use crate::error::{StoreError, StoreResult};
use crate::id::{IdKind, new_id};
use crate::model::{NewUser, Role, User};
use crate::time::Timestamp;

pub(super) fn user(row: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: text_enum(row, "role", Role::parse)?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

impl Store {
    /// Creates a user; the e-mail is unique regardless of case.
    pub async fn create_user(&self, input: NewUser) -> StoreResult<User> {
        input.validate()?;
        let now = Timestamp::now();
        let u = User {
            id: new_id(IdKind::User),
            email: input.email.trim().to_lowercase(),
            name: input.name.trim().to_owned(),
            role: input.role.unwrap_or(Role::Developer),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO users (id, email, name, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(now.0)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            StoreError::unique(e, || {
                format!("a user with e-mail {} already exists", u.email)
            })
        })?;
        Ok(u)
    }

    /// One user by id.
    pub async fn get_user(&self, id: &str) -> StoreResult<User> {
        let row = sqlx::query(
            "SELECT id, email, name, role, created_at, updated_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("user", id))?;
        user(&row)
    }

    /// One user by e-mail (any case).
    pub async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(
            "SELECT id, email, name, role, created_at, updated_at FROM users WHERE email = $1",
        )
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user).transpose()
    }

    /// Users with the given role, oldest first.
    pub async fn list_users(&self, role: Role) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(
            "SELECT id, email, name, role, created_at, updated_at FROM users \
             WHERE role = $1 ORDER BY created_at, id",
        )
        .bind(role.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user).collect()
    }
}
