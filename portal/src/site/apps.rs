//! A developer's apps: create, rename, delete; their keys (issue, shown once;
//! rotate with an overlap; revoke); their subscriptions (list, cancel).
//!
//! Every handler starts from [`owned_app`]: signed-out visitors are sent to
//! log in, and an app (or key, or subscription) that does not exist or belongs
//! to someone else answers the same 404 page, so ids cannot be probed.
//! Destructive actions (delete, revoke, cancel) have a confirmation page of
//! their own, so they work without JavaScript and never happen on one click.
//! Every change the gateway serves goes through the store, which records it in
//! the change log: gateways apply it within a second.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tollgate_core::StoreError;
use tollgate_core::model::{
    ApiKey, App, KeyStatus, NewApp, Plan, Subscription, SubscriptionStatus,
};
use tollgate_core::store::{Account, IssuedKey};
use tollgate_core::time::Timestamp;

use super::Site;
use super::assets;
use super::error::SiteError;
use super::views::{Layout, MessagePage, render};
use super::visitor::{PageForm, Visitor};

/// Most apps one developer may have.
pub const MAX_APPS: usize = 50;
/// Most active keys one app may have.
pub const MAX_ACTIVE_KEYS: usize = 10;

/// 303 See Other: after a form, the browser GETs the next page.
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The signed-in account; a signed-out visitor is sent to log in.
macro_rules! signed_in {
    ($visitor:expr) => {
        match $visitor.account.as_ref() {
            Some(account) => account,
            None => return Ok(see_other("/login")),
        }
    };
}

