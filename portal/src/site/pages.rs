//! The start page, the health check, assets and the 404 fallback.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::SiteError;
use super::views::{Layout, render};
use super::visitor::Visitor;
use super::{Site, assets};

/// A published API as the start page lists it.
pub struct ApiCard {
    /// Display name.
    pub name: String,
    /// Path prefix on the gateway.
    pub base_path: String,
    /// Its page is `/apis/{slug}`.
    pub slug: String,
}

/// The start page.
#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    layout: Layout,
    gateway_url: String,
    apis: Vec<ApiCard>,
}

/// `GET /`
pub async fn home(State(site): State<Site>, visitor: Visitor) -> Result<Response, SiteError> {
    let apis = site
        .published
        .get(&site.app.store)
        .await?
        .apis
        .iter()
        .map(|l| ApiCard {
            name: l.api.name.clone(),
            base_path: l.api.base_path.clone(),
            slug: l.api.slug.clone(),
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &HomePage {
            layout: visitor.layout(&site, None).await?,
            gateway_url: site.app.gateway_url.clone(),
            apis,
        },
    ))
}

/// `GET /healthz`: `200 {"status":"ok"}` when the database answers, `503` otherwise.
pub async fn health(State(site): State<Site>) -> Response {
    match site.app.store.ping().await {
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

/// `GET /assets/brand/{file}`: the configured logo or colour stylesheet.
pub async fn brand_asset(
    State(site): State<Site>,
    Path(file): Path<String>,
) -> Result<Response, SiteError> {
    site.brand.serve(&file).ok_or(SiteError::NotFound)
}

/// `GET /assets/{file}`
pub async fn asset(file: Path<String>) -> Result<Response, SiteError> {
    assets::serve(file).ok_or(SiteError::NotFound)
}

/// Every other path.
pub async fn not_found() -> SiteError {
    SiteError::NotFound
}
