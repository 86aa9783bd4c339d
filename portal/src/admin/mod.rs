//! The admin REST API, on its own listener.
//!
//! Every route requires `Authorization: Bearer <admin token>`; with no token
//! configured every call is refused with a message saying how to set one.
//! Handlers are thin: parse, call the store, render JSON. Lists are
//! `{"data":[...]}`; created objects come back with 201 and their `id`.

mod apis;
mod apps;
mod developers;
pub mod error;
pub mod extract;
mod keys;
mod plans;
mod subscriptions;
mod usage;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use tollgate_core::key::KeyHash;

use crate::AppState;
use crate::subscriptions::DecisionMail;
use error::ApiError;

/// The admin API's OpenAPI 3 document.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Routes of the admin API; `mail` tells developers about approved and
/// rejected subscriptions.
pub fn router(state: AppState, mail: DecisionMail) -> Router {
    Router::new()
        .route("/admin/apis", get(apis::list).post(apis::create))
        .route(
            "/admin/apis/{id}",
            get(apis::show).patch(apis::update).delete(apis::remove),
        )
        .route("/admin/plans", get(plans::list).post(plans::create))
        .route(
            "/admin/plans/{id}",
            get(plans::show).patch(plans::update).delete(plans::remove),
        )
        .route(
            "/admin/developers",
            get(developers::list).post(developers::create),
        )
        .route("/admin/developers/{id}", get(developers::show))
        .route("/admin/apps", get(apps::list).post(apps::create))
        .route("/admin/apps/{id}", get(apps::show))
        .route(
            "/admin/apps/{id}/client-secret",
            axum::routing::post(apps::rotate_client_secret),
        )
        .route("/admin/apps/{id}/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", delete(keys::revoke).get(keys::show))
        .route(
            "/admin/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/admin/subscriptions/{id}",
            get(subscriptions::show).patch(subscriptions::update),
        )
        .route(
            "/admin/subscriptions/{id}/approve",
            axum::routing::post(subscriptions::approve),
        )
        .route(
            "/admin/subscriptions/{id}/reject",
            axum::routing::post(subscriptions::reject),
        )
        .route("/admin/usage/summary", get(usage::summary))
        .route("/admin/usage/timeseries", get(usage::time_series))
        .route("/admin/usage/top", get(usage::top))
        .route("/admin/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(mail))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Refuses calls without the configured bearer token.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.admin_token else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "the admin API is disabled because no admin token is configured; set TOLLGATE_ADMIN_TOKEN \
             (at least 16 characters, e.g. `openssl rand -hex 24`) or admin_token in tollgate.toml and restart",
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Comparing digests keeps the comparison's timing independent of the token.
    match presented {
        Some(token) if KeyHash::of(token) == KeyHash::of(expected) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as Authorization: Bearer <token>",
        )
        .into_response(),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such admin API route; see GET /admin/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see GET /admin/openapi.json",
    )
}

/// A list response: `{"data": [...]}`.
#[derive(Serialize)]
struct List<T> {
    data: Vec<T>,
}

fn list<T: Serialize>(data: Vec<T>) -> Json<List<T>> {
    Json(List { data })
}

fn created<T: Serialize>(value: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(value))
}

type ApiResult<T> = Result<T, ApiError>;
