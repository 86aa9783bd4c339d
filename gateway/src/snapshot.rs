//! The immutable configuration the gateway serves from.
//!
//! Built from the store's [`GatewayConfig`] off the request path and swapped in
//! atomically; a request holds one `Arc<Snapshot>` from start to end, so a
//! reload never changes the rules under a call in flight.
//!
//! Snapshots are versioned and share structure: routes are `Arc`s, and keys and
//! apps live in maps split into 256 shards. A change is applied by
//! [`Snapshot::patch`], which builds only what changed — a new key copies one
//! key shard and one app shard and shares everything else, routes included —
//! while [`Snapshot::build`] makes a whole snapshot at start and when the change
//! log cannot say what changed.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::headers::{
    X_TOLLGATE_APP_ID, X_TOLLGATE_DEVELOPER_ID, X_TOLLGATE_PLAN_ID, X_TOLLGATE_SUBSCRIPTION_ID,
    push_line,
};
use http::HeaderValue;
use http::uri::{Authority, Scheme};
use tollgate_analytics::event::Text;
use tollgate_core::key::KeyHash;
use tollgate_core::model::{Api, ApiPolicies, RateLimit, SubscriptionStatus};
use tollgate_core::store::{
    AppRecord, AppSlice, GatewayConfig, KeyRecord, QuotaRule, SubscriptionRecord,
};

use crate::FastMap;
use crate::balancer::Balancer;
use crate::metrics::{GatewayMetrics, RouteMetrics};
use crate::policy::cache::{self, ResponseCache};
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
    /// Stored answers, when the API or one of its routes caches.
    pub cache: Option<Arc<ResponseCache>>,
}

/// The trusted identity headers for the upstream, as the lines it is sent
/// (`name: id` and CRLF each), built once with the snapshot; an id that
/// cannot be a header value is not sent.
fn identity_lines(ids: [(&http::HeaderName, &str); 2]) -> Arc<[u8]> {
    let mut lines = Vec::new();
    for (name, id) in ids {
        if HeaderValue::from_str(id).is_ok() {
            push_line(&mut lines, name.as_str().as_bytes(), id.as_bytes());
        }
    }
    lines.into()
}

/// What a key's app may call: per API id, the best subscription covering it.
#[derive(Debug, Clone)]
pub struct Access {
    /// Subscription id.
    pub subscription_id: Text,
    /// Plan id.
    pub plan_id: Text,
    /// The plan and subscription ids as header lines for the upstream.
    pub identity_lines: Arc<[u8]>,
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
    /// The app and developer ids as header lines for the upstream, shared
    /// by every key of the app.
    pub identity_lines: Arc<[u8]>,
    /// Expiry, milliseconds since the epoch.
    pub expires_at_ms: Option<i64>,
    /// Access by API id, shared by every key of the app.
    pub access: Arc<FastMap<String, Access>>,
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
    /// The app and developer ids as header lines for the upstream.
    pub identity_lines: Arc<[u8]>,
    /// Access by API id.
    pub access: Arc<FastMap<String, Access>>,
    /// SHA-256 of the app's OAuth2 client secret.
    pub client_secret_hash: Option<KeyHash>,
    /// Hashes of the app's active keys, so a change to the app replaces them.
    key_hashes: Vec<KeyHash>,
}

/// Number of shards of the key and app maps.
const SHARDS: usize = 256;

/// Which shard a map key lives in.
pub trait ShardOf {
    /// A shard index below [`SHARDS`]; must agree between owned and borrowed forms.
    fn shard(&self) -> usize;
}

impl ShardOf for KeyHash {
    fn shard(&self) -> usize {
        // SHA-256 output: the first byte is already uniform.
        usize::from(self.0[0])
    }
}

impl ShardOf for str {
    fn shard(&self) -> usize {
        // FNV-1a: cheap, and ids differ in their random tails.
        let h = self.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        (h as usize) % SHARDS
    }
}

impl ShardOf for String {
    fn shard(&self) -> usize {
        self.as_str().shard()
    }
}

/// A map whose shards are shared between snapshots; editing copies only the
/// shards it touches.
#[derive(Debug)]
struct Sharded<K, V> {
    shards: Vec<Arc<FastMap<K, V>>>,
    len: usize,
}

