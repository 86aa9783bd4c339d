//! The catalog and API pages: `/apis` lists the published APIs (search by
//! name and tag, on the server); `/apis/{slug}` shows one API's docs from
//! its OpenAPI document with samples in eight languages, its authentication
//! and its plans; developers subscribe an app, create a key shown once in the
//! samples, and try calls through the gateway.
//!
//! Authorization: apps are looked up among the signed-in developer's own; an
//! unknown or foreign app id answers the same 404. Private APIs are shown
//! only to developers with an app subscribed to a plan covering them.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tollgate_core::model::{
    Api, App, KeyStatus, Plan, PlanStatus, RateScope, SubscriptionStatus, Visibility,
};

use super::Site;
use super::docs::{self, ApiDocs, Call};
use super::error::SiteError;
use super::samples::{self, Language, SampleRequest};
use super::views::{Layout, MessagePage, render};
use super::visitor::{PageForm, Visitor};
use crate::subscriptions::{self, Offer, SubscribeError};

/// What samples put where a key goes when the portal cannot show one.
pub const KEY_PLACEHOLDER: &str = "YOUR_API_KEY";
/// The header samples send the key in.
const KEY_HEADER: &str = "x-api-key";
/// Largest response body the try-it console shows.
const TRY_BODY_LIMIT: usize = 64 * 1024;
/// How long the try-it console waits for the gateway.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

// ---- the catalog -----------------------------------------------------------

/// An API in the catalog.
pub struct CatalogEntry {
    name: String,
    slug: String,
    base_url: String,
    summary: String,
    tags: Vec<String>,
    keyless: bool,
}

/// A tag to filter by.
pub struct TagLink {
    name: String,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "catalog.html")]
pub struct CatalogPage {
    layout: Layout,
    q: String,
    tag: String,
    tags: Vec<TagLink>,
    apis: Vec<CatalogEntry>,
    total: usize,
}

/// `?q=…&tag=…`
#[derive(Debug, Deserialize, Default)]
pub struct CatalogQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
}

/// Shortens text to about `max` characters, at a word.
fn shorten(text: &str, max: usize) -> String {
    let first = text.split("\n\n").next().unwrap_or_default().trim();
    if first.chars().count() <= max {
        return first.to_owned();
    }
    let cut: String = first.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(a, _)| a);
    format!("{cut}…")
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    let s = s.finish();
    if s.is_empty() { s } else { format!("?{s}") }
}

/// `GET /apis`
pub async fn catalog(
    State(site): State<Site>,
    visitor: Visitor,
    Query(query): Query<CatalogQuery>,
) -> Result<Response, SiteError> {
    let q = query.q.trim().to_owned();
    let tag = query.tag.trim().to_owned();
    let needle = q.to_lowercase();
    let listing = site.published.get(&site.app.store).await?;
    let mut all_tags: Vec<String> = Vec::new();
    let mut apis = Vec::new();
    for listed in &listing.apis {
        let (api, tags, summary) = (&listed.api, &listed.tags, &listed.summary);
        for t in tags {
            if !all_tags.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                all_tags.push(t.clone());
            }
        }
        let matches_tag = tag.is_empty() || tags.iter().any(|t| t.eq_ignore_ascii_case(&tag));
        let matches_text = needle.is_empty()
            || api.name.to_lowercase().contains(&needle)
            || api.slug.contains(&needle)
            || summary.to_lowercase().contains(&needle)
            || tags.iter().any(|t| t.to_lowercase().contains(&needle));
        if matches_tag && matches_text {
            apis.push(CatalogEntry {
                name: api.name.clone(),
                slug: api.slug.clone(),
                base_url: format!("{}{}", gateway_base(&site, api), api.base_path),
                summary: shorten(summary, 240),
                tags: tags.clone(),
                keyless: api.policies.keyless,
            });
        }
    }
    all_tags.sort_by_key(|t| t.to_lowercase());
    let tags = all_tags
        .into_iter()
        .map(|t| TagLink {
            href: format!("/apis{}", query_string(&[("q", &q), ("tag", &t)])),
            current: t.eq_ignore_ascii_case(&tag),
            name: t,
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &CatalogPage {
            layout: visitor.layout(&site, Some("APIs")).await?,
            q,
            tag,
            tags,
            apis,
            total: listing.apis.len(),
        },
    ))
}

