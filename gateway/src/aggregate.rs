//! Aggregation routes: one `GET` on the gateway fans out to several upstream
//! calls at once and answers one JSON object holding each call's answer under
//! the call's name.
//!
//! The route passes every check of a normal call first (authentication,
//! authorization, rate limit, quota) and is metered as one call; the upstream
//! latency recorded is the fan-out's (the slowest call's). Each call has its
//! own timeout covering its head and body. A call fails when it cannot be
//! reached, times out, answers outside 2xx, or answers something that is not
//! JSON (or larger than the body cap). Then `on_failure` decides: `fail` gives
//! 502 `aggregate_failed` naming every failed call; `partial` gives 200 with
//! the calls that succeeded and an `errors` list of the others (502 if none
//! succeeded). 206 is not used: it means a byte range, and caches and clients
//! treat it so.
//!
//! Calls with a path go to the API's upstream targets through its balancer
//! (and report to its passive health checks), with the client's query string
//! added; calls with an absolute URL go there as written. Every call carries
//! the headers a proxied call would (credentials removed, identity, tracing,
//! the API's request header transform) and asks for an uncompressed answer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::{Map, Value};
use tollgate_core::model::{
    AGGREGATE_ERRORS, AggregateCall, AggregateRoute, ApiPolicies, OnFailure,
};

use crate::balancer::{Balancer, Outcome};
use crate::error::{FailedCall, GatewayError};
use crate::metering::CountingBody;
use crate::policy::body as json_body;
use crate::proxy::{self, ProxiedBody, UpstreamClient};

/// The aggregation route at `rest` (the path after the API's base path).
pub fn find<'p>(routes: &'p [AggregateRoute], rest: &str) -> Option<&'p AggregateRoute> {
    if routes.is_empty() {
        return None;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    routes.iter().find(|r| r.path == rest)
}

/// What the calls of one aggregation share.
pub struct Fanout<'a> {
    /// The shared upstream client.
    pub client: &'a UpstreamClient,
    /// The API's targets.
    pub balancer: &'a Balancer,
    /// Consistent-hashing key of the call, if any.
    pub hash_key: Option<&'a str>,
    /// Headers prepared for the upstream.
    pub headers: &'a HeaderMap,
    /// The client's query string.
    pub query: Option<&'a str>,
    /// The route's policies (body cap, response transforms).
    pub policies: &'a ApiPolicies,
    /// For the log.
    pub request_id: &'a str,
}

