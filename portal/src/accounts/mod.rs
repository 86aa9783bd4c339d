//! Developer accounts: sign-up, e-mail verification, log-in, password reset
//! and change, e-mail change. The web handlers in `site::account` parse forms
//! and render pages; the decisions are made here.
//!
//! Enumeration resistance: no outcome a visitor sees depends on whether an
//! address is registered. Sign-up with a taken address mails the owner ("you
//! already have an account") and shows the same "check your inbox" page; a
//! reset for an unknown address shows the same page and sends nothing; a
//! log-in to an unknown address checks the password against a dummy hash so it
//! takes as long as a real one. Mail goes out in the background, so the
//! answer's timing does not depend on the mail server either.
//!
//! Tokens in e-mailed links are 256 random bits; only their SHA-256 is stored,
//! each works once and expires (see the `*_TTL` constants).

pub mod mailer;
pub mod messages;
pub mod password;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tollgate_core::model::NewUser;
use tollgate_core::store::{Account, TokenPurpose};
use tollgate_core::time::Timestamp;
use tollgate_core::{Store, StoreError};

pub use mailer::{Mail, Mailer};

/// How long an e-mail verification link works.
pub const VERIFY_EMAIL_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a password reset link works.
pub const RESET_PASSWORD_TTL: Duration = Duration::from_secs(3600);
/// How long a link confirming a new e-mail address works.
pub const CHANGE_EMAIL_TTL: Duration = Duration::from_secs(24 * 3600);

/// A refused input, shown next to its form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The form field's name.
    pub field: &'static str,
    /// What is wrong, as a sentence for the person.
    pub message: String,
}

/// What an account operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input was refused; the form is shown again with the message.
    #[error("{}: {}", .0.field, .0.message)]
    Field(FieldError),
    /// The store or the hasher failed: an opaque 500 for the person.
    #[error("{0}")]
    Internal(String),
}

impl AccountError {
    fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self::Field(FieldError {
            field,
            message: message.into(),
        })
    }
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// The result of a log-in attempt that did not fail internally.
#[derive(Debug)]
pub enum LogIn {
    /// Right password, verified address.
    Success(Box<Account>),
    /// Unknown address or wrong password (never told apart).
    WrongCredentials,
    /// Right password, but the address is not verified yet; a new link was sent.
    Unverified,
}

/// The result of opening an e-mail change link.
#[derive(Debug, PartialEq, Eq)]
pub enum EmailChange {
    /// The account now uses the new address.
    Changed,
    /// The link is unknown, used or expired.
    InvalidLink,
    /// Another account took the address meanwhile.
    Taken,
}

/// Account operations over the store and the mailer.
#[derive(Debug)]
pub struct Accounts {
    store: Store,
    mailer: Arc<Mailer>,
    portal_url: String,
    brand: String,
}

/// A new random token for a link, and the hash that is stored.
fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Normalises an address as typed: trimmed, lowercase.
fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn check_email(field: &'static str, email: &str) -> Result<(), AccountError> {
    if email.is_empty() {
        return Err(AccountError::field(field, "Enter your e-mail address."));
    }
    tollgate_core::validate::email(field, email)
        .map_err(|_| AccountError::field(field, "Enter an e-mail address like name@example.com."))
}

