//! Declarative configuration against the store: reading the database's
//! configuration as a [`Document`] and applying a document to it.
//!
//! Applying compares the document with what is stored, object by object (matched
//! by id), and writes only the differences, all in one transaction with one
//! version bump; a document that matches the store changes nothing, not even the
//! configuration version. Objects the document does not list are left alone
//! unless pruning is asked for, which deletes them (admins and analysts are never
//! pruned: they are people, not configuration).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Row};

use super::{Backend, Change, Store, apis, apps, keys, plans, subscriptions, users};
use crate::declarative::{
    ApiEntry, AppEntry, ApplyReport, Changes, DeveloperEntry, Document, FORMAT, KeyEntry,
    PlanEntry, Problem, Problems, SubscriptionEntry,
};
use crate::error::{StoreError, StoreResult};
use crate::model::{KeyStatus, Role, route_clash};
use crate::time::Timestamp;

/// How to apply a document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Delete APIs, plans, developers, apps, keys and subscriptions the document
    /// does not list.
    pub prune: bool,
    /// Work out the changes, then roll them back.
    pub dry_run: bool,
}

/// Why a document could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The document itself is invalid.
    #[error("{0}")]
    Invalid(Problems),
    /// The document clashes with stored objects it does not list.
    #[error("{0}")]
    Conflicts(Problems),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn time(ms: Option<Timestamp>) -> Option<DateTime<Utc>> {
    ms.and_then(|t| DateTime::from_timestamp_millis(t.0))
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("JSON values always serialize")
}

/// Reads the configuration through one connection (inside a transaction when
/// applying, so the comparison and the writes see the same data).
async fn read_document(conn: &mut AnyConnection) -> StoreResult<Document> {
    let mut doc = Document {
        format: FORMAT,
        ..Document::default()
    };
    for row in sqlx::query("SELECT * FROM apis ORDER BY created_at, id")
        .fetch_all(&mut *conn)
        .await?
    {
        let a = apis::api(&row)?;
        doc.apis.push(ApiEntry {
            id: a.id,
            name: a.name,
            slug: a.slug,
            base_path: a.base_path,
            hosts: a.hosts,
            upstreams: a.upstreams,
            visibility: a.visibility,
            openapi: a.openapi,
            policies: a.policies,
        });
    }

    let mut slugs_of_plan: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query(
        "SELECT pa.plan_id, a.slug FROM plan_apis pa JOIN apis a ON a.id = pa.api_id ORDER BY a.slug",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        slugs_of_plan
            .entry(row.try_get(0)?)
            .or_default()
            .push(row.try_get(1)?);
    }
    for row in sqlx::query("SELECT * FROM plans ORDER BY created_at, id")
        .fetch_all(&mut *conn)
        .await?
    {
        let id: String = row.try_get("id")?;
        let apis = slugs_of_plan.remove(&id).unwrap_or_default();
        let p = plans::plan(&row, apis)?;
        doc.plans.push(PlanEntry {
            id: p.id,
            name: p.name,
            apis: p.apis,
            price_minor: p.price.amount_minor,
            currency: p.price.currency.code().to_owned(),
            billing_interval: p.billing_interval,
            included_calls: p.included_calls,
            rate_limits: p.rate_limits,
            overage: p.overage,
            quota_anchor: p.quota_anchor,
            approval_required: p.approval_required,
            status: p.status,
        });
    }

    for row in sqlx::query(
        "SELECT * FROM users WHERE role = 'developer' OR id IN (SELECT developer_id FROM apps) \
         ORDER BY created_at, id",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let u = users::user(&row)?;
        doc.developers.push(DeveloperEntry {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
        });
    }

    let mut keys_of_app: HashMap<String, Vec<KeyEntry>> = HashMap::new();
    for row in sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
        .fetch_all(&mut *conn)
        .await?
    {
        let hash: String = row.try_get("key_hash")?;
        let k = keys::api_key(&row)?;
        keys_of_app.entry(k.app_id).or_default().push(KeyEntry {
            id: k.id,
            prefix: k.prefix,
            hash,
            status: k.status,
            expires_at: time(k.expires_at),
        });
    }
    let mut subs_of_app: HashMap<String, Vec<SubscriptionEntry>> = HashMap::new();
    for row in sqlx::query("SELECT * FROM subscriptions ORDER BY created_at, id")
        .fetch_all(&mut *conn)
        .await?
    {
        let s = subscriptions::subscription(&row)?;
        subs_of_app
            .entry(s.app_id)
            .or_default()
            .push(SubscriptionEntry {
                id: s.id,
                plan: s.plan_id,
                status: s.status,
                started_at: time(Some(s.created_at)),
            });
    }
    for row in sqlx::query("SELECT * FROM apps ORDER BY created_at, id")
        .fetch_all(&mut *conn)
        .await?
    {
        let secret: Option<String> = row.try_get("client_secret_hash")?;
        let a = apps::app(&row)?;
        doc.apps.push(AppEntry {
            keys: keys_of_app.remove(&a.id).unwrap_or_default(),
            subscriptions: subs_of_app.remove(&a.id).unwrap_or_default(),
            id: a.id,
            developer: a.developer_id,
            name: a.name,
            client_secret_hash: secret,
        });
    }
    Ok(doc)
}

