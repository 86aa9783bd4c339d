//! Policies that run between authorization and the proxy, each in its own module.

pub mod access;
pub mod body;
pub mod cache;
pub mod jwt;
pub mod quota;
pub mod quota_counter;
pub mod rate_limit;
pub mod redis_link;
pub mod transform;
