//! The response cache: answers to `GET` kept per API and served again to
//! `GET` and `HEAD` without calling the upstream.
//!
//! The cache phase runs after quota, so a hit is authenticated, authorized,
//! rate-limited, counted against the quota and metered like any call; it only
//! saves the upstream round trip.
//!
//! **Key.** The path and query (the method is not part of it: `HEAD` is served
//! from `GET`'s answer), the values of `Accept-Encoding` and of the policy's
//! `vary` headers, and the calling app. Two apps never share an answer: the
//! upstream sees who calls (`x-tollgate-app-id`) and may answer each
//! differently. Keyless routes have no app, so their answers are shared by
//! every caller — which is why a call that carries credentials the gateway
//! does not consume (`Cookie`, or an `Authorization` that was not the API key)
//! bypasses the cache unless the policy lists that header in `vary`.
//!
//! **What is stored.** `200` answers to `GET` with a known length up to
//! `max_entry_bytes`, unless the upstream says `Cache-Control: no-store`,
//! `no-cache` or `private`, sets a cookie, or varies on a header the key does
//! not hold. `s-maxage`, else `max-age`, shortens the policy's TTL (never
//! lengthens it); `max-age=0` stores nothing. Entries are weighed in bytes and
//! the least recently used go first once the API's `max_bytes` is reached
//! (moka evicts in its maintenance pass, so the bound may be passed briefly).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Limited};
use moka::sync::Cache;
use tollgate_core::model::{ApiPolicies, CachePolicy};

use crate::error::GatewayError;
use crate::proxy::ProxiedBody;

/// The header that tells a client whether the answer came from the cache.
pub const X_CACHE: &str = "x-cache";

/// The key of a stored answer: length-prefixed parts (app, path, query,
/// varied header values), so no two different calls share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Box<[u8]>);

/// One stored answer.
#[derive(Debug)]
pub struct CachedAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    ttl: Duration,
}

impl CachedAnswer {
    fn weight(&self, key: &CacheKey) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        u32::try_from(key.0.len() + headers + self.body.len() + 128).unwrap_or(u32::MAX)
    }
}

/// Each entry lives for its own TTL.
struct EntryTtl;

impl moka::Expiry<CacheKey, Arc<CachedAnswer>> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedAnswer>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The stored answers of one API, bounded in bytes.
pub struct ResponseCache {
    entries: Cache<CacheKey, Arc<CachedAnswer>>,
    /// The configuration the answers were made under; a change empties the cache.
    fingerprint: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish()
    }
}

