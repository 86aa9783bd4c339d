//! The usage event.

use std::sync::{Arc, LazyLock};

use serde::Serialize;
use uuid::Uuid;

/// Text of an event. Shared, not copied: most values come from the gateway's
/// configuration snapshot (ids, slugs, the node name) or are per connection
/// (the client IP), so filling an event and writing it take no string copies.
pub type Text = Arc<str>;

/// The empty text, shared.
pub fn empty_text() -> Text {
    static EMPTY: LazyLock<Text> = LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// One call the gateway answered, proxied or refused. Strings are empty where a
/// value does not apply (no key on a refused call, no API on a 404).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEvent {
    /// UUID v7: unique, and sortable by time; inserts are idempotent by it.
    pub id: Uuid,
    /// When the call arrived, milliseconds since the epoch.
    pub timestamp_ms: u64,
    /// The gateway node that answered.
    pub node: Text,
    /// API id.
    pub api_id: Text,
    /// API slug.
    pub api_slug: Text,
    /// The route that matched (the API's base path for now).
    pub route: Text,
    /// HTTP method.
    pub method: Text,
    /// Status sent to the client.
    pub status: u16,
    /// Time from request to the end of the response, microseconds.
    pub latency_us: u32,
    /// Time spent waiting for the upstream's response head, microseconds.
    pub upstream_latency_us: u32,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// App id.
    pub app_id: Text,
    /// Visible prefix of the key used.
    pub key_prefix: Text,
    /// Developer id.
    pub developer_id: Text,
    /// Plan id.
    pub plan_id: Text,
    /// Subscription id.
    pub subscription_id: Text,
    /// Client IP address.
    pub client_ip: Text,
    /// Stable error code for gateway-made errors (`invalid_key`, …).
    pub error_code: Text,
    /// The call passed beyond a soft quota's included calls (billed as overage).
    pub overage: bool,
}

impl UsageEvent {
    /// An event with a fresh id at `timestamp_ms` and every other field empty.
    pub fn new(timestamp_ms: u64) -> Self {
        Self {
            id: Uuid::now_v7(),
            timestamp_ms,
            node: empty_text(),
            api_id: empty_text(),
            api_slug: empty_text(),
            route: empty_text(),
            method: empty_text(),
            status: 0,
            latency_us: 0,
            upstream_latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            app_id: empty_text(),
            key_prefix: empty_text(),
            developer_id: empty_text(),
            plan_id: empty_text(),
            subscription_id: empty_text(),
            client_ip: empty_text(),
            error_code: empty_text(),
            overage: false,
        }
    }
}
