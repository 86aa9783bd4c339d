//! `/admin/apis`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tollgate_core::model::{ApiPatch, NewApi};

use super::extract::JsonBody;
use super::{ApiResult, created};
use crate::AppState;

pub(super) async fn create(
    State(s): State<AppState>,
    JsonBody(input): JsonBody<NewApi>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(s.store.create_api(input).await?))
}

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(super::list(s.store.list_apis().await?))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.get_api(&id).await?))
}

pub(super) async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<ApiPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.update_api(&id, patch).await?))
}

pub(super) async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    s.store.delete_api(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