impl ResponseCache {
    /// A cache for an API whose policies (API-level and per route) are
    /// `policies`; `None` when none of them caches. Its size is the largest
    /// `max_bytes` among them.
    pub fn for_api<'a>(
        policies: impl Iterator<Item = &'a ApiPolicies>,
        fingerprint: u64,
    ) -> Option<Self> {
        let max_bytes = policies
            .filter_map(|p| p.cache.as_ref())
            .map(|c| c.max_bytes)
            .max()?;
        Some(Self {
            entries: Cache::builder()
                .max_capacity(max_bytes)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|k: &CacheKey, v: &Arc<CachedAnswer>| v.weight(k))
                .expire_after(EntryTtl)
                .build(),
            fingerprint,
        })
    }

    /// The configuration fingerprint it was built for.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Bytes held (after pending maintenance), for tests and metrics.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// The stored answer for `key`, as a response to `method`.
    pub fn lookup(&self, key: &CacheKey, method: &Method) -> Option<Response<ProxiedBody>> {
        let hit = self.entries.get(key)?;
        let body = if *method == Method::HEAD {
            Bytes::new()
        } else {
            hit.body.clone()
        };
        let mut response = Response::new(ProxiedBody::whole(body));
        *response.status_mut() = hit.status;
        *response.headers_mut() = hit.headers.clone();
        let h = response.headers_mut();
        h.insert(X_CACHE, HeaderValue::from_static("HIT"));
        h.insert(
            header::AGE,
            HeaderValue::from(hit.stored.elapsed().as_secs()),
        );
        Some(response)
    }

    /// Stores the upstream's answer to a `GET` or `HEAD` under `key` when it
    /// may be stored, and marks it a miss (also when the call bypassed the
    /// cache: `key` is `None`). A body with a known length up to
    /// `max_entry_bytes` is read whole for that (within `timeout`); anything
    /// else passes through as it came. Other methods' answers are untouched.
    pub async fn store(
        &self,
        key: Option<CacheKey>,
        policy: &CachePolicy,
        method: &Method,
        response: Response<ProxiedBody>,
        timeout: Duration,
    ) -> Result<Response<ProxiedBody>, GatewayError> {
        if *method != Method::GET && *method != Method::HEAD {
            return Ok(response);
        }
        let mut response = response;
        // The headers are read and stored from the map (the proxy phase
        // merged the lines already for a cached route).
        crate::headers::merge_raw_headers(&mut response);
        let ttl = (*method == Method::GET)
            .then(|| storable_for(policy, response.status(), response.headers()))
            .flatten();
        if let (Some(key), Some(ttl)) = (key, ttl) {
            let (parts, body) = response.into_parts();
            let bytes = match body.into_inner() {
                Either::Right(full) => full.collect().await.ok().map(|c| c.to_bytes()),
                Either::Left(incoming) => {
                    let limit = usize::try_from(policy.max_entry_bytes).unwrap_or(usize::MAX);
                    let read = Box::pin(Limited::new(incoming, limit).collect());
                    match tokio::time::timeout(timeout, read).await {
                        Ok(Ok(c)) => Some(c.to_bytes()),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "upstream body failed");
                            return Err(GatewayError::UpstreamUnreachable);
                        }
                        Err(_) => return Err(GatewayError::UpstreamTimeout),
                    }
                }
            };
            let bytes = bytes.unwrap_or_default();
            if bytes.len() as u64 <= policy.max_entry_bytes {
                self.entries.insert(
                    key,
                    Arc::new(CachedAnswer {
                        status: parts.status,
                        headers: parts.headers.clone(),
                        body: bytes.clone(),
                        stored: Instant::now(),
                        ttl,
                    }),
                );
            }
            response = Response::from_parts(parts, ProxiedBody::whole(bytes));
        }
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static("MISS"));
        Ok(response)
    }
}

/// A stable hash of the configuration an API's answers depend on.
pub fn fingerprint(parts: &impl serde::Serialize) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(parts)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// The cache key of a call, or `None` when the call bypasses the cache: not a
/// `GET` or `HEAD`, or carrying credentials the gateway does not consume and
/// the key does not hold. `app` is the calling app (`None` on keyless
/// routes); `authorization_consumed` says the `Authorization` header carried
/// the gateway's own credential.
pub fn key(
    policy: &CachePolicy,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    app: Option<&str>,
    authorization_consumed: bool,
) -> Option<CacheKey> {
    if *method != Method::GET && *method != Method::HEAD {
        return None;
    }
    let varied = |name: &str| policy.vary.iter().any(|v| v == name);
    if headers.contains_key(header::COOKIE) && !varied("cookie") {
        return None;
    }
    if headers.contains_key(header::AUTHORIZATION)
        && !authorization_consumed
        && !varied("authorization")
    {
        return None;
    }
    let mut key = Vec::with_capacity(64 + path.len() + query.map_or(0, str::len));
    let mut part = |bytes: &[u8]| {
        key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        key.extend_from_slice(bytes);
    };
    part(app.unwrap_or("").as_bytes());
    part(path.as_bytes());
    part(query.unwrap_or("").as_bytes());
    for name in std::iter::once(header::ACCEPT_ENCODING.as_str())
        .chain(policy.vary.iter().map(String::as_str))
    {
        for v in headers.get_all(name) {
            part(v.as_bytes());
        }
        part(b"\n");
    }
    Some(CacheKey(key.into_boxed_slice()))
}

