//! The published APIs as the start page and the catalog list them.
//!
//! Reading every API with its OpenAPI document for each page view costs tens
//! of milliseconds with a thousand APIs, so the listing is built once per
//! configuration version: each view asks the database for the version (one
//! row) and rebuilds only when it moved. Every change to an API bumps the
//! version, whichever process made it.

use std::sync::Arc;

use tokio::sync::RwLock;
use tollgate_core::model::{Api, Visibility};
use tollgate_core::{Store, StoreError};

use super::docs;

/// One public API in the listing.
#[derive(Debug)]
pub struct ListedApi {
    /// The API, without its OpenAPI document (kept out of memory).
    pub api: Api,
    /// Tags of its OpenAPI document, first seen first.
    pub tags: Vec<String>,
    /// Its document's description, else its title.
    pub summary: String,
}

/// The public APIs at one configuration version, in the store's order.
#[derive(Debug)]
pub struct Listing {
    /// The configuration version it was built at.
    pub version: i64,
    /// Public APIs only.
    pub apis: Vec<ListedApi>,
}

/// The cached listing.
#[derive(Debug, Default)]
pub struct Published {
    slot: RwLock<Option<Arc<Listing>>>,
}

impl Published {
    /// The listing as of now.
    pub async fn get(&self, store: &Store) -> Result<Arc<Listing>, StoreError> {
        let version = store.config_version().await?;
        if let Some(l) = self.slot.read().await.as_ref()
            && l.version == version
        {
            return Ok(l.clone());
        }
        let mut slot = self.slot.write().await;
        if let Some(l) = slot.as_ref()
            && l.version == version
        {
            return Ok(l.clone());
        }
        // Read after the version: the rows are at least that new, so a change
        // landing meanwhile only causes one more rebuild.
        let apis = store
            .list_apis()
            .await?
            .into_iter()
            .filter(|a| a.visibility == Visibility::Public)
            .map(|mut api| {
                let (tags, summary) = match api.openapi.take() {
                    Some(doc) => (docs::tags(&doc), docs::summary(&doc)),
                    None => (Vec::new(), String::new()),
                };
                ListedApi { api, tags, summary }
            })
            .collect();
        let listing = Arc::new(Listing { version, apis });
        *slot = Some(listing.clone());
        Ok(listing)
    }
}
