//! `/admin/usage/summary`

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use tollgate_analytics::SummaryQuery;

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
