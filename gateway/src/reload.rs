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
const RETRY_START: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Reloads the snapshot whenever the store reports a newer version. On a read
/// failure it keeps serving the current snapshot and retries with back-off
/// (250 ms doubling to 5 s), warning once per outage.
pub(crate) async fn follow(store: Store, gateway: Weak<Gateway>) {
    let mut changes = store.subscribe_changes();
    let mut retry = RETRY_START;
    loop {
        let Some(gw) = gateway.upgrade() else { return };
        let wanted = *changes.borrow_and_update();
        if wanted > gw.snapshot.load().version {
            match store.load_gateway_config().await {
                Ok(config) => {
                    let next = Snapshot::build(&config, Some(&gw.snapshot.load()), &gw.metrics);
                    tracing::debug!(
                        version = next.version,
                        apis = next.route_count(),
                        keys = next.key_count(),
                        "gateway configuration reloaded"
                    );
                    gw.snapshot.store(Arc::new(next));
                    if retry > RETRY_START {
                        tracing::info!("configuration reloads work again");
                    }
                    retry = RETRY_START;
                }
                Err(e) => {
                    if retry == RETRY_START {
                        tracing::warn!(error = %e, "cannot reload the configuration; serving the last one and retrying");
                    }
                    drop(gw);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
            continue;
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

/// Forgets full rate-limit budgets every 30 s so the local table stays small.
pub(crate) async fn sweep_rate_limits(gateway: Weak<Gateway>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match gateway.upgrade() {
            Some(gw) => gw.rate_limiter.local().sweep(),
            None => return,
        }
    }
}
