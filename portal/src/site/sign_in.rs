//! Log in with GitHub, Google or any OpenID Connect provider.
//!
//! `GET /login/{provider}` starts an authorization-code flow with PKCE (S256),
//! a random `state` and, for OpenID Connect, a `nonce`; all three are kept in
//! the visitor's session. `GET /login/{provider}/callback` checks the state
//! (so a link carrying someone else's code cannot sign the visitor in),
//! exchanges the code with the verifier, and learns who signed in:
//! - OpenID Connect: the ID token, signature checked against the provider's
//!   published keys (fetched from its discovery document, refetched once for
//!   an unknown key id), issuer, audience, expiry and nonce checked; the
//!   address from the token or the user-info endpoint, which must say it is
//!   verified;
//! - GitHub: its REST API, the primary address it marks verified.
//!
//! The store then finds the linked account, links the account with the same
//! verified address, or creates one (see `Store::sign_in_with_identity`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tollgate_core::config::{SignInKind, SignInProvider};
use tollgate_core::store::{ExternalIdentity, IdentityOutcome};

use super::error::SiteError;
use super::session_store::USER_ID;
use super::views::{MessagePage, render, see_other};
use super::visitor::Visitor;
use super::{Site, csrf};

/// Session key of a sign-in in progress.
const PENDING: &str = "sign_in_pending";
/// A sign-in must come back from the provider within this time.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// How long a provider's discovery document is trusted.
const DISCOVERY_FOR: Duration = Duration::from_secs(3600);
/// Fewest seconds between two key fetches for unknown key ids.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Every call to a provider gives up after this long.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The sign-in providers and what is known about them.
#[derive(Debug)]
pub struct SignIn {
    providers: Vec<Provider>,
    http: reqwest::Client,
    portal_url: String,
}

#[derive(Debug)]
struct Provider {
    settings: SignInProvider,
    discovery: RwLock<Option<Arc<Discovered>>>,
}

/// A provider's endpoints and keys, from its discovery document.
#[derive(Debug)]
struct Discovered {
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    basic_auth: bool,
    fetched: Instant,
    keys: RwLock<(JwkSet, Instant)>,
}

#[derive(Debug, Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A button on the log-in page.
#[derive(Debug, Clone)]
pub struct ProviderButton {
    /// `/login/{id}`.
    pub href: String,
    /// "GitHub", "Google" or the configured name.
    pub name: String,
}

/// Why a sign-in did not work, in words for the person.
#[derive(Debug)]
enum Failure {
    /// The provider said no (the person cancelled, or the app is misconfigured).
    Denied(String),
    /// The callback does not belong to a sign-in this browser started.
    Stale,
    /// The provider could not be reached or answered nonsense.
    Provider(String),
    /// The provider does not vouch for the address.
    Unverified,
}

impl SignIn {
    /// The providers the settings configure; `portal_url` is where browsers
    /// reach the portal (the callback URLs live under it).
    pub fn new(providers: &[SignInProvider], portal_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A provider must answer directly: following redirects would let
            // a discovery document send the portal anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .user_agent(concat!("Tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            providers: providers
                .iter()
                .map(|p| Provider {
                    settings: p.clone(),
                    discovery: RwLock::new(None),
                })
                .collect(),
            http,
            portal_url: portal_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The log-in page's buttons, in configured order.
    pub fn buttons(&self) -> Vec<ProviderButton> {
        self.providers
            .iter()
            .map(|p| ProviderButton {
                href: format!("/login/{}", p.settings.id),
                name: p.settings.name.clone(),
            })
            .collect()
    }

    fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.settings.id == id)
    }

    fn redirect_url(&self, id: &str) -> String {
        format!("{}/login/{id}/callback", self.portal_url)
    }
}

/// What the session keeps between the two legs of a sign-in.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    provider: String,
    state: String,
    verifier: String,
    nonce: String,
    started_ms: i64,
}

