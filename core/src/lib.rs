//! Tollgate's domain: typed configuration, the entities admins and developers
//! manage, API key material, and the control-plane store (SQLite or PostgreSQL).
//!
//! Nothing here speaks HTTP; the gateway and the portal build on these types.

pub mod config;
pub mod declarative;
pub mod error;
pub mod id;
pub mod key;
pub mod model;
pub mod quota;
pub mod store;
pub mod time;
pub mod validate;

pub use config::Settings;
pub use error::{StoreError, ValidationError};
pub use store::Store;
