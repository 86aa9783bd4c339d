//! What every page handler knows about the person asking: their session,
//! their account when signed in, their address, and the forms they send.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Form;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tollgate_core::store::Account;
use tower_sessions::Session;

use super::Site;
use super::csrf;
use super::error::SiteError;
use super::session_store::USER_ID;
use super::views::Layout;

/// The person behind a request.
pub struct Visitor {
    /// Their session (created lazily: nothing is stored until written).
    pub session: Session,
    /// Their account, when signed in.
    pub account: Option<Account>,
}

impl FromRequestParts<Site> for Visitor {
    type Rejection = SiteError;

    async fn from_request_parts(parts: &mut Parts, site: &Site) -> Result<Self, SiteError> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| SiteError::internal("pages run without a session layer"))?;
        let account = match session.get::<String>(USER_ID).await? {
            Some(id) => site.app.store.account(&id).await?,
            None => None,
        };
        Ok(Self { session, account })
    }
}

impl Visitor {
    /// The session's CSRF token, for a form.
    pub async fn csrf(&self) -> Result<String, SiteError> {
        csrf::token(&self.session).await
    }

    /// The layout for a page called `page` (`None`: the start page).
    pub async fn layout(&self, site: &Site, page: Option<&str>) -> Result<Layout, SiteError> {
        let mut layout = Layout::new(&site.brand, page);
        if let Some(a) = &self.account {
            layout.signed_in = Some(a.user.email.clone());
            layout.csrf = self.csrf().await?;
        }
        Ok(layout)
    }
}

/// The client's address: from the configured proxy header (its last entry,
/// the one our proxy added), else the TCP peer.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Site> for ClientIp {
    type Rejection = SiteError;

    async fn from_request_parts(parts: &mut Parts, site: &Site) -> Result<Self, SiteError> {
        let from_header = site.client_ip_header.as_ref().and_then(|h| {
            let v = parts.headers.get_all(h).iter().next_back()?.to_str().ok()?;
            v.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        });
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(
            from_header
                .or(peer)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// A submitted form; a body no form of ours sends gets the 400 page.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = SiteError;

    async fn from_request(req: Request, state: &S) -> Result<Self, SiteError> {
        Form::<T>::from_request(req, state)
            .await
            .map(|Form(t)| Self(t))
            .map_err(|_| SiteError::BadRequest)
    }
}
