//! Published APIs.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Change, Store, text_enum, ts};
use crate::error::{StoreError, StoreResult, ValidationError};
use crate::id::{IdKind, new_id};
use crate::model::{Api, ApiPatch, NewApi, Visibility, route_clash};
use crate::time::Timestamp;

pub(super) fn api(row: &AnyRow) -> StoreResult<Api> {
    let upstreams: String = row.try_get("upstreams")?;
    let hosts: String = row.try_get("hosts")?;
    let openapi: Option<String> = row.try_get("openapi")?;
    let policies: String = row.try_get("policies")?;
    Ok(Api {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        base_path: row.try_get("base_path")?,
        hosts: serde_json::from_str(&hosts)
            .map_err(|e| StoreError::Corrupt(format!("apis.hosts: {e}")))?,
        upstreams: serde_json::from_str(&upstreams)
            .map_err(|e| StoreError::Corrupt(format!("apis.upstreams: {e}")))?,
        visibility: text_enum(row, "visibility", Visibility::parse)?,
        openapi: openapi
            .map(|doc| serde_json::from_str(&doc))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("apis.openapi: {e}")))?,
        policies: serde_json::from_str(&policies)
            .map_err(|e| StoreError::Corrupt(format!("apis.policies: {e}")))?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

/// Turns a unique violation on `apis` (the slug) into a message naming it.
fn api_conflict(e: sqlx::Error, slug: &str) -> StoreError {
    StoreError::unique(e, || format!("an API with slug {slug} already exists"))
}

/// Starts a transaction in which no other writer can add or move an API, so the
/// base path and host check and the write see the same APIs.
async fn begin_api_write(store: &Store) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
    let mut tx = store.begin_write().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("LOCK TABLE apis IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// Refuses an API whose base path and hosts clash with another API's.
async fn check_route_free(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    api: &Api,
) -> StoreResult<()> {
    let rows = sqlx::query("SELECT id, hosts FROM apis WHERE base_path = $1 AND id <> $2")
        .bind(&api.base_path)
        .bind(&api.id)
        .fetch_all(&mut **tx)
        .await?;
    for row in &rows {
        let other: String = row.try_get("id")?;
        let hosts: String = row.try_get("hosts")?;
        let hosts: Vec<String> = serde_json::from_str(&hosts)
            .map_err(|e| StoreError::Corrupt(format!("apis.hosts: {e}")))?;
        if let Some(host) = route_clash((&api.base_path, &api.hosts), (&api.base_path, &hosts)) {
            let where_ = match host {
                Some(h) => format!("on host {h}"),
                None => "on every host".to_owned(),
            };
            return Err(StoreError::Conflict(format!(
                "API {other} already answers base_path {} {where_}; give this API other hosts or another base path",
                api.base_path
            )));
        }
    }
    Ok(())
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("JSON values always serialize")
}

impl Store {
    /// Publishes a new API; the gateway routes it within a second.
    pub async fn create_api(&self, input: NewApi) -> StoreResult<Api> {
        input.validate()?;
        let now = Timestamp::now();
        let a = Api {
            id: new_id(IdKind::Api),
            name: input.name.trim().to_owned(),
            slug: input.slug,
            base_path: input.base_path,
            hosts: input.hosts,
            upstreams: input.upstreams,
            visibility: input.visibility.unwrap_or(Visibility::Public),
            openapi: input.openapi,
            policies: input.policies.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = begin_api_write(self).await?;
        check_route_free(&mut tx, &a).await?;
        sqlx::query(
            "INSERT INTO apis (id, name, slug, base_path, upstreams, visibility, openapi, policies, created_at, updated_at, hosts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.slug)
        .bind(&a.base_path)
        .bind(to_json(&a.upstreams))
        .bind(a.visibility.as_str())
        .bind(a.openapi.as_ref().map(to_json))
        .bind(to_json(&a.policies))
        .bind(now.0)
        .bind(now.0)
        .bind(to_json(&a.hosts))
        .execute(&mut *tx)
        .await
        .map_err(|e| api_conflict(e, &a.slug))?;
        let v = self
            .bump_version(&mut tx, &[Change::Api(a.id.clone())])
            .await?;
        self.commit_change(tx, v).await?;
        Ok(a)
    }

    /// One API by id.
    pub async fn get_api(&self, id: &str) -> StoreResult<Api> {
        let row = sqlx::query("SELECT * FROM apis WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("api", id))?;
        api(&row)
    }

    /// One API by slug.
    pub async fn get_api_by_slug(&self, slug: &str) -> StoreResult<Api> {
        let row = sqlx::query("SELECT * FROM apis WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("api", slug))?;
        api(&row)
    }

    /// Every API, by name.
    pub async fn list_apis(&self) -> StoreResult<Vec<Api>> {
        let rows = sqlx::query("SELECT * FROM apis ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api).collect()
    }

    /// Every API's slug and display name, without the rest (cheap with
    /// thousands of APIs: no documents or policies are read).
    pub async fn api_names(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT slug, name FROM apis ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("slug")?, r.try_get("name")?)))
            .collect()
    }

    /// Changes an API; absent fields stay as they are.
    pub async fn update_api(&self, id: &str, patch: ApiPatch) -> StoreResult<Api> {
        patch.validate()?;
        let mut a = self.get_api(id).await?;
        if let Some(v) = patch.name {
            a.name = v.trim().to_owned();
        }
        if let Some(v) = patch.slug {
            a.slug = v;
        }
        if let Some(v) = patch.base_path {
            a.base_path = v;
        }
        if let Some(v) = patch.hosts {
            a.hosts = v;
        }
        if let Some(v) = patch.upstreams {
            a.upstreams = v;
        }
        if let Some(v) = patch.visibility {
            a.visibility = v;
        }
        if let Some(v) = patch.openapi {
            a.openapi = v;
        }
        if let Some(v) = patch.policies {
            a.policies = v;
        }
        a.updated_at = Timestamp::now();
        let mut tx = begin_api_write(self).await?;
        check_route_free(&mut tx, &a).await?;
        let done = sqlx::query(
            "UPDATE apis SET name = $2, slug = $3, base_path = $4, upstreams = $5, visibility = $6, \
             openapi = $7, policies = $8, updated_at = $9, hosts = $10 WHERE id = $1",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.slug)
        .bind(&a.base_path)
        .bind(to_json(&a.upstreams))
        .bind(a.visibility.as_str())
        .bind(a.openapi.as_ref().map(to_json))
        .bind(to_json(&a.policies))
        .bind(a.updated_at.0)
        .bind(to_json(&a.hosts))
        .execute(&mut *tx)
        .await
        .map_err(|e| api_conflict(e, &a.slug))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("api", id));
        }
        let v = self
            .bump_version(&mut tx, &[Change::Api(id.to_owned())])
            .await?;
        self.commit_change(tx, v).await?;
        Ok(a)
    }

    /// Removes an API and takes it out of every plan; the gateway stops routing it.
    pub async fn delete_api(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM plan_apis WHERE api_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM apis WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("api", id));
        }
        let v = self
            .bump_version(&mut tx, &[Change::Api(id.to_owned())])
            .await?;
        self.commit_change(tx, v).await
    }

    /// Resolves API slugs to ids, naming the first unknown one.
    pub(super) async fn api_ids_for_slugs(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        slugs: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut ids = Vec::with_capacity(slugs.len());
        for (i, slug) in slugs.iter().enumerate() {
            let row = sqlx::query("SELECT id FROM apis WHERE slug = $1")
                .bind(slug)
                .fetch_optional(&mut **tx)
                .await?;
            match row {
                Some(r) => {
                    let id: String = r.try_get(0)?;
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                None => {
                    return Err(ValidationError::new(
                        format!("apis[{i}]"),
                        format!(
                            "no API has the slug {slug:?}; create it first with POST /admin/apis"
                        ),
                    )
                    .into());
                }
            }
        }
        Ok(ids)
    }
}
