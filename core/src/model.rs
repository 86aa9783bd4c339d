//! The entities of the control plane, as stored and as shown on the admin API,
//! and the inputs that create or change them.

use serde::{Deserialize, Serialize};
use tollgate_billing::{BillingInterval, Money};

use crate::error::ValidationError;
use crate::time::Timestamp;
use crate::validate;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $text)] $variant),+ }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                // Values of several words were once written without their
                // underscores (`roundrobin`); stored documents still hold them.
                $name::parse(&s)
                    .or_else(|| {
                        $name::ALL
                            .iter()
                            .copied()
                            .find(|v| v.as_str().contains('_') && v.as_str().replace('_', "") == s)
                    })
                    .ok_or_else(|| serde::de::Error::unknown_variant(&s, &[$($text),+]))
            }
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase text stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses stored text.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// What a person may do.
    Role {
        /// Builds on the APIs: apps, keys, subscriptions.
        Developer = "developer",
        /// Publishes APIs and plans, manages everything.
        Admin = "admin",
        /// Reads usage and revenue.
        Analyst = "analyst",
    }
}

text_enum! {
    /// Who can see an API in the portal.
    Visibility {
        /// Listed in the catalog for everyone.
        Public = "public",
        /// Hidden from the catalog; callable with a subscription.
        Private = "private",
    }
}

text_enum! {
    /// Whether a plan can be subscribed to.
    PlanStatus {
        /// Being prepared; not offered.
        Draft = "draft",
        /// Offered to developers.
        Active = "active",
        /// No longer offered; existing subscriptions continue.
        Archived = "archived",
    }
}

text_enum! {
    /// Life of an API key.
    KeyStatus {
        /// Accepted by the gateway (until it expires).
        Active = "active",
        /// Refused by the gateway for good.
        Revoked = "revoked",
    }
}

text_enum! {
    /// Life of a subscription; only `active` ones admit calls.
    SubscriptionStatus {
        /// Calls are admitted.
        Active = "active",
        /// Waiting for approval.
        Pending = "pending",
        /// Temporarily refused (e.g. unpaid).
        Suspended = "suspended",
        /// Ended for good.
        Cancelled = "cancelled",
    }
}

/// A developer, admin or analyst.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Unique, stored lowercase.
    pub email: String,
    /// Display name.
    pub name: String,
    /// What the person may do.
    pub role: Role,
    /// When the account was created.
    pub created_at: Timestamp,
    /// When the account last changed.
    pub updated_at: Timestamp,
}

/// Input for a new user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// E-mail address (unique, case-insensitive).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role; developers by default.
    #[serde(default)]
    pub role: Option<Role>,
}

impl NewUser {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::email("email", &self.email)?;
        validate::name("name", &self.name)
    }
}

/// A published API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Api {
    /// `api_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique URL-safe name.
    pub slug: String,
    /// Path prefix on the gateway, e.g. `/weather`.
    pub base_path: String,
    /// Host names the API answers on; empty means every host.
    pub hosts: Vec<String>,
    /// Upstream base URLs; calls are spread over them.
    pub upstreams: Vec<String>,
    /// Who sees the API in the portal.
    pub visibility: Visibility,
    /// The API's OpenAPI 3 document, if published.
    pub openapi: Option<serde_json::Value>,
    /// Access policies the gateway applies to every call.
    pub policies: ApiPolicies,
    /// When the API was created.
    pub created_at: Timestamp,
    /// When the API last changed.
    pub updated_at: Timestamp,
}

/// Where two APIs would answer the same calls: the same base path on a common
/// host. An API without hosts answers on every host, but where an API with the
/// same base path lists a host, that one wins; so only two host-less APIs with
/// one base path, or two listing a common host, clash. Returns the contested
/// host (`None` for "every host") when they clash.
pub fn route_clash(
    (base_a, hosts_a): (&str, &[String]),
    (base_b, hosts_b): (&str, &[String]),
) -> Option<Option<String>> {
    if base_a != base_b {
        return None;
    }
    if hosts_a.is_empty() && hosts_b.is_empty() {
        return Some(None);
    }
    hosts_a
        .iter()
        .find(|h| hosts_b.contains(h))
        .map(|h| Some(h.clone()))
}

/// Input for a new API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApi {
    /// Display name.
    pub name: String,
    /// Unique URL-safe name.
    pub slug: String,
    /// Path prefix on the gateway.
    pub base_path: String,
    /// Host names (every host when absent or empty).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// One or more upstream base URLs.
    pub upstreams: Vec<String>,
    /// Public unless said otherwise.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// OpenAPI 3 document.
    #[serde(default)]
    pub openapi: Option<serde_json::Value>,
    /// Access policies; none when absent.
    #[serde(default)]
    pub policies: Option<ApiPolicies>,
}

impl NewApi {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::name("name", &self.name)?;
        validate::slug("slug", &self.slug)?;
        validate::base_path("base_path", &self.base_path)?;
        check_hosts(&self.hosts)?;
        check_upstreams(&self.upstreams)?;
        if let Some(doc) = &self.openapi {
            check_openapi(doc)?;
        }
        if let Some(p) = &self.policies {
            p.validate()?;
        }
        Ok(())
    }
}

/// Changes to an API; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiPatch {
    /// New display name.
    pub name: Option<String>,
    /// New slug.
    pub slug: Option<String>,
    /// New base path.
    pub base_path: Option<String>,
    /// New host names (replace the old ones; `[]` for every host).
    pub hosts: Option<Vec<String>>,
    /// New upstream list (replaces the old one).
    pub upstreams: Option<Vec<String>>,
    /// New visibility.
    pub visibility: Option<Visibility>,
    /// New OpenAPI document; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub openapi: Option<Option<serde_json::Value>>,
    /// New access policies (replace the old ones).
    pub policies: Option<ApiPolicies>,
}

