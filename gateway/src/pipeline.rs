//! The request pipeline: every call passes these phases, in this order, over
//! one `Arc<Snapshot>` and one [`UsageEvent`] that each phase fills in.
//!
//! | phase        | reads                                  | writes (event)                       | refuses with            |
//! |--------------|----------------------------------------|--------------------------------------|-------------------------|
//! | route        | path; snapshot routes                  | api_id, api_slug, route              | 404 `no_route`          |
//! | operation    | path and method; the API's OpenAPI paths; route policy overrides | route (the template) | 404 `no_route`, 405 `method_not_allowed` |
//! | access       | client IP, `Origin`, `Content-Length`; the route's policies | —                 | 403 `ip_denied`, 413 `body_too_large`; answers CORS preflights (204) |
//! | authenticate | a JWT bearer token, or `x-api-key`, `apikey`, `Authorization` | app_id, key_prefix, developer_id | 401 `missing_key`, `invalid_key`, `expired_key`, `invalid_token` |
//! | authorize    | the key's access to the routed API     | plan_id, subscription_id             | 403 `no_subscription`, `subscription_pending`, `subscription_suspended` |
//! | rate limit   | the plan's limits; the limiter         | —                                    | 429 `rate_limited`, 503 `rate_limiter_unavailable` |
//! | quota        | the plan's included calls; leased blocks | overage                            | 429 `quota_exceeded`    |
//! | cache        | the route's cache policy; stored answers (a hit ends here) | —                   | —                       |
//! | aggregate    | the route's `aggregate` calls; the balancer | upstream_latency_us (the fan-out's) | 405, 502 `aggregate_failed` |
//! | transform    | the API's header, query, path and JSON body changes | —                       | 400 `invalid_body`, 413, 502 `response_transform_failed` |
//! | proxy        | a target chosen by the balancer        | upstream_latency_us                  | 502 `upstream_unreachable`, 503 `upstream_unavailable`, 504 `upstream_timeout`, 413 |
//! | log          | the finished response                  | status, latency, bytes, error_code   | —                       |
//!
//! Keyless APIs skip authenticate, authorize, rate limit and quota.
//! The snapshot is all the configuration a call needs; the only store access on
//! the request path is a quota lease, once per block of calls (see
//! [`crate::policy::quota`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, Request, Response, Version, header};
use http_body_util::{Either, Full};
use tollgate_analytics::UsageEvent;
use tollgate_analytics::event::{Text, empty_text, event_id};
use tollgate_core::key::KeyHash;
use tollgate_core::model::{ApiPolicies, RateLimit, RateScope, SubscriptionStatus};

use crate::aggregate;
use crate::balancer::Outcome;
use crate::error::GatewayError;
use crate::headers::{
    APIKEY, RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET, X_API_KEY, X_REQUEST_ID,
    set_answer_header, set_answer_number,
};
use crate::metering::{CountingBody, Meter, MeteredBody};
use crate::metrics::RouteMetrics;
use crate::oauth::{self, TokenIssuer};
use crate::policy::body as json_body;
use crate::policy::quota::QuotaOutcome;
use crate::policy::rate_limit::{Budget, Decision};
use crate::policy::{access, cache, jwt, transform};
use crate::proxy::{self, Identity, Peer, ProxiedBody, RequestBody};
use crate::routing::OperationMatch;
use crate::snapshot::{Access, ApiRoute, AppGrant, KeyGrant, Snapshot};
use crate::{FastMap, Gateway};
use hyper::upgrade::OnUpgrade;
use tollgate_core::model::UpstreamProtocol;

/// The per-call context the phases read and write.
struct Call<'s> {
    /// The caller's request id, or a new one; sent upstream and back.
    request_id: HeaderValue,
    /// When the call arrived, milliseconds since the epoch.
    timestamp_ms: u64,
    /// What the phases learn for the usage event.
    noted: Noted<'s>,
    /// Request body bytes, counted on the way up.
    bytes_in: Arc<AtomicU64>,
    /// The routed API's metrics (the unrouted ones until routed): borrowed,
    /// and shared once, by the meter.
    metrics: &'s Arc<RouteMetrics>,
    /// The client end of the connection.
    client: &'s Peer,
    /// The API's policies and the allowed origin, for a CORS call.
    cors: Option<(Arc<ApiPolicies>, HeaderValue)>,
    /// The client's and the upstream's connections of a call the upstream
    /// upgraded (`101`): tunnelled and metered once the answer is sent.
    upgraded: Option<(OnUpgrade, OnUpgrade)>,
}