/// `GET /login/{provider}`: off to the provider.
pub async fn start(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, SiteError> {
    let sign_in = &site.sign_in;
    let Some(provider) = sign_in.provider(&id) else {
        return Err(SiteError::NotFound);
    };
    if visitor.account.is_some() {
        return Ok(see_other("/account"));
    }
    let endpoints = match endpoints(sign_in, provider).await {
        Ok(e) => e,
        Err(f) => return Ok(failure_page(&site, provider, f)),
    };
    let client = client(sign_in, provider, &endpoints)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = CsrfToken::new_random();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    request = match &provider.settings.kind {
        SignInKind::GitHub { .. } => request
            .add_scope(Scope::new("read:user".to_owned()))
            .add_scope(Scope::new("user:email".to_owned())),
        SignInKind::Oidc { .. } => request
            .add_scope(Scope::new("openid".to_owned()))
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .add_extra_param("nonce", nonce.secret().clone()),
    };
    let (url, state) = request.url();
    visitor
        .session
        .insert(
            PENDING,
            Pending {
                provider: id,
                state: state.secret().clone(),
                verifier: verifier.secret().clone(),
                nonce: nonce.secret().clone(),
                started_ms: tollgate_core::time::Timestamp::now().0,
            },
        )
        .await?;
    Ok(see_other(url.as_str()))
}

/// What the provider sends the browser back with.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /login/{provider}/callback`: back from the provider.
pub async fn callback(
    State(site): State<Site>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, SiteError> {
    let Some(provider) = site.sign_in.provider(&id) else {
        return Err(SiteError::NotFound);
    };
    // The pending sign-in is used up whatever happens next.
    let pending = visitor.session.remove::<Pending>(PENDING).await?;
    let identity = match finish(&site, provider, pending, q).await {
        Ok(identity) => identity,
        Err(f) => return Ok(failure_page(&site, provider, f)),
    };
    let (account, outcome) = match site.app.store.sign_in_with_identity(&identity).await {
        Ok(done) => done,
        Err(tollgate_core::StoreError::Conflict(_)) => {
            // Two sign-ins raced to create the same account: the other won.
            return Ok(failure_page(
                &site,
                provider,
                Failure::Provider("the account was being created at the same moment".to_owned()),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if outcome == IdentityOutcome::Claimed {
        tracing::warn!(user = %account.user.id, provider = %id, "sign-in claimed an account whose address was never confirmed; its password and sessions were removed");
    }
    visitor.session.cycle_id().await?;
    visitor.session.insert(USER_ID, &account.user.id).await?;
    csrf::renew(&visitor.session).await?;
    tracing::info!(user = %account.user.id, provider = %id, ?outcome, "logged in through a provider");
    Ok(see_other("/account"))
}

async fn finish(
    site: &Site,
    provider: &Provider,
    pending: Option<Pending>,
    q: CallbackQuery,
) -> Result<ExternalIdentity, Failure> {
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(Failure::Denied(if error == "access_denied" {
            String::new()
        } else {
            format!("{error} {detail}").trim().to_owned()
        }));
    }
    let pending = pending.ok_or(Failure::Stale)?;
    let age_ms = tollgate_core::time::Timestamp::now().0 - pending.started_ms;
    let fresh = u64::try_from(age_ms).is_ok_and(|ms| ms <= PENDING_FOR.as_millis() as u64);
    if pending.provider != provider.settings.id
        || !fresh
        || q.state.as_deref() != Some(pending.state.as_str())
    {
        return Err(Failure::Stale);
    }
    let code = q.code.filter(|c| !c.is_empty()).ok_or(Failure::Stale)?;

    let sign_in = &site.sign_in;
    let endpoints = endpoints(sign_in, provider).await?;
    let client = client(sign_in, provider, &endpoints).map_err(|_| {
        Failure::Provider("its endpoints in the discovery document are not URLs".to_owned())
    })?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&sign_in.http)
        .await
        .map_err(|e| Failure::Provider(format!("the code exchange failed: {}", token_error(&e))))?;
    let access_token = token.access_token().secret();
    match &provider.settings.kind {
        SignInKind::GitHub { api_url, .. } => {
            github_identity(&sign_in.http, provider, api_url, access_token).await
        }
        SignInKind::Oidc { issuer } => {
            let id_token =
                token.extra_fields().id_token.as_deref().ok_or_else(|| {
                    Failure::Provider("the token answer has no ID token".to_owned())
                })?;
            let discovered = endpoints
                .discovered
                .as_ref()
                .ok_or_else(|| Failure::Provider("no discovery document".to_owned()))?;
            oidc_identity(
                &sign_in.http,
                provider,
                discovered,
                issuer,
                id_token,
                &pending.nonce,
                access_token,
            )
            .await
        }
    }
}

fn token_error(
    e: &oauth2::RequestTokenError<oauth2::HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            let mut s = r.error().to_string();
            if let Some(d) = r.error_description() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        oauth2::RequestTokenError::Request(e) => format!("could not reach it ({e})"),
        oauth2::RequestTokenError::Parse(e, _) => format!("unreadable answer ({e})"),
        oauth2::RequestTokenError::Other(e) => e.clone(),
    }
}

// ---- endpoints -------------------------------------------------------------

/// Where to send the browser and the code.
struct Endpoints {
    authorize: String,
    token: String,
    basic_auth: bool,
    discovered: Option<Arc<Discovered>>,
}

async fn endpoints(sign_in: &SignIn, provider: &Provider) -> Result<Endpoints, Failure> {
    match &provider.settings.kind {
        SignInKind::GitHub { web_url, .. } => Ok(Endpoints {
            authorize: format!("{web_url}/login/oauth/authorize"),
            token: format!("{web_url}/login/oauth/access_token"),
            basic_auth: true,
            discovered: None,
        }),
        SignInKind::Oidc { issuer } => {
            let d = discover(sign_in, provider, issuer).await?;
            Ok(Endpoints {
                authorize: d.authorization_endpoint.clone(),
                token: d.token_endpoint.clone(),
                basic_auth: d.basic_auth,
                discovered: Some(d),
            })
        }
    }
}

/// The provider's discovery document, cached for an hour.
async fn discover(
    sign_in: &SignIn,
    provider: &Provider,
    issuer: &str,
) -> Result<Arc<Discovered>, Failure> {
    if let Some(d) = provider.discovery.read().await.as_ref()
        && d.fetched.elapsed() < DISCOVERY_FOR
    {
        return Ok(d.clone());
    }
    let mut slot = provider.discovery.write().await;
    if let Some(d) = slot.as_ref()
        && d.fetched.elapsed() < DISCOVERY_FOR
    {
        return Ok(d.clone());
    }
    let url = format!("{issuer}/.well-known/openid-configuration");
    let doc: DiscoveryDocument = get_json(&sign_in.http, &url, None).await?;
    // OpenID Connect Discovery 1.0, section 4.3: the document must name the
    // issuer it was fetched for, or its tokens cannot be trusted.
    if doc.issuer.trim_end_matches('/') != issuer {
        return Err(Failure::Provider(format!(
            "its discovery document names the issuer {:?}, not {issuer:?}",
            doc.issuer
        )));
    }
    let keys: JwkSet = get_json(&sign_in.http, &doc.jwks_uri, None).await?;
    let basic_auth = doc
        .token_endpoint_auth_methods_supported
        .as_ref()
        .is_none_or(|m| {
            m.iter().any(|m| m == "client_secret_basic")
                || !m.iter().any(|m| m == "client_secret_post")
        });
    let d = Arc::new(Discovered {
        authorization_endpoint: doc.authorization_endpoint,
        token_endpoint: doc.token_endpoint,
        userinfo_endpoint: doc.userinfo_endpoint,
        jwks_uri: doc.jwks_uri,
        basic_auth,
        fetched: Instant::now(),
        keys: RwLock::new((keys, Instant::now())),
    });
    *slot = Some(d.clone());
    Ok(d)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<T, Failure> {
    let mut req = http.get(url).header("accept", "application/json");
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Failure::Provider(format!("could not reach {url} ({e})")))?;
    if !resp.status().is_success() {
        return Err(Failure::Provider(format!(
            "{url} answered {}",
            resp.status()
        )));
    }
    resp.json()
        .await
        .map_err(|e| Failure::Provider(format!("{url} answered something unexpected ({e})")))
}

/// The ID token next to the access token in a token answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type Client = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn client(sign_in: &SignIn, provider: &Provider, e: &Endpoints) -> Result<Client, SiteError> {
    let bad = |what: &str, e: oauth2::url::ParseError| {
        SiteError::internal(format_args!(
            "sign-in {}: {what}: {e}",
            provider.settings.id
        ))
    };
    let mut client = oauth2::Client::new(ClientId::new(provider.settings.client_id.clone()))
        .set_auth_uri(AuthUrl::new(e.authorize.clone()).map_err(|x| bad("authorization URL", x))?)
        .set_token_uri(TokenUrl::new(e.token.clone()).map_err(|x| bad("token URL", x))?)
        .set_redirect_uri(
            RedirectUrl::new(sign_in.redirect_url(provider.settings.id))
                .map_err(|x| bad("callback URL", x))?,
        )
        .set_auth_type(if e.basic_auth {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        });
    if let Some(secret) = &provider.settings.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.clone()));
    }
    Ok(client)
}

