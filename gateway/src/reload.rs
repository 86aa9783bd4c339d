//! Background work: reloading the snapshot when the configuration changes, and
//! writing keys' last-used times.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tollgate_core::time::Timestamp;
use tollgate_core::{Store, StoreError};

use crate::Gateway;
use crate::snapshot::{Patch, Snapshot};

/// How often accepted keys' last-used times are written.
const KEY_USE_INTERVAL: Duration = Duration::from_secs(5);
const RETRY_START: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Above this many changed apps a whole reload is cheaper than one read per app.
const MAX_PATCHED_APPS: usize = 500;

/// How the snapshot was brought up to date, counted for `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Whole reloads (at start, after a gap in the change log, big changes).
    pub full: AtomicU64,
    /// Patches of only what changed.
    pub incremental: AtomicU64,
}

/// Reloads the snapshot whenever the store reports a newer version: by a patch
/// of what the change log names when it can, in full otherwise. On a read
/// failure it keeps serving the current snapshot and retries with back-off
/// (250 ms doubling to 5 s), warning once per outage.
pub(crate) async fn follow(store: Store, gateway: Weak<Gateway>) {
    let mut changes = store.subscribe_changes();
    let mut retry = RETRY_START;
    loop {
        let Some(gw) = gateway.upgrade() else { return };
        let wanted = *changes.borrow_and_update();
        let current = gw.snapshot.load_full();
        if wanted > current.version {
            let started = std::time::Instant::now();
            match next_snapshot(&store, &gw, &current).await {
                Ok((next, incremental)) => {
                    tracing::debug!(
                        version = next.version,
                        incremental,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        apis = next.route_count(),
                        keys = next.key_count(),
                        "gateway configuration reloaded"
                    );
                    let counter = if incremental {
                        &gw.reloads.incremental
                    } else {
                        &gw.reloads.full
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
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

/// The snapshot at the store's current version, and whether it was patched.
async fn next_snapshot(
    store: &Store,
    gw: &Gateway,
    current: &Snapshot,
) -> Result<(Snapshot, bool), StoreError> {
    if let Some(patch) = read_patch(store, current.version).await? {
        return Ok((current.patch(&patch, &gw.metrics), true));
    }
    let config = store.load_gateway_config().await?;
    Ok((Snapshot::build(&config, Some(current), &gw.metrics), false))
}

/// Re-reads what changed after `from`; `None` when a whole reload is needed.
async fn read_patch(store: &Store, from: i64) -> Result<Option<Patch>, StoreError> {
    let Some(set) = store.changes_since(from).await? else {
        return Ok(None);
    };
    let mut apps: BTreeSet<String> = set.apps;
    for plan in &set.plans {
        apps.extend(store.apps_of_plan(plan).await?);
        if apps.len() > MAX_PATCHED_APPS {
            return Ok(None);
        }
    }
    if apps.len() > MAX_PATCHED_APPS {
        return Ok(None);
    }
    let apis = if set.apis.is_empty() {
        None
    } else {
        let ids: Vec<String> = set.apis.into_iter().collect();
        let now = store.load_apis(&ids).await?;
        Some((ids, now))
    };
    let mut slices = Vec::with_capacity(apps.len());
    for app in apps {
        let slice = store.load_app_slice(&app).await?;
        slices.push((app, slice));
    }
    Ok(Some(Patch {
        version: set.version,
        apis,
        apps: slices,
    }))
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
