//! Every answer the gateway makes itself, and the one place that turns them
//! into HTTP.
//!
//! Policy: a gateway-made response is JSON
//! `{"error":{"code","message","request_id"}}` with a stable `code` clients can
//! branch on and a message a person can act on. Upstream failures never leak
//! internal detail to the client; the detail goes to the log with the request id.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// Why the gateway answered a call itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No API is published at this path.
    #[error("no API is published at this path")]
    NoRoute,
    /// The path is documented but not for this method.
    #[error("this operation does not take the {method} method")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The methods the path takes, for `Allow`.
        allowed: String,
    },
    /// The client's address is not allowed for this API.
    #[error("your network is not allowed to call this API")]
    IpDenied,
    /// The request body is larger than the API accepts.
    #[error("the request body is larger than this API accepts ({max} bytes)")]
    BodyTooLarge {
        /// The limit, in bytes.
        max: u64,
    },
    /// The call carried no API key.
    #[error(
        "this API needs an API key: send it in the x-api-key header (or apikey, or Authorization: Bearer)"
    )]
    MissingKey,
    /// The key is unknown or revoked.
    #[error("the API key is not valid; check it, or create a new one in the developer portal")]
    InvalidKey,
    /// A bearer token failed verification.
    #[error("the bearer token is not valid: {reason}")]
    InvalidToken {
        /// What failed.
        reason: String,
    },
    /// The key is past its expiry.
    #[error("the API key has expired; create a new one in the developer portal")]
    ExpiredKey,
    /// The key's app has no subscription covering this API.
    #[error(
        "your app has no subscription to a plan that includes this API; subscribe to one in the developer portal"
    )]
    NoSubscription,
    /// The subscription waits for approval.
    #[error("your app's subscription to this API is waiting for approval")]
    SubscriptionPending,
    /// The subscription is suspended.
    #[error("your app's subscription to this API is suspended")]
    SubscriptionSuspended,
    /// A rate limit of the plan refused the call.
    #[error(
        "rate limit exceeded: at most {limit} calls in this window; retry after {retry_after_secs} s"
    )]
    RateLimited {
        /// The limit that refused.
        limit: u32,
        /// Seconds until the budget is full again.
        reset_secs: u64,
        /// Seconds until a call would be admitted.
        retry_after_secs: u64,
    },
    /// The subscription's included calls for this period are used up.
    #[error("the plan's {included} included calls for this period are used up; the quota resets at {}", reset_text(*reset_at_ms))]
    QuotaExceeded {
        /// Calls included per period.
        included: i64,
        /// When the next period starts (ms since the epoch).
        reset_at_ms: i64,
    },
    /// Redis could not decide and the failure mode is closed.
    #[error("rate limits cannot be checked right now; retry shortly")]
    RateLimiterUnavailable,
    /// Every upstream target is out of rotation (failing).
    #[error("the upstream service is unavailable; retry shortly")]
    UpstreamUnavailable,
    /// The upstream could not be reached.
    #[error("the upstream service could not be reached")]
    UpstreamUnreachable,
    /// The upstream did not answer in time.
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout,
    /// A request body the API maps is not what it claims to be.
    #[error("the request body cannot be transformed: {reason}")]
    InvalidBody {
        /// What is wrong with it.
        reason: String,
    },
    /// An upstream response the API maps could not be mapped; it is never
    /// passed on unmapped.
    #[error("the upstream's response cannot be transformed: {reason}")]
    ResponseTransformFailed {
        /// What is wrong with it.
        reason: String,
    },
    /// Calls of an aggregation route failed (and it does not answer partially).
    #[error("upstream calls of this route failed: {}", failed_names(failed))]
    AggregateFailed {
        /// The failed calls, by name, and why each failed.
        failed: Vec<FailedCall>,
    },
}

/// A failed call of an aggregation route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedCall {
    /// The call's configured name.
    pub name: String,
    /// Why it failed, e.g. `timed out after 200 ms` or `status 503`.
    pub reason: String,
}

fn failed_names(failed: &[FailedCall]) -> String {
    failed
        .iter()
        .map(|f| format!("{} ({})", f.name, f.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

fn reset_text(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl GatewayError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::IpDenied => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingKey | Self::InvalidKey | Self::ExpiredKey | Self::InvalidToken { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::NoSubscription | Self::SubscriptionPending | Self::SubscriptionSuspended => {
                StatusCode::FORBIDDEN
            }
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RateLimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::InvalidBody { .. } => StatusCode::BAD_REQUEST,
            Self::ResponseTransformFailed { .. } | Self::AggregateFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::IpDenied => "ip_denied",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::ExpiredKey => "expired_key",
            Self::InvalidToken { .. } => "invalid_token",
            Self::NoSubscription => "no_subscription",
            Self::SubscriptionPending => "subscription_pending",
            Self::SubscriptionSuspended => "subscription_suspended",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RateLimiterUnavailable => "rate_limiter_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::InvalidBody { .. } => "invalid_body",
            Self::ResponseTransformFailed { .. } => "response_transform_failed",
            Self::AggregateFailed { .. } => "aggregate_failed",
        }
    }

    /// The JSON body and headers of the answer.
    pub fn to_response(&self, request_id: &str) -> http::Response<Bytes> {
        let mut body = serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "request_id": request_id,
            }
        });
        if let Self::AggregateFailed { failed } = self {
            body["error"]["failed"] = serde_json::json!(failed);
        }
        let mut resp = http::Response::new(Bytes::from(body.to_string()));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            Self::RateLimited {
                limit,
                reset_secs,
                retry_after_secs,
            } => {
                let h = resp.headers_mut();
                h.insert("ratelimit-limit", HeaderValue::from(*limit));
                h.insert("ratelimit-remaining", HeaderValue::from(0u32));
                h.insert("ratelimit-reset", HeaderValue::from(*reset_secs));
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::QuotaExceeded { reset_at_ms, .. } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let secs = (reset_at_ms - now).max(0).div_euclid(1000) + 1;
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::MethodNotAllowed { allowed, .. } => {
                if let Ok(v) = HeaderValue::from_str(allowed) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
            }
            Self::RateLimiterUnavailable => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            _ => {}
        }
        if matches!(
            self,
            Self::MissingKey | Self::InvalidKey | Self::ExpiredKey | Self::InvalidToken { .. }
        ) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_json_with_code_and_request_id() {
        let r = GatewayError::InvalidKey.to_response("req-1");
        assert_eq!(r.status(), 401);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_key");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(GatewayError::UpstreamTimeout.status(), 504);
        assert_eq!(GatewayError::NoSubscription.status(), 403);
    }
}
