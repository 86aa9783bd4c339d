//! `/admin/plans`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tollgate_core::model::{NewPlan, PlanPatch};

use super::extract::JsonBody;
use super::{ApiResult, created};
use crate::AppState;

pub(super) async fn create(
    State(s): State<AppState>,
    JsonBody(input): JsonBody<NewPlan>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(s.store.create_plan(input).await?))
}

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(super::list(s.store.list_plans().await?))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.get_plan(&id).await?))
}

pub(super) async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<PlanPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.update_plan(&id, patch).await?))
}

pub(super) async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    s.store.delete_plan(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
