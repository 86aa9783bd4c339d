//! The control plane's HTTP faces: the developer portal (its website, with
//! accounts) and the admin REST API.

pub mod accounts;
pub mod admin;
pub mod site;
pub mod subscriptions;

use tollgate_analytics::UsageStore;
use tollgate_core::Store;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The control-plane store.
    pub store: Store,
    /// The usage store, for usage queries.
    pub usage: UsageStore,
    /// The admin API's bearer token; `None` disables the admin API.
    pub admin_token: Option<String>,
    /// The gateway URL developers call.
    pub gateway_url: String,
}