impl Accounts {
    /// Accounts that send mail through `mailer` with links to `portal_url`.
    pub fn new(store: Store, mailer: Mailer, portal_url: &str, brand: &str) -> Self {
        Self {
            store,
            mailer: Arc::new(mailer),
            portal_url: portal_url.trim_end_matches('/').to_owned(),
            brand: brand.to_owned(),
        }
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.portal_url)
    }

    /// Signs up, or (for a taken address) mails the owner; either way the
    /// person is told to check their inbox. Returns the new account's user id
    /// (`None` for a taken address), for the sign-up's own session only.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<String>, AccountError> {
        let email = normalize_email(email);
        check_email("email", &email)?;
        password::check_strength(password, &email)
            .map_err(|m| AccountError::field("password", m))?;
        // Hash before looking the address up, so both branches cost the same.
        let hash = password::hash(password.to_owned())
            .await
            .map_err(AccountError::Internal)?;
        let name = email.split('@').next().unwrap_or_default().to_owned();
        let input = NewUser {
            email: email.clone(),
            name,
            role: None,
        };
        match self.store.create_account(input, &hash).await {
            Ok(account) => {
                self.send_verification(&account).await?;
                Ok(Some(account.user.id))
            }
            Err(StoreError::Conflict(_)) => {
                tracing::info!("sign-up with a registered address: the owner is told by mail");
                self.mailer.dispatch(
                    &email,
                    messages::already_registered(
                        &self.brand,
                        &self.link("/login"),
                        &self.link("/forgot-password"),
                    ),
                );
                Ok(None)
            }
            Err(StoreError::Invalid(v)) => Err(AccountError::field("email", v.message)),
            Err(e) => Err(e.into()),
        }
    }

    /// Mails a fresh verification link for the account's address.
    pub async fn send_verification(&self, account: &Account) -> Result<(), AccountError> {
        let (token, hash) = new_token();
        self.store
            .issue_account_token(
                &hash,
                &account.user.id,
                TokenPurpose::VerifyEmail,
                &account.user.email,
                VERIFY_EMAIL_TTL,
            )
            .await?;
        self.mailer.dispatch(
            &account.user.email,
            messages::verify_email(
                &self.brand,
                &self.link(&format!("/verify-email/{token}")),
                VERIFY_EMAIL_TTL.as_secs() / 3600,
            ),
        );
        Ok(())
    }

    /// Uses a verification link; returns whose address it confirmed, `None`
    /// when it is unknown, used or expired.
    pub async fn verify_email(&self, token: &str) -> Result<Option<String>, AccountError> {
        let Some(t) = self
            .store
            .use_account_token(
                &token_hash(token),
                TokenPurpose::VerifyEmail,
                Timestamp::now(),
            )
            .await?
        else {
            return Ok(None);
        };
        let confirmed = self.store.mark_email_verified(&t.user_id, &t.email).await?;
        Ok(confirmed.then_some(t.user_id))
    }

    /// Checks an address and password.
    pub async fn log_in(&self, email: &str, password: &str) -> Result<LogIn, AccountError> {
        let email = normalize_email(email);
        let account = if email.is_empty() {
            None
        } else {
            self.store.account_by_email(&email).await?
        };
        let stored = account.as_ref().and_then(|a| a.password_hash.clone());
        if !password::verify(password.to_owned(), stored).await {
            return Ok(LogIn::WrongCredentials);
        }
        let Some(account) = account else {
            return Ok(LogIn::WrongCredentials);
        };
        if account.email_verified_at.is_none() {
            self.send_verification(&account).await?;
            return Ok(LogIn::Unverified);
        }
        Ok(LogIn::Success(Box::new(account)))
    }

    /// Mails a reset link when the address has an account; silent otherwise.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), AccountError> {
        let email = normalize_email(email);
        check_email("email", &email)?;
        let Some(account) = self.store.account_by_email(&email).await? else {
            tracing::info!("password reset asked for an address without an account");
            return Ok(());
        };
        let (token, hash) = new_token();
        self.store
            .issue_account_token(
                &hash,
                &account.user.id,
                TokenPurpose::ResetPassword,
                &account.user.email,
                RESET_PASSWORD_TTL,
            )
            .await?;
        self.mailer.dispatch(
            &account.user.email,
            messages::reset_password(
                &self.brand,
                &self.link(&format!("/reset-password/{token}")),
                RESET_PASSWORD_TTL.as_secs() / 60,
            ),
        );
        Ok(())
    }

    /// Whether a reset link still works (without using it).
    pub async fn reset_link_works(&self, token: &str) -> Result<bool, AccountError> {
        Ok(self
            .store
            .find_account_token(
                &token_hash(token),
                TokenPurpose::ResetPassword,
                Timestamp::now(),
            )
            .await?
            .is_some())
    }

    /// Sets a new password through a reset link. `Ok(false)`: the link is
    /// unknown, used or expired. Every session of the user ends, other reset
    /// links stop working, and the address counts as verified (the link proved it).
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
    ) -> Result<bool, AccountError> {
        let hash_of_token = token_hash(token);
        let now = Timestamp::now();
        let Some(t) = self
            .store
            .find_account_token(&hash_of_token, TokenPurpose::ResetPassword, now)
            .await?
        else {
            return Ok(false);
        };
        password::check_strength(new_password, &t.email)
            .map_err(|m| AccountError::field("password", m))?;
        let hash = password::hash(new_password.to_owned())
            .await
            .map_err(AccountError::Internal)?;
        // Checked again atomically: of two concurrent uses only one gets here.
        let Some(t) = self
            .store
            .use_account_token(&hash_of_token, TokenPurpose::ResetPassword, now)
            .await?
        else {
            return Ok(false);
        };
        self.store.set_password_hash(&t.user_id, &hash).await?;
        self.store
            .void_account_tokens(&t.user_id, TokenPurpose::ResetPassword)
            .await?;
        self.store.mark_email_verified(&t.user_id, &t.email).await?;
        self.store.delete_user_sessions(&t.user_id, None).await?;
        self.mailer.dispatch(
            &t.email,
            messages::password_changed(&self.brand, &self.link("/forgot-password")),
        );
        Ok(true)
    }

    /// Changes the password of a signed-in user who knows the current one;
    /// the user's other sessions (all but `keep_session`) end.
    pub async fn change_password(
        &self,
        account: &Account,
        current: &str,
        new_password: &str,
        keep_session: Option<&str>,
    ) -> Result<(), AccountError> {
        if !password::verify(current.to_owned(), account.password_hash.clone()).await {
            return Err(AccountError::field(
                "current_password",
                "That is not your current password.",
            ));
        }
        password::check_strength(new_password, &account.user.email)
            .map_err(|m| AccountError::field("new_password", m))?;
        let hash = password::hash(new_password.to_owned())
            .await
            .map_err(AccountError::Internal)?;
        self.store
            .set_password_hash(&account.user.id, &hash)
            .await?;
        self.store
            .void_account_tokens(&account.user.id, TokenPurpose::ResetPassword)
            .await?;
        self.store
            .delete_user_sessions(&account.user.id, keep_session)
            .await?;
        self.mailer.dispatch(
            &account.user.email,
            messages::password_changed(&self.brand, &self.link("/forgot-password")),
        );
        Ok(())
    }

    /// Asks to move a signed-in user to a new address: a link goes to the new
    /// address, a notice to the old one. Nothing changes until the link is opened.
    pub async fn request_email_change(
        &self,
        account: &Account,
        current_password: &str,
        new_email: &str,
    ) -> Result<(), AccountError> {
        if !password::verify(current_password.to_owned(), account.password_hash.clone()).await {
            return Err(AccountError::field(
                "email_password",
                "That is not your current password.",
            ));
        }
        let new_email = normalize_email(new_email);
        check_email("new_email", &new_email)?;
        if new_email == account.user.email {
            return Err(AccountError::field(
                "new_email",
                "That is already your address.",
            ));
        }
        if self.store.account_by_email(&new_email).await?.is_some() {
            // Same page as success; the owner of that address learns by mail.
            self.mailer.dispatch(
                &new_email,
                messages::email_in_use(&self.brand, &self.link("/forgot-password")),
            );
            return Ok(());
        }
        let (token, hash) = new_token();
        self.store
            .issue_account_token(
                &hash,
                &account.user.id,
                TokenPurpose::ChangeEmail,
                &new_email,
                CHANGE_EMAIL_TTL,
            )
            .await?;
        self.mailer.dispatch(
            &new_email,
            messages::confirm_new_email(
                &self.brand,
                &self.link(&format!("/confirm-email/{token}")),
                CHANGE_EMAIL_TTL.as_secs() / 3600,
            ),
        );
        self.mailer.dispatch(
            &account.user.email,
            messages::email_change_requested(&self.brand, &self.link("/forgot-password")),
        );
        Ok(())
    }

    /// Uses an e-mail change link.
    pub async fn confirm_email_change(&self, token: &str) -> Result<EmailChange, AccountError> {
        let Some(t) = self
            .store
            .use_account_token(
                &token_hash(token),
                TokenPurpose::ChangeEmail,
                Timestamp::now(),
            )
            .await?
        else {
            return Ok(EmailChange::InvalidLink);
        };
        match self.store.change_email(&t.user_id, &t.email).await {
            Ok(()) => Ok(EmailChange::Changed),
            Err(StoreError::Conflict(_)) => Ok(EmailChange::Taken),
            Err(StoreError::NotFound { .. }) => Ok(EmailChange::InvalidLink),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(ha, token_hash(&a));
        assert_ne!(ha, a);
    }
}