impl ApiPatch {
    /// Checks every field present.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(v) = &self.name {
            validate::name("name", v)?;
        }
        if let Some(v) = &self.slug {
            validate::slug("slug", v)?;
        }
        if let Some(v) = &self.base_path {
            validate::base_path("base_path", v)?;
        }
        if let Some(v) = &self.hosts {
            check_hosts(v)?;
        }
        if let Some(v) = &self.upstreams {
            check_upstreams(v)?;
        }
        if let Some(Some(doc)) = &self.openapi {
            check_openapi(doc)?;
        }
        if let Some(p) = &self.policies {
            p.validate()?;
        }
        Ok(())
    }
}

/// Access policies of an API, applied by the gateway before authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiPolicies {
    /// Calls need no API key (and no subscription); they are metered anonymously.
    #[serde(default)]
    pub keyless: bool,
    /// When not empty, only clients in these networks (CIDR) are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<ipnet::IpNet>,
    /// Clients in these networks (CIDR) are refused, even when allowed above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_deny: Vec<ipnet::IpNet>,
    /// Cross-origin browser calls; the gateway answers preflights itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// JWT bearer tokens accepted besides API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPolicy>,
    /// How calls are spread over the upstream targets and failing ones avoided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamPolicy>,
    /// Changes made to requests on the way up and to responses on the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformPolicy>,
    /// Answers to `GET` (and `HEAD`) kept and served again without the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Routes answered by calling several upstream paths at once and merging
    /// their JSON into one object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregate: Vec<AggregateRoute>,
}

/// The largest body the gateway reads whole to map JSON fields when the API
/// sets no `max_body_bytes`: 1 MiB.
pub const DEFAULT_MAPPED_BODY_BYTES: u64 = 1 << 20;

/// JSON body field changes: removed first, then renamed, then added
/// (replacing). Fields are named by dotted paths into nested objects
/// (`user.email`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyOps {
    /// Fields removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Fields moved, old path to new path.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Fields set, path to any JSON value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub add: std::collections::BTreeMap<String, serde_json::Value>,
}

impl BodyOps {
    fn validate(&self, field: &str) -> Result<(), ValidationError> {
        let paths = self
            .remove
            .iter()
            .map(|p| ("remove", p))
            .chain(self.rename.keys().map(|p| ("rename", p)))
            .chain(self.rename.values().map(|p| ("rename", p)))
            .chain(self.add.keys().map(|p| ("add", p)));
        for (op, path) in paths {
            let segments = path.split('.').count();
            if path.is_empty() || path.split('.').any(str::is_empty) || segments > 32 {
                return Err(ValidationError::new(
                    format!("{field}.{op}"),
                    format!(
                        "{path:?} is not a field path; expected names joined by dots, e.g. \"user.email\" (at most 32)"
                    ),
                ));
            }
        }
        for (from, to) in &self.rename {
            if to == from || to.starts_with(&format!("{from}.")) {
                return Err(ValidationError::new(
                    format!("{field}.rename.{from}"),
                    format!("cannot move {from:?} into itself ({to:?})"),
                ));
            }
        }
        Ok(())
    }
}

fn default_cache_ttl() -> u64 {
    60
}
fn default_cache_bytes() -> u64 {
    16 << 20
}
fn default_cache_entry_bytes() -> u64 {
    1 << 20
}

/// A response cache for an API's (or a route's) `GET` and `HEAD` calls.
///
/// Answers are kept per calling app (keyless routes share them), per path,
/// query and `vary` header values; see docs/gateway.md for what is cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// How long an answer is served from the cache, in seconds; the upstream's
    /// `Cache-Control: max-age` (or `s-maxage`) can shorten it. 60 by default.
    #[serde(default = "default_cache_ttl")]
    pub ttl_secs: u64,
    /// Request headers whose values select different answers, e.g.
    /// `accept-language` (`accept-encoding` always does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary: Vec<String>,
    /// Bytes of answers kept for the API; the least recently used go first.
    /// 16 MiB by default.
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
    /// Largest single answer kept, in bytes; 1 MiB by default.
    #[serde(default = "default_cache_entry_bytes")]
    pub max_entry_bytes: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            ttl_secs: default_cache_ttl(),
            vary: Vec::new(),
            max_bytes: default_cache_bytes(),
            max_entry_bytes: default_cache_entry_bytes(),
        }
    }
}

text_enum! {
    /// What an aggregation route answers when some of its calls fail.
    OnFailure {
        /// 502 `aggregate_failed`, naming the failed calls.
        Fail = "fail",
        /// 200 with the calls that succeeded and an `errors` member for the others.
        Partial = "partial",
    }
}

fn default_on_failure() -> OnFailure {
    OnFailure::Fail
}
fn default_call_timeout() -> u64 {
    5_000
}

/// A gateway route answered by several upstream calls made at once, their
/// JSON answers merged into one object under each call's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateRoute {
    /// The route's path after the API's base path, e.g. `/dashboard`.
    pub path: String,
    /// The upstream calls, made concurrently.
    pub calls: Vec<AggregateCall>,
    /// What happens when some calls fail; `fail` by default.
    #[serde(default = "default_on_failure")]
    pub on_failure: OnFailure,
}

/// One upstream call of an aggregation route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateCall {
    /// The member of the merged object that holds this call's answer.
    pub name: String,
    /// A path on the API's upstream (`/users/me`, the client's query string
    /// added), or an absolute `http(s)://` URL called as written.
    pub path: String,
    /// How long the call may take, head and body, in milliseconds; 5000 by default.
    #[serde(default = "default_call_timeout")]
    pub timeout_ms: u64,
}

