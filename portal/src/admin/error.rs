//! Errors of the admin REST API and their one mapping to HTTP.
//!
//! Policy: every error is `{"error":{"code","message"}}` (plus `field` for
//! validation errors) with a stable `code`:
//! 422 `validation_failed` (the field is named), 400 `invalid_json`,
//! 404 `not_found`, 409 `conflict`, 401 `unauthorized`,
//! 503 `admin_disabled`, 405 `method_not_allowed`, 500 `internal`.
//! Internal errors are logged with their detail and an error id; the client
//! gets only the id.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_analytics::UsageError;
use tollgate_core::StoreError;

/// An admin API error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// The offending field, for validation errors.
    pub field: Option<String>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 422 naming a field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    /// An opaque 500; the detail goes to the log under a fresh error id.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        tracing::error!(error_id = %id, error = %detail, "admin API internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error; quote error id {id} when reporting it"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            error["field"] = json!(f);
        }
        let mut resp = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(v) => Self::validation(v.field, v.message),
            StoreError::NotFound { entity, id } => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{entity} {id} does not exist"),
            ),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            other => Self::internal(&other),
        }
    }
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::Invalid { param, message } => Self::validation(param, message),
            other => Self::internal(&other),
        }
    }
}