// ---- one API -----------------------------------------------------------------

/// The gateway's base URL for `api`: the configured gateway URL, on the
/// API's first host name when it is bound to hosts.
fn gateway_base(site: &Site, api: &Api) -> String {
    let base = site.app.gateway_url.trim_end_matches('/');
    match api.hosts.first() {
        Some(host) => match url::Url::parse(base) {
            Ok(mut u) => match u.set_host(Some(host)) {
                Ok(()) => u.as_str().trim_end_matches('/').to_owned(),
                Err(_) => base.to_owned(),
            },
            Err(_) => base.to_owned(),
        },
        None => base.to_owned(),
    }
}

/// One way to authenticate.
pub struct AuthMethod {
    title: String,
    detail: String,
    example: String,
}

fn auth_methods(site: &Site, api: &Api) -> Vec<AuthMethod> {
    if api.policies.keyless {
        return vec![AuthMethod {
            title: "No key needed".into(),
            detail: "Calls to this API need no credentials.".into(),
            example: String::new(),
        }];
    }
    let mut methods = vec![AuthMethod {
        title: "API key".into(),
        detail: "Send one of your app's keys in the x-api-key header (the apikey header and Authorization: Bearer work too). The gateway removes it before the call reaches the API.".into(),
        example: format!("{KEY_HEADER}: {KEY_PLACEHOLDER}"),
    }];
    if let Some(jwt) = &api.policies.jwt {
        let mut detail = format!(
            "Send a JWT as Authorization: Bearer <token>. Tokens must be issued by {}",
            jwt.issuer
        );
        if let Some(aud) = &jwt.audience {
            detail.push_str(&format!(" for the audience {aud}"));
        }
        detail.push_str(&format!(
            ", and their {} claim must hold your app's id (app_…).",
            jwt.app_claim
        ));
        methods.push(AuthMethod {
            title: "JWT bearer token".into(),
            detail,
            example: "Authorization: Bearer <token>".into(),
        });
    }
    if let Some(token_url) = &site.oauth_token_url {
        methods.push(AuthMethod {
            title: "OAuth2 client credentials".into(),
            detail: format!(
                "Ask {token_url} for an access token with grant_type=client_credentials, your app's id as the client id and its client secret; then send it as Authorization: Bearer <access_token>."
            ),
            example: format!(
                "curl -u 'APP_ID:CLIENT_SECRET' -d grant_type=client_credentials {token_url}"
            ),
        });
    }
    methods
}

/// A plan as the API page shows it.
pub struct PlanView {
    id: String,
    name: String,
    price: String,
    included: String,
    rate_limits: Vec<String>,
    overage: String,
    offer: Offer,
    /// The developer's apps on this plan: (app name, status).
    subscribed: Vec<(String, String)>,
    /// The developer's apps that can still subscribe: (id, name).
    can_subscribe: Vec<(String, String)>,
}

impl PlanView {
    /// Subscribing waits for an admin.
    pub fn needs_approval(&self) -> bool {
        self.offer == Offer::NeedsApproval
    }