/// The member of a partial aggregation answer that lists the failed calls.
pub const AGGREGATE_ERRORS: &str = "errors";

fn check_aggregate(routes: &[AggregateRoute]) -> Result<(), ValidationError> {
    if routes.len() > 32 {
        return Err(ValidationError::new(
            "policies.aggregate",
            "at most 32 aggregation routes per API",
        ));
    }
    for (i, route) in routes.iter().enumerate() {
        let field = format!("policies.aggregate[{i}]");
        if !is_plain_path(&route.path) {
            return Err(ValidationError::new(
                format!("{field}.path"),
                format!(
                    "{:?} is not a route path; expected e.g. \"/dashboard\" (starts with /, no query)",
                    route.path
                ),
            ));
        }
        if routes[..i].iter().any(|r| r.path == route.path) {
            return Err(ValidationError::new(
                format!("{field}.path"),
                format!("{:?} is already an aggregation route", route.path),
            ));
        }
        if route.calls.is_empty() || route.calls.len() > 16 {
            return Err(ValidationError::new(
                format!("{field}.calls"),
                "list between 1 and 16 calls",
            ));
        }
        for (j, call) in route.calls.iter().enumerate() {
            let field = format!("{field}.calls[{j}]");
            let name_ok = !call.name.is_empty()
                && call.name.len() <= 64
                && call
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return Err(ValidationError::new(
                    format!("{field}.name"),
                    format!(
                        "{:?} is not a name; use 1-64 letters, digits, _ or -",
                        call.name
                    ),
                ));
            }
            if call.name == AGGREGATE_ERRORS {
                return Err(ValidationError::new(
                    format!("{field}.name"),
                    "\"errors\" is reserved for the failed calls of a partial answer",
                ));
            }
            if route.calls[..j].iter().any(|c| c.name == call.name) {
                return Err(ValidationError::new(
                    format!("{field}.name"),
                    format!("{:?} names another call of this route", call.name),
                ));
            }
            let path_ok = if call.path.starts_with('/') {
                !call.path.contains("..")
                    && !call.path.contains('#')
                    && !call
                        .path
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
            } else {
                url::Url::parse(&call.path).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.fragment().is_none()
                })
            };
            if !path_ok {
                return Err(ValidationError::new(
                    format!("{field}.path"),
                    format!(
                        "{:?} is neither a path on the upstream (\"/users/me\") nor an http(s) URL",
                        call.path
                    ),
                ));
            }
            if call.timeout_ms == 0 || call.timeout_ms > 60_000 {
                return Err(ValidationError::new(
                    format!("{field}.timeout_ms"),
                    "must be between 1 and 60000 milliseconds",
                ));
            }
        }
    }
    Ok(())
}

/// A path that starts with `/` and has no query, fragment, `..` or whitespace.
fn is_plain_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains("..")
        && !p
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
}

impl CachePolicy {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.ttl_secs == 0 || self.ttl_secs > 86_400 * 30 {
            return Err(ValidationError::new(
                "policies.cache.ttl_secs",
                "must be between 1 and 2592000 seconds (30 days)",
            ));
        }
        if self.vary.len() > 16 {
            return Err(ValidationError::new(
                "policies.cache.vary",
                "at most 16 headers",
            ));
        }
        for (i, h) in self.vary.iter().enumerate() {
            if http_header_name(h).is_none() || h.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(ValidationError::new(
                    format!("policies.cache.vary[{i}]"),
                    format!("{h:?} is not a lowercase header name"),
                ));
            }
        }
        if self.max_bytes < 1024 || self.max_bytes > u64::from(u32::MAX) * 16 {
            return Err(ValidationError::new(
                "policies.cache.max_bytes",
                "must be between 1024 bytes and 64 GiB",
            ));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_bytes {
            return Err(ValidationError::new(
                "policies.cache.max_entry_bytes",
                "must be at least 1 and at most max_bytes",
            ));
        }
        Ok(())
    }
}

/// Header changes: removed first, then renamed, then added (replacing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Headers renamed, old name to new name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Headers set, name to value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub add: std::collections::BTreeMap<String, String>,
}

/// Query parameter changes: removed first, then added (replacing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryOps {
    /// Parameters removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Parameters set, name to value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub add: std::collections::BTreeMap<String, String>,
}

/// Path rewrite of the part after the API's base path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRewrite {
    /// Removed from the start of the path when present, e.g. `/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// Put in front of the path, e.g. `/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_prefix: Option<String>,
}

/// Request and response transformations of an API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformPolicy {
    /// Changes to the headers sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderOps>,
    /// Changes to the headers sent back to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderOps>,
    /// Changes to the query string sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryOps>,
    /// Rewrite of the upstream path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// Field changes to JSON request bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<BodyOps>,
    /// Field changes to JSON response bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<BodyOps>,
}