/// The usage event's texts as the phases find them: borrowed from the
/// snapshot (or made for the call) until the event is made, once, when the
/// answer is ready. Each text is then shared once, instead of an empty text
/// being shared first and replaced (two reference-count changes each).
#[derive(Default)]
struct Noted<'s> {
    api_id: Option<&'s Text>,
    api_slug: Option<&'s Text>,
    route: Option<Cow<'s, Text>>,
    app_id: Option<Cow<'s, Text>>,
    key_prefix: Option<&'s Text>,
    developer_id: Option<&'s Text>,
    plan_id: Option<&'s Text>,
    subscription_id: Option<&'s Text>,
    error_code: Option<&'static str>,
    upstream_latency_us: u32,
    overage: bool,
}

/// A noted text, or the empty one.
fn shared(text: Option<&Text>) -> Text {
    text.map_or_else(empty_text, Text::clone)
}

/// Body of every gateway response: the upstream's, or one the gateway made.
pub type ResponseBody = MeteredBody<ProxiedBody>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The caller's request id if it is sane (1-128 visible ASCII), else the
/// call's event id (a UUID v7) in hex.
fn request_id(headers: &HeaderMap, event_id: uuid::Uuid) -> HeaderValue {
    headers
        .get(X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut hex = uuid::Uuid::encode_buffer();
            HeaderValue::from_str(event_id.simple().encode_lower(&mut hex))
                .expect("hex is a valid header value")
        })
}

/// The method as event text, shared for the common methods.
fn method_text(method: &Method) -> Text {
    static COMMON: LazyLock<[(Method, Text); 7]> = LazyLock::new(|| {
        [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ]
        .map(|m| {
            let text = m.as_str().into();
            (m, text)
        })
    });
    COMMON
        .iter()
        .find(|(m, _)| m == method)
        .map_or_else(|| method.as_str().into(), |(_, text)| text.clone())
}

/// The route text of an operation: the API's base path and the template.
fn route_text(base_path: &Text, template: &str) -> Text {
    if template == "/" {
        base_path.clone()
    } else {
        format!("{base_path}{template}").into()
    }
}

