//! The OAuth2 client-credentials token endpoint (`POST /oauth/token`, RFC 6749
//! §4.4) and the access tokens it issues.
//!
//! An app's client id is its app id; its client secret is issued through the
//! admin API and kept as a SHA-256 hash. Access tokens are HS256 JWTs signed
//! with `TOLLGATE_TOKEN_SECRET` (`kid` "tollgate", issuer "tollgate", audience
//! "tollgate-gateway"), so every gateway sharing the secret accepts a token the
//! moment it is issued, without a database round trip. A token is then checked
//! like the app's keys: subscription, rate limits, quota, metering.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tollgate_core::key::KeyHash;

use crate::error::GatewayError;
use crate::snapshot::Snapshot;

/// Where the endpoint is served.
pub const TOKEN_PATH: &str = "/oauth/token";
const KID: &str = "tollgate";
const ISSUER: &str = "tollgate";
const AUDIENCE: &str = "tollgate-gateway";

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
}

/// Issues and verifies the gateway's own access tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": error, "error_description": description});
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tollgate\""),
        );
    }
    resp
}

/// Client credentials from HTTP Basic (preferred by RFC 6749) or the form.
fn client_credentials(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((decode(id)?, decode(secret)?));
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    Some((field("client_id")?, field("client_secret")?))
}

impl TokenIssuer {
    /// An issuer signing with `secret`; tokens live `ttl`.
    pub fn new(secret: &str, ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl,
        }
    }

    /// True when `token` claims to be one of ours (by its `kid`).
    pub fn is_ours(token: &str) -> bool {
        jsonwebtoken::decode_header(token).is_ok_and(|h| h.kid.as_deref() == Some(KID))
    }

    /// The app id of a valid access token.
    pub fn verify(&self, token: &str) -> Result<String, GatewayError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims.sub)
            .map_err(|e| GatewayError::InvalidToken {
                reason: match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "the access token has expired; request a new one".into()
                    }
                    _ => "the access token does not verify".into(),
                },
            })
    }

    /// Answers `POST /oauth/token`; returns the response and the app it was for.
    pub async fn token_endpoint(
        &self,
        snapshot: &Snapshot,
        method: &Method,
        headers: &HeaderMap,
        body: crate::proxy::RequestBody,
    ) -> (Response<Full<Bytes>>, Option<String>) {
        if method != Method::POST {
            return (
                oauth_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request",
                    "use POST",
                ),
                None,
            );
        }
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return (
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "send the request as application/x-www-form-urlencoded",
                ),
                None,
            );
        }
        let bytes = match Limited::new(body, 8 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return (
                    oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the request body is too large or broken",
                    ),
                    None,
                );
            }
        };
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        match form
            .iter()
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.as_str())
        {
            Some("client_credentials") => {}
            Some(_) => {
                return (
                    oauth_error(
                        StatusCode::BAD_REQUEST,
                        "unsupported_grant_type",
                        "only client_credentials is supported",
                    ),
                    None,
                );
            }
            None => {
                return (
                    oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "grant_type is required",
                    ),
                    None,
                );
            }
        }
        let Some((client_id, secret)) = client_credentials(headers, &form) else {
            return (
                oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "send client_id and client_secret (HTTP Basic or the form)",
                ),
                None,
            );
        };
        let app = snapshot.app(&client_id);
        let valid = app
            .and_then(|a| a.client_secret_hash)
            .is_some_and(|h| h == KeyHash::of(&secret));
        if !valid {
            return (
                oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unknown client or wrong secret",
                ),
                None,
            );
        }
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: client_id.clone(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.into());
        let token = match jsonwebtoken::encode(&header, &claims, &self.encoding) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an access token");
                return (
                    oauth_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "cannot issue a token",
                    ),
                    None,
                );
            }
        };
        let body = serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": self.ttl.as_secs()});
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        (resp, Some(client_id))
    }
}
