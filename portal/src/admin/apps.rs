//! `/admin/apps`

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use tollgate_core::model::NewApp;

use super::extract::JsonBody;
use super::{ApiResult, created};
use crate::AppState;

#[derive(Deserialize)]
pub(super) struct Filter {
    developer_id: Option<String>,
}

pub(super) async fn create(
    State(s): State<AppState>,
    JsonBody(input): JsonBody<NewApp>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(s.store.create_app(input).await?))
}

pub(super) async fn list(
    State(s): State<AppState>,
    Query(f): Query<Filter>,
) -> ApiResult<impl IntoResponse> {
    Ok(super::list(
        s.store.list_apps(f.developer_id.as_deref()).await?,
    ))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.get_app(&id).await?))
}

/// Issues a new OAuth2 client secret (the old one stops working); shown once.
pub(super) async fn rotate_client_secret(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let secret = s.store.rotate_client_secret(&id).await?;
    Ok(created(
        serde_json::json!({"client_id": id, "client_secret": secret}),
    ))
}
