//! Names of the headers the gateway reads and writes, built once.
//!
//! `HeaderMap` accepts `&str` names too, but then parses and validates the name
//! on every call; with a dozen header operations per call that was several
//! percent of the gateway's instructions.

use http::HeaderName;

/// The call's request id, sent upstream and back.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// An API key.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// An API key, Kong's spelling.
pub const APIKEY: HeaderName = HeaderName::from_static("apikey");
/// `Keep-Alive`, hop-by-hop.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// The client addresses a call passed through.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The app a call was admitted for (trusted by the upstream).
pub const X_TOLLGATE_APP_ID: HeaderName = HeaderName::from_static("x-tollgate-app-id");
/// The app's developer.
pub const X_TOLLGATE_DEVELOPER_ID: HeaderName = HeaderName::from_static("x-tollgate-developer-id");
/// The plan.
pub const X_TOLLGATE_PLAN_ID: HeaderName = HeaderName::from_static("x-tollgate-plan-id");
/// The subscription.
pub const X_TOLLGATE_SUBSCRIPTION_ID: HeaderName =
    HeaderName::from_static("x-tollgate-subscription-id");
/// The tightest rate limit.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// Calls left in it.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// Seconds until it is full again.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
