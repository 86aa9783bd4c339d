//! The developer portal's website: server-rendered pages (askama views over
//! typed structs), embedded assets, accounts and sessions.
//!
//! A request passes, outermost first: security headers -> sessions (cookie
//! `tollgate_session`, records in the database) -> error pages (turns a
//! [`SiteError`] into a friendly page) -> CSRF check (every POST) -> the route.
//! Every page works without JavaScript.

mod account;
mod apps;
pub mod assets;
pub mod brand;
mod catalog;
mod csrf;
mod docs;
mod error;
mod pages;
mod published;
pub mod samples;
pub mod session_store;
mod sign_in;
mod throttle;
mod usage;
mod views;
mod visitor;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{get, post};
use tollgate_core::time::Timestamp;
use tollgate_core::{Settings, Store};
use tower_sessions::cookie::SameSite;
use tower_sessions::cookie::time::Duration as CookieDuration;
use tower_sessions::{Expiry, SessionManagerLayer};

pub use error::SiteError;
pub use throttle::{PER_ACCOUNT, PER_ADDRESS, WINDOW};

use crate::AppState;
use crate::accounts::{Accounts, Mailer, mailer::MailError};
use session_store::DbSessionStore;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tollgate_session";
/// A session ends after this long without a visit.
pub const SESSION_IDLE_DAYS: i64 = 14;
/// How often expired sessions and tokens are removed.
const CLEANUP_EVERY: Duration = Duration::from_secs(600);

/// What the portal's handlers share.
#[derive(Clone, Debug)]
pub struct Site(Arc<SiteInner>);

/// The shared parts.
#[derive(Debug)]
pub struct SiteInner {
    /// Store and gateway URL.
    pub app: AppState,
    /// Account operations.
    pub accounts: Accounts,
    /// Log-in attempt counters.
    pub throttle: throttle::LoginThrottle,
    /// The portal's name, logo and colour.
    pub brand: brand::Brand,
    /// The header a trusted proxy puts the client address in.
    pub client_ip_header: Option<HeaderName>,
    /// Log-in through GitHub, Google or OpenID Connect providers.
    pub sign_in: sign_in::SignIn,
    /// The public APIs, rebuilt when the configuration changes.
    pub published: published::Published,
    /// The gateway's OAuth2 token endpoint, when it issues tokens.
    pub oauth_token_url: Option<String>,
}

impl Deref for Site {
    type Target = SiteInner;

    fn deref(&self) -> &SiteInner {
        &self.0
    }
}