/// Stored objects of one kind by id, and the work of bringing them in line.
struct Diff<'a, T> {
    stored: HashMap<&'a str, &'a T>,
    listed: HashSet<&'a str>,
}

impl<'a, T: PartialEq> Diff<'a, T> {
    fn new(stored: impl Iterator<Item = (&'a str, &'a T)>) -> Self {
        Self {
            stored: stored.collect(),
            listed: HashSet::new(),
        }
    }

    /// What to do with a listed object: `Some(true)` create, `Some(false)`
    /// update, `None` nothing.
    fn wanted(&mut self, id: &'a str, same: impl FnOnce(&T) -> bool) -> Option<bool> {
        self.listed.insert(id);
        match self.stored.get(id) {
            None => Some(true),
            Some(old) if same(old) => None,
            Some(_) => Some(false),
        }
    }

    /// Stored objects the document does not list.
    fn unlisted(&self) -> Vec<&'a str> {
        let mut ids: Vec<&str> = self
            .stored
            .keys()
            .filter(|id| !self.listed.contains(*id))
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }
}

fn count(changes: &mut Changes, create: bool) {
    if create {
        changes.created += 1;
    } else {
        changes.updated += 1;
    }
}

impl Store {
    /// The database's configuration as a document.
    pub async fn dump_document(&self) -> StoreResult<Document> {
        let mut conn = self.pool.acquire().await?;
        read_document(&mut conn).await
    }

    /// Brings the database in line with a validated document, in one
    /// transaction. Re-applying the same document changes nothing.
    pub async fn apply_document(
        &self,
        doc: &Document,
        options: ApplyOptions,
    ) -> Result<ApplyReport, ApplyError> {
        doc.validate().map_err(ApplyError::Invalid)?;
        let doc = doc.normalized();
        // The comparison and the writes must see the same data: SQLite takes the
        // write lock up front (a read-then-write transaction could not upgrade
        // once another connection wrote), PostgreSQL serialises applies on the
        // version row.
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT version FROM config_version WHERE id = 1 FOR UPDATE")
                .execute(&mut *tx)
                .await?;
        }
        let current = read_document(&mut tx).await?;
        let now = Timestamp::now().0;
        let mut report = ApplyReport::default();

        let mut api_diff = Diff::new(current.apis.iter().map(|a| (a.id.as_str(), a)));
        let mut plan_diff = Diff::new(current.plans.iter().map(|p| (p.id.as_str(), p)));
        let mut dev_diff = Diff::new(current.developers.iter().map(|d| (d.id.as_str(), d)));
        let mut app_diff = Diff::new(current.apps.iter().map(|a| (a.id.as_str(), a)));
        let stored_keys: Vec<(&str, (&str, &KeyEntry))> = current
            .apps
            .iter()
            .flat_map(|a| {
                a.keys
                    .iter()
                    .map(move |k| (k.id.as_str(), (a.id.as_str(), k)))
            })
            .collect();
        let mut key_diff = Diff::new(stored_keys.iter().map(|(id, v)| (*id, v)));
        let stored_subs: Vec<(&str, (&str, &SubscriptionEntry))> = current
            .apps
            .iter()
            .flat_map(|a| {
                a.subscriptions
                    .iter()
                    .map(move |s| (s.id.as_str(), (a.id.as_str(), s)))
            })
            .collect();
        let mut sub_diff = Diff::new(stored_subs.iter().map(|(id, v)| (*id, v)));