impl Gateway {
    /// Answers one call.
    pub async fn handle(&self, req: Request<RequestBody>, client: &Peer) -> Response<ResponseBody> {
        let started = Instant::now();
        let snapshot = self.snapshot.load_full();
        let timestamp_ms = now_ms();
        let event_id = event_id(timestamp_ms);
        let method = method_text(req.method());
        let mut call = Call {
            request_id: request_id(req.headers(), event_id),
            timestamp_ms,
            noted: Noted::default(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            metrics: self.metrics.unrouted(),
            client,
            cors: None,
            upgraded: None,
        };

        let outcome = self.run_phases(&snapshot, req, &mut call).await;
        let mut response = match outcome {
            Ok(upstream) => upstream,
            Err(e) => {
                call.noted.error_code = Some(e.code());
                let rid = call.request_id.to_str().unwrap_or_default();
                e.to_response(rid).map(ProxiedBody::whole)
            }
        };
        let tunnel_request_id = call.upgraded.is_some().then(|| call.request_id.clone());
        set_answer_header(&mut response, X_REQUEST_ID, &call.request_id);
        if let Some((policies, origin)) = call.cors
            && let Some(cors) = &policies.cors
        {
            // `Vary` is added to the upstream's, not put in its place.
            crate::headers::merge_raw_headers(&mut response);
            access::add_cors_headers(cors, origin, response.headers_mut());
        }
        let noted = call.noted;
        let event = UsageEvent {
            id: event_id,
            timestamp_ms,
            node: self.node.clone(),
            api_id: shared(noted.api_id),
            api_slug: shared(noted.api_slug),
            route: noted.route.map_or_else(empty_text, Cow::into_owned),
            method,
            status: response.status().as_u16(),
            latency_us: 0,
            upstream_latency_us: noted.upstream_latency_us,
            bytes_in: 0,
            bytes_out: 0,
            app_id: noted.app_id.map_or_else(empty_text, Cow::into_owned),
            key_prefix: shared(noted.key_prefix),
            developer_id: shared(noted.developer_id),
            plan_id: shared(noted.plan_id),
            subscription_id: shared(noted.subscription_id),
            client_ip: client.text.clone(),
            error_code: noted.error_code.map_or_else(empty_text, Text::from),
            overage: noted.overage,
        };

        // Log phase: the event is recorded when the body has been sent, or for
        // an upgraded call when its tunnel closes.
        let meter = Box::new(Meter {
            event,
            started,
            bytes_in: call.bytes_in,
            recorder: self.recorder.clone(),
            metrics: call.metrics.clone(),
            access_log: self.access_log.clone(),
        });
        match (call.upgraded, tunnel_request_id) {
            (Some((client, upstream)), Some(rid))
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS =>
            {
                self.tunnels.spawn(client, upstream, meter, rid);
                response.map(MeteredBody::unmetered)
            }
            _ => response.map(|body| MeteredBody::new(body, meter)),
        }
    }

    async fn run_phases<'s>(
        &self,
        snapshot: &'s Snapshot,
        req: Request<RequestBody>,
        call: &mut Call<'s>,
    ) -> Result<Response<ProxiedBody>, GatewayError> {
        let event = &mut call.noted;
        let request_id = &call.request_id;
        let bytes_in = &call.bytes_in;

        // The OAuth2 token endpoint, when tokens are on.
        if let Some(tokens) = &self.tokens
            && req.uri().path() == oauth::TOKEN_PATH
        {
            event.route = Some(Cow::Owned(oauth::TOKEN_PATH.into()));
            let (parts, body) = req.into_parts();
            let (resp, app) =
                Box::pin(tokens.token_endpoint(snapshot, &parts.method, &parts.headers, body))
                    .await;
            match app {
                Some(app_id) => event.app_id = Some(Cow::Owned(app_id.into())),
                None => event.error_code = Some("invalid_client"),
            }
            return Ok(resp.map(ProxiedBody::from));
        }

        // 1. route
        let host = request_host(&req);
        let (route, rest) = snapshot
            .route(host.as_deref(), req.uri().path())
            .ok_or(GatewayError::NoRoute)?;
        call.metrics = &route.metrics;
        event.api_id = Some(&route.id);
        event.api_slug = Some(&route.slug);
        event.route = Some(Cow::Borrowed(&route.base_path));

        // 2. operation, when the API documents its paths. A CORS preflight is
        // matched by the method it asks about.
        let asked = (req.method() == Method::OPTIONS)
            .then(|| req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD))
            .flatten()
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        let mut policies = &route.policies;
        match route
            .operations
            .route(rest, asked.as_ref().unwrap_or(req.method()))
        {
            OperationMatch::Unrestricted => {}
            OperationMatch::Matched {
                template,
                policies: overridden,
            } => {
                event.route = Some(Cow::Owned(route_text(&route.base_path, template)));
                if let Some(p) = overridden {
                    policies = p;
                }
            }
            OperationMatch::MethodNotAllowed { template, allowed } => {
                event.route = Some(Cow::Owned(route_text(&route.base_path, template)));
                let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                return Err(GatewayError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allowed: allowed.join(", "),
                });
            }
            OperationMatch::NotFound => return Err(GatewayError::NoRoute),
        }

        // 3. access
        access::check_ip(policies, call.client.ip)?;
        if let Some(cors) = &policies.cors {
            if let Some(answer) = access::preflight(cors, req.method(), req.headers()) {
                return Ok(answer.map(ProxiedBody::from));
            }
            call.cors = access::allowed_origin(cors, req.headers()).map(|o| (policies.clone(), o));
        }
        access::check_body_size(policies, req.headers())?;

        let (identity, via_authorization, limited) = if policies.keyless {
            (None, false, None)
        } else {
            // 4. authenticate: a JWT where the API accepts them, else an API key
            let bearer = jwt::bearer_jwt(req.headers());
            let gateway_token = bearer.filter(|t| self.tokens.is_some() && TokenIssuer::is_ours(t));
            let (principal, via_authorization) = match (gateway_token, &policies.jwt, bearer) {
                (Some(token), _, _) => {
                    let tokens = self.tokens.as_ref().expect("checked above");
                    let app_id = tokens.verify(token)?;
                    let app = snapshot
                        .app(&app_id)
                        .ok_or_else(|| GatewayError::InvalidToken {
                            reason: "the app of this access token no longer exists".into(),
                        })?;
                    (Principal::from_app(app), true)
                }
                (None, Some(policy), Some(token)) => {
                    let app_id = Box::pin(self.jwt.verify(policy, token)).await?;
                    let app = snapshot
                        .app(&app_id)
                        .ok_or_else(|| GatewayError::InvalidToken {
                            reason: format!("no app has the id {app_id:?} named by the token"),
                        })?;
                    (Principal::from_app(app), true)
                }
                _ => {
                    let (grant, via) = authenticate(snapshot, req.headers())?;
                    (Principal::from_key(grant), via)
                }
            };
            event.app_id = Some(Cow::Borrowed(principal.app_id));
            event.key_prefix = principal.key_prefix;
            event.developer_id = Some(principal.developer_id);

            // 5. authorize
            let access = authorize(principal.access, route)?;
            event.plan_id = Some(&access.plan_id);
            event.subscription_id = Some(&access.subscription_id);
            if let Some(used) = principal.used
                && !used.load(Ordering::Relaxed)
            {
                used.store(true, Ordering::Relaxed);
            }

            // 6. rate limit
            let limited = self.rate_limit(&principal, access).await?;

            // 7. quota
            if let Some(rule) = &access.quota {
                match self
                    .quotas
                    .check(&access.subscription_id, rule, call.timestamp_ms as i64)
                    .await
                {
                    QuotaOutcome::Within | QuotaOutcome::Unknown => {}
                    QuotaOutcome::Overage => event.overage = true,
                    QuotaOutcome::Exceeded {
                        reset_at_ms,
                        included,
                    } => {
                        return Err(GatewayError::QuotaExceeded {
                            included,
                            reset_at_ms,
                        });
                    }
                }
            }
            let identity = Identity {
                app_id: principal.app_id,
                lines: [principal.identity_lines, &access.identity_lines],
            };
            (Some(identity), via_authorization, limited)
        };

        // cache: a stored answer is served once every check has passed
        let cache_key = match (&route.cache, &policies.cache) {
            (Some(_), Some(policy)) => cache::key(
                policy,
                req.method(),
                req.uri().path(),
                req.uri().query(),
                req.headers(),
                identity.map(|id| id.app_id),
                via_authorization,
            ),
            _ => None,
        };
        if let (Some(key), Some(store)) = (&cache_key, &route.cache)
            && let Some(mut hit) = store.lookup(key, req.method())
        {
            if let Some(d) = limited {
                rate_limit_headers(&mut hit, &d);
            }
            return Ok(hit);
        }

        // 8. proxy: the upstream request, transformed (9), then sent
        let balancer = &route.balancer;
        let hash_key: Option<Cow<'_, str>> = match &balancer.policy.hash_header {
            Some(h) => req
                .headers()
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(|v| Cow::Owned(v.to_owned())),
            None => identity.map(|id| Cow::Borrowed(id.app_id)),
        };

        // aggregate: a route answered by several upstream calls at once
        if let Some(aggregated) = aggregate::find(&policies.aggregate, rest) {
            let (mut parts, _) = req.into_parts();
            proxy::prepare_headers(
                &parts.headers,
                &balancer.targets[0].target,
                call.client,
                request_id,
                via_authorization,
                identity,
            )
            .apply(&mut parts.headers);
            if let Some(ops) = policies
                .transform
                .as_ref()
                .and_then(|t| t.request_headers.as_ref())
            {
                transform::apply_headers(&mut parts.headers, ops);
            }
            let fanout = aggregate::Fanout {
                client: &self.client,
                balancer,
                hash_key: hash_key.as_deref(),
                headers: &parts.headers,
                query: parts.uri.query(),
                policies,
                request_id: request_id.to_str().unwrap_or_default(),
            };
            let (mut response, took) =
                Box::pin(aggregate::answer(aggregated, &parts.method, fanout)).await?;
            event.upstream_latency_us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
            if let Some(d) = limited {
                rate_limit_headers(&mut response, &d);
            }
            return Ok(response);
        }

        let rest_start = route.base_path.len();
        let (mut parts, body) = req.into_parts();
        // A protocol upgrade (WebSocket and the like) is passed through: the
        // Upgrade header goes up, and on 101 the two connections are joined.
        let upgrade = parts
            .headers
            .get(header::UPGRADE)
            .cloned()
            .filter(|_| wants_upgrade(&parts.headers));
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
        parts.version = Version::HTTP_11;
        let uri = parts.uri.clone();
        let mut rest = Cow::Borrowed(&uri.path()[rest_start..]);
        let mut query = uri.query().map(Cow::Borrowed);
        let mut forwarded = proxy::prepare_headers(
            &parts.headers,
            // Host is set per target below.
            &balancer.targets[0].target,
            call.client,
            request_id,
            via_authorization,
            identity,
        );
        // Steps that edit the headers themselves see the changes applied.
        if upgrade.is_some() || policies.transform.is_some() {
            forwarded.apply(&mut parts.headers);
        }
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }

        // 9. transform (request), before it is sent
        let mut body_counted = false;
        let body = if let Some(t) = &policies.transform {
            if let Some(ops) = &t.request_headers {
                transform::apply_headers(&mut parts.headers, ops);
            }
            if let Some(ops) = &t.query {
                query = transform::rewrite_query(query.as_deref(), ops).map(Cow::Owned);
            }
            if let Some(p) = &t.path {
                rest = Cow::Owned(transform::rewrite_path(&rest, p).into_owned());
            }
            if t.response_body.is_some() {
                // Mapped answers must come uncompressed.
                parts.headers.remove(header::ACCEPT_ENCODING);
            }
            let (b, counted) = Box::pin(json_body::request_phase(
                &mut parts.headers,
                body,
                t.request_body.as_ref(),
                bytes_in,
                policies.max_body_bytes,
            ))
            .await?;
            body_counted = counted;
            b
        } else {
            body
        };

        // Only idempotent calls without a body are sent again after a target fails.
        let retriable = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
        ) && !parts.headers.contains_key(header::TRANSFER_ENCODING)
            && parts
                .headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        // A retry needs another target; without one, the headers need no copy.
        let retries = if retriable {
            (balancer.policy.retries as usize).min(balancer.targets.len() - 1)
        } else {
            0
        };
        let max_body = policies.max_body_bytes;
        let rid = request_id.to_str().unwrap_or_default();
        let mut body = Some(body);
        if retries > 0 {
            balancer.deposit_retry_budget();
        }
        let ms = |ms: u64| std::time::Duration::from_millis(ms);
        let timeouts = proxy::Timeouts {
            head: balancer.policy.timeout_ms.map_or(self.upstream_timeout, ms),
            read: balancer
                .policy
                .read_timeout_ms
                .map_or(self.upstream_read_timeout, ms),
            total: balancer
                .policy
                .total_timeout_ms
                .map(ms)
                .or(self.upstream_total_timeout),
        };
        // The answer's headers may stay as the upstream's lines unless a step
        // below reads or edits them (the rate-limit headers are inserted,
        // which the lines allow).
        let raw_headers = policies.transform.is_none() && route.cache.is_none();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = None;
        let proxied = loop {
            // No target left: the last attempt's error, or 503 if none was tried.
            let pick = balancer.pick(hash_key.as_deref(), &tried).ok_or_else(|| {
                last_error
                    .take()
                    .unwrap_or(GatewayError::UpstreamUnavailable)
            })?;
            let target_uri =
                proxy::upstream_uri(pick.target, &rest, query.as_deref()).map_err(|e| {
                    tracing::warn!(error = %e, api = %route.slug, "cannot build the upstream URI");
                    GatewayError::UpstreamUnreachable
                })?;
            let mut attempt = Request::new(());
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = target_uri;
            *attempt.version_mut() = parts.version;
            let mut attempt_forwarded = if retries > tried.len() {
                *attempt.headers_mut() = parts.headers.clone();
                forwarded.clone()
            } else {
                *attempt.headers_mut() = std::mem::take(&mut parts.headers);
                std::mem::take(&mut forwarded)
            };
            attempt_forwarded.set_host(&pick.target.host);
            let upstream_body = body
                .take()
                .unwrap_or_else(|| Either::Right(Full::default()));
            // A mapped body was counted as the client sent it.
            let counter = if body_counted {
                proxy::counter()
            } else {
                bytes_in.clone()
            };
            let upstream_req =
                attempt.map(|()| CountingBody::new(upstream_body, counter, max_body));
            // Plain HTTP/1.1 with a small body of known size goes over the
            // target's own pool; https, HTTP/2, upgrades and streamed
            // uploads over the general client.
            let route = if pick.target.scheme != http::uri::Scheme::HTTP || upgrade.is_some() {
                proxy::Route::Client
            } else if balancer.policy.protocol == UpstreamProtocol::H2c {
                proxy::Route::H2c(&self.h2c_client)
            } else if !crate::upstream_pool::fits(&upstream_req) {
                proxy::Route::Client
            } else {
                proxy::Route::Pool(
                    &balancer.targets[pick.index].pool,
                    self.upstream_connect_timeout,
                )
            };
            match proxy::forward(
                &self.client,
                route,
                upstream_req,
                attempt_forwarded,
                timeouts,
                rid,
                raw_headers,
            )
            .await
            {
                Ok(p) => {
                    let status = p.response.status().as_u16();
                    let outcome = if matches!(status, 502..=504) {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    balancer.report(pick.index, outcome);
                    break p;
                }
                Err(e) => {
                    balancer.report(pick.index, Outcome::Failure);
                    if let Some(max) = max_body
                        && bytes_in.load(Ordering::Relaxed) > max
                    {
                        // The body was cut off at the limit: the client's fault, not the upstream's.
                        return Err(GatewayError::BodyTooLarge { max });
                    }
                    if e == GatewayError::UpstreamUnreachable
                        && tried.len() < retries
                        && balancer.withdraw_retry()
                    {
                        tried.push(pick.index);
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        };
        event.upstream_latency_us =
            u32::try_from(proxied.upstream_latency.as_micros()).unwrap_or(u32::MAX);
        let mut response = proxied.response;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let (Some(client), Some(proto)) = (client_upgrade, upgrade)
        {
            let upstream = response
                .extensions_mut()
                .remove::<hyper::upgrade::OnUpgrade>();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            response.headers_mut().insert(header::UPGRADE, proto);
            if let Some(upstream) = upstream {
                call.upgraded = Some((client, upstream));
            }
        }
        // 10. transform (response)
        if let Some(t) = &policies.transform {
            if let Some(ops) = &t.response_headers {
                transform::apply_headers(response.headers_mut(), ops);
            }
            if let Some(ops) = &t.response_body {
                response = Box::pin(json_body::response_phase(
                    response,
                    &parts.method,
                    ops,
                    policies.max_body_bytes,
                    self.upstream_timeout,
                ))
                .await?;
            }
        }
        if let (Some(store), Some(policy)) = (&route.cache, &policies.cache) {
            response = Box::pin(store.store(
                cache_key,
                policy,
                &parts.method,
                response,
                self.upstream_timeout,
            ))
            .await?;
        }
        if let Some(d) = limited {
            rate_limit_headers(&mut response, &d);
        }
        Ok(response)
    }

    /// Rate-limit phase: every limit of the plan, counted per key or per app.
    async fn rate_limit(
        &self,
        principal: &Principal<'_>,
        access: &Access,
    ) -> Result<Option<Decision>, GatewayError> {
        if access.rate_limits.is_empty() {
            return Ok(None);
        }
        let budget = |(index, limit): (usize, &RateLimit)| Budget {
            plan_id: &access.plan_id,
            index,
            counted: match limit.per {
                RateScope::Key => principal.key_id.unwrap_or(principal.app_id),
                RateScope::App => principal.app_id,
            },
            limit: *limit,
        };
        // Most plans have one limit: no list is made for it.
        let one;
        let many: Vec<Budget<'_>>;
        let budgets: &[Budget<'_>] = if let [limit] = &access.rate_limits[..] {
            one = [budget((0, limit))];
            &one
        } else {
            many = access.rate_limits.iter().enumerate().map(budget).collect();
            &many
        };
        match self.rate_limiter.check(budgets).await {
            Ok((d, _)) if d.allowed => Ok(Some(d)),
            Ok((d, _)) => Err(GatewayError::RateLimited {
                limit: d.limit,
                reset_secs: ceil_secs(d.reset),
                retry_after_secs: ceil_secs(d.retry_after).max(1),
            }),
            Err(_) => Err(GatewayError::RateLimiterUnavailable),
        }
    }
}

/// The request's host name, lowercase and without a port: from the URI
/// (HTTP/2 `:authority`, absolute-form) or the `Host` header.
fn request_host(req: &Request<RequestBody>) -> Option<Cow<'_, str>> {
    let raw = req.uri().host().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    let name = if raw.starts_with('[') {
        &raw[..=raw.find(']')?]
    } else {
        raw.split(':').next()?
    };
    Some(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

/// True when `Connection` lists `upgrade`.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds) of
/// the tightest budget.
fn rate_limit_headers<B: crate::headers::CarriesRawHeaders>(
    response: &mut Response<B>,
    d: &Decision,
) {
    set_answer_number(response, RATELIMIT_LIMIT, d.limit.into());
    set_answer_number(response, RATELIMIT_REMAINING, d.remaining.into());
    set_answer_number(response, RATELIMIT_RESET, ceil_secs(d.reset));
}

/// Who a call is made for, from an API key or a bearer token.
struct Principal<'s> {
    app_id: &'s Text,
    developer_id: &'s Text,
    /// The two as header values for the upstream.
    identity_lines: &'s [u8],
    /// The key, for per-key rate limits (tokens count per app).
    key_id: Option<&'s str>,
    /// The key's visible prefix; none for tokens.
    key_prefix: Option<&'s Text>,
    access: &'s FastMap<String, Access>,
    /// The key's last-use mark.
    used: Option<&'s std::sync::atomic::AtomicBool>,
}

impl<'s> Principal<'s> {
    fn from_key(grant: &'s KeyGrant) -> Self {
        Self {
            app_id: &grant.app_id,
            developer_id: &grant.developer_id,
            identity_lines: &grant.identity_lines,
            key_id: Some(&grant.key_id),
            key_prefix: Some(&grant.prefix),
            access: &grant.access,
            used: Some(&grant.used),
        }
    }

    fn from_app(app: &'s AppGrant) -> Self {
        Self {
            app_id: &app.app_id,
            developer_id: &app.developer_id,
            identity_lines: &app.identity_lines,
            key_id: None,
            key_prefix: None,
            access: &app.access,
            used: None,
        }
    }
}

/// Authenticate phase: finds the presented key in the snapshot. Returns the
/// grant and whether the key came in `Authorization` (to strip it upstream).
fn authenticate<'s>(
    snapshot: &'s Snapshot,
    headers: &HeaderMap,
) -> Result<(&'s KeyGrant, bool), GatewayError> {
    let (key, via_authorization) = presented_key(headers).ok_or(GatewayError::MissingKey)?;
    let grant = snapshot
        .key(&KeyHash::of(key))
        .ok_or(GatewayError::InvalidKey)?;
    if grant
        .expires_at_ms
        .is_some_and(|expiry| now_ms() as i64 >= expiry)
    {
        return Err(GatewayError::ExpiredKey);
    }
    Ok((grant, via_authorization))
}

/// The key a call presents: `x-api-key`, then `apikey`, then `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<(&str, bool)> {
    let text = |name: &http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(k) = text(&X_API_KEY).or_else(|| text(&APIKEY)) {
        return Some((k, false));
    }
    let auth = text(&header::AUTHORIZATION)?;
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some((token, true))
}

