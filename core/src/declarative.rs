//! Declarative configuration: the whole gateway configuration (APIs, plans,
//! developers, apps with their key hashes and subscriptions) as one YAML
//! document.
//!
//! The same document is what `tollgate config dump` writes, what `tollgate config
//! apply` loads into a database, and what `tollgate gateway --config-file` serves
//! from without any database server. Every object carries its id, so applying a
//! document is idempotent: objects are matched by id, and re-applying the same
//! file changes nothing. The file never holds a secret: keys and client secrets
//! appear only as SHA-256 hashes.
//!
//! Parsing and validation report every problem with its place in the file, e.g.
//! `apis[2].upstreams[0]: "ftp://x" is not an upstream URL; …`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_billing::BillingInterval;

use crate::key::KeyHash;
use crate::model::{
    ApiPolicies, KeyStatus, NewApi, NewApp, NewPlan, NewUser, PlanStatus, QuotaAnchor, RateLimit,
    Role, SubscriptionStatus, Visibility, route_clash,
};

/// The document format this build reads and writes.
pub const FORMAT: u32 = 1;

/// A whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Format version of the document; 1.
    #[serde(default = "format")]
    pub format: u32,
    /// Published APIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<ApiEntry>,
    /// Plans over those APIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<PlanEntry>,
    /// The people who own apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub developers: Vec<DeveloperEntry>,
    /// Apps with their keys and subscriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppEntry>,
}

fn format() -> u32 {
    FORMAT
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An API as written in the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiEntry {
    /// Stable id, e.g. `api_weather`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique URL-safe name; plans name APIs by it.
    pub slug: String,
    /// Path prefix on the gateway.
    pub base_path: String,
    /// Host names the API answers on; every host when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Upstream base URLs.
    pub upstreams: Vec<String>,
    /// Public unless said otherwise.
    #[serde(default = "public", skip_serializing_if = "is_public")]
    pub visibility: Visibility,
    /// OpenAPI 3 document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<serde_json::Value>,
    /// Gateway policies.
    #[serde(default, skip_serializing_if = "is_default")]
    pub policies: ApiPolicies,
}

fn public() -> Visibility {
    Visibility::Public
}

fn is_public(v: &Visibility) -> bool {
    *v == Visibility::Public
}

/// A plan as written in the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Slugs of the APIs the plan covers.
    pub apis: Vec<String>,
    /// Price per interval in minor units (cents); free when absent.
    #[serde(default, skip_serializing_if = "is_default")]
    pub price_minor: i64,
    /// ISO currency code; USD when absent.
    #[serde(default = "usd", skip_serializing_if = "is_usd")]
    pub currency: String,
    /// `month` (default) or `year`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub billing_interval: BillingInterval,
    /// Calls included per period; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included_calls: Option<i64>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Soft quota: calls beyond the included ones pass as overage.
    #[serde(default, skip_serializing_if = "is_default")]
    pub overage: bool,
    /// `calendar` (default) or `subscription`.
    #[serde(default = "calendar", skip_serializing_if = "is_calendar")]
    pub quota_anchor: QuotaAnchor,
    /// New subscriptions wait for an admin's approval.
    #[serde(default, skip_serializing_if = "is_default")]
    pub approval_required: bool,
    /// `active` (default), `draft` or `archived`.
    #[serde(default = "plan_active", skip_serializing_if = "is_plan_active")]
    pub status: PlanStatus,
}

fn usd() -> String {
    "USD".to_owned()
}

fn is_usd(c: &String) -> bool {
    c == "USD"
}

fn calendar() -> QuotaAnchor {
    QuotaAnchor::Calendar
}

fn is_calendar(a: &QuotaAnchor) -> bool {
    *a == QuotaAnchor::Calendar
}

fn plan_active() -> PlanStatus {
    PlanStatus::Active
}

fn is_plan_active(s: &PlanStatus) -> bool {
    *s == PlanStatus::Active
}