// ---- who signed in ----------------------------------------------------------

#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Verified>,
    #[serde(default)]
    name: Option<String>,
}

/// `email_verified`: a boolean, though some providers send `"true"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Verified {
    Flag(bool),
    Text(String),
}

impl Verified {
    fn is_true(v: Option<&Self>) -> bool {
        match v {
            Some(Self::Flag(b)) => *b,
            Some(Self::Text(s)) => s == "true",
            None => false,
        }
    }
}

async fn oidc_identity(
    http: &reqwest::Client,
    provider: &Provider,
    d: &Discovered,
    issuer: &str,
    id_token: &str,
    nonce: &str,
    access_token: &str,
) -> Result<ExternalIdentity, Failure> {
    let claims = verify_id_token(http, provider, d, issuer, id_token).await?;
    if claims.nonce.as_deref() != Some(nonce) {
        return Err(Failure::Provider(
            "its ID token was not issued for this sign-in (nonce)".to_owned(),
        ));
    }
    let (email, verified, name) = match claims.email {
        Some(email) => (
            email,
            Verified::is_true(claims.email_verified.as_ref()),
            claims.name,
        ),
        None => {
            // The address may only be on the user-info endpoint.
            let url = d
                .userinfo_endpoint
                .as_deref()
                .ok_or_else(|| Failure::Provider("it gave no e-mail address".to_owned()))?;
            let info: IdClaims = get_json(http, url, Some(access_token)).await?;
            if info.sub != claims.sub {
                return Err(Failure::Provider(
                    "its user-info answer is about someone else".to_owned(),
                ));
            }
            let email = info
                .email
                .ok_or_else(|| Failure::Provider("it gave no e-mail address".to_owned()))?;
            (
                email,
                Verified::is_true(info.email_verified.as_ref()),
                info.name.or(claims.name),
            )
        }
    };
    if !verified {
        return Err(Failure::Unverified);
    }
    Ok(ExternalIdentity {
        provider: provider.settings.id.to_owned(),
        subject: claims.sub,
        email,
        name: name.unwrap_or_default(),
    })
}