    /// A paid plan (not offered until billing exists).
    pub fn is_paid(&self) -> bool {
        self.offer == Offer::BillingNotConfigured
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn plan_view(plan: &Plan) -> PlanView {
    let interval = plan.billing_interval.as_str();
    let price = if plan.price.is_free() {
        "Free".to_owned()
    } else {
        format!("{} per {interval}", plan.price)
    };
    let included = match plan.included_calls {
        Some(n) => format!("{} calls per {interval}", thousands(n)),
        None => "Unlimited calls".to_owned(),
    };
    let rate_limits = plan
        .rate_limits
        .iter()
        .map(|l| {
            let per = match l.per {
                RateScope::Key => "per key",
                RateScope::App => "per app",
            };
            let mut s = format!(
                "{} calls per {} {per}",
                thousands(i64::from(l.limit)),
                l.window
            );
            if let Some(b) = l.burst
                && b != l.limit
            {
                s.push_str(&format!(", bursts of {}", thousands(i64::from(b))));
            }
            s
        })
        .collect();
    let overage = match (plan.included_calls, plan.overage) {
        (None, _) => String::new(),
        (Some(_), true) => {
            "Calls beyond the included ones still pass and are billed as overage.".into()
        }
        (Some(_), false) => {
            "Calls beyond the included ones are refused until the next period.".into()
        }
    };
    PlanView {
        id: plan.id.clone(),
        name: plan.name.clone(),
        price,
        included,
        rate_limits,
        overage,
        offer: subscriptions::offer(plan),
        subscribed: Vec::new(),
        can_subscribe: Vec::new(),
    }
}

/// A sample in one language.
pub struct SampleView {
    id: &'static str,
    label: &'static str,
    code: String,
    open: bool,
}

/// An operation with its samples and try-it defaults.
pub struct OperationView {
    doc: docs::OperationDoc,
    samples: Vec<SampleView>,
    try_path: String,
    body_type: String,
    body_text: String,
}

/// Operations under a tag.
pub struct GroupView {
    name: String,
    description: String,
    anchor: String,
    operations: Vec<OperationView>,
}

/// A link choosing the samples' language.
pub struct LangLink {
    label: &'static str,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "api.html")]
pub struct ApiPage {
    layout: Layout,
    csrf: String,
    signed_in: bool,
    name: String,
    slug: String,
    base_url: String,
    description: String,
    doc_title: String,
    version: String,
    keyless: bool,
    auth: Vec<AuthMethod>,
    docs_error: String,
    has_docs: bool,
    groups: Vec<GroupView>,
    generic_samples: Vec<SampleView>,
    lang_links: Vec<LangLink>,
    plans: Vec<PlanView>,
    apps: Vec<(String, String, bool)>,
    app_id: String,
    app_name: String,
    key_prefixes: Vec<String>,
    new_key: String,
    try_key: String,
    notice: &'static str,
    methods: &'static [&'static str],
    script: &'static str,
}

/// `?app=…&lang=…&notice=…`
#[derive(Debug, Deserialize, Default)]
pub struct ApiQuery {
    #[serde(default)]
    app: String,
    #[serde(default)]
    lang: String,
    #[serde(default)]
    notice: String,
}

fn notice_text(notice: &str) -> &'static str {
    match notice {
        "subscribed" => "Your app is subscribed. Its keys work on this API within a second.",
        "requested" => {
            "Your request is sent. The subscription is pending until the API's team approves it; we will e-mail you."
        }
        "already" => "That app already has a subscription to this plan.",
        _ => "",
    }
}

/// The API behind `slug`, if this visitor may see it.
async fn visible_api(site: &Site, visitor: &Visitor, slug: &str) -> Result<Api, SiteError> {
    let api = match site.app.store.get_api_by_slug(slug).await {
        Ok(a) => a,
        Err(tollgate_core::StoreError::NotFound { .. }) => return Err(SiteError::NotFound),
        Err(e) => return Err(e.into()),
    };
    if api.visibility == Visibility::Public {
        return Ok(api);
    }
    // A private API: only for developers already subscribed to a plan covering it.
    let Some(account) = &visitor.account else {
        return Err(SiteError::NotFound);
    };
    let store = &site.app.store;
    let plans: HashMap<String, Plan> = store
        .list_plans()
        .await?
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    for app in store.list_apps(Some(&account.user.id)).await? {
        for sub in store.list_subscriptions(Some(&app.id)).await? {
            if sub.status != SubscriptionStatus::Cancelled
                && plans
                    .get(&sub.plan_id)
                    .is_some_and(|p| p.apis.contains(&api.slug))
            {
                return Ok(api);
            }
        }
    }
    Err(SiteError::NotFound)
}

/// The signed-in developer's apps, or none.
async fn own_apps(site: &Site, visitor: &Visitor) -> Result<Vec<App>, SiteError> {
    match &visitor.account {
        Some(a) => Ok(site.app.store.list_apps(Some(&a.user.id)).await?),
        None => Ok(Vec::new()),
    }
}

/// Picks the app named by `wanted` among `apps` (404 for anyone else's or
/// an unknown one), or the first.
fn pick_app<'a>(apps: &'a [App], wanted: &str) -> Result<Option<&'a App>, SiteError> {
    if wanted.is_empty() {
        return Ok(apps.first());
    }
    apps.iter()
        .find(|a| a.id == wanted)
        .map(Some)
        .ok_or(SiteError::NotFound)
}