/// A person who owns apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeveloperEntry {
    /// Stable id.
    pub id: String,
    /// E-mail address, unique regardless of case.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `developer` (default), `admin` or `analyst`.
    #[serde(default = "developer", skip_serializing_if = "is_developer")]
    pub role: Role,
}

fn developer() -> Role {
    Role::Developer
}

fn is_developer(r: &Role) -> bool {
    *r == Role::Developer
}

/// An app with its keys and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    /// Stable id; also the app's OAuth2 client id.
    pub id: String,
    /// Id of the owning developer.
    pub developer: String,
    /// Display name.
    pub name: String,
    /// SHA-256 (hex) of the app's OAuth2 client secret, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_hash: Option<String>,
    /// The app's API keys, as hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyEntry>,
    /// The app's subscriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionEntry>,
}

/// An API key, by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Stable id.
    pub id: String,
    /// The visible start of the key, e.g. `tg_live_AbCd`.
    pub prefix: String,
    /// SHA-256 of the whole key, 64 hex digits (`tollgate config new-key` makes one).
    pub hash: String,
    /// `active` (default) or `revoked`.
    #[serde(default = "key_active", skip_serializing_if = "is_key_active")]
    pub status: KeyStatus,
    /// When the key stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

fn key_active() -> KeyStatus {
    KeyStatus::Active
}

fn is_key_active(s: &KeyStatus) -> bool {
    *s == KeyStatus::Active
}

/// A subscription of the enclosing app to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionEntry {
    /// Stable id.
    pub id: String,
    /// Id of the plan.
    pub plan: String,
    /// `active` (default), `pending`, `suspended` or `cancelled`.
    #[serde(default = "sub_active", skip_serializing_if = "is_sub_active")]
    pub status: SubscriptionStatus,
    /// When the subscription started (RFC 3339): the anchor of per-subscription
    /// quota periods. When absent, the time it was first applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

fn sub_active() -> SubscriptionStatus {
    SubscriptionStatus::Active
}

fn is_sub_active(s: &SubscriptionStatus) -> bool {
    *s == SubscriptionStatus::Active
}

