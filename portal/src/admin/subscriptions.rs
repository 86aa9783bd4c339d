//! `/admin/subscriptions`

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use tollgate_core::model::{NewSubscription, SubscriptionStatus};

use super::extract::JsonBody;
use super::{ApiResult, created};
use crate::AppState;
use crate::subscriptions::{Decision, DecisionMail, decide};

#[derive(Deserialize)]
pub(super) struct Filter {
    app_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusChange {
    status: SubscriptionStatus,
}

pub(super) async fn create(
    State(s): State<AppState>,
    JsonBody(input): JsonBody<NewSubscription>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(s.store.create_subscription(input).await?))
}

pub(super) async fn list(
    State(s): State<AppState>,
    Query(f): Query<Filter>,
) -> ApiResult<impl IntoResponse> {
    Ok(super::list(
        s.store.list_subscriptions(f.app_id.as_deref()).await?,
    ))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.store.get_subscription(&id).await?))
}

pub(super) async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<StatusChange>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        s.store.set_subscription_status(&id, change.status).await?,
    ))
}

/// `POST /admin/subscriptions/{id}/approve`: pending -> active; mails the developer.
pub(super) async fn approve(
    State(s): State<AppState>,
    Extension(mail): Extension<DecisionMail>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(decide(&s.store, &mail, &id, Decision::Approve).await?))
}

/// `POST /admin/subscriptions/{id}/reject`: pending -> cancelled; mails the developer.
pub(super) async fn reject(
    State(s): State<AppState>,
    Extension(mail): Extension<DecisionMail>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(decide(&s.store, &mail, &id, Decision::Reject).await?))
}