impl TransformPolicy {
    fn validate(&self) -> Result<(), ValidationError> {
        for (field, ops) in [
            ("request_body", &self.request_body),
            ("response_body", &self.response_body),
        ] {
            if let Some(ops) = ops {
                ops.validate(&format!("policies.transform.{field}"))?;
            }
        }
        for (field, ops) in [
            ("request_headers", &self.request_headers),
            ("response_headers", &self.response_headers),
        ] {
            let Some(ops) = ops else { continue };
            let names = ops
                .remove
                .iter()
                .chain(ops.rename.keys())
                .chain(ops.rename.values())
                .chain(ops.add.keys());
            for name in names {
                if http_header_name(name).is_none() {
                    return Err(ValidationError::new(
                        format!("policies.transform.{field}"),
                        format!("{name:?} is not a header name"),
                    ));
                }
            }
            for (name, value) in &ops.add {
                if value.chars().any(|c| c.is_control()) {
                    return Err(ValidationError::new(
                        format!("policies.transform.{field}.add.{name}"),
                        "header values must not contain control characters",
                    ));
                }
            }
        }
        if let Some(p) = &self.path {
            for (field, v) in [
                ("strip_prefix", &p.strip_prefix),
                ("add_prefix", &p.add_prefix),
            ] {
                if let Some(v) = v
                    && (!v.starts_with('/')
                        || v.ends_with('/')
                        || v.contains("..")
                        || v.chars().any(|c| c.is_whitespace() || c == '?' || c == '#'))
                {
                    return Err(ValidationError::new(
                        format!("policies.transform.path.{field}"),
                        format!(
                            "{v:?} is not a path prefix; expected e.g. \"/v1\" (starts with /, no trailing /)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

text_enum! {
    /// How a call's target is chosen among an API's upstreams.
    Balance {
        /// In turn.
        RoundRobin = "round_robin",
        /// The target with the fewest calls in flight.
        LeastConnections = "least_connections",
        /// The same app (or header value) always to the same target while it is healthy.
        ConsistentHash = "consistent_hash",
    }
}

text_enum! {
    /// The HTTP version spoken to plain `http` targets (`https` ones negotiate by ALPN).
    UpstreamProtocol {
        /// HTTP/1.1 over the target's own kept-alive connections.
        Http1 = "http1",
        /// HTTP/2 without TLS ("prior knowledge"): every call multiplexed over
        /// one connection per target.
        H2c = "h2c",
    }
}

fn default_protocol() -> UpstreamProtocol {
    UpstreamProtocol::Http1
}

fn is_http1(p: &UpstreamProtocol) -> bool {
    *p == UpstreamProtocol::Http1
}

fn default_balance() -> Balance {
    Balance::RoundRobin
}
fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    1
}
fn default_retry_budget() -> u32 {
    20
}

/// Load balancing, passive health and retries of an API's upstream targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamPolicy {
    /// How targets are chosen; round robin by default.
    #[serde(default = "default_balance")]
    pub balance: Balance,
    /// For consistent hashing: the request header whose value picks the target
    /// (the app when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_header: Option<String>,
    /// Consecutive failures (connect errors, timeouts, 502/503/504) that take a
    /// target out of rotation; 5 by default.
    #[serde(default = "default_failures")]
    pub max_failures: u32,
    /// How long a failing target stays out before one trial call; 10 s by default.
    #[serde(default = "default_cooldown")]
    pub cooldown_ms: u64,
    /// Extra attempts on another target when a target cannot be reached, for
    /// idempotent calls without a body; 1 by default.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Retries allowed as a share of calls, in percent (a retry budget that keeps
    /// a failing target from doubling the load on the others); 20 by default.
    #[serde(default = "default_retry_budget")]
    pub retry_budget_percent: u32,
    /// Active health checks: a probe request to every target on an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// HTTP version to plain `http` targets: `http1` (default) or `h2c`.
    #[serde(default = "default_protocol", skip_serializing_if = "is_http1")]
    pub protocol: UpstreamProtocol,
    /// Longest wait for the response head (ms); `TOLLGATE_UPSTREAM_TIMEOUT_MS`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Longest silence while the response body streams (ms);
    /// `TOLLGATE_UPSTREAM_READ_TIMEOUT_MS` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
    /// Longest time for the whole exchange, head and body (ms);
    /// `TOLLGATE_UPSTREAM_TOTAL_TIMEOUT_MS` (none by default) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_timeout_ms: Option<u64>,
}

fn default_probe_interval() -> u64 {
    5_000
}
fn default_probe_timeout() -> u64 {
    1_000
}
fn default_threshold() -> u32 {
    2
}

/// An active health check: `GET path` on every target every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path probed on each target (after the target's own path), e.g. `/health`.
    pub path: String,
    /// Time between probes; 5 s by default.
    #[serde(default = "default_probe_interval")]
    pub interval_ms: u64,
    /// How long a probe may take; 1 s by default.
    #[serde(default = "default_probe_timeout")]
    pub timeout_ms: u64,
    /// Consecutive successful probes (2xx or 3xx) that bring a target back; 2.
    #[serde(default = "default_threshold")]
    pub healthy: u32,
    /// Consecutive failed probes that take a target out; 2.
    #[serde(default = "default_threshold")]
    pub unhealthy: u32,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        Self {
            balance: default_balance(),
            hash_header: None,
            max_failures: default_failures(),
            cooldown_ms: default_cooldown(),
            retries: default_retries(),
            retry_budget_percent: default_retry_budget(),
            health_check: None,
            protocol: default_protocol(),
            timeout_ms: None,
            read_timeout_ms: None,
            total_timeout_ms: None,
        }
    }
}

fn default_app_claim() -> String {
    "sub".to_owned()
}

/// JWT bearer tokens an API accepts: who issues them, for whom, how to check
/// their signature, and which claim names the Tollgate app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicy {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// JWKS URL for RS256 and ES256 tokens (fetched, cached, refreshed on an unknown `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Name of the environment variable that holds the HS256 secret (secrets are
    /// never stored in the database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The claim whose value is the Tollgate app id (`app_…`); `sub` by default.
    #[serde(default = "default_app_claim")]
    pub app_claim: String,
}

/// The OpenAPI extension that overrides an API's policies for one path or operation.
pub const POLICY_EXTENSION: &str = "x-tollgate-policies";

impl ApiPolicies {
    /// These policies with the fields of `patch` (a JSON object of policy
    /// fields) replacing their own: a route's override of its API's policies.
    pub fn overlay(&self, patch: &serde_json::Value) -> Result<Self, String> {
        let serde_json::Value::Object(patch) = patch else {
            return Err("must be an object of policy fields".into());
        };
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for (k, v) in patch {
            merged.insert(k.clone(), v.clone());
        }
        serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| e.to_string())
    }

    /// Checks the fields serde cannot.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.ip_allow.len() + self.ip_deny.len() > 1000 {
            return Err(ValidationError::new(
                "policies.ip_allow",
                "at most 1000 networks in all",
            ));
        }
        if let Some(cors) = &self.cors {
            if cors.allow_origins.is_empty() {
                return Err(ValidationError::new(
                    "policies.cors.allow_origins",
                    "list at least one origin such as \"https://app.example.com\", or \"*\"",
                ));
            }
            for (i, o) in cors.allow_origins.iter().enumerate() {
                let ok = o == "*"
                    || url::Url::parse(o).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https")
                            && u.path() == "/"
                            && !o.ends_with('/')
                    });
                if !ok {
                    return Err(ValidationError::new(
                        format!("policies.cors.allow_origins[{i}]"),
                        format!("{o:?} is not an origin; expected scheme://host[:port] or \"*\""),
                    ));
                }
            }
            if cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*") {
                return Err(ValidationError::new(
                    "policies.cors.allow_credentials",
                    "browsers refuse credentials with the origin \"*\"; list the origins instead",
                ));
            }
        }
        if let Some(jwt) = &self.jwt {
            if jwt.issuer.trim().is_empty() {
                return Err(ValidationError::new(
                    "policies.jwt.issuer",
                    "must name the token issuer (the iss claim)",
                ));
            }
            match (&jwt.jwks_url, &jwt.secret_env) {
                (Some(url), None) => {
                    let ok =
                        url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                    if !ok {
                        return Err(ValidationError::new(
                            "policies.jwt.jwks_url",
                            format!("{url:?} is not an http(s) URL"),
                        ));
                    }
                }
                (None, Some(var)) => {
                    let ok = !var.is_empty()
                        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !ok {
                        return Err(ValidationError::new(
                            "policies.jwt.secret_env",
                            "must be the name of an environment variable, e.g. TOLLGATE_JWT_SECRET",
                        ));
                    }
                }
                _ => {
                    return Err(ValidationError::new(
                        "policies.jwt",
                        "set exactly one of jwks_url (RS256/ES256) and secret_env (HS256)",
                    ));
                }
            }
            if jwt.app_claim.is_empty() {
                return Err(ValidationError::new(
                    "policies.jwt.app_claim",
                    "must name a claim, e.g. sub or client_id",
                ));
            }
        }
        if let Some(u) = &self.upstream {
            if u.max_failures == 0 {
                return Err(ValidationError::new(
                    "policies.upstream.max_failures",
                    "must be at least 1",
                ));
            }
            if u.retry_budget_percent > 100 {
                return Err(ValidationError::new(
                    "policies.upstream.retry_budget_percent",
                    "must be between 0 and 100",
                ));
            }
            if u.retries > 5 {
                return Err(ValidationError::new(
                    "policies.upstream.retries",
                    "must be at most 5",
                ));
            }
            for (field, value) in [
                ("timeout_ms", u.timeout_ms),
                ("read_timeout_ms", u.read_timeout_ms),
                ("total_timeout_ms", u.total_timeout_ms),
            ] {
                if value.is_some_and(|ms| !(1..=3_600_000).contains(&ms)) {
                    return Err(ValidationError::new(
                        format!("policies.upstream.{field}"),
                        "must be between 1 and 3600000 milliseconds (one hour); leave it out for the gateway's default",
                    ));
                }
            }
            if let Some(hc) = &u.health_check {
                if !hc.path.starts_with('/') {
                    return Err(ValidationError::new(
                        "policies.upstream.health_check.path",
                        "must start with /",
                    ));
                }
                if hc.interval_ms < 100
                    || hc.timeout_ms == 0
                    || hc.healthy == 0
                    || hc.unhealthy == 0
                {
                    return Err(ValidationError::new(
                        "policies.upstream.health_check",
                        "interval_ms must be at least 100, timeout_ms, healthy and unhealthy at least 1",
                    ));
                }
            }
            if let Some(h) = &u.hash_header
                && http_header_name(h).is_none()
            {
                return Err(ValidationError::new(
                    "policies.upstream.hash_header",
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        if let Some(t) = &self.transform {
            t.validate()?;
        }
        if let Some(c) = &self.cache {
            c.validate()?;
        }
        check_aggregate(&self.aggregate)?;
        if self.max_body_bytes == Some(0) {
            return Err(ValidationError::new(
                "policies.max_body_bytes",
                "must be at least 1; leave it out for no limit",
            ));
        }
        Ok(())
    }
}

fn http_header_name(h: &str) -> Option<()> {
    (!h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(())
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

fn default_cors_headers() -> Vec<String> {
    ["content-type", "authorization", "x-api-key"]
        .map(String::from)
        .to_vec()
}

fn default_cors_max_age() -> u32 {
    600
}

/// Which browser origins may call an API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins (`https://app.example.com`) or `*`.
    pub allow_origins: Vec<String>,
    /// Methods allowed in cross-origin calls.
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed in cross-origin calls.
    #[serde(default = "default_cors_headers")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight answer, seconds.
    #[serde(default = "default_cors_max_age")]
    pub max_age_secs: u32,
    /// Whether cookies and HTTP auth may be sent.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// Tells "field absent" (outer `None`) from "field is null" (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn check_hosts(hosts: &[String]) -> Result<(), ValidationError> {
    for (i, h) in hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !ok {
            return Err(ValidationError::new(
                format!("hosts[{i}]"),
                format!("{h:?} is not a lowercase host name such as \"api.example.com\""),
            ));
        }
    }
    Ok(())
}

fn check_upstreams(upstreams: &[String]) -> Result<(), ValidationError> {
    if upstreams.is_empty() {
        return Err(ValidationError::new(
            "upstreams",
            "must list at least one upstream URL, e.g. [\"http://127.0.0.1:9000\"]",
        ));
    }
    if upstreams.len() > 64 {
        return Err(ValidationError::new(
            "upstreams",
            "must list at most 64 URLs",
        ));
    }
    for (i, u) in upstreams.iter().enumerate() {
        validate::upstream(&format!("upstreams[{i}]"), u)?;
    }
    Ok(())
}

fn check_openapi(doc: &serde_json::Value) -> Result<(), ValidationError> {
    let version = doc.get("openapi").and_then(|v| v.as_str());
    if !version.is_some_and(|v| v.starts_with("3.")) {
        return Err(ValidationError::new(
            "openapi",
            "must be an OpenAPI 3 document (an object with \"openapi\": \"3.x.y\")",
        ));
    }
    // Route-level policy overrides must be valid policies.
    let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) else {
        return Ok(());
    };
    for (path, item) in paths {
        let mut places = vec![(String::new(), item)];
        if let Some(ops) = item.as_object() {
            places.extend(
                ops.iter()
                    .filter(|(_, v)| v.is_object())
                    .map(|(m, v)| (format!(".{m}"), v)),
            );
        }
        for (method, place) in places {
            if let Some(patch) = place.get(POLICY_EXTENSION) {
                let field = format!("openapi.paths.{path}{method}.{POLICY_EXTENSION}");
                let merged = ApiPolicies::default()
                    .overlay(patch)
                    .map_err(|e| ValidationError::new(field.clone(), e))?;
                merged.validate().map_err(|e| {
                    ValidationError::new(
                        format!("{field}.{}", e.field.trim_start_matches("policies.")),
                        e.message,
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// A plan: which APIs it covers and what it costs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// `plan_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Slugs of the APIs the plan covers.
    pub apis: Vec<String>,
    /// Price per billing interval.
    pub price: Money,
    /// How often the price is charged and included calls renew.
    pub billing_interval: BillingInterval,
    /// Calls included per period; `None` means unlimited.
    pub included_calls: Option<i64>,
    /// Rate limits every subscriber's calls pass; empty means none.
    pub rate_limits: Vec<RateLimit>,
    /// Calls beyond the included ones pass and are billed as overage (soft
    /// quota); when false they are refused (hard quota).
    pub overage: bool,
    /// Whether quota periods follow the calendar or each subscription's start.
    pub quota_anchor: QuotaAnchor,
    /// New subscriptions wait (pending) until an admin approves them.
    pub approval_required: bool,
    /// Whether the plan is offered.
    pub status: PlanStatus,
    /// When the plan was created.
    pub created_at: Timestamp,
    /// When the plan last changed.
    pub updated_at: Timestamp,
}

/// Input for a new plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    /// Display name.
    pub name: String,
    /// Slugs of the covered APIs.
    pub apis: Vec<String>,
    /// Price in minor units (cents); free when absent.
    #[serde(default)]
    pub price_minor: Option<i64>,
    /// ISO currency; USD when absent.
    #[serde(default)]
    pub currency: Option<String>,
    /// Monthly when absent.
    #[serde(default)]
    pub billing_interval: Option<BillingInterval>,
    /// Included calls per period; unlimited when absent.
    #[serde(default)]
    pub included_calls: Option<i64>,
    /// Rate limits; none when absent.
    #[serde(default)]
    pub rate_limits: Option<Vec<RateLimit>>,
    /// Soft quota (overage billed); hard when absent.
    #[serde(default)]
    pub overage: Option<bool>,
    /// Calendar periods when absent.
    #[serde(default)]
    pub quota_anchor: Option<QuotaAnchor>,
    /// Subscriptions need an admin's approval; false when absent.
    #[serde(default)]
    pub approval_required: Option<bool>,
    /// Active when absent.
    #[serde(default)]
    pub status: Option<PlanStatus>,
}

impl NewPlan {
    /// Checks every field except that the APIs exist (the store does that).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::name("name", &self.name)?;
        check_plan_apis(&self.apis)?;
        check_price(self.price_minor, self.currency.as_deref())?;
        check_included(self.included_calls)?;
        check_rate_limits(self.rate_limits.as_deref().unwrap_or_default())
    }
}

/// Changes to a plan; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    /// New display name.
    pub name: Option<String>,
    /// New list of covered API slugs (replaces the old one).
    pub apis: Option<Vec<String>>,
    /// New price in minor units.
    pub price_minor: Option<i64>,
    /// New currency.
    pub currency: Option<String>,
    /// New interval.
    pub billing_interval: Option<BillingInterval>,
    /// New included calls; `null` means unlimited.
    #[serde(default, deserialize_with = "present")]
    pub included_calls: Option<Option<i64>>,
    /// New rate limits (replace the old ones; `[]` removes them).
    pub rate_limits: Option<Vec<RateLimit>>,
    /// Soft (true) or hard (false) quota.
    pub overage: Option<bool>,
    /// New period anchor.
    pub quota_anchor: Option<QuotaAnchor>,
    /// Whether new subscriptions need an admin's approval.
    pub approval_required: Option<bool>,
    /// New status.
    pub status: Option<PlanStatus>,
}

impl PlanPatch {
    /// Checks every field present.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(v) = &self.name {
            validate::name("name", v)?;
        }
        if let Some(v) = &self.apis {
            check_plan_apis(v)?;
        }
        check_price(self.price_minor, self.currency.as_deref())?;
        check_included(self.included_calls.flatten())?;
        check_rate_limits(self.rate_limits.as_deref().unwrap_or_default())
    }
}

fn check_plan_apis(apis: &[String]) -> Result<(), ValidationError> {
    if apis.is_empty() {
        return Err(ValidationError::new(
            "apis",
            "must list at least one API slug the plan covers",
        ));
    }
    for (i, s) in apis.iter().enumerate() {
        validate::slug(&format!("apis[{i}]"), s)?;
    }
    Ok(())
}

fn check_price(price: Option<i64>, currency: Option<&str>) -> Result<(), ValidationError> {
    if let Some(p) = price
        && p < 0
    {
        return Err(ValidationError::new(
            "price_minor",
            "must be zero or more (in the currency's minor unit, e.g. cents)",
        ));
    }
    if let Some(c) = currency {
        c.parse::<tollgate_billing::Currency>()
            .map_err(|e| ValidationError::new("currency", e.to_string()))?;
    }
    Ok(())
}

fn check_included(included: Option<i64>) -> Result<(), ValidationError> {
    match included {
        Some(n) if n < 0 => Err(ValidationError::new(
            "included_calls",
            "must be zero or more; leave it out (or null) for unlimited calls",
        )),
        _ => Ok(()),
    }
}

text_enum! {
    /// Where a plan's quota periods start.
    QuotaAnchor {
        /// On the first day of each calendar month (or year), UTC.
        Calendar = "calendar",
        /// On the day of the month (or year) the subscription started.
        Subscription = "subscription",
    }
}

text_enum! {
    /// The window a rate limit counts over.
    RateWindow {
        /// One second.
        Second = "second",
        /// One minute.
        Minute = "minute",
        /// One hour.
        Hour = "hour",
    }
}

impl RateWindow {
    /// Length of the window in microseconds.
    pub fn micros(self) -> u64 {
        match self {
            Self::Second => 1_000_000,
            Self::Minute => 60_000_000,
            Self::Hour => 3_600_000_000,
        }
    }
}

text_enum! {
    /// Whose calls one rate-limit budget counts.
    RateScope {
        /// Each API key has its own budget.
        Key = "key",
        /// All keys of an app share one budget (per subscription).
        App = "app",
    }
}

/// A rate limit of a plan: `limit` calls per `window`, at most `burst` at once,
/// counted per key or per app. Enforced as a GCRA (a leaky bucket without
/// fixed windows): calls are admitted at a steady rate of `limit / window`, with
/// up to `burst` admitted back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls admitted per window.
    pub limit: u32,
    /// The window.
    pub window: RateWindow,
    /// Calls admitted back to back; the limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Whose calls share the budget; the app when absent.
    #[serde(default = "default_scope")]
    pub per: RateScope,
}

fn default_scope() -> RateScope {
    RateScope::App
}

impl RateLimit {
    /// Calls admitted back to back.
    pub fn capacity(&self) -> u32 {
        self.burst.unwrap_or(self.limit).max(1)
    }

    /// Microseconds between two calls at the steady rate (at least 1).
    pub fn interval_micros(&self) -> u64 {
        (self.window.micros() / u64::from(self.limit.max(1))).max(1)
    }
}

fn check_rate_limits(limits: &[RateLimit]) -> Result<(), ValidationError> {
    if limits.len() > 8 {
        return Err(ValidationError::new(
            "rate_limits",
            "at most 8 rate limits per plan",
        ));
    }
    for (i, l) in limits.iter().enumerate() {
        if l.limit == 0 || l.limit > 1_000_000_000 {
            return Err(ValidationError::new(
                format!("rate_limits[{i}].limit"),
                "must be between 1 and 1,000,000,000 calls per window",
            ));
        }
        if l.burst.is_some_and(|b| b == 0 || b > 1_000_000_000) {
            return Err(ValidationError::new(
                format!("rate_limits[{i}].burst"),
                "must be between 1 and 1,000,000,000 calls; leave it out to allow a whole window's calls at once",
            ));
        }
    }
    Ok(())
}

/// A developer's application; keys and subscriptions belong to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    /// `app_…`
    pub id: String,
    /// The owning developer.
    pub developer_id: String,
    /// Display name.
    pub name: String,
    /// When the app was created.
    pub created_at: Timestamp,
    /// When the app last changed.
    pub updated_at: Timestamp,
}