/// One problem in a document, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `apis[2].upstreams[0]`, or empty for the document as a whole.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Document {
    /// Parses YAML text (JSON is YAML too) and validates it.
    pub fn parse(text: &str) -> Result<Self, Problems> {
        // The YAML parser names the place of a problem at the start of its
        // message (`apis[0].upstreams: invalid type: …`); keep it as the path.
        let doc: Document = serde_norway::from_str(text).map_err(|e| {
            let message = e.to_string();
            let problem = match message.split_once(": ") {
                Some((path, rest))
                    if !path.is_empty()
                        && path.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']')
                        }) =>
                {
                    Problem {
                        path: path.to_owned(),
                        message: rest.to_owned(),
                    }
                }
                _ => Problem {
                    path: String::new(),
                    message,
                },
            };
            Problems(vec![problem])
        })?;
        doc.validate()?;
        Ok(doc)
    }

    /// The document as YAML text.
    pub fn to_yaml(&self) -> String {
        let body = serde_norway::to_string(self).expect("documents always serialize");
        format!(
            "# Tollgate configuration (format {FORMAT}): `tollgate config apply FILE` loads it,\n\
             # `tollgate gateway --config-file FILE` serves it. Keys appear as SHA-256 hashes only.\n{body}"
        )
    }

    /// Checks every field and every reference; reports all problems at once.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Vec::new();
        let mut add = |path: String, message: String| problems.push(Problem { path, message });
        if self.format != FORMAT {
            add(
                "format".into(),
                format!(
                    "format {} is not supported by this Tollgate; use format: {FORMAT}",
                    self.format
                ),
            );
        }
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut unique_id = |path: String, id: &str, add: &mut dyn FnMut(String, String)| {
            if let Err(msg) = check_id(id) {
                add(format!("{path}.id"), msg);
            } else if let Some(first) = ids.get(id) {
                add(
                    format!("{path}.id"),
                    format!("id {id:?} is already used by {first}; ids must be unique"),
                );
            } else {
                ids.insert(id.to_owned(), path);
            }
        };

        let mut slugs: HashMap<&str, usize> = HashMap::new();
        let mut base_paths: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, a) in self.apis.iter().enumerate() {
            let path = format!("apis[{i}]");
            unique_id(path.clone(), &a.id, &mut add);
            let input = NewApi {
                name: a.name.clone(),
                slug: a.slug.clone(),
                base_path: a.base_path.clone(),
                hosts: a.hosts.clone(),
                upstreams: a.upstreams.clone(),
                visibility: Some(a.visibility),
                openapi: a.openapi.clone(),
                policies: Some(a.policies.clone()),
            };
            if let Err(e) = input.validate() {
                add(format!("{path}.{}", e.field), e.message);
            }
            if let Some(first) = slugs.insert(&a.slug, i) {
                add(
                    format!("{path}.slug"),
                    format!("slug {:?} is already used by apis[{first}]", a.slug),
                );
            }
            let same_base = base_paths.entry(&a.base_path).or_default();
            for &first in same_base.iter() {
                let other = &self.apis[first];
                if let Some(host) =
                    route_clash((&a.base_path, &a.hosts), (&other.base_path, &other.hosts))
                {
                    let where_ =
                        host.map_or("on every host".to_owned(), |h| format!("on host {h}"));
                    add(
                        format!("{path}.base_path"),
                        format!(
                            "apis[{first}] already answers base path {:?} {where_}; give one of them other hosts or another base path",
                            a.base_path
                        ),
                    );
                }
            }
            same_base.push(i);
        }

        for (i, p) in self.plans.iter().enumerate() {
            let path = format!("plans[{i}]");
            unique_id(path.clone(), &p.id, &mut add);
            let input = NewPlan {
                name: p.name.clone(),
                apis: p.apis.clone(),
                price_minor: Some(p.price_minor),
                currency: Some(p.currency.clone()),
                billing_interval: Some(p.billing_interval),
                included_calls: p.included_calls,
                rate_limits: Some(p.rate_limits.clone()),
                overage: Some(p.overage),
                quota_anchor: Some(p.quota_anchor),
                approval_required: Some(p.approval_required),
                status: Some(p.status),
            };
            if let Err(e) = input.validate() {
                add(format!("{path}.{}", e.field), e.message);
            }
            for (j, slug) in p.apis.iter().enumerate() {
                if !slugs.contains_key(slug.as_str()) {
                    add(
                        format!("{path}.apis[{j}]"),
                        format!("no API with slug {slug:?} in this file"),
                    );
                }
            }
        }
        let plan_ids: HashSet<&str> = self.plans.iter().map(|p| p.id.as_str()).collect();

        let mut emails: HashMap<String, usize> = HashMap::new();
        for (i, d) in self.developers.iter().enumerate() {
            let path = format!("developers[{i}]");
            unique_id(path.clone(), &d.id, &mut add);
            let input = NewUser {
                email: d.email.clone(),
                name: d.name.clone(),
                role: Some(d.role),
            };
            if let Err(e) = input.validate() {
                add(format!("{path}.{}", e.field), e.message);
            }
            if let Some(first) = emails.insert(d.email.to_lowercase(), i) {
                add(
                    format!("{path}.email"),
                    format!(
                        "e-mail {:?} is already used by developers[{first}]",
                        d.email
                    ),
                );
            }
        }
        let developer_ids: HashSet<&str> = self.developers.iter().map(|d| d.id.as_str()).collect();

        let mut hashes: HashMap<&str, String> = HashMap::new();
        for (i, app) in self.apps.iter().enumerate() {
            let path = format!("apps[{i}]");
            unique_id(path.clone(), &app.id, &mut add);
            let input = NewApp {
                developer_id: app.developer.clone(),
                name: app.name.clone(),
            };
            if let Err(e) = input.validate() {
                let field = if e.field == "developer_id" {
                    "developer".to_owned()
                } else {
                    e.field
                };
                add(format!("{path}.{field}"), e.message);
            } else if !developer_ids.contains(app.developer.as_str()) {
                add(
                    format!("{path}.developer"),
                    format!(
                        "no developer with id {:?} in this file; list the owner under developers",
                        app.developer
                    ),
                );
            }
            if let Some(h) = &app.client_secret_hash
                && KeyHash::from_hex(h).is_none()
            {
                add(
                    format!("{path}.client_secret_hash"),
                    "must be the SHA-256 of the secret as 64 hex digits".into(),
                );
            }
            for (j, k) in app.keys.iter().enumerate() {
                let kpath = format!("{path}.keys[{j}]");
                unique_id(kpath.clone(), &k.id, &mut add);
                if KeyHash::from_hex(&k.hash).is_none() {
                    add(
                        format!("{kpath}.hash"),
                        "must be the SHA-256 of the key as 64 hex digits; `tollgate config new-key` prints a key with its hash".into(),
                    );
                } else if let Some(first) = hashes.insert(&k.hash, kpath.clone()) {
                    add(
                        format!("{kpath}.hash"),
                        format!("the same key hash is already listed at {first}"),
                    );
                }
                if k.prefix.is_empty()
                    || k.prefix.len() > 32
                    || !k.prefix.chars().all(|c| c.is_ascii_graphic())
                {
                    add(
                        format!("{kpath}.prefix"),
                        "must be the visible start of the key: 1 to 32 printable characters, e.g. \"tg_live_AbCd\"".into(),
                    );
                }
            }
            let mut live_plans: HashMap<&str, usize> = HashMap::new();
            for (j, s) in app.subscriptions.iter().enumerate() {
                let spath = format!("{path}.subscriptions[{j}]");
                unique_id(spath.clone(), &s.id, &mut add);
                if !plan_ids.contains(s.plan.as_str()) {
                    add(
                        format!("{spath}.plan"),
                        format!("no plan with id {:?} in this file", s.plan),
                    );
                }
                if s.status != SubscriptionStatus::Cancelled
                    && let Some(first) = live_plans.insert(&s.plan, j)
                {
                    add(
                        format!("{spath}.plan"),
                        format!(
                            "the app already has a live subscription to this plan at subscriptions[{first}]; an app holds at most one per plan"
                        ),
                    );
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }
}

impl Document {
    /// The document in the form it is stored and compared in: e-mails and hashes
    /// lowercase, a plan's APIs sorted, times at millisecond precision.
    pub fn normalized(&self) -> Document {
        let ms = |t: &Option<DateTime<Utc>>| {
            t.and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()))
        };
        let mut doc = self.clone();
        for p in &mut doc.plans {
            p.apis.sort();
            p.apis.dedup();
            p.currency = p.currency.to_ascii_uppercase();
        }
        for d in &mut doc.developers {
            d.email = d.email.to_lowercase();
        }
        for a in &mut doc.apps {
            a.client_secret_hash = a
                .client_secret_hash
                .as_ref()
                .map(|h| h.to_ascii_lowercase());
            for k in &mut a.keys {
                k.hash = k.hash.to_ascii_lowercase();
                k.expires_at = ms(&k.expires_at);
            }
            for s in &mut a.subscriptions {
                s.started_at = ms(&s.started_at);
            }
        }
        doc
    }
}

