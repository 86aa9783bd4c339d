//! CSRF protection for every form.
//!
//! Each session holds a random token; every form carries it in a hidden
//! `csrf` field, and [`require_token`] (a middleware in front of all routes)
//! refuses any request other than GET, HEAD and OPTIONS whose `csrf` field
//! does not match, with the friendly 403 page. Checking in one middleware
//! means a new form cannot forget it. SameSite=Lax cookies are the second
//! line of defence.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::error::SiteError;

/// The session key holding the token.
const CSRF: &str = "csrf";
/// Largest form body read (our forms send well under 1 KiB).
const FORM_LIMIT: usize = 64 * 1024;

/// The session's token, created on first use.
pub async fn token(session: &Session) -> Result<String, SiteError> {
    if let Some(t) = session.get::<String>(CSRF).await? {
        return Ok(t);
    }
    let t = hex::encode(rand::random::<[u8; 32]>());
    session.insert(CSRF, &t).await?;
    Ok(t)
}

/// Replaces the session's token (at log-in, with the new session id).
pub async fn renew(session: &Session) -> Result<(), SiteError> {
    session.remove::<String>(CSRF).await?;
    token(session).await.map(|_| ())
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the content: a mismatch position is not measurable.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses state-changing requests without the session's token.
pub async fn require_token(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return SiteError::internal("the CSRF check runs without a session layer").into_response();
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
        return SiteError::BadRequest.into_response();
    };
    let sent = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF)
        .map(|(_, v)| v.into_owned());
    let expected = match session.get::<String>(CSRF).await {
        Ok(t) => t,
        Err(e) => return SiteError::from(e).into_response(),
    };
    match (sent, expected) {
        (Some(s), Some(e)) if same(s.as_bytes(), e.as_bytes()) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => {
            tracing::info!(path = %parts.uri.path(), "form refused: missing or wrong CSRF token");
            SiteError::CsrfRefused.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn comparison() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"ab"));
    }
}
