//! API key material.
//!
//! A key is `tg_live_` followed by 32 random base62 characters (about 190 bits).
//! Only its SHA-256 hash is stored; the first 12 characters (`tg_live_AbCd`) are
//! kept as a visible prefix so support can tell keys apart without seeing them.

use rand::Rng;
use sha2::{Digest, Sha256};

/// What every key starts with.
pub const KEY_SCHEME: &str = "tg_live_";
/// Length of the visible prefix, scheme included.
pub const PREFIX_LEN: usize = KEY_SCHEME.len() + 4;
const SECRET_LEN: usize = 32;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The SHA-256 of a key: what the store and the gateway look keys up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes presented key text.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses stored hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

/// A freshly generated key: the only moment the full text exists.
#[derive(Clone)]
pub struct GeneratedKey {
    /// The whole key, to show once.
    pub key: String,
    /// The visible prefix.
    pub prefix: String,
    /// Its hash, to store.
    pub hash: KeyHash,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Generates a new random key.
pub fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let secret: String = (0..SECRET_LEN)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect();
    let key = format!("{KEY_SCHEME}{secret}");
    GeneratedKey {
        prefix: key[..PREFIX_LEN].to_owned(),
        hash: KeyHash::of(&key),
        key,
    }
}

/// A random token for secrets such as the demo admin token (48 hex characters).
pub fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_hash_and_prefix() {
        let k = generate();
        assert!(k.key.starts_with(KEY_SCHEME));
        assert_eq!(k.key.len(), KEY_SCHEME.len() + SECRET_LEN);
        assert_eq!(k.prefix.len(), PREFIX_LEN);
        assert!(k.key.starts_with(&k.prefix));
        assert_eq!(KeyHash::of(&k.key), k.hash);
        assert_eq!(KeyHash::from_hex(&k.hash.to_hex()), Some(k.hash));
        assert_ne!(generate().key, k.key);
        assert!(!format!("{k:?}").contains(&k.key));
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
