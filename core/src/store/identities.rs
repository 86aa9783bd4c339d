//! Sign-in identities from outside providers (GitHub, Google, OpenID Connect).
//!
//! A person who signs in through a provider is known by the provider's
//! subject, not by their e-mail address. The first sign-in links the identity
//! to the account with the same, provider-verified address, or creates one.

use sqlx::Row;

use super::Store;
use super::accounts::{ACCOUNT_COLUMNS, Account, account};
use crate::error::{StoreError, StoreResult};
use crate::id::{IdKind, new_id};
use crate::model::Role;
use crate::time::Timestamp;

/// Who a provider says signed in. Only build one from an answer the
/// provider authenticated, with an address the provider verified.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    /// Provider id (`github`, `google`, `oidc`).
    pub provider: String,
    /// The provider's stable id for the person.
    pub subject: String,
    /// Their verified e-mail address.
    pub email: String,
    /// Their display name, when the provider gave one.
    pub name: String,
}

/// How a sign-in through a provider found its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityOutcome {
    /// The identity was linked before.
    Known,
    /// Linked now to the account with the same address.
    Linked,
    /// Linked to an account whose address nobody had proven: its password
    /// (set by whoever signed up with the address) and sessions were removed.
    Claimed,
    /// A new account was created.
    Created,
}

/// An identity linked to an account, for the account page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// Provider id.
    pub provider: String,
    /// The address the provider gave at the last sign-in.
    pub email: String,
    /// When it was linked.
    pub created_at: Timestamp,
    /// The last sign-in through it.
    pub last_login_at: Timestamp,
}

impl Store {
    /// Signs a person in by a provider identity: the linked account, else the
    /// account with the verified address (linking it), else a new account.
    ///
    /// An account whose address was never proven may belong to someone who
    /// signed up with another person's address: claiming it removes its
    /// password and sessions, so that person cannot keep a way in.
    pub async fn sign_in_with_identity(
        &self,
        id: &ExternalIdentity,
    ) -> StoreResult<(Account, IdentityOutcome)> {
        crate::validate::email("email", &id.email)?;
        let email = id.email.trim().to_lowercase();
        let now = Timestamp::now().0;
        let mut tx = self.begin_write().await?;

        let known = sqlx::query(
            "SELECT user_id FROM account_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(&id.provider)
        .bind(&id.subject)
        .fetch_optional(&mut *tx)
        .await?;
        let (user_id, outcome) = if let Some(row) = known {
            let user_id: String = row.try_get("user_id")?;
            sqlx::query(
                "UPDATE account_identities SET last_login_at = $1, email = $2 \
                 WHERE provider = $3 AND subject = $4",
            )
            .bind(now)
            .bind(&email)
            .bind(&id.provider)
            .bind(&id.subject)
            .execute(&mut *tx)
            .await?;
            (user_id, IdentityOutcome::Known)
        } else {
            let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ACCOUNT_COLUMNS} FROM users WHERE email = $1"
            )))
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await?;
            let (user_id, outcome) = match existing.as_ref().map(account).transpose()? {
                Some(a) if a.email_verified_at.is_some() => (a.user.id, IdentityOutcome::Linked),
                Some(a) => {
                    sqlx::query(
                        "UPDATE users SET password_hash = NULL, email_verified_at = $1, \
                         updated_at = $1 WHERE id = $2",
                    )
                    .bind(now)
                    .bind(&a.user.id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                        .bind(&a.user.id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE account_tokens SET used_at = $1 \
                         WHERE user_id = $2 AND used_at IS NULL",
                    )
                    .bind(now)
                    .bind(&a.user.id)
                    .execute(&mut *tx)
                    .await?;
                    (a.user.id, IdentityOutcome::Claimed)
                }
                None => {
                    let user_id = new_id(IdKind::User);
                    let name: String = id.name.trim().chars().take(100).collect();
                    sqlx::query(
                        "INSERT INTO users (id, email, name, role, password_hash, \
                         email_verified_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, NULL, $5, $5, $5)",
                    )
                    .bind(&user_id)
                    .bind(&email)
                    .bind(&name)
                    .bind(Role::Developer.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        StoreError::unique(e, || "that e-mail address is taken".to_owned())
                    })?;
                    (user_id, IdentityOutcome::Created)
                }
            };
            sqlx::query(
                "INSERT INTO account_identities \
                 (provider, subject, user_id, email, created_at, last_login_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(&id.provider)
            .bind(&id.subject)
            .bind(&user_id)
            .bind(&email)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique(e, || {
                    "that sign-in is linked to an account already".to_owned()
                })
            })?;
            (user_id, outcome)
        };

        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(&user_id)
        .fetch_one(&mut *tx)
        .await?;
        let acct = account(&row)?;
        tx.commit().await?;
        Ok((acct, outcome))
    }

    /// The provider identities linked to a user, oldest first.
    pub async fn linked_identities(&self, user_id: &str) -> StoreResult<Vec<LinkedIdentity>> {
        let rows = sqlx::query(
            "SELECT provider, email, created_at, last_login_at FROM account_identities \
             WHERE user_id = $1 ORDER BY created_at, provider",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LinkedIdentity {
                    provider: r.try_get("provider")?,
                    email: r.try_get("email")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                    last_login_at: Timestamp(r.try_get("last_login_at")?),
                })
            })
            .collect()
    }
}
