//! The immutable configuration the gateway serves from.
//!
//! Built from the store's [`GatewayConfig`] off the request path and swapped in
//! atomically; a request holds one `Arc<Snapshot>` from start to end, so a
//! reload never changes the rules under a call in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderValue;
use http::uri::{Authority, Scheme};
use tollgate_analytics::event::Text;
use tollgate_core::key::KeyHash;
use tollgate_core::model::{ApiPolicies, RateLimit, SubscriptionStatus};
use tollgate_core::store::{GatewayConfig, QuotaRule};

use crate::balancer::Balancer;
use crate::metrics::{GatewayMetrics, RouteMetrics};
use crate::routing::Operations;

/// One upstream target of an API.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
    /// Path prefix on the upstream, without a trailing slash (may be empty).
    pub path: String,
    /// The `Host` header sent to it (the authority), built once.
    pub host: HeaderValue,
}

impl Target {
    /// The target of an upstream URL (`http://host:port/prefix`).
    pub fn parse(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        let path = uri.path().trim_end_matches('/').to_owned();
        let authority = uri.authority()?.clone();
        Some(Self {
            scheme: uri.scheme()?.clone(),
            host: HeaderValue::from_str(authority.as_str()).ok()?,
            authority,
            path,
        })
    }
}

/// A published API as the router sees it.
#[derive(Debug)]
pub struct ApiRoute {
    /// API id.
    pub id: Text,
    /// API slug.
    pub slug: Text,
    /// Path prefix on the gateway.
    pub base_path: Text,
    /// Host names the API answers on; empty means every host.
    pub hosts: Vec<String>,
    /// Upstream targets, their health and how calls are spread over them.
    pub balancer: Arc<Balancer>,
    /// The API's metric handles.
    pub metrics: Arc<RouteMetrics>,
    /// Access policies (keyless, IP lists, CORS, body size).
    pub policies: Arc<ApiPolicies>,
    /// The operations of the API's OpenAPI document.
    pub operations: Operations,
}

/// What a key's app may call: per API id, the best subscription covering it.
#[derive(Debug, Clone)]
pub struct Access {
    /// Subscription id.
    pub subscription_id: Text,
    /// Plan id.
    pub plan_id: Text,
    /// Its status; only active admits calls.
    pub status: SubscriptionStatus,
    /// The plan's rate limits.
    pub rate_limits: Arc<[RateLimit]>,
    /// The plan's quota, if it includes a limited number of calls.
    pub quota: Option<QuotaRule>,
}

/// An accepted key and what it grants.
#[derive(Debug)]
pub struct KeyGrant {
    /// Key id.
    pub key_id: String,
    /// Visible prefix.
    pub prefix: Text,
    /// Owning app.
    pub app_id: Text,
    /// The app's developer.
    pub developer_id: Text,
    /// Expiry, milliseconds since the epoch.
    pub expires_at_ms: Option<i64>,
    /// Access by API id, shared by every key of the app.
    pub access: Arc<HashMap<String, Access>>,
    /// Set when the gateway accepts the key; collected for `last_used_at`.
    pub used: AtomicBool,
}

/// An app as bearer tokens name it.
#[derive(Debug)]
pub struct AppGrant {
    /// App id.
    pub app_id: Text,
    /// The app's developer.
    pub developer_id: Text,
    /// Access by API id.
    pub access: Arc<HashMap<String, Access>>,
    /// SHA-256 of the app's OAuth2 client secret.
    pub client_secret_hash: Option<KeyHash>,
}

/// Routes and keys at one configuration version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The configuration version this was built from.
    pub version: i64,
    /// Routes, longest base path first so the most specific prefix wins.
    routes: Vec<ApiRoute>,
    keys: HashMap<KeyHash, KeyGrant>,
    apps: HashMap<String, AppGrant>,
}

fn rank(status: SubscriptionStatus) -> u8 {
    match status {
        SubscriptionStatus::Active => 3,
        SubscriptionStatus::Pending => 2,
        SubscriptionStatus::Suspended => 1,
        SubscriptionStatus::Cancelled => 0,
    }
}

