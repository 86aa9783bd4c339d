//! `/admin/usage/summary`, `/admin/usage/timeseries` and `/admin/usage/top`

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use tollgate_analytics::{SummaryQuery, TimeSeriesParams, TimeSeriesQuery, TopQuery};

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

const SERIES_PARAMS: [&str; 10] = [
    "from",
    "to",
    "bucket",
    "api",
    "app",
    "plan",
    "developer",
    "subscription",
    "status_class",
    "key",
];

fn series_params(params: &HashMap<String, String>) -> TimeSeriesParams<'_> {
    let get = |k: &str| params.get(k).map(String::as_str);
    TimeSeriesParams {
        from: get("from"),
        to: get("to"),
        bucket: get("bucket"),
        api: get("api"),
        app: get("app"),
        plan: get("plan"),
        developer: get("developer"),
        status_class: get("status_class"),
        subscription: get("subscription"),
        key: get("key"),
    }
}

fn refuse_unknown(params: &HashMap<String, String>, known: &[&str]) -> ApiResult<()> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::validation(
            unknown.clone(),
            format!("unknown parameter; use {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(super) async fn time_series(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    refuse_unknown(&params, &SERIES_PARAMS)?;
    let q = TimeSeriesQuery::parse(series_params(&params))?;
    Ok(Json(s.usage.time_series(&q).await?))
}

const TOP_PARAMS: [&str; 11] = [
    "from",
    "to",
    "dimension",
    "limit",
    "api",
    "app",
    "plan",
    "developer",
    "subscription",
    "status_class",
    "key",
];

pub(super) async fn top(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    refuse_unknown(&params, &TOP_PARAMS)?;
    let q = TopQuery::parse(
        series_params(&params),
        params.get("dimension").map(String::as_str),
        params.get("limit").map(String::as_str),
    )?;
    Ok(Json(s.usage.top(&q).await?))
}