fn sample_views(req: &SampleRequest, lang: Language) -> Vec<SampleView> {
    samples::all(req)
        .into_iter()
        .map(|s| SampleView {
            id: s.language.id(),
            label: s.language.label(),
            open: s.language == lang,
            code: s.code,
        })
        .collect()
}

fn sample_request(base_url: &str, call: &Call, method: &str, key: Option<&str>) -> SampleRequest {
    let mut url = format!("{base_url}{}", call.path);
    if !call.query.is_empty() {
        url.push('?');
        url.push_str(&call.query);
    }
    let mut headers = Vec::new();
    if let Some(k) = key {
        headers.push((KEY_HEADER.to_owned(), k.to_owned()));
    }
    headers.extend(call.headers.iter().cloned());
    SampleRequest {
        method: method.to_owned(),
        url,
        headers,
        body: call.body.clone(),
    }
}

/// Everything the API page needs, for `app` (the developer's choice) and
/// with `new_key` (a secret just created, shown once).
async fn api_page(
    site: &Site,
    visitor: &Visitor,
    api: Api,
    query: &ApiQuery,
    new_key: Option<(String, String)>,
) -> Result<ApiPage, SiteError> {
    let store = &site.app.store;
    let apps = own_apps(site, visitor).await?;
    let wanted = new_key.as_ref().map_or(query.app.as_str(), |(app, _)| app);
    let app = pick_app(&apps, wanted)?;
    let key_prefixes = match app {
        Some(a) => store
            .list_keys(&a.id)
            .await?
            .into_iter()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| format!("{}…", k.prefix))
            .collect(),
        None => Vec::new(),
    };
    let lang = Language::ALL
        .into_iter()
        .find(|l| l.id() == query.lang)
        .unwrap_or(Language::Curl);
    let key = if api.policies.keyless {
        None
    } else {
        Some(
            new_key
                .as_ref()
                .map_or(KEY_PLACEHOLDER, |(_, secret)| secret.as_str()),
        )
    };
    let base_url = format!("{}{}", gateway_base(site, &api), api.base_path);

    let (docs, docs_error): (Option<ApiDocs>, String) = match &api.openapi {
        Some(doc) => match docs::read(doc) {
            Ok(d) => (Some(d), String::new()),
            Err(e) => {
                tracing::warn!(api = %api.id, error = %e.0, "cannot read the API's OpenAPI document");
                (None, e.0)
            }
        },
        None => (None, String::new()),
    };
    let (title_description, doc_title, version, groups) = match docs {
        Some(d) => {
            let groups = d
                .groups
                .into_iter()
                .map(|g| GroupView {
                    name: g.name,
                    description: g.description,
                    anchor: g.anchor,
                    operations: g
                        .operations
                        .into_iter()
                        .map(|op| {
                            let req = sample_request(&base_url, &op.call, &op.method, key);
                            let try_path = if op.call.query.is_empty() {
                                op.call.path.clone()
                            } else {
                                format!("{}?{}", op.call.path, op.call.query)
                            };
                            let (body_type, body_text) = op.call.body.clone().unwrap_or_default();
                            OperationView {
                                samples: sample_views(&req, lang),
                                try_path,
                                body_type,
                                body_text,
                                doc: op,
                            }
                        })
                        .collect(),
                })
                .collect::<Vec<_>>();
            (d.description, d.title, d.version, groups)
        }
        None => (String::new(), String::new(), String::new(), Vec::new()),
    };
    let generic = sample_request(
        &base_url,
        &Call {
            path: "/".into(),
            ..Call::default()
        },
        "GET",
        key,
    );

    // Plans covering the API, with the developer's subscriptions.
    let mut plans: Vec<PlanView> = Vec::new();
    let covering: Vec<Plan> = store
        .list_plans()
        .await?
        .into_iter()
        .filter(|p| p.status == PlanStatus::Active && p.apis.contains(&api.slug))
        .collect();
    let mut subs_by_plan: HashMap<String, Vec<(String, String, SubscriptionStatus)>> =
        HashMap::new();
    for a in &apps {
        for s in store.list_subscriptions(Some(&a.id)).await? {
            if s.status != SubscriptionStatus::Cancelled {
                subs_by_plan.entry(s.plan_id).or_default().push((
                    a.id.clone(),
                    a.name.clone(),
                    s.status,
                ));
            }
        }
    }
    for p in &covering {
        let mut view = plan_view(p);
        let subs = subs_by_plan.remove(&p.id).unwrap_or_default();
        view.subscribed = subs
            .iter()
            .map(|(_, name, status)| (name.clone(), status.as_str().to_owned()))
            .collect();
        view.can_subscribe = apps
            .iter()
            .filter(|a| !subs.iter().any(|(id, _, _)| *id == a.id))
            .map(|a| (a.id.clone(), a.name.clone()))
            .collect();
        plans.push(view);
    }

    let doc_title = if doc_title == api.name {
        String::new()
    } else {
        doc_title
    };
    let app_id = app.map(|a| a.id.clone()).unwrap_or_default();
    let lang_links = Language::ALL
        .into_iter()
        .map(|l| LangLink {
            label: l.label(),
            href: format!(
                "/apis/{}{}#samples",
                api.slug,
                query_string(&[("app", &app_id), ("lang", l.id())])
            ),
            current: l == lang,
        })
        .collect();
    let description = if title_description.is_empty() {
        String::new()
    } else {
        title_description
    };
    let csrf = if visitor.account.is_some() {
        visitor.csrf().await?
    } else {
        String::new()
    };
    let new_secret = new_key.map(|(_, s)| s).unwrap_or_default();
    Ok(ApiPage {
        layout: visitor.layout(site, Some(&api.name)).await?,
        csrf,
        signed_in: visitor.account.is_some(),
        auth: auth_methods(site, &api),
        has_docs: !groups.is_empty(),
        docs_error,
        groups,
        generic_samples: sample_views(&generic, lang),
        lang_links,
        plans,
        apps: apps
            .iter()
            .map(|a| (a.id.clone(), a.name.clone(), a.id == app_id))
            .collect(),
        app_name: app.map(|a| a.name.clone()).unwrap_or_default(),
        app_id,
        key_prefixes,
        try_key: new_secret.clone(),
        new_key: new_secret,
        notice: notice_text(&query.notice),
        methods: METHODS,
        script: super::assets::url("copy.js"),
        name: api.name,
        slug: api.slug,
        base_url,
        description,
        doc_title,
        version,
        keyless: api.policies.keyless,
    })
}

