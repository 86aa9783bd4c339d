//! The usage event.

use serde::Serialize;
use uuid::Uuid;

/// One call the gateway answered, proxied or refused. Strings are empty where a
/// value does not apply (no key on a refused call, no API on a 404).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEvent {
    /// UUID v7: unique, and sortable by time; inserts are idempotent by it.
    pub id: Uuid,
    /// When the call arrived, milliseconds since the epoch.
    pub timestamp_ms: u64,
    /// The gateway node that answered.
    pub node: String,
    /// API id.
    pub api_id: String,
    /// API slug.
    pub api_slug: String,
    /// The route that matched (the API's base path for now).
    pub route: String,
    /// HTTP method.
    pub method: String,
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
    pub app_id: String,
    /// Visible prefix of the key used.
    pub key_prefix: String,
    /// Developer id.
    pub developer_id: String,
    /// Plan id.
    pub plan_id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Client IP address.
    pub client_ip: String,
    /// Stable error code for gateway-made errors (`invalid_key`, …).
    pub error_code: String,
    /// The call passed beyond a soft quota's included calls (billed as overage).
    pub overage: bool,
}

impl UsageEvent {
    /// An event with a fresh id at `timestamp_ms` and every other field empty.
    pub fn new(timestamp_ms: u64) -> Self {
        Self {
            id: Uuid::now_v7(),
            timestamp_ms,
            node: String::new(),
            api_id: String::new(),
            api_slug: String::new(),
            route: String::new(),
            method: String::new(),
            status: 0,
            latency_us: 0,
            upstream_latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            app_id: String::new(),
            key_prefix: String::new(),
            developer_id: String::new(),
            plan_id: String::new(),
            subscription_id: String::new(),
            client_ip: String::new(),
            error_code: String::new(),
            overage: false,
        }
    }
}
