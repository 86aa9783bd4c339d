//! Errors of the portal's pages and their one mapping to responses.
//!
//! Policy: a person never sees a stack trace, a bare status or a JSON body.
//! Bad input is not an error here: handlers show the form again with the
//! message next to the field. What remains maps to a page:
//! 403 (a form without a valid CSRF token: "refresh and try again"),
//! 400 (a request no form of ours sends), 404, and 500 for everything
//! internal, logged with its detail under an error id that the page shows.
//!
//! Handlers return [`SiteError`]; its response carries only a marker, and
//! [`render_error_pages`] (a middleware that knows the portal's name) turns the
//! marker into the page.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_core::StoreError;

use super::Site;
use super::views::{MessagePage, render};
use crate::accounts::AccountError;

/// What a page handler can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteError {
    /// The form's CSRF token is missing or wrong.
    CsrfRefused,
    /// A malformed request (not one our forms send).
    BadRequest,
    /// No such page.
    NotFound,
    /// Something failed inside; the detail goes to the log.
    Internal(String),
}

impl SiteError {
    /// An internal error from anything displayable.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

impl From<StoreError> for SiteError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<tower_sessions::session::Error> for SiteError {
    fn from(e: tower_sessions::session::Error) -> Self {
        Self::internal(format_args!("session: {e}"))
    }
}

impl From<AccountError> for SiteError {
    fn from(e: AccountError) -> Self {
        Self::internal(e)
    }
}

/// Marker left in a response for [`render_error_pages`].
#[derive(Debug, Clone)]
struct ErrorPage {
    status: StatusCode,
    error_id: Option<String>,
}

impl IntoResponse for SiteError {
    fn into_response(self) -> Response {
        let (status, error_id) = match self {
            Self::CsrfRefused => (StatusCode::FORBIDDEN, None),
            Self::BadRequest => (StatusCode::BAD_REQUEST, None),
            Self::NotFound => (StatusCode::NOT_FOUND, None),
            Self::Internal(detail) => {
                let id = uuid::Uuid::now_v7().simple().to_string();
                tracing::error!(error_id = %id, error = %detail, "portal internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, Some(id))
            }
        };
        let mut resp = status.into_response();
        resp.extensions_mut().insert(ErrorPage { status, error_id });
        resp
    }
}

/// Turns [`SiteError`] markers into friendly pages.
pub async fn render_error_pages(State(site): State<Site>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let Some(page) = resp.extensions().get::<ErrorPage>().cloned() else {
        return resp;
    };
    let brand = &site.brand;
    let view = match page.status {
        StatusCode::FORBIDDEN => MessagePage::new(
            brand,
            "warning",
            "This form has expired",
            &[
                "For your safety we could not accept this form: it was opened too long ago, in another session, or from another site.",
                "Go back, refresh the page and send it again.",
            ],
        )
        .link("/", "Go to the start page"),
        StatusCode::BAD_REQUEST => MessagePage::new(
            brand,
            "warning",
            "We could not read that request",
            &["Go back, refresh the page and try again."],
        )
        .link("/", "Go to the start page"),
        StatusCode::NOT_FOUND => MessagePage::new(
            brand,
            "info",
            "Page not found",
            &["The page you asked for does not exist. It may have moved, or the address may be mistyped."],
        )
        .link("/", "Go to the start page"),
        _ => {
            let mut v = MessagePage::new(
                brand,
                "error",
                "Something went wrong",
                &["We could not complete this request. Please try again in a moment."],
            )
            .link("/", "Go to the start page");
            if let Some(id) = &page.error_id {
                v.paragraphs
                    .push(format!("If it keeps happening, quote error id {id} to the team running this portal."));
            }
            v
        }
    };
    render(page.status, &view)
}
