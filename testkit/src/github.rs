//! GitHub's OAuth web flow and the two REST calls the portal makes, on
//! loopback, for sign-in tests (GitHub itself is out of reach). It follows
//! GitHub's documented behaviour: `/login/oauth/authorize` redirects back
//! with a code and the state, `/login/oauth/access_token` checks the client
//! secret and the PKCE verifier, and `/api/v3/user` and `/api/v3/user/emails`
//! (GitHub Enterprise paths) answer for the token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::json;

/// The account that signs in, as GitHub describes it.
#[derive(Debug, Clone)]
pub struct GitHubAccount {
    /// GitHub's numeric user id.
    pub id: u64,
    /// Login name.
    pub login: String,
    /// Primary address.
    pub email: String,
    /// Whether GitHub verified it.
    pub verified: bool,
}

#[derive(Debug, Default)]
struct Inner {
    account: Option<GitHubAccount>,
    /// code -> (PKCE challenge, redirect URI)
    codes: HashMap<String, (String, String)>,
    tokens: HashMap<String, GitHubAccount>,
}

/// The fake GitHub; stops when dropped.
#[derive(Debug)]
pub struct FakeGitHub {
    /// Its web address, for `oauth_github_url`.
    pub url: String,
    inner: Arc<(Mutex<Inner>, String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<(Mutex<Inner>, String, String)>;

impl FakeGitHub {
    /// Starts it for an OAuth app with this client id and secret.
    pub async fn start(client_id: &str, client_secret: &str) -> Self {
        let inner: Shared = Arc::new((
            Mutex::new(Inner::default()),
            client_id.to_owned(),
            client_secret.to_owned(),
        ));
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/user/emails", get(emails))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            inner,
            task,
        }
    }

    /// Sets who signs in next.
    pub fn sign_in_as(&self, account: GitHubAccount) {
        self.inner.0.lock().unwrap().account = Some(account);
    }
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("client_id") != Some(&s.1) {
        return (StatusCode::NOT_FOUND, "unknown client").into_response();
    }
    let (Some(redirect), Some(state), Some(challenge)) = (
        q.get("redirect_uri"),
        q.get("state"),
        q.get("code_challenge"),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri, state and code_challenge needed",
        )
            .into_response();
    };
    let code = uuid::Uuid::new_v4().simple().to_string();
    s.0.lock()
        .unwrap()
        .codes
        .insert(code.clone(), (challenge.clone(), redirect.clone()));
    let mut to = url::Url::parse(redirect).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    Redirect::to(to.as_str()).into_response()
}

async fn access_token(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.1, s.2))
    );
    let authorised = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&basic);
    let error = |e: &str| axum::Json(json!({ "error": e })).into_response();
    if !authorised {
        return error("incorrect_client_credentials");
    }
    let mut inner = s.0.lock().unwrap();
    let Some((challenge, redirect)) = form.get("code").and_then(|c| inner.codes.remove(c)) else {
        return error("bad_verification_code");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let digest = sha2_256(verifier.as_bytes());
    if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) != challenge
        || form.get("redirect_uri") != Some(&redirect)
    {
        return error("bad_verification_code");
    }
    let Some(account) = inner.account.clone() else {
        return error("access_denied");
    };
    let token = format!("gho_{}", uuid::Uuid::new_v4().simple());
    inner.tokens.insert(token.clone(), account);
    axum::Json(
        json!({ "access_token": token, "token_type": "bearer", "scope": "read:user,user:email" }),
    )
    .into_response()
}

fn account_of(s: &Shared, headers: &HeaderMap) -> Option<GitHubAccount> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    s.0.lock().unwrap().tokens.get(token).cloned()
}

async fn user(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match account_of(&s, &headers) {
        Some(a) => {
            axum::Json(json!({ "id": a.id, "login": a.login, "name": null })).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response(),
    }
}

async fn emails(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match account_of(&s, &headers) {
        Some(a) => axum::Json(json!([
            { "email": format!("old-{}", a.email), "primary": false, "verified": true },
            { "email": a.email, "primary": true, "verified": a.verified },
        ]))
        .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response(),
    }
}

fn sha2_256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