/// How long an answer may be kept, or `None` when it must not be.
fn storable_for(policy: &CachePolicy, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::OK || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    if length > policy.max_entry_bytes {
        return None;
    }
    // Every header the upstream varies on must be part of the key.
    for v in headers.get_all(header::VARY) {
        let Ok(v) = v.to_str() else { return None };
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let keyed = name.eq_ignore_ascii_case(header::ACCEPT_ENCODING.as_str())
                || policy.vary.iter().any(|h| h.eq_ignore_ascii_case(name));
            if !keyed {
                return None;
            }
        }
    }
    let mut ttl = policy.ttl_secs;
    let mut max_age = None;
    let mut s_maxage = None;
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { return None };
        for directive in v.split(',').map(str::trim) {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let secs = || value.and_then(|v| v.parse::<u64>().ok());
            if name.eq_ignore_ascii_case("no-store")
                || name.eq_ignore_ascii_case("no-cache")
                || name.eq_ignore_ascii_case("private")
            {
                return None;
            } else if name.eq_ignore_ascii_case("max-age") {
                max_age = Some(secs()?);
            } else if name.eq_ignore_ascii_case("s-maxage") {
                s_maxage = Some(secs()?);
            }
        }
    }
    if let Some(limit) = s_maxage.or(max_age) {
        ttl = ttl.min(limit);
    }
    (ttl > 0).then(|| Duration::from_secs(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CachePolicy {
        CachePolicy {
            vary: vec!["accept-language".into()],
            ..CachePolicy::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_hold_app_path_query_and_varied_headers() {
        let p = policy();
        let h = headers(&[("accept-language", "de")]);
        let k = |method: &Method, app, query, h: &HeaderMap| {
            key(&p, method, "/a/b", query, h, app, false)
        };
        let base = k(&Method::GET, Some("app_1"), Some("x=1"), &h).unwrap();
        assert_eq!(
            k(&Method::HEAD, Some("app_1"), Some("x=1"), &h).unwrap(),
            base,
            "HEAD shares GET's key"
        );
        assert_ne!(
            k(&Method::GET, Some("app_2"), Some("x=1"), &h).unwrap(),
            base
        );
        assert_ne!(k(&Method::GET, None, Some("x=1"), &h).unwrap(), base);
        assert_ne!(
            k(&Method::GET, Some("app_1"), Some("x=2"), &h).unwrap(),
            base
        );
        let en = headers(&[("accept-language", "en")]);
        assert_ne!(
            k(&Method::GET, Some("app_1"), Some("x=1"), &en).unwrap(),
            base
        );
        let gz = headers(&[("accept-language", "de"), ("accept-encoding", "gzip")]);
        assert_ne!(
            k(&Method::GET, Some("app_1"), Some("x=1"), &gz).unwrap(),
            base
        );
        let other = headers(&[("accept-language", "de"), ("x-other", "1")]);
        assert_eq!(
            k(&Method::GET, Some("app_1"), Some("x=1"), &other).unwrap(),
            base,
            "headers not varied on are not part of the key"
        );
        assert!(k(&Method::POST, Some("app_1"), None, &h).is_none());
    }

    #[test]
    fn foreign_credentials_bypass_the_cache() {
        let p = policy();
        let cookie = headers(&[("cookie", "session=1")]);
        assert!(key(&p, &Method::GET, "/", None, &cookie, None, false).is_none());
        let auth = headers(&[("authorization", "Bearer user-token")]);
        assert!(key(&p, &Method::GET, "/", None, &auth, None, false).is_none());
        assert!(
            key(&p, &Method::GET, "/", None, &auth, Some("app_1"), true).is_some(),
            "the API key in Authorization is the app, already in the key"
        );
        let varied = CachePolicy {
            vary: vec!["authorization".into()],
            ..CachePolicy::default()
        };
        assert!(key(&varied, &Method::GET, "/", None, &auth, None, false).is_some());
    }

    #[test]
    fn upstream_cache_control_is_honoured() {
        let p = CachePolicy {
            ttl_secs: 60,
            ..policy()
        };
        let ok = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("content-length", "10")];
            pairs.extend_from_slice(extra);
            storable_for(&p, StatusCode::OK, &headers(&pairs))
        };
        assert_eq!(ok(&[]), Some(Duration::from_secs(60)));
        assert_eq!(
            ok(&[("cache-control", "public, max-age=5")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            ok(&[("cache-control", "max-age=3600")]),
            Some(Duration::from_secs(60)),
            "max-age never lengthens the TTL"
        );
        assert_eq!(
            ok(&[("cache-control", "max-age=30, s-maxage=7")]),
            Some(Duration::from_secs(7))
        );
        for cc in ["no-store", "private", "No-Cache", "max-age=0", "max-age=x"] {
            assert_eq!(ok(&[("cache-control", cc)]), None, "{cc}");
        }
        assert_eq!(ok(&[("set-cookie", "a=1")]), None);
        assert_eq!(
            ok(&[("vary", "Accept-Language, accept-encoding")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(ok(&[("vary", "user-agent")]), None);
        assert_eq!(ok(&[("vary", "*")]), None);
        assert_eq!(
            storable_for(
                &p,
                StatusCode::NOT_FOUND,
                &headers(&[("content-length", "1")])
            ),
            None
        );
        assert_eq!(storable_for(&p, StatusCode::OK, &HeaderMap::new()), None);
        assert_eq!(
            storable_for(
                &p,
                StatusCode::OK,
                &headers(&[("content-length", "2000000")])
            ),
            None,
            "larger than max_entry_bytes"
        );
    }

    #[tokio::test]
    async fn answers_are_stored_and_served_again() {
        let p = policy();
        let api = ApiPolicies {
            cache: Some(p.clone()),
            ..ApiPolicies::default()
        };
        let cache = ResponseCache::for_api(std::iter::once(&api), 1).unwrap();
        let k = key(&p, &Method::GET, "/x", None, &HeaderMap::new(), None, false).unwrap();
        assert!(cache.lookup(&k, &Method::GET).is_none());
        let mut upstream = Response::new(ProxiedBody::whole(Bytes::from_static(b"hello")));
        upstream
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(5));
        let miss = cache
            .store(
                Some(k.clone()),
                &p,
                &Method::GET,
                upstream,
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(miss.headers()[X_CACHE], "MISS");
        let hit = cache.lookup(&k, &Method::GET).unwrap();
        assert_eq!(hit.headers()[X_CACHE], "HIT");
        assert_eq!(hit.headers()[header::CONTENT_LENGTH], "5");
        let body = hit.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        let head = cache.lookup(&k, &Method::HEAD).unwrap();
        assert!(
            head.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
        assert!(cache.weighted_size() > 5);
    }

    #[tokio::test]
    async fn the_least_recently_used_answers_go_first() {
        let p = CachePolicy {
            max_bytes: 2048,
            max_entry_bytes: 1024,
            ..CachePolicy::default()
        };
        let api = ApiPolicies {
            cache: Some(p.clone()),
            ..ApiPolicies::default()
        };
        let cache = ResponseCache::for_api(std::iter::once(&api), 1).unwrap();
        let k =
            |path: &str| key(&p, &Method::GET, path, None, &HeaderMap::new(), None, false).unwrap();
        for path in ["/a", "/b", "/c"] {
            if path == "/c" {
                // /a was used since /b was stored: /b is the least recent.
                assert!(cache.lookup(&k("/a"), &Method::GET).is_some());
            }
            let mut upstream = Response::new(ProxiedBody::whole(Bytes::from(vec![b'x'; 700])));
            upstream
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(700));
            cache
                .store(
                    Some(k(path)),
                    &p,
                    &Method::GET,
                    upstream,
                    Duration::from_secs(1),
                )
                .await
                .unwrap();
            cache.entries.run_pending_tasks();
        }
        assert!(cache.weighted_size() <= 2048, "{}", cache.weighted_size());
        assert!(cache.lookup(&k("/a"), &Method::GET).is_some());
        assert!(cache.lookup(&k("/b"), &Method::GET).is_none());
        assert!(cache.lookup(&k("/c"), &Method::GET).is_some());
    }
}
