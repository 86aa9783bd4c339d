//! Password rules and hashing.
//!
//! Rules (checked in this order, the first failure is shown next to the field):
//! at least 10 and at most 256 characters; not the e-mail address or its
//! part before the `@`, nor containing them when they are 4 characters or
//! longer; more than 3 distinct characters; not one of the passwords every
//! cracking list starts with. Length beats composition rules, so there is no
//! "one digit and one symbol" rule (NIST SP 800-63B).
//!
//! Hashes are argon2id PHC strings with the `argon2` crate's defaults (19 MiB,
//! 2 passes, 1 lane); hashing runs on the blocking pool.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Fewest characters a password may have.
pub const MIN_LENGTH: usize = 10;
/// Most characters a password may have (bounds the hashing work per request).
pub const MAX_LENGTH: usize = 256;

/// Passwords that satisfy the length rule yet are among the first tried.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "0123456789",
    "1q2w3e4r5t",
    "qwertyuiop",
    "password12",
    "password123",
    "password1234",
    "passw0rd123",
    "iloveyou123",
    "qwerty1234",
    "qwerty12345",
    "1qaz2wsx3edc",
    "letmein123",
    "welcome123",
    "administrator",
    "changeme123",
    "abcdefghij",
    "abc1234567",
    "trustno1234",
];

/// Checks a new password; the error is a sentence for the person choosing it.
pub fn check_strength(password: &str, email: &str) -> Result<(), &'static str> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err("Use at least 10 characters.");
    }
    if chars > MAX_LENGTH {
        return Err("Use at most 256 characters.");
    }
    let lower = password.to_lowercase();
    let email = email.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if (!email.is_empty() && lower.contains(&email))
        || (local.chars().count() >= 4 && lower.contains(local))
    {
        return Err("Do not use your e-mail address in your password.");
    }
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 3 {
        return Err("Use more than a few different characters.");
    }
    if COMMON.contains(&lower.as_str()) {
        return Err("This password is too common; choose another.");
    }
    Ok(())
}

/// Hashes a password to an argon2id PHC string (on the blocking pool).
pub async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash a password: {e}"))
    })
    .await
    .map_err(|e| format!("password hashing task failed: {e}"))?
}

/// Checks a password against a stored hash (on the blocking pool). `None`
/// (no account, or no password set) still does the work of one check, so the
/// answer takes as long whether or not the account exists.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&phc) else {
            tracing::error!("a stored password hash is not a PHC string");
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// The hash of a random password nobody knows, with the default parameters,
/// checked against when there is no account.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let secret: [u8; 32] = rand::random();
    Argon2::default()
        .hash_password(&secret)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_rules() {
        let email = "ada.lovelace@example.com";
        assert_eq!(
            check_strength("short", email),
            Err("Use at least 10 characters.")
        );
        assert!(check_strength(&"x".repeat(257), email).is_err());
        assert!(check_strength("ada.lovelace@example.com", email).is_err());
        assert!(check_strength("my-ADA.LOVELACE-pass", email).is_err());
        assert!(check_strength("aaaaaaaaaaaa", email).is_err());
        assert!(check_strength("ababababab", email).is_err());
        assert!(check_strength("Password123", email).is_err());
        assert!(check_strength("correct horse battery", email).is_ok());
        // A very short local part is not a reason to refuse.
        assert!(check_strength("abc-horse-battery", "ab@example.com").is_ok());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery".to_owned()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery".to_owned(), Some(h.clone())).await);
        assert!(!verify("wrong horse battery".to_owned(), Some(h)).await);
        assert!(!verify("anything at all".to_owned(), None).await);
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(&DUMMY_HASH).is_ok());
    }
}