/// Input for a new app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    /// The owning developer's id.
    pub developer_id: String,
    /// Display name.
    pub name: String,
}

impl NewApp {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.developer_id.trim().is_empty() {
            return Err(ValidationError::new("developer_id", "must not be empty"));
        }
        validate::name("name", &self.name)
    }
}

/// An API key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    /// The app the key belongs to.
    pub app_id: String,
    /// The visible start of the key, e.g. `tg_live_AbCd`.
    pub prefix: String,
    /// Active or revoked.
    pub status: KeyStatus,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the gateway last accepted the key (updated every few seconds).
    pub last_used_at: Option<Timestamp>,
    /// When the key stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When the key was revoked.
    pub revoked_at: Option<Timestamp>,
}

/// A subscription of an app to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// `sub_…`
    pub id: String,
    /// The subscribing app.
    pub app_id: String,
    /// The plan.
    pub plan_id: String,
    /// Only active subscriptions admit calls.
    pub status: SubscriptionStatus,
    /// When the subscription was created.
    pub created_at: Timestamp,
    /// When the subscription last changed.
    pub updated_at: Timestamp,
}

/// Input for a new subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The subscribing app.
    pub app_id: String,
    /// The plan.
    pub plan_id: String,
    /// Active when absent.
    #[serde(default)]
    pub status: Option<SubscriptionStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_input_is_checked_field_by_field() {
        let mut api = NewApi {
            name: "Weather".into(),
            slug: "weather".into(),
            base_path: "/weather".into(),
            hosts: vec![],
            upstreams: vec!["http://127.0.0.1:9000".into()],
            visibility: None,
            openapi: None,
            policies: None,
        };
        assert!(api.validate().is_ok());
        api.upstreams.push("nope".into());
        assert_eq!(api.validate().unwrap_err().field, "upstreams[1]");
        api.upstreams.clear();
        assert_eq!(api.validate().unwrap_err().field, "upstreams");
        api.upstreams = vec!["http://x".into()];
        api.openapi = Some(serde_json::json!({"swagger": "2.0"}));
        assert_eq!(api.validate().unwrap_err().field, "openapi");
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: ApiPatch = serde_json::from_str(r#"{"openapi": null}"#).unwrap();
        assert_eq!(p.openapi, Some(None));
        let p: ApiPatch = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(p.openapi, None);
    }

    #[test]
    fn plan_input_is_checked() {
        let plan: NewPlan =
            serde_json::from_str(r#"{"name":"Free","apis":["weather"],"price_minor":-5}"#).unwrap();
        assert_eq!(plan.validate().unwrap_err().field, "price_minor");
        let plan: NewPlan =
            serde_json::from_str(r#"{"name":"Free","apis":[],"currency":"usd"}"#).unwrap();
        assert_eq!(plan.validate().unwrap_err().field, "apis");
        let plan: NewPlan =
            serde_json::from_str(r#"{"name":"Free","apis":["a"],"currency":"dollars"}"#).unwrap();
        assert_eq!(plan.validate().unwrap_err().field, "currency");
    }

    #[test]
    fn policy_fields_are_checked_with_their_place() {
        let field = |v: serde_json::Value| {
            serde_json::from_value::<ApiPolicies>(v)
                .unwrap()
                .validate()
                .err()
                .map(|e| e.field)
        };
        assert_eq!(
            field(serde_json::json!({"transform": {"response_body": {"remove": ["a."]}}})),
            Some("policies.transform.response_body.remove".into())
        );
        assert_eq!(
            field(serde_json::json!({"transform": {"request_body": {"rename": {"a": "a.b"}}}})),
            Some("policies.transform.request_body.rename.a".into())
        );
        assert_eq!(
            field(serde_json::json!({"transform": {"request_body": {
                "remove": ["x"], "rename": {"user.mail": "user.email"}, "add": {"meta.v": [1, {"n": null}]}
            }}})),
            None
        );
        assert_eq!(
            field(serde_json::json!({"cache": {"max_bytes": 10}})),
            Some("policies.cache.max_bytes".into())
        );
        assert_eq!(field(serde_json::json!({"cache": {}})), None);
        assert_eq!(
            field(serde_json::json!({"aggregate": [{"path": "/d", "calls": [
                {"name": "a", "path": "/a"}, {"name": "b", "path": "https://x.example/b?q=1", "timeout_ms": 60000}
            ]}]})),
            None
        );
        assert_eq!(
            field(
                serde_json::json!({"aggregate": [{"path": "/d?x", "calls": [{"name": "a", "path": "/a"}]}]})
            ),
            Some("policies.aggregate[0].path".into())
        );
        assert_eq!(
            field(
                serde_json::json!({"aggregate": [{"path": "/d", "calls": [{"name": "a b", "path": "/a"}]}]})
            ),
            Some("policies.aggregate[0].calls[0].name".into())
        );
        for unknown in [
            serde_json::json!({"cache": {"ttl": 1}}),
            serde_json::json!({"aggregate": [{"path": "/d", "calls": [], "mode": "x"}]}),
            serde_json::json!({"transform": {"request_body": {"drop": ["a"]}}}),
        ] {
            assert!(serde_json::from_value::<ApiPolicies>(unknown).is_err());
        }

        // In a route override the place is named.
        let doc = serde_json::json!({"openapi": "3.0.3", "paths": {"/d": {"get": {
            "x-tollgate-policies": {"aggregate": [{"path": "/d", "calls": [{"name": "errors", "path": "/a"}]}]}
        }}}});
        assert_eq!(
            check_openapi(&doc).unwrap_err().field,
            "openapi.paths./d.get.x-tollgate-policies.aggregate[0].calls[0].name"
        );
    }

    #[test]
    fn enums_round_trip_text() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Role::parse("root"), None);
    }
}

#[cfg(test)]
mod text_enum_serde {
    /// JSON and YAML use the same text as the database and the docs, also for
    /// values of several words (`round_robin`).
    #[test]
    fn serde_text_matches_stored_text() {
        for b in super::Balance::ALL {
            let json = serde_json::to_string(b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.as_str()));
            assert_eq!(serde_json::from_str::<super::Balance>(&json).unwrap(), *b);
        }
        let old: super::Balance = serde_json::from_str("\"roundrobin\"").unwrap();
        assert_eq!(old, super::Balance::RoundRobin, "stored before the fix");
        let err = serde_json::from_str::<super::Balance>("\"fastest\"").unwrap_err();
        assert!(err.to_string().contains("round_robin"), "{err}");
    }
}
