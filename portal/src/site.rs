//! The developer portal's pages. For now: the start page listing the published
//! APIs, a health check, styles, and friendly 404 pages.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tollgate_core::model::Visibility;

use crate::AppState;

const STYLESHEET: &str = include_str!("../../web-assets/css/tollgate.css");

/// Routes of the portal listener.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(health))
        .route("/assets/tollgate.css", get(stylesheet))
        .fallback(not_found)
        .with_state(state)
}

/// A published API as the start page lists it.
struct ApiCard {
    name: String,
    base_path: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    title: &'static str,
    gateway_url: String,
    apis: Vec<ApiCard>,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage {
    title: &'static str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: &'static str,
}

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

async fn home(State(s): State<AppState>) -> Response {
    match s.store.list_apis().await {
        Ok(apis) => render(
            StatusCode::OK,
            &HomePage {
                title: "Tollgate developer portal",
                gateway_url: s.gateway_url.clone(),
                apis: apis
                    .into_iter()
                    .filter(|a| a.visibility == Visibility::Public)
                    .map(|a| ApiCard {
                        name: a.name,
                        base_path: a.base_path,
                    })
                    .collect(),
            },
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot list APIs for the start page");
            render(
                StatusCode::SERVICE_UNAVAILABLE,
                &ErrorPage {
                    title: "Something went wrong",
                },
            )
        }
    }
}

/// `200 {"status":"ok"}` when the database answers, `503` otherwise.
async fn health(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "database": "ok"})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable", "database": "unreachable"})),
            )
                .into_response()
        }
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

async fn not_found() -> Response {
    render(
        StatusCode::NOT_FOUND,
        &NotFoundPage {
            title: "Page not found",
        },
    )
}