        // Decide every change before writing any, so clashes are reported together.
        let api_work: Vec<(&ApiEntry, bool)> = doc
            .apis
            .iter()
            .filter_map(|a| api_diff.wanted(&a.id, |old| old == a).map(|c| (a, c)))
            .collect();
        let plan_work: Vec<(&PlanEntry, bool)> = doc
            .plans
            .iter()
            .filter_map(|p| plan_diff.wanted(&p.id, |old| old == p).map(|c| (p, c)))
            .collect();
        let dev_work: Vec<(&DeveloperEntry, bool)> = doc
            .developers
            .iter()
            .filter_map(|d| dev_diff.wanted(&d.id, |old| old == d).map(|c| (d, c)))
            .collect();
        let app_work: Vec<(&AppEntry, bool)> = doc
            .apps
            .iter()
            .filter_map(|a| {
                app_diff
                    .wanted(&a.id, |old| {
                        old.developer == a.developer
                            && old.name == a.name
                            && old.client_secret_hash == a.client_secret_hash
                    })
                    .map(|c| (a, c))
            })
            .collect();
        let mut key_work: Vec<(&str, &KeyEntry, bool)> = Vec::new();
        let mut sub_work: Vec<(&str, &SubscriptionEntry, bool)> = Vec::new();
        for app in &doc.apps {
            for k in &app.keys {
                if let Some(c) =
                    key_diff.wanted(&k.id, |(owner, old)| *owner == app.id && *old == k)
                {
                    key_work.push((&app.id, k, c));
                }
            }
            for s in &app.subscriptions {
                let same = |(owner, old): &(&str, &SubscriptionEntry)| {
                    *owner == app.id
                        && old.plan == s.plan
                        && old.status == s.status
                        && (s.started_at.is_none() || s.started_at == old.started_at)
                };
                if let Some(c) = sub_diff.wanted(&s.id, same) {
                    sub_work.push((&app.id, s, c));
                }
            }
        }

        let pruned: [Vec<&str>; 6] = if options.prune {
            [
                sub_diff.unlisted(),
                key_diff.unlisted(),
                app_diff.unlisted(),
                plan_diff.unlisted(),
                api_diff.unlisted(),
                dev_diff
                    .unlisted()
                    .into_iter()
                    .filter(|id| {
                        dev_diff
                            .stored
                            .get(id)
                            .is_some_and(|d| d.role == Role::Developer)
                    })
                    .collect(),
            ]
        } else {
            Default::default()
        };
        let pruned_sets: Vec<HashSet<&str>> = pruned
            .iter()
            .map(|ids| ids.iter().copied().collect())
            .collect();
        let gone = |kind: usize, id: &str| pruned_sets[kind].contains(id);

        // Unique values held by stored objects the document does not list (and
        // that stay, because they are not pruned).
        let mut clashes = Vec::new();
        let mut clash = |path: String, message: String| clashes.push(Problem { path, message });
        let hint = if options.prune {
            "list it in the file under its id"
        } else {
            "list it in the file under its id, or apply with --prune to delete what the file does not list"
        };
        for (i, a) in doc.apis.iter().enumerate() {
            for other in current
                .apis
                .iter()
                .filter(|o| o.id != a.id && !gone(4, &o.id))
            {
                if doc.apis.iter().any(|d| d.id == other.id) {
                    continue;
                }
                if other.slug == a.slug {
                    clash(
                        format!("apis[{i}].slug"),
                        format!(
                            "slug {:?} is taken by the stored API {}; {hint}",
                            a.slug, other.id
                        ),
                    );
                }
                if route_clash((&a.base_path, &a.hosts), (&other.base_path, &other.hosts)).is_some()
                {
                    clash(
                        format!("apis[{i}].base_path"),
                        format!(
                            "base path {:?} on these hosts is taken by the stored API {}; {hint}",
                            a.base_path, other.id
                        ),
                    );
                }
            }
        }
        let listed_users: HashSet<&str> = doc.developers.iter().map(|d| d.id.as_str()).collect();
        let other_emails: HashMap<String, String> = sqlx::query("SELECT id, email FROM users")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(1)?, r.try_get::<String, _>(0)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for (i, d) in doc.developers.iter().enumerate() {
            if let Some(owner) = other_emails.get(&d.email)
                && *owner != d.id
                && !listed_users.contains(owner.as_str())
                && !gone(5, owner)
            {
                clash(
                    format!("developers[{i}].email"),
                    format!(
                        "e-mail {:?} belongs to the stored user {owner}; {hint}",
                        d.email
                    ),
                );
            }
        }
        let listed_keys: HashSet<&str> = doc
            .apps
            .iter()
            .flat_map(|a| a.keys.iter().map(|k| k.id.as_str()))
            .collect();
        let key_of_hash: HashMap<&str, &str> = stored_keys
            .iter()
            .map(|(id, (_, k))| (k.hash.as_str(), *id))
            .collect();
        for (i, app) in doc.apps.iter().enumerate() {
            for (j, k) in app.keys.iter().enumerate() {
                if let Some(id) = key_of_hash.get(k.hash.as_str())
                    && *id != k.id
                    && !listed_keys.contains(id)
                    && !gone(1, id)
                {
                    clash(
                        format!("apps[{i}].keys[{j}].hash"),
                        format!("this key hash belongs to the stored key {id}; {hint}"),
                    );
                }
            }
        }
        if !clashes.is_empty() {
            return Err(ApplyError::Conflicts(Problems(clashes)));
        }