/// The app `id` when it belongs to `account`; 404 otherwise (unknown and
/// foreign ids look the same).
pub(super) async fn owned_app(site: &Site, account: &Account, id: &str) -> Result<App, SiteError> {
    match site.app.store.get_app(id).await {
        Ok(app) if app.developer_id == account.user.id => Ok(app),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(SiteError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// The key `id` of `app`; 404 when it is another app's or unknown.
async fn key_of(site: &Site, app: &App, id: &str) -> Result<ApiKey, SiteError> {
    match site.app.store.get_key(id).await {
        Ok(k) if k.app_id == app.id => Ok(k),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(SiteError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// The subscription `id` of `app`; 404 when it is another app's or unknown.
async fn subscription_of(site: &Site, app: &App, id: &str) -> Result<Subscription, SiteError> {
    match site.app.store.get_subscription(id).await {
        Ok(s) if s.app_id == app.id => Ok(s),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(SiteError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// A time as people read it: `2026-11-28 13:45 UTC`.
pub(super) fn when(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `?notice=…` after a form; only known values show text.
#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    #[serde(default)]
    notice: String,
}

fn notice_text(notice: &str) -> &'static str {
    match notice {
        "welcome" => {
            "Your address is confirmed and you are logged in. Create your first app to get a key."
        }
        "created" => "Your app is created. Create a key to start calling APIs.",
        "renamed" => "The app is renamed.",
        "deleted" => "The app and its keys are deleted.",
        "key-revoked" => "The key is revoked. Calls with it are refused from now on.",
        "subscription-cancelled" => {
            "The subscription is cancelled. This app's calls to its APIs are refused from now on."
        }
        _ => "",
    }
}

// ---- the list of apps ----------------------------------------------------

/// An app as the list shows it.
pub struct AppRow {
    id: String,
    name: String,
    created: String,
    active_keys: usize,
    live_subscriptions: usize,
}

#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage {
    layout: Layout,
    csrf: String,
    notice: &'static str,
    apps: Vec<AppRow>,
    new_name: String,
    name_error: String,
    max_apps: usize,
}

async fn apps_page(
    site: &Site,
    visitor: &Visitor,
    account: &Account,
    notice: &'static str,
    name: String,
    name_error: String,
) -> Result<Response, SiteError> {
    let store = &site.app.store;
    let mut apps = Vec::new();
    for app in store.list_apps(Some(&account.user.id)).await? {
        let now = Timestamp::now();
        let active_keys = store
            .list_keys(&app.id)
            .await?
            .iter()
            .filter(|k| key_state(k, now) == KeyState::Active)
            .count();
        let live_subscriptions = store
            .list_subscriptions(Some(&app.id))
            .await?
            .iter()
            .filter(|s| s.status != SubscriptionStatus::Cancelled)
            .count();
        apps.push(AppRow {
            id: app.id,
            name: app.name,
            created: when(app.created_at),
            active_keys,
            live_subscriptions,
        });
    }
    let status = if name_error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(render(
        status,
        &AppsPage {
            layout: visitor.layout(site, Some("Your apps")).await?,
            csrf: visitor.csrf().await?,
            notice,
            apps,
            new_name: name,
            name_error,
            max_apps: MAX_APPS,
        },
    ))
}

/// `GET /apps`
pub async fn list(
    State(site): State<Site>,
    visitor: Visitor,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, SiteError> {
    let account = signed_in!(visitor);
    apps_page(
        &site,
        &visitor,
        account,
        notice_text(&q.notice),
        String::new(),
        String::new(),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct NameForm {
    #[serde(default)]
    name: String,
}

/// The message for a refused app name, or an internal error.
fn name_refused(e: StoreError) -> Result<String, SiteError> {
    match e {
        StoreError::Invalid(v) => Ok(format!("The name {}.", v.message)),
        other => Err(other.into()),
    }
}

/// `POST /apps`
pub async fn create(
    State(site): State<Site>,
    visitor: Visitor,
    PageForm(form): PageForm<NameForm>,
) -> Result<Response, SiteError> {
    let account = signed_in!(visitor);
    let existing = site.app.store.list_apps(Some(&account.user.id)).await?;
    if existing.len() >= MAX_APPS {
        let error = format!("You have {MAX_APPS} apps, the most allowed. Delete one first.");
        return apps_page(&site, &visitor, account, "", form.name, error).await;
    }
    let input = NewApp {
        developer_id: account.user.id.clone(),
        name: form.name.clone(),
    };
    match site.app.store.create_app(input).await {
        Ok(app) => {
            tracing::info!(user = %account.user.id, app = %app.id, "app created");
            Ok(see_other(&format!("/apps/{}?notice=created", app.id)))
        }
        Err(e) => {
            let error = name_refused(e)?;
            apps_page(&site, &visitor, account, "", form.name, error).await
        }
    }
}

// ---- one app -------------------------------------------------------------

/// What the gateway does with a key now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Accepted, with no end set.
    Active,
    /// Accepted until a set time (a rotated key in its overlap).
    Expiring,
    /// Past its end: refused.
    Expired,
    /// Revoked: refused.
    Revoked,
}

fn key_state(k: &ApiKey, now: Timestamp) -> KeyState {
    match (k.status, k.expires_at) {
        (KeyStatus::Revoked, _) => KeyState::Revoked,
        (KeyStatus::Active, Some(t)) if t <= now => KeyState::Expired,
        (KeyStatus::Active, Some(_)) => KeyState::Expiring,
        (KeyStatus::Active, None) => KeyState::Active,
    }
}

/// A key as the app page lists it.
pub struct KeyRow {
    id: String,
    prefix: String,
    created: String,
    last_used: String,
    /// `Active`, `Expires …`, `Expired …`, `Revoked …`.
    status: String,
    /// Badge style: `success`, `warning` or `muted`.
    tone: &'static str,
    /// Still accepted (may be rotated or revoked).
    usable: bool,
}

fn key_row(k: &ApiKey, now: Timestamp) -> KeyRow {
    let state = key_state(k, now);
    let (status, tone) = match state {
        KeyState::Active => ("Active".to_owned(), "success"),
        KeyState::Expiring => (
            format!("Works until {}", when(k.expires_at.unwrap_or(now))),
            "warning",
        ),
        KeyState::Expired => (
            format!("Expired {}", when(k.expires_at.unwrap_or(now))),
            "muted",
        ),
        KeyState::Revoked => (
            format!("Revoked {}", when(k.revoked_at.unwrap_or(now))),
            "muted",
        ),
    };
    KeyRow {
        id: k.id.clone(),
        prefix: k.prefix.clone(),
        created: when(k.created_at),
        last_used: k.last_used_at.map_or_else(|| "Never".to_owned(), when),
        status,
        tone,
        usable: matches!(state, KeyState::Active | KeyState::Expiring),
    }
}

/// A subscription as the app page lists it.
pub struct SubscriptionRow {
    id: String,
    apis: String,
    plan: String,
    status: &'static str,
    tone: &'static str,
    since: String,
    live: bool,
}

fn subscription_status(s: SubscriptionStatus) -> (&'static str, &'static str) {
    match s {
        SubscriptionStatus::Active => ("Active", "success"),
        SubscriptionStatus::Pending => ("Waiting for approval", "warning"),
        SubscriptionStatus::Suspended => ("Suspended", "danger"),
        SubscriptionStatus::Cancelled => ("Cancelled", "muted"),
    }
}

/// API names by slug, for listing what plans cover.
pub(super) async fn api_names(site: &Site) -> Result<HashMap<String, String>, SiteError> {
    Ok(site.app.store.api_names().await?.into_iter().collect())
}

fn covered(plan: &Plan, names: &HashMap<String, String>) -> String {
    let list: Vec<&str> = plan
        .apis
        .iter()
        .map(|slug| names.get(slug).map_or(slug.as_str(), String::as_str))
        .collect();
    if list.is_empty() {
        "No APIs".to_owned()
    } else {
        list.join(", ")
    }
}

#[derive(Template)]
#[template(path = "apps_show.html")]
pub struct AppPage {
    layout: Layout,
    csrf: String,
    notice: &'static str,
    app_id: String,
    app_name: String,
    created: String,
    new_name: String,
    name_error: String,
    key_error: String,
    keys: Vec<KeyRow>,
    subscriptions: Vec<SubscriptionRow>,
    gateway_url: String,
}

async fn app_page(
    site: &Site,
    visitor: &Visitor,
    app: &App,
    notice: &'static str,
    (name, name_error): (String, String),
    key_error: String,
) -> Result<Response, SiteError> {
    let store = &site.app.store;
    let now = Timestamp::now();
    let keys = store
        .list_keys(&app.id)
        .await?
        .iter()
        .map(|k| key_row(k, now))
        .collect();
    let names = api_names(site).await?;
    let mut subscriptions = Vec::new();
    for s in store.list_subscriptions(Some(&app.id)).await? {
        let plan = store.get_plan(&s.plan_id).await?;
        let (status, tone) = subscription_status(s.status);
        subscriptions.push(SubscriptionRow {
            id: s.id,
            apis: covered(&plan, &names),
            plan: plan.name,
            status,
            tone,
            since: when(s.created_at),
            live: s.status != SubscriptionStatus::Cancelled,
        });
    }
    // Live subscriptions first, then the most recent.
    subscriptions.sort_by_key(|s| !s.live);
    let status = if name_error.is_empty() && key_error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(render(
        status,
        &AppPage {
            layout: visitor.layout(site, Some(&app.name)).await?,
            csrf: visitor.csrf().await?,
            notice,
            app_id: app.id.clone(),
            app_name: app.name.clone(),
            created: when(app.created_at),
            new_name: if name.is_empty() && name_error.is_empty() {
                app.name.clone()
            } else {
                name
            },
            name_error,
            key_error,
            keys,
            subscriptions,
            gateway_url: site.app.gateway_url.clone(),
        },
    ))
}

/// Resolves the signed-in owner's app, or answers for them.
macro_rules! own_app {
    ($site:expr, $visitor:expr, $id:expr) => {{
        let account = signed_in!($visitor);
        owned_app(&$site, account, &$id).await?
    }};
}

/// `GET /apps/{id}`
pub async fn show(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    app_page(
        &site,
        &visitor,
        &app,
        notice_text(&q.notice),
        Default::default(),
        String::new(),
    )
    .await
}

/// `POST /apps/{id}/rename`
pub async fn rename(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
    PageForm(form): PageForm<NameForm>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    match site.app.store.rename_app(&app.id, &form.name).await {
        Ok(_) => Ok(see_other(&format!("/apps/{}?notice=renamed", app.id))),
        Err(e) => {
            let error = name_refused(e)?;
            app_page(&site, &visitor, &app, "", (form.name, error), String::new()).await
        }
    }
}

/// A confirmation page: what will happen, one button, a way back.
#[derive(Template)]
#[template(path = "apps_confirm.html")]
pub struct ConfirmPage {
    layout: Layout,
    csrf: String,
    heading: String,
    paragraphs: Vec<String>,
    action: String,
    button: String,
    back: String,
    /// Whether the button is the dangerous kind.
    danger: bool,
    /// Why the action cannot be done now (no button then).
    blocked: String,
}

/// `GET /apps/{id}/delete`
pub async fn delete_form(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    delete_page(&site, &visitor, &app, StatusCode::OK).await
}

async fn delete_page(
    site: &Site,
    visitor: &Visitor,
    app: &App,
    status: StatusCode,
) -> Result<Response, SiteError> {
    let live = site
        .app
        .store
        .list_subscriptions(Some(&app.id))
        .await?
        .iter()
        .filter(|s| s.status != SubscriptionStatus::Cancelled)
        .count();
    let blocked = if live > 0 {
        format!(
            "This app has {live} subscription{} still running. Cancel {} on the app's page first, then delete the app.",
            if live == 1 { "" } else { "s" },
            if live == 1 { "it" } else { "them" },
        )
    } else {
        String::new()
    };
    Ok(render(
        status,
        &ConfirmPage {
            layout: visitor
                .layout(site, Some(&format!("Delete {}", app.name)))
                .await?,
            csrf: visitor.csrf().await?,
            heading: format!("Delete “{}”?", app.name),
            paragraphs: vec![
                "Every key of this app stops working within a second, and the app is gone for good. This cannot be undone.".to_owned(),
            ],
            action: format!("/apps/{}/delete", app.id),
            button: "Delete app".to_owned(),
            back: format!("/apps/{}", app.id),
            danger: true,
            blocked,
        },
    ))
}

/// `POST /apps/{id}/delete`
pub async fn delete(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    match site.app.store.delete_app(&app.id).await {
        Ok(()) => {
            tracing::info!(app = %app.id, "app deleted by its developer");
            Ok(see_other("/apps?notice=deleted"))
        }
        // A subscription started meanwhile: show why, with the way forward.
        Err(StoreError::Conflict(_)) => {
            delete_page(&site, &visitor, &app, StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---- keys ----------------------------------------------------------------

/// The page that shows a new key, the only time it is shown.
#[derive(Template)]
#[template(path = "keys_new.html")]
pub struct NewKeyPage {
    layout: Layout,
    app_id: String,
    app_name: String,
    secret: String,
    prefix: String,
    /// For a rotation: the old key's prefix and when it stops working.
    replaced: Option<(String, String)>,
    /// Where calls to one of the app's APIs start, when it can call one.
    example_url: String,
    /// That API's name.
    example_api: String,
    script: &'static str,
}

async fn new_key_page(
    site: &Site,
    visitor: &Visitor,
    app: &App,
    issued: IssuedKey,
    replaced: Option<(String, String)>,
) -> Result<Response, SiteError> {
    let store = &site.app.store;
    let (mut example_url, mut example_api) = (String::new(), String::new());
    for s in store.list_subscriptions(Some(&app.id)).await? {
        if s.status != SubscriptionStatus::Active {
            continue;
        }
        let plan = store.get_plan(&s.plan_id).await?;
        if let Some(slug) = plan.apis.first()
            && let Ok(api) = store.get_api_by_slug(slug).await
        {
            example_url = format!(
                "{}{}",
                site.app.gateway_url.trim_end_matches('/'),
                api.base_path.trim_end_matches('/')
            );
            example_api = api.name;
            break;
        }
    }
    let mut resp = render(
        StatusCode::OK,
        &NewKeyPage {
            layout: visitor.layout(site, Some("Your new key")).await?,
            app_id: app.id.clone(),
            app_name: app.name.clone(),
            secret: issued.secret,
            prefix: issued.record.prefix,
            replaced,
            example_url,
            example_api,
            script: assets::url("copy.js"),
        },
    );
    // The page holds a secret: not stored by the browser, not sent elsewhere.
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// `POST /apps/{id}/keys`: issues a key and shows it once. Answered directly
/// (not redirected) so the key is never stored, not even in the session.
pub async fn create_key(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let now = Timestamp::now();
    let active = site
        .app
        .store
        .list_keys(&app.id)
        .await?
        .iter()
        .filter(|k| {
            key_state(k, now) != KeyState::Revoked && key_state(k, now) != KeyState::Expired
        })
        .count();
    if active >= MAX_ACTIVE_KEYS {
        let error = format!(
            "This app has {MAX_ACTIVE_KEYS} working keys, the most allowed. Revoke one you no longer use first."
        );
        return app_page(&site, &visitor, &app, "", Default::default(), error).await;
    }
    let issued = site.app.store.issue_key(&app.id, None).await?;
    tracing::info!(app = %app.id, key = %issued.record.id, "key issued in the portal");
    new_key_page(&site, &visitor, &app, issued, None).await
}

/// How long a rotated key keeps working: the choices offered.
pub const OVERLAPS: &[(&str, &str, i64)] = &[
    ("0", "Stop at once", 0),
    ("1h", "1 hour", 3_600_000),
    ("24h", "24 hours (recommended)", 86_400_000),
    ("7d", "7 days", 7 * 86_400_000),
];
/// The choice selected unless the developer picks another.
pub const DEFAULT_OVERLAP: &str = "24h";

/// One `<option>` of the overlap choice.
pub struct OverlapChoice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "keys_rotate.html")]
pub struct RotatePage {
    layout: Layout,
    csrf: String,
    app_id: String,
    app_name: String,
    key_id: String,
    prefix: String,
    choices: Vec<OverlapChoice>,
    /// The key already has an end, earlier than some choices.
    ends: String,
}

/// `GET /apps/{id}/keys/{key}/rotate`
pub async fn rotate_form(
    State(site): State<Site>,
    visitor: Visitor,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let key = key_of(&site, &app, &key_id).await?;
    if !key_row(&key, Timestamp::now()).usable {
        return Ok(unusable_key(&site, &app));
    }
    Ok(render(
        StatusCode::OK,
        &RotatePage {
            layout: visitor.layout(&site, Some("Rotate a key")).await?,
            csrf: visitor.csrf().await?,
            app_id: app.id.clone(),
            app_name: app.name.clone(),
            key_id: key.id.clone(),
            prefix: key.prefix.clone(),
            choices: OVERLAPS
                .iter()
                .map(|(value, label, _)| OverlapChoice {
                    value,
                    label,
                    selected: *value == DEFAULT_OVERLAP,
                })
                .collect(),
            ends: key.expires_at.map(when).unwrap_or_default(),
        },
    ))
}

/// The answer for an action on a key that no longer works.
fn unusable_key(site: &Site, app: &App) -> Response {
    render(
        StatusCode::CONFLICT,
        &MessagePage::new(
            &site.brand,
            "warning",
            "This key no longer works",
            &["It was revoked or has expired, so it cannot be rotated or revoked. Create a new key instead."],
        )
        .link(&format!("/apps/{}", app.id), "Back to the app"),
    )
}

#[derive(Debug, Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    overlap: String,
}

/// `POST /apps/{id}/keys/{key}/rotate`: issues the new key (shown once) and
/// sets the old key's end.
pub async fn rotate(
    State(site): State<Site>,
    visitor: Visitor,
    Path((id, key_id)): Path<(String, String)>,
    PageForm(form): PageForm<RotateForm>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let key = key_of(&site, &app, &key_id).await?;
    let Some((_, _, overlap_ms)) = OVERLAPS.iter().find(|(v, _, _)| *v == form.overlap) else {
        return Err(SiteError::BadRequest);
    };
    match site.app.store.rotate_key(&key.id, *overlap_ms).await {
        Ok(issued) => {
            let old = site.app.store.get_key(&key.id).await?;
            tracing::info!(app = %app.id, old = %key.id, new = %issued.record.id, "key rotated in the portal");
            let ends = old.expires_at.map(when).unwrap_or_default();
            new_key_page(&site, &visitor, &app, issued, Some((old.prefix, ends))).await
        }
        Err(StoreError::Conflict(_)) => Ok(unusable_key(&site, &app)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /apps/{id}/keys/{key}/revoke`
pub async fn revoke_form(
    State(site): State<Site>,
    visitor: Visitor,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let key = key_of(&site, &app, &key_id).await?;
    if key.status == KeyStatus::Revoked {
        return Ok(unusable_key(&site, &app));
    }
    Ok(render(
        StatusCode::OK,
        &ConfirmPage {
            layout: visitor.layout(&site, Some("Revoke a key")).await?,
            csrf: visitor.csrf().await?,
            heading: format!("Revoke key {}…?", key.prefix),
            paragraphs: vec![
                format!(
                    "Calls with this key of “{}” are refused within a second. A revoked key never works again.",
                    app.name
                ),
                "To replace a key without an outage, rotate it instead: the old key keeps working for a while.".to_owned(),
            ],
            action: format!("/apps/{}/keys/{}/revoke", app.id, key.id),
            button: "Revoke key".to_owned(),
            back: format!("/apps/{}", app.id),
            danger: true,
            blocked: String::new(),
        },
    ))
}

/// `POST /apps/{id}/keys/{key}/revoke`
pub async fn revoke(
    State(site): State<Site>,
    visitor: Visitor,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let key = key_of(&site, &app, &key_id).await?;
    site.app.store.revoke_key(&key.id).await?;
    tracing::info!(app = %app.id, key = %key.id, "key revoked in the portal");
    Ok(see_other(&format!("/apps/{}?notice=key-revoked", app.id)))
}

// ---- subscriptions -------------------------------------------------------

/// `GET /apps/{id}/subscriptions/{sub}/cancel`
pub async fn cancel_form(
    State(site): State<Site>,
    visitor: Visitor,
    Path((id, sub_id)): Path<(String, String)>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let sub = subscription_of(&site, &app, &sub_id).await?;
    if sub.status == SubscriptionStatus::Cancelled {
        return Ok(see_other(&format!("/apps/{}", app.id)));
    }
    let plan = site.app.store.get_plan(&sub.plan_id).await?;
    let apis = covered(&plan, &api_names(&site).await?);
    let (heading, button, first) = if sub.status == SubscriptionStatus::Pending {
        (
            format!("Withdraw the request for “{}”?", plan.name),
            "Withdraw request",
            format!(
                "The request of “{}” for the plan “{}” ({apis}) is withdrawn.",
                app.name, plan.name
            ),
        )
    } else {
        (
            format!("Cancel the subscription to “{}”?", plan.name),
            "Cancel subscription",
            format!(
                "“{}” loses access to {apis} within a second: its calls are refused with 403.",
                app.name
            ),
        )
    };
    Ok(render(
        StatusCode::OK,
        &ConfirmPage {
            layout: visitor.layout(&site, Some("Cancel a subscription")).await?,
            csrf: visitor.csrf().await?,
            heading,
            paragraphs: vec![
                first,
                "Cancelling is final. To use these APIs again, subscribe again from the API's page.".to_owned(),
            ],
            action: format!("/apps/{}/subscriptions/{}/cancel", app.id, sub.id),
            button: button.to_owned(),
            back: format!("/apps/{}", app.id),
            danger: true,
            blocked: String::new(),
        },
    ))
}

/// `POST /apps/{id}/subscriptions/{sub}/cancel`
pub async fn cancel(
    State(site): State<Site>,
    visitor: Visitor,
    Path((id, sub_id)): Path<(String, String)>,
) -> Result<Response, SiteError> {
    let app = own_app!(site, visitor, id);
    let sub = subscription_of(&site, &app, &sub_id).await?;
    site.app
        .store
        .set_subscription_status(&sub.id, SubscriptionStatus::Cancelled)
        .await?;
    tracing::info!(app = %app.id, subscription = %sub.id, "subscription cancelled in the portal");
    Ok(see_other(&format!(
        "/apps/{}?notice=subscription-cancelled",
        app.id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(status: KeyStatus, expires_at: Option<i64>) -> ApiKey {
        ApiKey {
            id: "key_1".into(),
            app_id: "app_1".into(),
            prefix: "tg_live_AbCd".into(),
            status,
            created_at: Timestamp(0),
            last_used_at: None,
            expires_at: expires_at.map(Timestamp),
            revoked_at: None,
        }
    }

    #[test]
    fn key_states() {
        let now = Timestamp(1_000);
        assert_eq!(
            key_state(&key(KeyStatus::Active, None), now),
            KeyState::Active
        );
        assert_eq!(
            key_state(&key(KeyStatus::Active, Some(2_000)), now),
            KeyState::Expiring
        );
        assert_eq!(
            key_state(&key(KeyStatus::Active, Some(1_000)), now),
            KeyState::Expired
        );
        assert_eq!(
            key_state(&key(KeyStatus::Revoked, Some(2_000)), now),
            KeyState::Revoked
        );
        assert!(key_row(&key(KeyStatus::Active, Some(2_000)), now).usable);
        assert!(!key_row(&key(KeyStatus::Revoked, None), now).usable);
    }

    #[test]
    fn the_default_overlap_is_offered() {
        assert!(OVERLAPS.iter().any(|(v, _, _)| *v == DEFAULT_OVERLAP));
    }
}
