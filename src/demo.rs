//! `tollgate up --demo`: a sample upstream inside the binary and a complete
//! demo setup (API, plan, developer, app, subscription, key), so a first call
//! through the gateway works on a fresh machine without network.
//!
//! The demo's ids, its key and its generated admin token are kept in
//! `demo.json` in the data dir (readable by the owner only), so a second run
//! on the same data dir reuses them instead of piling up new objects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_core::key::{KeyHash, random_token};
use tollgate_core::model::{
    ApiPatch, KeyStatus, NewApi, NewApp, NewPlan, NewSubscription, NewUser, Role,
    SubscriptionStatus,
};
use tollgate_core::{Store, StoreError};

const DEMO_SLUG: &str = "demo";
const DEMO_EMAIL: &str = "demo@tollgate.local";
const STATE_FILE: &str = "demo.json";

/// What the demo created, remembered across runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DemoState {
    /// Admin token generated for the demo (used only when none is configured).
    pub admin_token: String,
    /// The demo plan.
    pub plan_id: String,
    /// The demo app.
    pub app_id: String,
    /// The demo key's id.
    pub key_id: String,
    /// The demo key itself.
    pub key: String,
}

impl DemoState {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(STATE_FILE)
    }

    fn load(data_dir: &Path) -> Self {
        std::fs::read(Self::path(data_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let text = serde_json::to_vec_pretty(self)?;
        write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The sample upstream: a few JSON endpoints.
pub async fn start_sample_upstream() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/weather", get(weather))
        .fallback(|| async { axum::Json(json!({"message": "Tollgate demo upstream", "try": ["/hello", "/weather?city=Paris"]})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the demo upstream on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

async fn hello() -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "message": "Hello from the Tollgate demo API",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}

#[derive(Deserialize)]
struct City {
    city: Option<String>,
}

async fn weather(Query(q): Query<City>) -> axum::Json<serde_json::Value> {
    let city = q.city.unwrap_or_else(|| "Paris".to_owned());
    // A stable pseudo-forecast derived from the name, so repeated calls agree.
    let seed = city
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let conditions = ["sunny", "cloudy", "rain", "wind"][(seed % 4) as usize];
    axum::Json(json!({
        "city": city,
        "temperature_c": (seed % 35) as i32 - 5,
        "conditions": conditions,
    }))
}

/// Creates what is missing of the demo setup (pointing the demo API at
/// `upstream`) and returns the state to print.
pub async fn seed(
    store: &Store,
    data_dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<DemoState> {
    let mut state = DemoState::load(data_dir);
    if state.admin_token.is_empty() {
        state.admin_token = random_token();
    }
    let upstream_url = format!("http://{upstream}");

    // The API: reuse it, pointing it at this run's sample upstream.
    match store.get_api_by_slug(DEMO_SLUG).await {
        Ok(api) => {
            store
                .update_api(
                    &api.id,
                    ApiPatch {
                        upstreams: Some(vec![upstream_url]),
                        ..Default::default()
                    },
                )
                .await?;
        }
        Err(StoreError::NotFound { .. }) => {
            store
                .create_api(NewApi {
                    name: "Demo API".into(),
                    slug: DEMO_SLUG.into(),
                    base_path: "/demo".into(),
                    hosts: vec![],
                    upstreams: vec![upstream_url],
                    visibility: None,
                    openapi: Some(demo_openapi()),
                    policies: None,
                })
                .await?;
        }
        Err(e) => return Err(e.into()),
    }

    if store.get_plan(&state.plan_id).await.is_err() {
        let plan = store
            .create_plan(NewPlan {
                name: "Demo Free".into(),
                apis: vec![DEMO_SLUG.into()],
                price_minor: Some(0),
                currency: None,
                billing_interval: None,
                included_calls: Some(10_000),
                rate_limits: None,
                overage: None,
                quota_anchor: None,
                approval_required: None,
                status: None,
            })
            .await?;
        state.plan_id = plan.id;
    }

    let developer = match store.find_user_by_email(DEMO_EMAIL).await? {
        Some(u) => u,
        None => {
            store
                .create_user(NewUser {
                    email: DEMO_EMAIL.into(),
                    name: "Demo Developer".into(),
                    role: Some(Role::Developer),
                })
                .await?
        }
    };

    if store.get_app(&state.app_id).await.is_err() {
        state.app_id = store
            .create_app(NewApp {
                developer_id: developer.id.clone(),
                name: "Demo app".into(),
            })
            .await?
            .id;
    }

    let subscribed = store
        .list_subscriptions(Some(&state.app_id))
        .await?
        .into_iter()
        .any(|s| s.plan_id == state.plan_id && s.status == SubscriptionStatus::Active);
    if !subscribed {
        store
            .create_subscription(NewSubscription {
                app_id: state.app_id.clone(),
                plan_id: state.plan_id.clone(),
                status: None,
            })
            .await?;
    }

    let key_ok = !state.key.is_empty()
        && store
            .find_key_by_hash(KeyHash::of(&state.key))
            .await?
            .is_some_and(|k| k.status == KeyStatus::Active && k.app_id == state.app_id);
    if !key_ok {
        let issued = store.issue_key(&state.app_id, None).await?;
        state.key_id = issued.record.id;
        state.key = issued.secret;
    }

    state.save(data_dir)?;
    Ok(state)
}

fn demo_openapi() -> serde_json::Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Demo API", "version": "1.0.0", "description": "A sample API served by Tollgate's demo upstream."},
        "paths": {
            "/hello": {"get": {"summary": "Say hello", "responses": {"200": {"description": "A greeting"}}}},
            "/weather": {"get": {
                "summary": "Today's weather",
                "parameters": [{"name": "city", "in": "query", "schema": {"type": "string"}, "example": "Paris"}],
                "responses": {"200": {"description": "The forecast"}}
            }}
        },
        "components": {"securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "security": [{"apiKey": []}]
    })
}