/// `GET /apis/{slug}`
pub async fn api(
    State(site): State<Site>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Query(query): Query<ApiQuery>,
) -> Result<Response, SiteError> {
    let api = visible_api(&site, &visitor, &slug).await?;
    let page = api_page(&site, &visitor, api, &query, None).await?;
    Ok(render(StatusCode::OK, &page))
}

fn log_in_first() -> Response {
    Redirect::to("/login").into_response()
}

/// The app/plan form.
#[derive(Debug, Deserialize)]
pub struct SubscribeForm {
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    plan_id: String,
}

/// `POST /apis/{slug}/subscribe`: a free plan subscribes at once, one that
/// needs approval becomes a pending request.
pub async fn subscribe(
    State(site): State<Site>,
    visitor: Visitor,
    Path(slug): Path<String>,
    PageForm(form): PageForm<SubscribeForm>,
) -> Result<Response, SiteError> {
    let Some(account) = &visitor.account else {
        return Ok(log_in_first());
    };
    let api = visible_api(&site, &visitor, &slug).await?;
    let back = |notice: &str| {
        Redirect::to(&format!(
            "/apis/{}{}#plans",
            api.slug,
            query_string(&[("app", &form.app_id), ("notice", notice)])
        ))
        .into_response()
    };
    match subscriptions::subscribe(
        &site.app.store,
        &account.user.id,
        &form.app_id,
        &form.plan_id,
        &api.slug,
    )
    .await
    {
        Ok(s) if s.status == SubscriptionStatus::Pending => {
            tracing::info!(subscription = %s.id, app = %s.app_id, plan = %s.plan_id, "subscription requested");
            Ok(back("requested"))
        }
        Ok(s) => {
            tracing::info!(subscription = %s.id, app = %s.app_id, plan = %s.plan_id, "subscribed");
            Ok(back("subscribed"))
        }
        Err(SubscribeError::AlreadySubscribed) => Ok(back("already")),
        Err(SubscribeError::NotFound) => Err(SiteError::NotFound),
        Err(SubscribeError::BillingNotConfigured) => Ok(render(
            StatusCode::CONFLICT,
            &MessagePage::new(
                &site.brand,
                "warning",
                "Billing is not configured yet",
                &["This plan is paid, and payments are not set up on this portal yet. Pick a free plan, or ask the team running this portal."],
            )
            .link(&format!("/apis/{}#plans", api.slug), "Back to the plans"),
        )),
        Err(SubscribeError::Store(e)) => Err(e.into()),
    }
}