/// Answers an aggregation route: every call at once, merged. Returns the
/// response and how long the fan-out took.
pub async fn answer(
    route: &AggregateRoute,
    method: &Method,
    fanout: Fanout<'_>,
) -> Result<(Response<ProxiedBody>, Duration), GatewayError> {
    if *method != Method::GET {
        return Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            allowed: "GET".into(),
        });
    }
    let started = Instant::now();
    let results =
        futures_util::future::join_all(route.calls.iter().map(|c| call(c, &fanout))).await;
    let took = started.elapsed();

    let mut merged = Map::new();
    let mut failed = Vec::new();
    for (c, result) in route.calls.iter().zip(results) {
        match result {
            Ok(v) => {
                merged.insert(c.name.clone(), v);
            }
            Err(reason) => {
                tracing::warn!(request_id = fanout.request_id, call = %c.name, path = %c.path, %reason, "aggregated call failed");
                failed.push(FailedCall {
                    name: c.name.clone(),
                    reason,
                });
            }
        }
    }
    if !failed.is_empty() {
        if route.on_failure == OnFailure::Fail || merged.is_empty() {
            return Err(GatewayError::AggregateFailed { failed });
        }
        merged.insert(AGGREGATE_ERRORS.to_owned(), serde_json::json!(failed));
    }
    let mut doc = Value::Object(merged);
    let transform = fanout.policies.transform.as_ref();
    if let Some(ops) = transform.and_then(|t| t.response_body.as_ref()) {
        json_body::apply(&mut doc, ops);
    }
    let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let mut response = Response::new(ProxiedBody::whole(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(ops) = transform.and_then(|t| t.response_headers.as_ref()) {
        crate::policy::transform::apply_headers(response.headers_mut(), ops);
    }
    Ok((response, took))
}

/// The query of a call: its own, then the client's.
fn joined_query(own: Option<&str>, client: Option<&str>) -> Option<String> {
    match (
        own.filter(|q| !q.is_empty()),
        client.filter(|q| !q.is_empty()),
    ) {
        (Some(a), Some(b)) => Some(format!("{a}&{b}")),
        (Some(a), None) => Some(a.to_owned()),
        (None, Some(b)) => Some(b.to_owned()),
        (None, None) => None,
    }
}

/// One call: its JSON answer, or why it failed.
async fn call(c: &AggregateCall, f: &Fanout<'_>) -> Result<Value, String> {
    let timeout = Duration::from_millis(c.timeout_ms);
    // A relative call takes a target from the balancer and reports to it.
    let (uri, pick) = if c.path.starts_with('/') {
        let (path, own_query) = match c.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (c.path.as_str(), None),
        };
        let query = joined_query(own_query, f.query);
        let pick = f
            .balancer
            .pick(f.hash_key, &[])
            .ok_or_else(|| "no upstream target is in rotation".to_owned())?;
        let uri = proxy::upstream_uri(pick.target, path, query.as_deref())
            .map_err(|e| format!("invalid upstream URI: {e}"))?;
        (uri, Some(pick))
    } else {
        let uri: Uri = c.path.parse().map_err(|e| format!("invalid URL: {e}"))?;
        (uri, None)
    };
    let mut headers = f.headers.clone();
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_TYPE);
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, host);
    }
    let mut req = Request::new(CountingBody::new(
        Either::Right(Full::default()),
        proxy::counter(),
        None,
    ));
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let cap = json_body::cap(f.policies.max_body_bytes);

    let exchange = async {
        let response = f
            .client
            .request(req)
            .await
            .map_err(|e| (format!("unreachable: {e}"), Outcome::Failure))?;
        let status = response.status();
        let outcome = if matches!(status.as_u16(), 502..=504) {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        if !status.is_success() {
            return Err((format!("status {}", status.as_u16()), outcome));
        }
        let limit = usize::try_from(cap).unwrap_or(usize::MAX);
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    (format!("answer larger than {cap} bytes"), outcome)
                } else {
                    (format!("answer cut off: {e}"), Outcome::Failure)
                }
            })?
            .to_bytes();
        if body.is_empty() {
            return Ok((Value::Null, outcome));
        }
        serde_json::from_slice(&body)
            .map(|v| (v, outcome))
            .map_err(|_| ("the answer is not JSON".to_owned(), outcome))
    };
    let (result, outcome) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((v, outcome))) => (Ok(v), outcome),
        Ok(Err((reason, outcome))) => (Err(reason), outcome),
        Err(_) => (
            Err(format!("timed out after {} ms", c.timeout_ms)),
            Outcome::Failure,
        ),
    };
    if let Some(pick) = pick {
        f.balancer.report(pick.index, outcome);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_exact_path() {
        let routes: Vec<AggregateRoute> = serde_json::from_value(serde_json::json!([
            {"path": "/dashboard", "calls": [{"name": "a", "path": "/a"}]},
            {"path": "/", "calls": [{"name": "b", "path": "/b"}], "on_failure": "partial"}
        ]))
        .unwrap();
        assert_eq!(find(&routes, "/dashboard").unwrap().calls[0].name, "a");
        assert_eq!(find(&routes, "").unwrap().on_failure, OnFailure::Partial);
        assert!(find(&routes, "/dashboard/x").is_none());
        assert!(find(&[], "/dashboard").is_none());
        assert_eq!(routes[0].calls[0].timeout_ms, 5000);
    }

    #[test]
    fn queries_are_joined() {
        assert_eq!(joined_query(Some("a=1"), Some("b=2")).unwrap(), "a=1&b=2");
        assert_eq!(joined_query(None, Some("b=2")).unwrap(), "b=2");
        assert_eq!(joined_query(Some(""), None), None);
    }
}