/// Why the portal cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The mail settings are unusable.
    #[error("mail settings (smtp_*): {0}")]
    Mail(#[from] MailError),
    /// The client address header is not a header name.
    #[error("invalid setting portal_client_ip_header: {0}")]
    Header(String),
    /// The logo cannot be used.
    #[error("{0}")]
    Brand(#[from] brand::BrandError),
    /// The HTTP client for sign-in providers cannot be built.
    #[error("sign-in providers: {0}")]
    SignIn(#[from] reqwest::Error),
}

/// The portal's routes, for the portal listener. `portal_url` is where
/// browsers reach it (links in e-mails; `https` makes cookies `Secure`).
pub fn router(app: AppState, settings: &Settings, portal_url: &str) -> Result<Router, StartError> {
    let mailer = Mailer::new(
        settings.smtp.as_ref(),
        &settings.smtp_from,
        settings.data_dir.join("outbox"),
    )?;
    let client_ip_header = settings
        .portal_client_ip_header
        .as_deref()
        .map(|h| HeaderName::try_from(h).map_err(|e| StartError::Header(e.to_string())))
        .transpose()?;
    let site = Site(Arc::new(SiteInner {
        accounts: Accounts::new(app.store.clone(), mailer, portal_url, &settings.portal_name),
        throttle: throttle::LoginThrottle::default(),
        brand: brand::Brand::load(settings)?,
        client_ip_header,
        sign_in: sign_in::SignIn::new(&settings.sign_in_providers, portal_url)?,
        published: published::Published::default(),
        oauth_token_url: settings
            .token_secret
            .as_ref()
            .map(|_| format!("{}/oauth/token", app.gateway_url.trim_end_matches('/'))),
        app,
    }));
    let sessions = SessionManagerLayer::new(DbSessionStore::new(site.app.store.clone()))
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(portal_url.starts_with("https://"))
        .with_expiry(Expiry::OnInactivity(CookieDuration::days(
            SESSION_IDLE_DAYS,
        )));

    Ok(Router::new()
        .route("/", get(pages::home))
        .route("/healthz", get(pages::health))
        .route("/assets/{file}", get(pages::asset))
        .route("/assets/brand/{file}", get(pages::brand_asset))
        .route("/signup", get(account::sign_up_form).post(account::sign_up))
        .route("/signup/check-email", get(account::check_email))
        .route("/verify-email/{token}", get(account::verify_email))
        .route("/login", get(account::log_in_form).post(account::log_in))
        .route("/logout", post(account::log_out))
        .route("/login/{provider}", get(sign_in::start))
        .route("/login/{provider}/callback", get(sign_in::callback))
        .route(
            "/forgot-password",
            get(account::forgot_password_form).post(account::forgot_password),
        )
        .route("/forgot-password/sent", get(account::reset_sent))
        .route(
            "/reset-password/{token}",
            get(account::reset_password_form).post(account::reset_password),
        )
        .route("/account", get(account::account))
        .route("/account/password", post(account::change_password))
        .route("/account/email", post(account::change_email))
        .route("/confirm-email/{token}", get(account::confirm_email))
        // Catalog, API docs, plans (portal-catalog).
        .route("/apis", get(catalog::catalog))
        .route("/apis/{slug}", get(catalog::api))
        .route("/apis/{slug}/subscribe", post(catalog::subscribe))
        .route("/apis/{slug}/keys", post(catalog::new_key))
        .route("/apis/{slug}/try", post(catalog::try_call))
        // Apps, keys, subscriptions and usage (site/apps.rs, site/usage.rs).
        .route("/apps", get(apps::list).post(apps::create))
        .route("/apps/{id}", get(apps::show))
        .route("/apps/{id}/rename", post(apps::rename))
        .route(
            "/apps/{id}/delete",
            get(apps::delete_form).post(apps::delete),
        )
        .route("/apps/{id}/keys", post(apps::create_key))
        .route(
            "/apps/{id}/keys/{key}/rotate",
            get(apps::rotate_form).post(apps::rotate),
        )
        .route(
            "/apps/{id}/keys/{key}/revoke",
            get(apps::revoke_form).post(apps::revoke),
        )
        .route(
            "/apps/{id}/subscriptions/{sub}/cancel",
            get(apps::cancel_form).post(apps::cancel),
        )
        .route("/apps/{id}/usage", get(usage::usage))
        .fallback(pages::not_found)
        .layer(from_fn(csrf::require_token))
        .layer(from_fn_with_state(site.clone(), error::render_error_pages))
        .layer(sessions)
        .layer(map_response(security_headers))
        .with_state(site))
}

/// Headers on every answer: no sniffing, no framing, no referrer leaking a
/// token in a URL, scripts and styles from this origin only, and no caching
/// of pages (they can be personal) unless the route set its own policy.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Removes expired sessions and e-mailed tokens every ten minutes, forever.
pub async fn clean_up_expired(store: Store) {
    let sessions = DbSessionStore::new(store.clone());
    let mut tick = tokio::time::interval(CLEANUP_EVERY);
    loop {
        tick.tick().await;
        use tower_sessions::ExpiredDeletion;
        if let Err(e) = sessions.delete_expired().await {
            tracing::warn!(error = %e, "cannot delete expired sessions");
        }
        // Expired tokens are kept a day so a late click still gets "expired",
        // not a mystery; then they go.
        let day_ago = Timestamp(Timestamp::now().0 - 24 * 3600 * 1000);
        if let Err(e) = store.delete_expired_account_tokens(day_ago).await {
            tracing::warn!(error = %e, "cannot delete expired account tokens");
        }
    }
}