        // Deletes first (dependents before what they depend on), then writes
        // (what others depend on first).
        let deletes: [&'static str; 6] = [
            "DELETE FROM subscriptions WHERE id = $1",
            "DELETE FROM api_keys WHERE id = $1",
            "DELETE FROM apps WHERE id = $1",
            "DELETE FROM plans WHERE id = $1",
            "DELETE FROM apis WHERE id = $1",
            "DELETE FROM users WHERE id = $1",
        ];
        for (kind, sql) in deletes.iter().enumerate() {
            for id in &pruned[kind] {
                sqlx::query(*sql).bind(*id).execute(&mut *tx).await?;
            }
        }
        report.subscriptions.deleted = pruned[0].len();
        report.keys.deleted = pruned[1].len();
        report.apps.deleted = pruned[2].len();
        report.plans.deleted = pruned[3].len();
        report.apis.deleted = pruned[4].len();
        report.developers.deleted = pruned[5].len();

        for (d, create) in &dev_work {
            let sql = if *create {
                "INSERT INTO users (id, email, name, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)"
            } else {
                "UPDATE users SET email = $2, name = $3, role = $4, updated_at = $5 WHERE id = $1"
            };
            sqlx::query(sql)
                .bind(&d.id)
                .bind(&d.email)
                .bind(&d.name)
                .bind(d.role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            count(&mut report.developers, *create);
        }
        for (a, create) in &api_work {
            let sql = if *create {
                "INSERT INTO apis (id, name, slug, base_path, upstreams, visibility, openapi, policies, hosts, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
            } else {
                "UPDATE apis SET name = $2, slug = $3, base_path = $4, upstreams = $5, visibility = $6, \
                 openapi = $7, policies = $8, hosts = $9, updated_at = $10 WHERE id = $1"
            };
            sqlx::query(sql)
                .bind(&a.id)
                .bind(&a.name)
                .bind(&a.slug)
                .bind(&a.base_path)
                .bind(to_json(&a.upstreams))
                .bind(a.visibility.as_str())
                .bind(a.openapi.as_ref().map(to_json))
                .bind(to_json(&a.policies))
                .bind(to_json(&a.hosts))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            count(&mut report.apis, *create);
        }
        let api_id_of: HashMap<&str, &str> = doc
            .apis
            .iter()
            .map(|a| (a.slug.as_str(), a.id.as_str()))
            .collect();
        for (p, create) in &plan_work {
            let sql = if *create {
                "INSERT INTO plans (id, name, price_minor, currency, billing_interval, included_calls, status, \
                 rate_limits, overage, quota_anchor, created_at, updated_at, approval_required) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)"
            } else {
                "UPDATE plans SET name = $2, price_minor = $3, currency = $4, billing_interval = $5, \
                 included_calls = $6, status = $7, rate_limits = $8, overage = $9, quota_anchor = $10, \
                 updated_at = $11, approval_required = $12 WHERE id = $1"
            };
            sqlx::query(sql)
                .bind(&p.id)
                .bind(&p.name)
                .bind(p.price_minor)
                .bind(&p.currency)
                .bind(p.billing_interval.as_str())
                .bind(p.included_calls)
                .bind(p.status.as_str())
                .bind(to_json(&p.rate_limits))
                .bind(i64::from(p.overage))
                .bind(p.quota_anchor.as_str())
                .bind(now)
                .bind(i64::from(p.approval_required))
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM plan_apis WHERE plan_id = $1")
                .bind(&p.id)
                .execute(&mut *tx)
                .await?;
            for slug in &p.apis {
                sqlx::query("INSERT INTO plan_apis (plan_id, api_id) VALUES ($1, $2)")
                    .bind(&p.id)
                    .bind(api_id_of[slug.as_str()])
                    .execute(&mut *tx)
                    .await?;
            }
            count(&mut report.plans, *create);
        }
        for (a, create) in &app_work {
            let sql = if *create {
                "INSERT INTO apps (id, developer_id, name, client_secret_hash, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)"
            } else {
                "UPDATE apps SET developer_id = $2, name = $3, client_secret_hash = $4, updated_at = $5 WHERE id = $1"
            };
            sqlx::query(sql)
                .bind(&a.id)
                .bind(&a.developer)
                .bind(&a.name)
                .bind(a.client_secret_hash.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            count(&mut report.apps, *create);
        }
        for (app_id, k, create) in &key_work {
            let query = if *create {
                sqlx::query(
                    "INSERT INTO api_keys (id, app_id, key_hash, prefix, status, expires_at, revoked_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&k.id)
                .bind(*app_id)
                .bind(&k.hash)
                .bind(&k.prefix)
                .bind(k.status.as_str())
                .bind(ms(k.expires_at))
                .bind((k.status == KeyStatus::Revoked).then_some(now))
                .bind(now)
            } else {
                // A key revoked by this change is revoked now; one revoked before keeps its time.
                sqlx::query(
                    "UPDATE api_keys SET app_id = $2, key_hash = $3, prefix = $4, status = $5, expires_at = $6, \
                     revoked_at = CASE WHEN $5 = 'revoked' THEN COALESCE(revoked_at, $7) END WHERE id = $1",
                )
                .bind(&k.id)
                .bind(*app_id)
                .bind(&k.hash)
                .bind(&k.prefix)
                .bind(k.status.as_str())
                .bind(ms(k.expires_at))
                .bind(now)
            };
            query.execute(&mut *tx).await?;
            count(&mut report.keys, *create);
        }
        for (app_id, s, create) in &sub_work {
            let sql = if *create {
                "INSERT INTO subscriptions (id, app_id, plan_id, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, COALESCE($5, $6), $6)"
            } else {
                "UPDATE subscriptions SET app_id = $2, plan_id = $3, status = $4, \
                 created_at = COALESCE($5, created_at), updated_at = $6 WHERE id = $1"
            };
            sqlx::query(sql)
                .bind(&s.id)
                .bind(*app_id)
                .bind(&s.plan)
                .bind(s.status.as_str())
                .bind(ms(s.started_at))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            count(&mut report.subscriptions, *create);
        }

        // What the gateways must reload: changed APIs and plans, and every app
        // whose own record, keys or subscriptions changed.
        let mut changes: Vec<Change> = Vec::new();
        changes.extend(api_work.iter().map(|(a, _)| Change::Api(a.id.clone())));
        changes.extend(pruned[4].iter().map(|id| Change::Api((*id).to_owned())));
        changes.extend(plan_work.iter().map(|(p, _)| Change::Plan(p.id.clone())));
        changes.extend(pruned[3].iter().map(|id| Change::Plan((*id).to_owned())));
        changes.extend(app_work.iter().map(|(a, _)| Change::App(a.id.clone())));
        changes.extend(pruned[2].iter().map(|id| Change::App((*id).to_owned())));
        changes.extend(
            key_work
                .iter()
                .map(|(app, _, _)| Change::App((*app).to_owned())),
        );
        changes.extend(
            sub_work
                .iter()
                .map(|(app, _, _)| Change::App((*app).to_owned())),
        );
        let key_owner: HashMap<&str, &str> = stored_keys
            .iter()
            .map(|(id, (app, _))| (*id, *app))
            .collect();
        let sub_owner: HashMap<&str, &str> = stored_subs
            .iter()
            .map(|(id, (app, _))| (*id, *app))
            .collect();
        changes.extend(
            pruned[1]
                .iter()
                .map(|id| Change::App(key_owner[id].to_owned())),
        );
        changes.extend(
            pruned[0]
                .iter()
                .map(|id| Change::App(sub_owner[id].to_owned())),
        );
        if changes.len() > 1000 {
            changes = vec![Change::All];
        }

        if !report.changed() || options.dry_run {
            report.version = sqlx::query("SELECT version FROM config_version WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            tx.rollback().await?;
            return Ok(report);
        }
        let v = self.bump_version(&mut tx, &changes).await?;
        self.commit_change(tx, v).await?;
        report.version = v;
        Ok(report)
    }
}