impl Snapshot {
    /// Builds a snapshot; carries over "used" marks from `previous` so no
    /// last-used time is lost across a reload.
    pub fn build(
        config: &GatewayConfig,
        previous: Option<&Snapshot>,
        metrics: &GatewayMetrics,
    ) -> Self {
        // Balancers of the previous snapshot, by API id, to carry health over.
        let previous_balancers: HashMap<&str, &Arc<Balancer>> = previous
            .map(|p| p.routes.iter().map(|r| (&*r.id, &r.balancer)).collect())
            .unwrap_or_default();
        let mut routes: Vec<ApiRoute> = config
            .apis
            .iter()
            .filter_map(|api| {
                let targets: Vec<(String, Target)> = api
                    .upstreams
                    .iter()
                    .filter_map(|u| Target::parse(u).map(|t| (u.clone(), t)))
                    .collect();
                if targets.is_empty() {
                    tracing::warn!(api = %api.slug, "API has no usable upstream; not routed");
                    return None;
                }
                let policy = api.policies.upstream.clone().unwrap_or_default();
                // Health state survives a reload while targets and policy stay the same.
                let kept = previous_balancers
                    .get(api.id.as_str())
                    .filter(|b| b.same_as(&api.upstreams, &policy))
                    .map(|b| Arc::clone(b));
                let balancer = kept.unwrap_or_else(|| {
                    let b = Arc::new(Balancer::new(targets, policy));
                    b.start_probes();
                    b
                });
                Some(ApiRoute {
                    id: api.id.as_str().into(),
                    slug: api.slug.as_str().into(),
                    base_path: api.base_path.as_str().into(),
                    hosts: api.hosts.clone(),
                    balancer,
                    metrics: metrics.route(&api.slug),
                    policies: Arc::new(api.policies.clone()),
                    operations: Operations::from_openapi(api.openapi.as_ref(), &api.policies),
                })
            })
            .collect();
        routes.sort_by(|a, b| {
            b.base_path
                .len()
                .cmp(&a.base_path.len())
                .then_with(|| a.base_path.cmp(&b.base_path))
        });

        let mut by_app: HashMap<&str, HashMap<String, Access>> = HashMap::new();
        for sub in &config.subscriptions {
            let access = by_app.entry(sub.app_id.as_str()).or_default();
            for api_id in &sub.api_ids {
                let better = access
                    .get(api_id)
                    .is_none_or(|have| rank(sub.status) > rank(have.status));
                if better {
                    access.insert(
                        api_id.clone(),
                        Access {
                            subscription_id: sub.id.as_str().into(),
                            plan_id: sub.plan_id.as_str().into(),
                            status: sub.status,
                            rate_limits: sub.rate_limits.clone().into(),
                            quota: sub.quota,
                        },
                    );
                }
            }
        }
        let by_app: HashMap<&str, Arc<HashMap<String, Access>>> =
            by_app.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let empty = Arc::new(HashMap::new());

        let keys = config
            .keys
            .iter()
            .map(|k| {
                let was_used = previous
                    .and_then(|p| p.keys.get(&k.hash))
                    .is_some_and(|g| g.used.load(Ordering::Relaxed));
                (
                    k.hash,
                    KeyGrant {
                        key_id: k.id.clone(),
                        prefix: k.prefix.as_str().into(),
                        app_id: k.app_id.as_str().into(),
                        developer_id: k.developer_id.as_str().into(),
                        expires_at_ms: k.expires_at.map(|t| t.0),
                        access: by_app
                            .get(k.app_id.as_str())
                            .cloned()
                            .unwrap_or_else(|| empty.clone()),
                        used: AtomicBool::new(was_used),
                    },
                )
            })
            .collect();

        let apps = config
            .apps
            .iter()
            .map(|app| {
                (
                    app.id.clone(),
                    AppGrant {
                        app_id: app.id.as_str().into(),
                        developer_id: app.developer_id.as_str().into(),
                        access: by_app
                            .get(app.id.as_str())
                            .cloned()
                            .unwrap_or_else(|| empty.clone()),
                        client_secret_hash: app.client_secret_hash,
                    },
                )
            })
            .collect();

        Self {
            version: config.version,
            routes,
            keys,
            apps,
        }
    }

    /// The API for `host` whose base path is the longest prefix of `path` (on
    /// a segment boundary), and the rest of the path after it (`""` or `/…`).
    /// APIs without hosts answer on every host.
    pub fn route<'a, 'p>(
        &'a self,
        host: Option<&str>,
        path: &'p str,
    ) -> Option<(&'a ApiRoute, &'p str)> {
        self.routes
            .iter()
            .filter(|r| r.hosts.is_empty() || host.is_some_and(|h| r.hosts.iter().any(|x| x == h)))
            .find_map(|r| {
                let rest = path.strip_prefix(&*r.base_path)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((r, rest))
            })
    }