/// Authorize phase: the key's app must hold an active subscription to a plan
/// that covers the routed API.
fn authorize<'g>(
    access: &'g FastMap<String, Access>,
    route: &ApiRoute,
) -> Result<&'g Access, GatewayError> {
    let access = access.get(&*route.id).ok_or(GatewayError::NoSubscription)?;
    match access.status {
        SubscriptionStatus::Active => Ok(access),
        SubscriptionStatus::Pending => Err(GatewayError::SubscriptionPending),
        SubscriptionStatus::Suspended => Err(GatewayError::SubscriptionSuspended),
        SubscriptionStatus::Cancelled => Err(GatewayError::NoSubscription),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_three_headers_in_order() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_key(&h), Some(("abc", true)));
        h.insert("apikey", HeaderValue::from_static("def"));
        assert_eq!(presented_key(&h), Some(("def", false)));
        h.insert("x-api-key", HeaderValue::from_static("ghi"));
        assert_eq!(presented_key(&h), Some(("ghi", false)));

        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        assert_eq!(presented_key(&basic), None);
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        let id = uuid::Uuid::now_v7();
        assert_eq!(request_id(&h, id), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h, id), id.simple().to_string().as_str());
        assert_eq!(request_id(&HeaderMap::new(), id).len(), 32);
    }
}
