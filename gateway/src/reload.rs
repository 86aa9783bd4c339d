//! Background work: reloading the snapshot when the configuration changes, and
//! writing keys' last-used times.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tollgate_core::Store;
use tollgate_core::time::Timestamp;

use crate::Gateway;
use crate::snapshot::Snapshot;

/// How often accepted keys' last-used times are written.
const KEY_USE_INTERVAL: Duration = Duration::from_secs(5);

/// Reloads the snapshot whenever the store reports a newer version; on a read
/// failure keeps the current snapshot and retries.
pub(crate) async fn follow(store: Store, gateway: Weak<Gateway>) {
    let mut changes = store.subscribe_changes();
    loop {
        let Some(gw) = gateway.upgrade() else { return };
        let current = gw.snapshot.load().version;
        let wanted = *changes.borrow_and_update();
        if wanted > current {
            match store.load_gateway_config().await {
                Ok(config) => {
                    let next = Snapshot::build(&config, Some(&gw.snapshot.load()));
                    tracing::debug!(
                        version = next.version,
                        apis = next.route_count(),
                        keys = next.key_count(),
                        "gateway configuration reloaded"
                    );
                    gw.snapshot.store(Arc::new(next));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the configuration; serving the last one");
                    drop(gw);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            }
        }
        drop(gw);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Writes `last_used_at` for keys the gateway accepted, every few seconds.
/// Best effort: a failed write is logged and the marks are dropped.
pub(crate) async fn record_key_use(store: Store, gateway: Weak<Gateway>) {
    let mut ticker = tokio::time::interval(KEY_USE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let used = match gateway.upgrade() {
            Some(gw) => gw.snapshot.load().take_used_keys(),
            None => return,
        };
        if used.is_empty() {
            continue;
        }
        if let Err(e) = store.touch_keys(&used, Timestamp::now()).await {
            tracing::debug!(error = %e, keys = used.len(), "cannot record key use");
        }
    }
}
