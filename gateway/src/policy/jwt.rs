//! JWT bearer tokens: signature (RS256/ES256 from a JWKS, HS256 from a secret in
//! the environment), issuer, audience and expiry, then the claim that names the
//! Tollgate app.
//!
//! JWKS documents are fetched once and cached per URL. A token whose `kid` is
//! not in the cache triggers one refetch (at most every 2 s per URL, so a flood
//! of forged `kid`s cannot hammer the issuer); keys also refresh in the
//! background every 10 minutes through that same path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use tollgate_core::model::JwtPolicy;

use crate::error::GatewayError;

/// Shortest time between two fetches of one JWKS.
const REFETCH_MIN: Duration = Duration::from_secs(2);
/// Age after which cached keys are refetched on the next token.
const MAX_AGE: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
}

struct Jwks {
    keys: ArcSwap<KeySet>,
    fetched: Mutex<Option<Instant>>,
    refresh: tokio::sync::Mutex<()>,
}

/// Verifies bearer tokens; holds the JWKS cache.
pub struct JwtVerifier {
    http: reqwest::Client,
    jwks: Mutex<HashMap<String, Arc<Jwks>>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").finish_non_exhaustive()
    }
}

impl Default for JwtVerifier {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(reason: impl Into<String>) -> GatewayError {
    GatewayError::InvalidToken {
        reason: reason.into(),
    }
}

/// The token of `Authorization: Bearer <jwt>` if it has a JWT's three parts.
pub fn bearer_jwt(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.split('.').count() == 3).then_some(token)
}

impl JwtVerifier {
    /// A verifier with an empty cache.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            jwks: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `token` against `policy` and returns the app id its claim names.
    pub async fn verify(&self, policy: &JwtPolicy, token: &str) -> Result<String, GatewayError> {
        let header = decode_header(token).map_err(|_| invalid("malformed token"))?;
        let (key, alg) = match (&policy.jwks_url, &policy.secret_env) {
            (Some(url), _) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| invalid("the token has no kid"))?;
                self.jwks_key(url, kid).await?
            }
            (None, Some(var)) => {
                let secret = std::env::var(var).map_err(|_| {
                    tracing::error!(variable = %var, "the HS256 secret's environment variable is not set");
                    invalid("the API's token secret is not configured")
                })?;
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            (None, None) => return Err(invalid("the API accepts no tokens")),
        };
        if header.alg != alg {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted for this key",
                header.alg
            )));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&policy.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        match &policy.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
                ErrorKind::InvalidAudience => "the token's audience is not accepted".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
                ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token lacks the {c} claim"),
                _ => "the token does not verify".to_owned(),
            })
        })?;
        data.claims
            .get(&policy.app_claim)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                invalid(format!(
                    "the token lacks the {} claim naming the app",
                    policy.app_claim
                ))
            })
    }

    fn entry(&self, url: &str) -> Arc<Jwks> {
        let mut map = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(url.to_owned())
            .or_insert_with(|| {
                Arc::new(Jwks {
                    keys: ArcSwap::from_pointee(KeySet {
                        keys: HashMap::new(),
                    }),
                    fetched: Mutex::new(None),
                    refresh: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    async fn jwks_key(
        &self,
        url: &str,
        kid: &str,
    ) -> Result<(DecodingKey, Algorithm), GatewayError> {
        let jwks = self.entry(url);
        let fetched = *jwks.fetched.lock().unwrap_or_else(|e| e.into_inner());
        let stale = fetched.is_none_or(|t| t.elapsed() > MAX_AGE);
        if !stale && let Some(k) = jwks.keys.load().keys.get(kid) {
            return Ok(k.clone());
        }
        // Unknown kid or stale keys: one fetch at a time, at most every 2 s.
        let _guard = jwks.refresh.lock().await;
        let fetched = *jwks.fetched.lock().unwrap_or_else(|e| e.into_inner());
        if fetched.is_none_or(|t| t.elapsed() > REFETCH_MIN) {
            match self.fetch(url).await {
                Ok(set) => {
                    jwks.keys.store(Arc::new(set));
                    *jwks.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(url, error = %e, "cannot fetch the JWKS; using cached keys");
                    *jwks.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
            }
        }
        jwks.keys
            .load()
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| invalid("the token's kid is not among the issuer's keys"))
    }

    async fn fetch(&self, url: &str) -> Result<KeySet, String> {
        let set: JwkSet = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            keys.insert(kid, (key, alg));
        }
        Ok(KeySet { keys })
    }
}