/// The app to create a key for.
#[derive(Debug, Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    lang: String,
}

/// `POST /apis/{slug}/keys`: creates a key for one of the developer's apps
/// and shows the API page with the new secret in every sample, once. The
/// page is the answer itself (not a redirect), so the secret is never stored
/// anywhere but as its hash.
pub async fn new_key(
    State(site): State<Site>,
    visitor: Visitor,
    Path(slug): Path<String>,
    PageForm(form): PageForm<NewKeyForm>,
) -> Result<Response, SiteError> {
    if visitor.account.is_none() {
        return Ok(log_in_first());
    }
    let api = visible_api(&site, &visitor, &slug).await?;
    if api.policies.keyless || form.app_id.is_empty() {
        return Err(SiteError::NotFound);
    }
    let apps = own_apps(&site, &visitor).await?;
    let app = pick_app(&apps, &form.app_id)?.ok_or(SiteError::NotFound)?;
    let issued = site.app.store.issue_key(&app.id, None).await?;
    tracing::info!(key = %issued.record.id, app = %app.id, "key created from the API page");
    let query = ApiQuery {
        app: app.id.clone(),
        lang: form.lang,
        notice: String::new(),
    };
    let page = api_page(
        &site,
        &visitor,
        api,
        &query,
        Some((app.id.clone(), issued.secret)),
    )
    .await?;
    Ok(render(StatusCode::CREATED, &page))
}

// ---- try it ----------------------------------------------------------------------

/// A call to send through the gateway.
#[derive(Debug, Deserialize)]
pub struct TryForm {
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    operation: String,
}

/// What the gateway answered.
pub struct TryAnswer {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: String,
    truncated: bool,
}

#[derive(Template)]
#[template(path = "api_try.html")]
pub struct TryPage {
    layout: Layout,
    csrf: String,
    name: String,
    slug: String,
    base_url: String,
    method: String,
    path: String,
    key: String,
    content_type: String,
    body: String,
    operation: String,
    keyless: bool,
    error: String,
    answer: Option<TryAnswer>,
    methods: &'static [&'static str],
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TRY_TIMEOUT)
        .build()
        .unwrap_or_default()
});

/// Checks a path typed into the try-it form: it stays under the API's base
/// path on the gateway (no scheme, host, `..` or fragment).
fn checked_path(path: &str) -> Result<String, &'static str> {
    let path = path.trim();
    if !path.starts_with('/') || path.starts_with("//") {
        return Err("The path must start with a single /, e.g. /users/42.");
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) || path.contains('#') {
        return Err("The path cannot contain spaces or #; percent-encode them (%20, %23).");
    }
    let only_path = path.split('?').next().unwrap_or_default();
    if only_path.split('/').any(|seg| {
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    }) {
        return Err("The path cannot contain . or .. segments.");
    }
    Ok(path.to_owned())
}

