//! `/admin/usage/summary` and `/admin/usage/timeseries`

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use tollgate_analytics::{SummaryQuery, TimeSeriesParams, TimeSeriesQuery};

use super::ApiResult;
use super::error::ApiError;
use crate::AppState;

const PARAMS: [&str; 3] = ["from", "to", "api"];

pub(super) async fn summary(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::validation(
            unknown.clone(),
            "unknown parameter; use from, to and api",
        ));
    }
    let q = SummaryQuery::parse(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        params.get("api").map(String::as_str),
    )?;
    Ok(Json(s.usage.summary(&q).await?))
}

const SERIES_PARAMS: [&str; 8] = [
    "from",
    "to",
    "bucket",
    "api",
    "app",
    "plan",
    "developer",
    "status_class",
];

pub(super) async fn time_series(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    if let Some(unknown) = params.keys().find(|k| !SERIES_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::validation(
            unknown.clone(),
            "unknown parameter; use from, to, bucket, api, app, plan, developer and status_class",
        ));
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    let q = TimeSeriesQuery::parse(TimeSeriesParams {
        from: get("from"),
        to: get("to"),
        bucket: get("bucket"),
        api: get("api"),
        app: get("app"),
        plan: get("plan"),
        developer: get("developer"),
        status_class: get("status_class"),
    })?;
    Ok(Json(s.usage.time_series(&q).await?))
}
