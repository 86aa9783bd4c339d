//! `/admin/apps/{id}/keys` and `/admin/keys/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::model::ApiKey;
use tollgate_core::time::Timestamp;

use super::error::ApiError;
use super::extract::JsonBody;
use super::{ApiResult, created};
use crate::AppState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// Optional expiry, RFC 3339.
    expires_at: Option<String>,
}

/// The one response that carries the full key.
#[derive(Serialize)]
struct IssuedKeyBody {
    id: String,
    prefix: String,
    key: String,
    #[serde(flatten)]
    record: ApiKey,
}

pub(super) async fn create(
    State(s): State<AppState>,
    Path(app_id): Path<String>,
    JsonBody(input): JsonBody<NewKey>,
) -> ApiResult<impl IntoResponse> {
    let expires_at = input
        .expires_at
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|d| Timestamp::from(d.with_timezone(&Utc)))
                .map_err(|_| {
                    ApiError::validation("expires_at", format!("{t:?} is not an RFC 3339 time"))
                })
        })
        .transpose()?;
    let issued = s.store.issue_key(&app_id, expires_at).await?;
    Ok(created(IssuedKeyBody {
        id: issued.record.id.clone(),
        prefix: issued.record.prefix.clone(),
        key: issued.secret,
        record: issued.record,
    }))
}

pub(super) async fn list(
    State(s): State<AppState>,
    Path(app_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(super::list(s.store.list_keys(&app_id).await?))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.get_key(&id).await?))
}

pub(super) async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.revoke_key(&id).await?))
}
