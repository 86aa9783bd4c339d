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
            id: event_id(timestamp_ms),
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

/// A UUID v7 timed by the event's own clock reading (one reading per call,
/// not two). Ids made in one process increase with their calls, within a
/// millisecond too (a counter, as `Uuid::now_v7` keeps), so events sorted by
/// time and id are in the order they were made.
pub fn event_id(timestamp_ms: u64) -> Uuid {
    static CONTEXT: std::sync::Mutex<uuid::ContextV7> =
        std::sync::Mutex::new(uuid::ContextV7::new());
    let context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    Uuid::new_v7(uuid::Timestamp::from_unix(
        &*context,
        timestamp_ms / 1000,
        (timestamp_ms % 1000) as u32 * 1_000_000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_event_time_and_increase_within_a_millisecond() {
        let at = 1_796_000_000_123;
        let ids: Vec<Uuid> = (0..1000).map(|_| UsageEvent::new(at).id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in the order made");
        let (secs, nanos) = ids[0].get_timestamp().unwrap().to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, at);
        // An earlier time after a later one (the clock stepped back) still
        // makes a larger id: the order of making is kept.
        let later = UsageEvent::new(at + 5).id;
        assert!(UsageEvent::new(at).id > later);
    }
}