/// Ids: 1 to 64 letters, digits, `_`, `-` or `.`.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not an id; use 1 to 64 letters, digits, '_', '-' or '.', e.g. \"api_weather\""
        ))
    }
}

/// What applying a document changed, per kind of object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// APIs created, updated, deleted.
    pub apis: Changes,
    /// Plans created, updated, deleted.
    pub plans: Changes,
    /// Developers created, updated, deleted.
    pub developers: Changes,
    /// Apps created, updated, deleted.
    pub apps: Changes,
    /// Keys created, updated, deleted.
    pub keys: Changes,
    /// Subscriptions created, updated, deleted.
    pub subscriptions: Changes,
    /// The configuration version after the change (unchanged when nothing changed).
    pub version: i64,
}

/// Counts of one kind of object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// New objects.
    pub created: usize,
    /// Objects whose fields changed.
    pub updated: usize,
    /// Objects removed (only when pruning).
    pub deleted: usize,
}

impl Changes {
    fn total(self) -> usize {
        self.created + self.updated + self.deleted
    }
}

impl ApplyReport {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.kinds().iter().any(|(_, c)| c.total() > 0)
    }

    fn kinds(&self) -> [(&'static str, Changes); 6] {
        [
            ("APIs", self.apis),
            ("plans", self.plans),
            ("developers", self.developers),
            ("apps", self.apps),
            ("keys", self.keys),
            ("subscriptions", self.subscriptions),
        ]
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed() {
            return write!(f, "no changes (configuration version {})", self.version);
        }
        let parts: Vec<String> = self
            .kinds()
            .iter()
            .filter(|(_, c)| c.total() > 0)
            .map(|(name, c)| {
                format!(
                    "{name}: {} created, {} updated, {} deleted",
                    c.created, c.updated, c.deleted
                )
            })
            .collect();
        write!(
            f,
            "{} (configuration version {})",
            parts.join("; "),
            self.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
format: 1
apis:
  - id: api_weather
    name: Weather
    slug: weather
    base_path: /weather
    upstreams: [http://127.0.0.1:9000]
plans:
  - id: plan_free
    name: Free
    apis: [weather]
    included_calls: 1000
    rate_limits: [{limit: 10, window: second}]
developers:
  - id: usr_ada
    email: ada@example.com
    name: Ada
apps:
  - id: app_ada
    developer: usr_ada
    name: Ada's app
    keys:
      - id: key_ada
        prefix: tg_live_AbCd
        hash: "0000000000000000000000000000000000000000000000000000000000000000"
    subscriptions:
      - id: sub_ada
        plan: plan_free
"#;

    #[test]
    fn a_good_document_parses_with_defaults() {
        let doc = Document::parse(GOOD).unwrap();
        assert_eq!(doc.apis[0].visibility, Visibility::Public);
        assert_eq!(doc.plans[0].currency, "USD");
        assert_eq!(doc.apps[0].keys[0].status, KeyStatus::Active);
        assert_eq!(
            doc.apps[0].subscriptions[0].status,
            SubscriptionStatus::Active
        );
    }

    #[test]
    fn yaml_round_trips() {
        let doc = Document::parse(GOOD).unwrap();
        let again = Document::parse(&doc.to_yaml()).unwrap();
        assert_eq!(doc, again);
    }

    fn problems(text: &str) -> Vec<String> {
        Document::parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn problems_name_their_place() {
        let bad = GOOD.replace("http://127.0.0.1:9000", "ftp://nowhere");
        let p = problems(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("apis[0].upstreams[0]: \"ftp://nowhere\" is not an upstream URL"),
            "{p:?}"
        );

        let bad = GOOD.replace("upstreams:", "upstream:");
        let p = problems(&bad);
        assert!(
            p[0].starts_with("apis[0]: unknown field `upstream`"),
            "{p:?}"
        );

        let bad = GOOD.replace("limit: 10", "limit: ten");
        let p = problems(&bad);
        assert!(p[0].starts_with("plans[0].rate_limits[0].limit: "), "{p:?}");
    }

    #[test]
    fn every_broken_reference_is_reported() {
        let bad = GOOD
            .replace("apis: [weather]", "apis: [wether]")
            .replace("developer: usr_ada", "developer: usr_bob")
            .replace("plan: plan_free", "plan: plan_gold")
            .replace("hash: \"0000", "hash: \"zz00");
        let p = problems(&bad);
        assert_eq!(
            p.iter()
                .map(|s| s.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            [
                "plans[0].apis[0]",
                "apps[0].developer",
                "apps[0].keys[0].hash",
                "apps[0].subscriptions[0].plan"
            ]
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let dup = GOOD.replace("id: key_ada", "id: api_weather");
        let p = problems(&dup);
        assert!(
            p[0].starts_with("apps[0].keys[0].id: id \"api_weather\" is already used by apis[0]"),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("format: 1", "format: 2"));
        assert!(
            p[0].starts_with("format: format 2 is not supported"),
            "{p:?}"
        );
    }
}