async fn verify_id_token(
    http: &reqwest::Client,
    provider: &Provider,
    d: &Discovered,
    issuer: &str,
    token: &str,
) -> Result<IdClaims, Failure> {
    let bad = |what: &str| Failure::Provider(format!("its ID token {what}"));
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad("is malformed"))?;
    let alg = header.alg;
    if !matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    ) {
        return Err(bad("is not signed with a public key"));
    }
    let mut key = find_key(&d.keys.read().await.0, header.kid.as_deref());
    if key.is_none() {
        // A provider rotating its keys publishes the new one first: fetch again.
        let mut keys = d.keys.write().await;
        if keys.1.elapsed() >= JWKS_REFETCH_AFTER {
            keys.0 = get_json(http, &d.jwks_uri, None).await?;
            keys.1 = Instant::now();
        }
        key = find_key(&keys.0, header.kid.as_deref());
    }
    let key = key.ok_or_else(|| bad("is signed with a key the provider does not publish"))?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer, &format!("{issuer}/")]);
    validation.set_audience(&[&provider.settings.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 60;
    jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
        .map(|t| t.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            bad(match e.kind() {
                ErrorKind::ExpiredSignature => "has expired",
                ErrorKind::InvalidIssuer => "names another issuer",
                ErrorKind::InvalidAudience => "is for another client",
                ErrorKind::InvalidSignature => "has a bad signature",
                _ => "is not valid",
            })
        })
}