impl<K: Hash + Eq + ShardOf + Clone, V: Clone> Sharded<K, V> {
    fn new(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut shards: Vec<FastMap<K, V>> = (0..SHARDS).map(|_| FastMap::default()).collect();
        for (k, v) in entries {
            shards[k.shard()].insert(k, v);
        }
        let len = shards.iter().map(FastMap::len).sum();
        Self {
            shards: shards.into_iter().map(Arc::new).collect(),
            len,
        }
    }

    fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ShardOf + ?Sized,
    {
        self.shards[k.shard()].get(k)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// A copy sharing every shard; `insert` and `remove` then copy the shard
    /// they change, once.
    fn share(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            len: self.len,
        }
    }

    fn insert(&mut self, k: K, v: V) {
        let shard = Arc::make_mut(&mut self.shards[k.shard()]);
        if shard.insert(k, v).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let i = k.shard();
        if !self.shards[i].contains_key(k) {
            return None;
        }
        let removed = Arc::make_mut(&mut self.shards[i]).remove(k);
        self.len -= usize::from(removed.is_some());
        removed
    }
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::new(FastMap::default())).collect(),
            len: 0,
        }
    }
}

/// Routes and keys at one configuration version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The configuration version this was built from.
    pub version: i64,
    /// Routes, longest base path first so the most specific prefix wins.
    routes: Arc<[Arc<ApiRoute>]>,
    keys: Sharded<KeyHash, Arc<KeyGrant>>,
    apps: Sharded<String, Arc<AppGrant>>,
}

/// A change to apply to a snapshot: what the store's change log named, re-read.
#[derive(Debug, Default)]
pub struct Patch {
    /// The version the patch leads to.
    pub version: i64,
    /// Ids of changed APIs, and those of them that still exist.
    pub apis: Option<(Vec<String>, Vec<Api>)>,
    /// Changed apps: their keys and subscriptions now, or `None` when deleted.
    pub apps: Vec<(String, Option<AppSlice>)>,
}

fn rank(status: SubscriptionStatus) -> u8 {
    match status {
        SubscriptionStatus::Active => 3,
        SubscriptionStatus::Pending => 2,
        SubscriptionStatus::Suspended => 1,
        SubscriptionStatus::Cancelled => 0,
    }
}

/// What an app's subscriptions grant, by API id: the best subscription for each.
fn access_of<'a>(subs: impl Iterator<Item = &'a SubscriptionRecord>) -> FastMap<String, Access> {
    let mut access: FastMap<String, Access> = FastMap::default();
    for sub in subs {
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
                        identity_lines: identity_lines([
                            (&X_TOLLGATE_PLAN_ID, &sub.plan_id),
                            (&X_TOLLGATE_SUBSCRIPTION_ID, &sub.id),
                        ]),
                        status: sub.status,
                        rate_limits: sub.rate_limits.clone().into(),
                        quota: sub.quota,
                    },
                );
            }
        }
    }
    access
}

/// An app's grant and its keys' grants; "used" marks come from `was_used`.
/// The keys share the app's id and developer texts (one copy per app, not per key).
fn app_grants(
    app: &AppRecord,
    keys: &[&KeyRecord],
    access: Arc<FastMap<String, Access>>,
    was_used: impl Fn(&KeyHash) -> bool,
) -> (Arc<AppGrant>, Vec<(KeyHash, Arc<KeyGrant>)>) {
    let app_id: Text = app.id.as_str().into();
    let developer_id: Text = app.developer_id.as_str().into();
    let identity = identity_lines([
        (&X_TOLLGATE_APP_ID, &app.id),
        (&X_TOLLGATE_DEVELOPER_ID, &app.developer_id),
    ]);
    let grants = keys
        .iter()
        .map(|k| {
            (
                k.hash,
                Arc::new(KeyGrant {
                    key_id: k.id.clone(),
                    prefix: k.prefix.as_str().into(),
                    app_id: app_id.clone(),
                    developer_id: developer_id.clone(),
                    identity_lines: identity.clone(),
                    expires_at_ms: k.expires_at.map(|t| t.0),
                    access: access.clone(),
                    used: AtomicBool::new(was_used(&k.hash)),
                }),
            )
        })
        .collect();
    let app = Arc::new(AppGrant {
        app_id,
        developer_id,
        identity_lines: identity,
        access,
        client_secret_hash: app.client_secret_hash,
        key_hashes: keys.iter().map(|k| k.hash).collect(),
    });
    (app, grants)
}

