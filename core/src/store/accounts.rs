//! Portal accounts: password hashes, verified e-mail addresses and the
//! single-use tokens e-mailed to prove an address or reset a password.
//!
//! Hashing passwords and tokens is the caller's job: this module only ever
//! sees a PHC string and a token's SHA-256, never a secret in clear.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::users::user;
use super::{Store, opt_ts};
use crate::error::{StoreError, StoreResult};
use crate::id::{IdKind, new_id};
use crate::model::{NewUser, Role, User};
use crate::time::Timestamp;

/// A user with what signing in needs.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user.
    pub user: User,
    /// Argon2id PHC string; `None` for users created without a password.
    pub password_hash: Option<String>,
    /// When the current e-mail address was verified.
    pub email_verified_at: Option<Timestamp>,
}

/// What an e-mailed token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Prove the account's e-mail address.
    VerifyEmail,
    /// Choose a new password.
    ResetPassword,
    /// Confirm a new e-mail address (the token's `email`).
    ChangeEmail,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::ChangeEmail => "change_email",
        }
    }
}

/// A valid, unused token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountToken {
    /// Whose token.
    pub user_id: String,
    /// The address the token was sent to.
    pub email: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

pub(super) const ACCOUNT_COLUMNS: &str =
    "id, email, name, role, created_at, updated_at, password_hash, email_verified_at";

pub(super) fn account(row: &AnyRow) -> StoreResult<Account> {
    Ok(Account {
        user: user(row)?,
        password_hash: row.try_get("password_hash")?,
        email_verified_at: opt_ts(row, "email_verified_at")?,
    })
}

fn token(row: &AnyRow) -> StoreResult<AccountToken> {
    Ok(AccountToken {
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        expires_at: Timestamp(row.try_get("expires_at")?),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Creates a developer with a password; the e-mail is not verified yet.
    /// A taken e-mail is a [`StoreError::Conflict`].
    pub async fn create_account(
        &self,
        input: NewUser,
        password_hash: &str,
    ) -> StoreResult<Account> {
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
            "INSERT INTO users (id, email, name, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(password_hash)
        .bind(now.0)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, || "that e-mail address is taken".to_owned()))?;
        Ok(Account {
            user: u,
            password_hash: Some(password_hash.to_owned()),
            email_verified_at: None,
        })
    }

    /// The account of a user id.
    pub async fn account(&self, user_id: &str) -> StoreResult<Option<Account>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account).transpose()
    }

    /// The account of an e-mail address (any case).
    pub async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE email = $1"
        )))
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account).transpose()
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(Timestamp::now().0)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", user_id));
        }
        Ok(())
    }

    /// Marks `email` verified, if it is still the user's address; returns
    /// whether it was.
    pub async fn mark_email_verified(&self, user_id: &str, email: &str) -> StoreResult<bool> {
        let now = Timestamp::now().0;
        let done = sqlx::query(
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 \
             WHERE id = $2 AND email = $3",
        )
        .bind(now)
        .bind(user_id)
        .bind(email)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a user to a new, proven address. A taken address is a
    /// [`StoreError::Conflict`].
    pub async fn change_email(&self, user_id: &str, new_email: &str) -> StoreResult<()> {
        crate::validate::email("email", new_email)?;
        let now = Timestamp::now().0;
        let done = sqlx::query(
            "UPDATE users SET email = $1, email_verified_at = $2, updated_at = $2 WHERE id = $3",
        )
        .bind(new_email.trim().to_lowercase())
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, || "that e-mail address is taken".to_owned()))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", user_id));
        }
        Ok(())
    }

    /// Records a token (by its hash) that works once until `ttl` from now.
    pub async fn issue_account_token(
        &self,
        token_hash: &str,
        user_id: &str,
        purpose: TokenPurpose,
        email: &str,
        ttl: Duration,
    ) -> StoreResult<()> {
        let now = Timestamp::now().0;
        sqlx::query(
            "INSERT INTO account_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(email.trim().to_lowercase())
        .bind(now)
        .bind(now.saturating_add(millis(ttl)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token that is unused and unexpired at `now`, without using it.
    pub async fn find_account_token(
        &self,
        token_hash: &str,
        purpose: TokenPurpose,
        now: Timestamp,
    ) -> StoreResult<Option<AccountToken>> {
        let row = sqlx::query(
            "SELECT user_id, email, expires_at FROM account_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token).transpose()
    }

    /// Uses a token: of concurrent attempts exactly one gets it, and only while
    /// it is unused and unexpired at `now`.
    pub async fn use_account_token(
        &self,
        token_hash: &str,
        purpose: TokenPurpose,
        now: Timestamp,
    ) -> StoreResult<Option<AccountToken>> {
        let row = sqlx::query(
            "UPDATE account_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING user_id, email, expires_at",
        )
        .bind(now.0)
        .bind(token_hash)
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token).transpose()
    }

    /// Voids a user's unused tokens of one purpose (e.g. older reset links once
    /// the password has changed).
    pub async fn void_account_tokens(
        &self,
        user_id: &str,
        purpose: TokenPurpose,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE account_tokens SET used_at = $1 \
             WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
        )
        .bind(Timestamp::now().0)
        .bind(user_id)
        .bind(purpose.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes tokens that expired before `before`; returns how many.
    pub async fn delete_expired_account_tokens(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM account_tokens WHERE expires_at <= $1")
            .bind(before.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
