//! The quota phase: included calls per subscription per billing period.
//!
//! Counting is cluster-wide without touching the shared store on every call:
//! each gateway leases a block of calls from the subscription's counter in the
//! control-plane database ([`Store::lease_quota`]), admits calls from the block
//! in memory, and leases the next block when it runs out. A hard quota's leases
//! never pass the included calls, so the cluster never admits more than the plan
//! includes; it may admit fewer while other gateways hold unused blocks (at most
//! nodes × lease size), and unused blocks are given back at the end of a period
//! and at shutdown. A soft quota's leases are never refused: each call gets an
//! ordinal from its block, and calls past the included ones are overage.
//!
//! After a hard quota is used up a gateway asks the store again at most once a
//! second, or at once when the plan's quota changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_core::Store;
use tollgate_core::quota::period;
use tollgate_core::store::QuotaRule;

/// How long a gateway waits before asking again for a used-up hard quota.
const RETRY_EXHAUSTED: Duration = Duration::from_secs(1);

/// What the quota says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// Within the included calls.
    Within,
    /// Past the included calls of a soft quota: admitted, billed as overage.
    Overage,
    /// Past the included calls of a hard quota: refused until `reset_at_ms`.
    Exceeded {
        /// When the next period starts (ms).
        reset_at_ms: i64,
        /// Calls included per period.
        included: i64,
    },
    /// The shared counter could not be reached; the call is admitted.
    Unknown,
}

/// Counters of the quota phase, for metrics.
#[derive(Debug, Default)]
pub struct QuotaStats {
    /// Calls within their quota.
    pub within: AtomicU64,
    /// Calls admitted as overage.
    pub overage: AtomicU64,
    /// Calls refused with 429 quota_exceeded.
    pub exceeded: AtomicU64,
    /// Calls admitted because the counter could not be reached.
    pub unknown: AtomicU64,
    /// Blocks leased from the shared counter.
    pub leases: AtomicU64,
}

#[derive(Debug, Default)]
struct Block {
    period_start: i64,
    next: i64,
    end: i64,
    rule: Option<QuotaRule>,
    exhausted_until: Option<Instant>,
}

/// Per-subscription blocks of leased calls.
#[derive(Debug)]
pub struct QuotaKeeper {
    store: Store,
    lease_size: i64,
    blocks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Block>>>>,
    /// Counters for metrics.
    pub stats: QuotaStats,
}

impl QuotaKeeper {
    /// A keeper leasing `lease_size` calls at a time from `store`.
    pub fn new(store: Store, lease_size: u32) -> Self {
        Self {
            store,
            lease_size: i64::from(lease_size.max(1)),
            blocks: Mutex::new(HashMap::new()),
            stats: QuotaStats::default(),
        }
    }

    /// Decides one call of `subscription_id` under `rule` at `now_ms`.
    pub async fn check(
        &self,
        subscription_id: &str,
        rule: &QuotaRule,
        now_ms: i64,
    ) -> QuotaOutcome {
        let outcome = self.decide(subscription_id, rule, now_ms).await;
        let counter = match outcome {
            QuotaOutcome::Within => &self.stats.within,
            QuotaOutcome::Overage => &self.stats.overage,
            QuotaOutcome::Exceeded { .. } => &self.stats.exceeded,
            QuotaOutcome::Unknown => &self.stats.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn decide(&self, subscription_id: &str, rule: &QuotaRule, now_ms: i64) -> QuotaOutcome {
        let (period_start, period_end) = period(rule, now_ms);
        let cell = {
            let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            match blocks.get(subscription_id) {
                Some(cell) => cell.clone(),
                None => blocks
                    .entry(subscription_id.to_owned())
                    .or_default()
                    .clone(),
            }
        };
        let mut block = cell.lock().await;
        if block.period_start != period_start {
            self.give_back(subscription_id, &mut block);
            *block = Block {
                period_start,
                ..Block::default()
            };
        }
        if block.rule.as_ref() != Some(rule) {
            // A plan change (an upgrade, a new limit) is tried at once.
            block.exhausted_until = None;
            block.rule = Some(*rule);
        }
        let exceeded = QuotaOutcome::Exceeded {
            reset_at_ms: period_end,
            included: rule.included,
        };
        loop {
            if block.next < block.end {
                let ordinal = block.next;
                block.next += 1;
                if ordinal < rule.included {
                    return QuotaOutcome::Within;
                }
                if rule.overage {
                    return QuotaOutcome::Overage;
                }
                // The hard quota was lowered below calls already leased.
                block.next -= 1;
                self.give_back(subscription_id, &mut block);
                block.exhausted_until = Some(Instant::now() + RETRY_EXHAUSTED);
                return exceeded;
            }
            if block.exhausted_until.is_some_and(|t| Instant::now() < t) {
                return exceeded;
            }
            let cap = (!rule.overage).then_some(rule.included);
            match self
                .store
                .lease_quota(subscription_id, period_start, self.lease_size, cap)
                .await
            {
                Ok(lease) if lease.granted > 0 => {
                    self.stats.leases.fetch_add(1, Ordering::Relaxed);
                    block.next = lease.start;
                    block.end = lease.start + lease.granted;
                }
                Ok(_) => {
                    block.exhausted_until = Some(Instant::now() + RETRY_EXHAUSTED);
                    return exceeded;
                }
                Err(e) => {
                    tracing::warn!(error = %e, subscription = subscription_id, "cannot lease quota; admitting the call");
                    return QuotaOutcome::Unknown;
                }
            }
        }
    }

    /// Returns the unused rest of a block to the shared counter, in the background.
    fn give_back(&self, subscription_id: &str, block: &mut Block) {
        let unused = block.end - block.next;
        block.end = block.next;
        if unused <= 0 {
            return;
        }
        let store = self.store.clone();
        let id = subscription_id.to_owned();
        let period_start = block.period_start;
        tokio::spawn(async move {
            if let Err(e) = store.release_quota(&id, period_start, unused).await {
                tracing::debug!(error = %e, "cannot give back unused quota");
            }
        });
    }

    /// Gives back every unused block (at shutdown); waits for the writes.
    pub async fn release_all(&self) {
        let cells: Vec<(String, Arc<tokio::sync::Mutex<Block>>)> = {
            let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            blocks.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (id, cell) in cells {
            let mut block = cell.lock().await;
            let unused = block.end - block.next;
            block.end = block.next;
            if unused > 0
                && let Err(e) = self
                    .store
                    .release_quota(&id, block.period_start, unused)
                    .await
            {
                tracing::warn!(error = %e, subscription = %id, "cannot give back unused quota at shutdown");
            }
        }
    }
}