    /// The grant of a presented key.
    pub fn key(&self, hash: &KeyHash) -> Option<&KeyGrant> {
        self.keys.get(hash)
    }

    /// An app named by a bearer token.
    pub fn app(&self, app_id: &str) -> Option<&AppGrant> {
        self.apps.get(app_id)
    }

    /// Ids of keys accepted since the last call, clearing the marks.
    pub fn take_used_keys(&self) -> Vec<String> {
        self.keys
            .values()
            .filter(|g| g.used.swap(false, Ordering::Relaxed))
            .map(|g| g.key_id.clone())
            .collect()
    }

    /// The routed APIs, most specific base path first.
    pub fn routes(&self) -> &[ApiRoute] {
        &self.routes
    }

    /// Number of routed APIs.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Number of accepted keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::model::{Api, Visibility};
    use tollgate_core::store::{KeyRecord, SubscriptionRecord};
    use tollgate_core::time::Timestamp;

    fn api(id: &str, base: &str) -> Api {
        Api {
            id: id.into(),
            name: id.into(),
            slug: id.into(),
            base_path: base.into(),
            hosts: vec![],
            upstreams: vec!["http://127.0.0.1:1/v1/".into()],
            visibility: Visibility::Public,
            openapi: None,
            policies: Default::default(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundary_wins() {
        let config = GatewayConfig {
            version: 1,
            apis: vec![api("a", "/weather"), api("b", "/weather/v2")],
            ..Default::default()
        };
        let s = Snapshot::build(&config, None, &GatewayMetrics::new());
        assert_eq!(
            s.route(None, "/weather/v2/today")
                .map(|(r, rest)| (&*r.id, rest)),
            Some(("b", "/today"))
        );
        assert_eq!(
            s.route(None, "/weather/today")
                .map(|(r, rest)| (&*r.id, rest)),
            Some(("a", "/today"))
        );
        assert_eq!(
            s.route(None, "/weather").map(|(r, rest)| (&*r.id, rest)),
            Some(("a", ""))
        );
        assert!(s.route(None, "/weatherman").is_none());
        assert!(s.route(None, "/").is_none());
        assert_eq!(s.routes[0].balancer.targets[0].target.path, "/v1");
    }

    #[test]
    fn keys_get_the_best_subscription_of_their_app() {
        let hash = KeyHash::of("k");
        let config = GatewayConfig {
            version: 1,
            apis: vec![api("a", "/a")],
            keys: vec![KeyRecord {
                id: "key_1".into(),
                hash,
                prefix: "tg_live_k".into(),
                app_id: "app_1".into(),
                developer_id: "usr_1".into(),
                expires_at: None,
            }],
            subscriptions: vec![
                SubscriptionRecord {
                    id: "sub_s".into(),
                    app_id: "app_1".into(),
                    plan_id: "p1".into(),
                    status: SubscriptionStatus::Suspended,
                    api_ids: vec!["a".into()],
                    rate_limits: vec![],
                    quota: None,
                },
                SubscriptionRecord {
                    id: "sub_a".into(),
                    app_id: "app_1".into(),
                    plan_id: "p2".into(),
                    status: SubscriptionStatus::Active,
                    api_ids: vec!["a".into()],
                    rate_limits: vec![],
                    quota: None,
                },
            ],
            apps: vec![tollgate_core::store::AppRecord {
                id: "app_1".into(),
                developer_id: "usr_1".into(),
                client_secret_hash: None,
            }],
        };
        let s = Snapshot::build(&config, None, &GatewayMetrics::new());
        let grant = s.key(&hash).unwrap();
        assert_eq!(&*grant.access["a"].subscription_id, "sub_a");
        assert_eq!(
            &*s.app("app_1").unwrap().access["a"].subscription_id,
            "sub_a"
        );
        assert!(s.app("app_2").is_none());
        assert!(s.key(&KeyHash::of("other")).is_none());

        grant.used.store(true, Ordering::Relaxed);
        let next = Snapshot::build(&config, Some(&s), &GatewayMetrics::new());
        assert_eq!(next.take_used_keys(), vec!["key_1".to_owned()]);
        assert!(next.take_used_keys().is_empty());
    }
}