async fn send_try(
    site: &Site,
    api: &Api,
    method: &str,
    form: &TryForm,
    path: &str,
) -> Result<TryAnswer, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    // The call goes to the gateway's own address; a host-bound API is
    // reached by its host name in the Host header.
    let url = format!(
        "{}{}{path}",
        site.app.gateway_url.trim_end_matches('/'),
        api.base_path
    );
    let mut req = HTTP.request(method.clone(), &url);
    if let Some(host) = api.hosts.first() {
        let port = url::Url::parse(&site.app.gateway_url)
            .ok()
            .and_then(|u| u.port())
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        req = req.header(reqwest::header::HOST, format!("{host}{port}"));
    }
    let key = form.key.trim();
    if !key.is_empty() {
        req = req.header(KEY_HEADER, key);
    }
    if !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD) && !form.body.is_empty() {
        let ct = if form.content_type.trim().is_empty() {
            "application/json"
        } else {
            form.content_type.trim()
        };
        req = req
            .header(reqwest::header::CONTENT_TYPE, ct)
            .body(form.body.clone());
    }
    let mut resp = req.send().await.map_err(|e| {
        tracing::warn!(error = %e, url, "try-it: gateway unreachable");
        "The gateway did not answer. Try again in a moment.".to_owned()
    })?;
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("The answer broke off: {e}"))?
    {
        let room = TRY_BODY_LIMIT - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut body = String::from_utf8_lossy(&bytes).into_owned();
    // Pretty-print JSON answers.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
        && let Ok(pretty) = serde_json::to_string_pretty(&v)
    {
        body = pretty;
    }
    Ok(TryAnswer {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or_default().to_owned(),
        headers,
        body,
        truncated,
    })
}

/// `POST /apis/{slug}/try`: sends the call through the gateway from the
/// portal (no browser CORS involved) and shows status, headers and body.
pub async fn try_call(
    State(site): State<Site>,
    visitor: Visitor,
    Path(slug): Path<String>,
    PageForm(form): PageForm<TryForm>,
) -> Result<Response, SiteError> {
    if visitor.account.is_none() {
        return Ok(log_in_first());
    }
    let api = visible_api(&site, &visitor, &slug).await?;
    let method = form.method.trim().to_ascii_uppercase();
    let (answer, error, status) = if !METHODS.contains(&method.as_str()) {
        (
            None,
            "Pick a method from the list.".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    } else {
        match checked_path(&form.path) {
            Err(e) => (None, e.to_owned(), StatusCode::UNPROCESSABLE_ENTITY),
            Ok(path) => match send_try(&site, &api, &method, &form, &path).await {
                Ok(a) => (Some(a), String::new(), StatusCode::OK),
                Err(e) => (None, e, StatusCode::BAD_GATEWAY),
            },
        }
    };
    let page = TryPage {
        layout: visitor
            .layout(&site, Some(&format!("Try {}", api.name)))
            .await?,
        csrf: visitor.csrf().await?,
        base_url: format!("{}{}", gateway_base(&site, &api), api.base_path),
        name: api.name,
        slug: api.slug,
        method: if METHODS.contains(&method.as_str()) {
            method
        } else {
            "GET".into()
        },
        path: form.path,
        key: form.key,
        content_type: form.content_type,
        body: form.body,
        operation: form.operation,
        keyless: api.policies.keyless,
        error,
        answer,
        methods: METHODS,
    };
    Ok(render(status, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_paths_stay_under_the_api() {
        assert_eq!(checked_path(" /users/42?x=1 "), Ok("/users/42?x=1".into()));
        for bad in [
            "users",
            "//evil.example/x",
            "/a/../b",
            "/a b",
            "/a#b",
            "/%2E%2E/x",
            "/.%2e/x",
            "/%2e/x",
            "/./a",
        ] {
            assert!(checked_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_and_text_are_shortened_for_people() {
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(shorten("one two three", 7), "one…");
        assert_eq!(shorten("first\n\nsecond", 100), "first");
    }
}