/// An API's route; keeps the previous balancer (and its health) when targets
/// and policy are unchanged. `None` when no upstream is usable.
fn api_route(
    api: &Api,
    previous: Option<&Arc<ApiRoute>>,
    metrics: &GatewayMetrics,
) -> Option<Arc<ApiRoute>> {
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
    let kept = previous
        .map(|r| &r.balancer)
        .filter(|b| b.same_as(&api.upstreams, &policy))
        .cloned();
    let balancer = kept.unwrap_or_else(|| {
        let b = Arc::new(Balancer::new(targets, policy));
        b.start_probes();
        b
    });
    let operations = Operations::from_openapi(api.openapi.as_ref(), &api.policies);
    // The cache survives too, while the configuration its answers depend on holds.
    let all_policies = || std::iter::once(&api.policies).chain(operations.overrides());
    let cache = if all_policies().any(|p| p.cache.is_some()) {
        let fingerprint =
            cache::fingerprint(&(&api.policies, &api.openapi, &api.upstreams, &api.base_path));
        previous
            .and_then(|r| r.cache.as_ref())
            .filter(|c| c.fingerprint() == fingerprint)
            .cloned()
            .or_else(|| ResponseCache::for_api(all_policies(), fingerprint).map(Arc::new))
    } else {
        None
    };
    Some(Arc::new(ApiRoute {
        id: api.id.as_str().into(),
        slug: api.slug.as_str().into(),
        base_path: api.base_path.as_str().into(),
        hosts: api.hosts.clone(),
        balancer,
        metrics: metrics.route(&api.slug),
        policies: Arc::new(api.policies.clone()),
        operations,
        cache,
    }))
}

/// Routes in matching order: longest base path first; for one base path, APIs
/// that list hosts before the one that answers on every host.
fn sorted(mut routes: Vec<Arc<ApiRoute>>) -> Arc<[Arc<ApiRoute>]> {
    routes.sort_by(|a, b| {
        b.base_path
            .len()
            .cmp(&a.base_path.len())
            .then_with(|| a.base_path.cmp(&b.base_path))
            .then_with(|| a.hosts.is_empty().cmp(&b.hosts.is_empty()))
            .then_with(|| a.id.cmp(&b.id))
    });
    routes.into()
}

impl Snapshot {
    /// Builds a whole snapshot; carries over balancers (health) and "used"
    /// marks from `previous` so nothing is lost across a reload.
    pub fn build(
        config: &GatewayConfig,
        previous: Option<&Snapshot>,
        metrics: &GatewayMetrics,
    ) -> Self {
        let previous_routes: HashMap<&str, &Arc<ApiRoute>> = previous
            .map(|p| p.routes.iter().map(|r| (&*r.id, r)).collect())
            .unwrap_or_default();
        let routes = config
            .apis
            .iter()
            .filter_map(|api| {
                api_route(api, previous_routes.get(api.id.as_str()).copied(), metrics)
            })
            .collect();

        let mut subs_of_app: HashMap<&str, Vec<&SubscriptionRecord>> = HashMap::new();
        for sub in &config.subscriptions {
            subs_of_app
                .entry(sub.app_id.as_str())
                .or_default()
                .push(sub);
        }
        let mut keys_of_app: HashMap<&str, Vec<&KeyRecord>> = HashMap::new();
        for k in &config.keys {
            keys_of_app.entry(k.app_id.as_str()).or_default().push(k);
        }
        let was_used = |hash: &KeyHash| {
            previous
                .and_then(|p| p.keys.get(hash))
                .is_some_and(|g| g.used.load(Ordering::Relaxed))
        };
        let mut keys = Vec::with_capacity(config.keys.len());
        let mut apps = Vec::with_capacity(config.apps.len());
        for app in &config.apps {
            let access = Arc::new(access_of(
                subs_of_app
                    .remove(app.id.as_str())
                    .unwrap_or_default()
                    .into_iter(),
            ));
            let app_keys = keys_of_app.remove(app.id.as_str()).unwrap_or_default();
            let (grant, key_grants) = app_grants(app, &app_keys, access, was_used);
            apps.push((app.id.clone(), grant));
            keys.extend(key_grants);
        }
        Self {
            version: config.version,
            routes: sorted(routes),
            keys: Sharded::new(keys),
            apps: Sharded::new(apps),
        }
    }

