//! The access phase: what an API allows before any credential is looked at —
//! client networks, browser origins (CORS, with preflights answered here) and
//! request body size.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use tollgate_core::model::{ApiPolicies, CorsPolicy};

use crate::error::GatewayError;

/// Refuses clients outside the allow list or inside the deny list.
pub fn check_ip(policies: &ApiPolicies, ip: IpAddr) -> Result<(), GatewayError> {
    let ip = ip.to_canonical();
    let allowed = policies.ip_allow.is_empty() || policies.ip_allow.iter().any(|n| n.contains(&ip));
    let denied = policies.ip_deny.iter().any(|n| n.contains(&ip));
    if allowed && !denied {
        Ok(())
    } else {
        Err(GatewayError::IpDenied)
    }
}

/// Refuses a body whose announced length is over the limit (bodies without a
/// length are cut off while streaming; see [`crate::metering::CountingBody`]).
pub fn check_body_size(policies: &ApiPolicies, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(max) = policies.max_body_bytes else {
        return Ok(());
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > max => Err(GatewayError::BodyTooLarge { max }),
        _ => Ok(()),
    }
}

/// The `Access-Control-Allow-Origin` value for this request's origin, if the
/// policy allows it.
pub fn allowed_origin(cors: &CorsPolicy, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    if cors.allow_origins.iter().any(|o| o == text) {
        Some(origin.clone())
    } else if cors.allow_origins.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        None
    }
}

/// Answers a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`); `None` when the request is not one.
pub fn preflight(
    cors: &CorsPolicy,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    let Some(allowed) = allowed_origin(cors, headers) else {
        // A disallowed origin gets no CORS headers: the browser blocks the call.
        tracing::debug!(origin = ?origin, "CORS preflight from an origin the API does not allow");
        return Some(resp);
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if let Ok(v) = HeaderValue::from_str(&cors.allow_methods.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cors.allow_headers.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age_secs),
    );
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Some(resp)
}

/// Adds the CORS headers of an actual (non-preflight) response.
pub fn add_cors_headers(cors: &CorsPolicy, allowed: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if !cors.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.expose_headers.join(", "))
    {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(json: serde_json::Value) -> ApiPolicies {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ip_lists() {
        let p = policies(
            serde_json::json!({"ip_allow": ["10.0.0.0/8", "::1/128"], "ip_deny": ["10.1.0.0/16"]}),
        );
        assert!(check_ip(&p, "10.2.3.4".parse().unwrap()).is_ok());
        assert!(check_ip(&p, "::1".parse().unwrap()).is_ok());
        assert_eq!(
            check_ip(&p, "10.1.2.3".parse().unwrap()),
            Err(GatewayError::IpDenied)
        );
        assert_eq!(
            check_ip(&p, "192.168.0.1".parse().unwrap()),
            Err(GatewayError::IpDenied)
        );
        // IPv4 clients on a dual-stack socket arrive as ::ffff:a.b.c.d.
        assert!(check_ip(&p, "::ffff:10.2.3.4".parse().unwrap()).is_ok());
        assert!(check_ip(&ApiPolicies::default(), "192.168.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn preflights_are_answered_for_allowed_origins_only() {
        let p = policies(
            serde_json::json!({"cors": {"allow_origins": ["https://app.example.com"], "allow_credentials": true}}),
        );
        let cors = p.cors.unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(
            preflight(&cors, &Method::OPTIONS, &h).is_none(),
            "not a preflight without the request-method header"
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        let r = preflight(&cors, &Method::OPTIONS, &h).unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        assert!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let r = preflight(&cors, &Method::OPTIONS, &h).unwrap();
        assert!(
            !r.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }

    #[test]
    fn announced_bodies_over_the_limit_are_refused() {
        let p = policies(serde_json::json!({"max_body_bytes": 10}));
        let mut h = HeaderMap::new();
        assert!(check_body_size(&p, &h).is_ok());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(check_body_size(&p, &h).is_ok());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert_eq!(
            check_body_size(&p, &h),
            Err(GatewayError::BodyTooLarge { max: 10 })
        );
    }
}