fn find_key(set: &JwkSet, kid: Option<&str>) -> Option<DecodingKey> {
    let jwk = match kid {
        Some(kid) => set.find(kid)?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return None,
    };
    DecodingKey::from_jwk(jwk).ok()
}

#[derive(Debug, Deserialize)]
struct GitHubUser {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    login: String,
}

#[derive(Debug, Deserialize)]
struct GitHubEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

async fn github_identity(
    http: &reqwest::Client,
    provider: &Provider,
    api_url: &str,
    token: &str,
) -> Result<ExternalIdentity, Failure> {
    let user: GitHubUser = get_json(http, &format!("{api_url}/user"), Some(token)).await?;
    let emails: Vec<GitHubEmail> =
        get_json(http, &format!("{api_url}/user/emails"), Some(token)).await?;
    let email = emails
        .into_iter()
        .find(|e| e.primary && e.verified)
        .ok_or(Failure::Unverified)?;
    Ok(ExternalIdentity {
        provider: provider.settings.id.to_owned(),
        subject: user.id.to_string(),
        email: email.email,
        name: user.name.unwrap_or(user.login),
    })
}

// ---- pages ---------------------------------------------------------------------

fn failure_page(site: &Site, provider: &Provider, f: Failure) -> Response {
    let name = &provider.settings.name;
    let heading = format!("Signing in with {name} did not work");
    let (status, text) = match f {
        Failure::Denied(detail) if detail.is_empty() => (
            StatusCode::BAD_REQUEST,
            format!("{name} did not let us sign you in: you may have cancelled. Nothing was changed."),
        ),
        Failure::Denied(detail) => (
            StatusCode::BAD_REQUEST,
            format!("{name} refused the sign-in: {detail}."),
        ),
        Failure::Stale => (
            StatusCode::BAD_REQUEST,
            "This sign-in link was not started in this browser, was already used or is more than ten minutes old. Please start again.".to_owned(),
        ),
        Failure::Provider(detail) => {
            tracing::warn!(provider = provider.settings.id, %detail, "sign-in through a provider failed");
            (
                StatusCode::BAD_GATEWAY,
                format!("We could not complete the sign-in with {name}: {detail}. Please try again in a moment, or log in with your e-mail address."),
            )
        }
        Failure::Unverified => (
            StatusCode::BAD_REQUEST,
            format!("{name} has not confirmed your e-mail address, so we cannot link it to an account. Confirm it with {name} first, or sign up with your e-mail address."),
        ),
    };
    render(
        status,
        &MessagePage::new(&site.brand, "error", &heading, &[text.as_str()])
            .link("/login", "Back to log in"),
    )
}

/// Provider ids with their names, for the account page.
pub fn provider_names(site: &Site) -> HashMap<String, String> {
    site.sign_in
        .providers
        .iter()
        .map(|p| (p.settings.id.to_owned(), p.settings.name.clone()))
        .collect()
}