    /// A snapshot with `patch` applied, sharing everything it does not change:
    /// unchanged routes, and every key and app shard the patch does not touch.
    pub fn patch(&self, patch: &Patch, metrics: &GatewayMetrics) -> Self {
        let routes = match &patch.apis {
            None => self.routes.clone(),
            Some((changed, now)) => {
                let changed: HashSet<&str> = changed.iter().map(String::as_str).collect();
                let previous: HashMap<&str, &Arc<ApiRoute>> =
                    self.routes.iter().map(|r| (&*r.id, r)).collect();
                let mut routes: Vec<Arc<ApiRoute>> = self
                    .routes
                    .iter()
                    .filter(|r| !changed.contains(&*r.id))
                    .cloned()
                    .collect();
                routes.extend(now.iter().filter_map(|api| {
                    api_route(api, previous.get(api.id.as_str()).copied(), metrics)
                }));
                sorted(routes)
            }
        };

        let mut keys = self.keys.share();
        let mut apps = self.apps.share();
        for (app_id, slice) in &patch.apps {
            // Marks of keys that stay, so no last-used time is lost.
            let mut used: HashMap<KeyHash, bool> = HashMap::new();
            if let Some(old) = apps.remove(app_id) {
                for hash in &old.key_hashes {
                    // A key that moved to another app (patched before this one)
                    // is that app's now: leave it.
                    if keys
                        .get(hash)
                        .is_some_and(|g| &*g.app_id != app_id.as_str())
                    {
                        continue;
                    }
                    if let Some(g) = keys.remove(hash) {
                        used.insert(*hash, g.used.load(Ordering::Relaxed));
                    }
                }
            }
            let Some(slice) = slice else { continue };
            let access = Arc::new(access_of(slice.subscriptions.iter()));
            let app_keys: Vec<&KeyRecord> = slice.keys.iter().collect();
            let (grant, key_grants) = app_grants(&slice.app, &app_keys, access, |h| {
                used.get(h).copied().unwrap_or(false)
            });
            for (hash, g) in key_grants {
                keys.insert(hash, g);
            }
            apps.insert(app_id.clone(), grant);
        }
        Self {
            version: patch.version,
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
                (rest.is_empty() || rest.starts_with('/')).then_some((&**r, rest))
            })
    }

    /// The grant of a presented key.
    pub fn key(&self, hash: &KeyHash) -> Option<&KeyGrant> {
        self.keys.get(hash).map(|g| &**g)
    }

    /// An app named by a bearer token.
    pub fn app(&self, app_id: &str) -> Option<&AppGrant> {
        self.apps.get(app_id).map(|g| &**g)
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
    pub fn routes(&self) -> &[Arc<ApiRoute>] {
        &self.routes
    }

    /// Whether two snapshots share one route table (a patch that changed no API).
    pub fn shares_routes_with(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.routes, &other.routes)
    }

    /// Number of routed APIs.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Number of accepted keys.
    pub fn key_count(&self) -> usize {
        self.keys.len
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

    fn key_record(id: &str, app: &str, secret: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            hash: KeyHash::of(secret),
            prefix: "tg_live_x".into(),
            app_id: app.into(),
            developer_id: "usr_1".into(),
            expires_at: None,
        }
    }

    fn app_record(id: &str) -> AppRecord {
        AppRecord {
            id: id.into(),
            developer_id: "usr_1".into(),
            client_secret_hash: None,
        }
    }

    fn subscription(id: &str, app: &str, api: &str) -> SubscriptionRecord {
        SubscriptionRecord {
            id: id.into(),
            app_id: app.into(),
            plan_id: "plan".into(),
            status: SubscriptionStatus::Active,
            api_ids: vec![api.into()],
            rate_limits: vec![],
            quota: None,
        }
    }

    fn base() -> Snapshot {
        let config = GatewayConfig {
            version: 1,
            apis: vec![api("a", "/a"), api("b", "/b")],
            keys: (0..1000)
                .map(|i| {
                    key_record(
                        &format!("key_{i}"),
                        &format!("app_{}", i % 100),
                        &format!("k{i}"),
                    )
                })
                .collect(),
            subscriptions: (0..100)
                .map(|i| subscription(&format!("sub_{i}"), &format!("app_{i}"), "a"))
                .collect(),
            apps: (0..100).map(|i| app_record(&format!("app_{i}"))).collect(),
        };
        Snapshot::build(&config, None, &GatewayMetrics::new())
    }

    #[test]
    fn a_new_key_is_patched_in_sharing_routes_and_untouched_shards() {
        let s = base();
        assert_eq!(s.key_count(), 1000);
        let slice = AppSlice {
            app: app_record("app_7"),
            keys: vec![
                key_record("key_7", "app_7", "k7"),
                key_record("key_new", "app_7", "fresh"),
            ]
            .into_iter()
            .chain((1..10).map(|j| {
                key_record(
                    &format!("key_{}", 7 + 100 * j),
                    "app_7",
                    &format!("k{}", 7 + 100 * j),
                )
            }))
            .collect(),
            subscriptions: vec![subscription("sub_7", "app_7", "a")],
        };
        s.key(&KeyHash::of("k7"))
            .unwrap()
            .used
            .store(true, Ordering::Relaxed);
        let next = s.patch(
            &Patch {
                version: 2,
                apis: None,
                apps: vec![("app_7".into(), Some(slice))],
            },
            &GatewayMetrics::new(),
        );
        assert_eq!(next.version, 2);
        assert_eq!(next.key_count(), 1001);
        assert!(
            next.shares_routes_with(&s),
            "adding a key does not rebuild routes"
        );
        let fresh = next.key(&KeyHash::of("fresh")).unwrap();
        assert_eq!(&*fresh.access["a"].subscription_id, "sub_7");
        // Shards the patch did not touch are the very same maps.
        let touched: HashSet<usize> = [KeyHash::of("fresh"), KeyHash::of("k7")]
            .iter()
            .chain(
                (1..10)
                    .map(|j| KeyHash::of(&format!("k{}", 7 + 100 * j)))
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(ShardOf::shard)
            .collect();
        let shared = (0..SHARDS)
            .filter(|i| Arc::ptr_eq(&s.keys.shards[*i], &next.keys.shards[*i]))
            .count();
        assert_eq!(shared, SHARDS - touched.len());
        // Marks of keys that stay carry over; the old snapshot still answers.
        assert_eq!(next.take_used_keys(), vec!["key_7".to_owned()]);
        assert!(s.key(&KeyHash::of("fresh")).is_none());
    }

    #[test]
    fn a_deleted_app_takes_its_keys_and_an_api_change_rebuilds_one_route() {
        let s = base();
        let next = s.patch(
            &Patch {
                version: 2,
                apis: Some((vec!["b".into(), "gone".into()], vec![api("b", "/b2")])),
                apps: vec![("app_3".into(), None)],
            },
            &GatewayMetrics::new(),
        );
        assert_eq!(next.key_count(), 990);
        assert!(next.key(&KeyHash::of("k3")).is_none() && next.key(&KeyHash::of("k103")).is_none());
        assert!(next.app("app_3").is_none() && next.app("app_4").is_some());
        assert!(next.route(None, "/b/x").is_none());
        assert_eq!(&*next.route(None, "/b2/x").unwrap().0.id, "b");
        let a_before = s.routes().iter().find(|r| &*r.id == "a").unwrap();
        let a_after = next.routes().iter().find(|r| &*r.id == "a").unwrap();
        assert!(
            Arc::ptr_eq(a_before, a_after),
            "unchanged routes are shared"
        );
        let b_before = s.routes().iter().find(|r| &*r.id == "b").unwrap();
        let b_after = next.routes().iter().find(|r| &*r.id == "b").unwrap();
        assert!(
            Arc::ptr_eq(&b_before.balancer, &b_after.balancer),
            "same targets: the balancer and its health carry over"
        );
    }

    #[test]
    fn shards_agree_between_owned_and_borrowed_ids() {
        for id in ["app_1", "app_0192f0c4", ""] {
            assert_eq!(id.shard(), id.to_owned().shard());
            assert!(id.shard() < SHARDS);
        }
    }

    #[test]
    fn a_key_that_moved_to_another_app_stays_with_it() {
        let s = base();
        // key_5 (k5) moves from app_5 to app_6; app_6 is patched first, then app_5.
        let mut moved = key_record("key_5", "app_6", "k5");
        moved.app_id = "app_6".into();
        let to = AppSlice {
            app: app_record("app_6"),
            keys: vec![moved, key_record("key_6", "app_6", "k6")],
            subscriptions: vec![subscription("sub_6", "app_6", "a")],
        };
        let from = AppSlice {
            app: app_record("app_5"),
            keys: vec![],
            subscriptions: vec![subscription("sub_5", "app_5", "a")],
        };
        let next = s.patch(
            &Patch {
                version: 2,
                apis: None,
                apps: vec![("app_6".into(), Some(to)), ("app_5".into(), Some(from))],
            },
            &GatewayMetrics::new(),
        );
        let grant = next
            .key(&KeyHash::of("k5"))
            .expect("the moved key still works");
        assert_eq!(&*grant.app_id, "app_6");
    }
}
