//! The quota phase: included calls per subscription per billing period.
//!
//! Counting is cluster-wide without touching the shared counter on every call:
//! each gateway leases a block of calls from the subscription's counter (in the
//! control-plane database or in Redis, see [`QuotaCounter`]), admits calls from
//! the block in memory, and leases the next block when it runs out. A hard
//! quota's leases never pass the included calls, so the cluster never admits
//! more than the plan includes; it may admit fewer while other gateways hold
//! unused blocks (at most nodes × lease size), and unused blocks are given back
//! at the end of a period and at shutdown. A soft quota's leases are never
//! refused: each call gets an ordinal from its block, and calls past the
//! included ones are overage.
//!
//! After a hard quota is used up a gateway asks the counter again at most once a
//! second, or at once when the plan's quota changes. When the counter cannot be
//! reached, calls are admitted (`Unknown`), the counter is asked again at most
//! once a second, and a warning is logged at most once a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_core::quota::period;
use tollgate_core::store::QuotaRule;

use crate::FastMap;

pub use super::quota_counter::QuotaCounter;

/// How long a gateway waits before asking again for a used-up hard quota.
const RETRY_EXHAUSTED: Duration = Duration::from_secs(1);

/// How long a gateway admits calls without asking after the counter failed.
/// Without it every call of a subscription would wait, one after another,
/// for the counter's timeout.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);

/// Least time between two warnings that the counter cannot be reached.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

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
    /// The end of that period under `rule`: a call before it, under the same
    /// rule, is in the same period (periods tile time), so the calendar is
    /// not worked out again per call.
    period_end: i64,
    next: i64,
    end: i64,
    rule: Option<QuotaRule>,
    exhausted_until: Option<Instant>,
    /// Size of the next lease (0: the configured size) and when the last one
    /// was taken: a subscription that uses a block within a second gets a
    /// bigger one next time, one that takes long a smaller one.
    lease: i64,
    leased_at: Option<Instant>,
}

/// How far leases grow above the configured size for busy subscriptions.
const MAX_LEASE_FACTOR: i64 = 64;

/// The size of the next lease: doubled when the last block lasted under a
/// second, halved when it lasted over ten, between the configured size and the
/// larger of that and 1% of a hard quota's included calls (capped at 64 times
/// the configured size). So a hard quota never leaves more than 1% of its calls
/// (or one configured lease) unused in one gateway's hands.
fn next_lease(min: i64, current: i64, last: Option<Instant>, rule: &QuotaRule) -> i64 {
    let current = current.max(min);
    let max = if rule.overage {
        min * MAX_LEASE_FACTOR
    } else {
        (rule.included / 100).clamp(min, min * MAX_LEASE_FACTOR)
    };
    let size = match last.map(|t| t.elapsed()) {
        Some(d) if d < Duration::from_secs(1) => current.saturating_mul(2),
        Some(d) if d > Duration::from_secs(10) => current / 2,
        _ => current,
    };
    size.clamp(min, max)
}

/// One subscription's block, and the turn its leases take.
#[derive(Debug, Default)]
struct Cell {
    block: Block,
    /// Held while the block is leased: the subscription's other calls that
    /// find it used up wait for the lease and take from the new block,
    /// instead of each leasing one. Calls that find calls in the block take
    /// one without it.
    leasing: Arc<tokio::sync::Mutex<()>>,
}

/// What a call's block says before any lease.
enum Step {
    /// Decided from the block.
    Decided(QuotaOutcome),
    /// The block is used up: lease for this period (start, end).
    Lease((i64, i64)),
}

/// Per-subscription blocks of leased calls.
#[derive(Debug)]
pub struct QuotaKeeper {
    counter: QuotaCounter,
    lease_size: i64,
    /// A call that takes from its block holds this lock for that only: one
    /// lock round trip per call, none across a lease.
    blocks: Mutex<FastMap<String, Cell>>,
    /// Until when the counter is not asked after a failure.
    unavailable_until: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
    /// Counters for metrics.
    pub stats: QuotaStats,
}

impl QuotaKeeper {
    /// A keeper leasing `lease_size` calls at a time from `counter`.
    pub fn new(counter: QuotaCounter, lease_size: u32) -> Self {
        Self {
            counter,
            lease_size: i64::from(lease_size.max(1)),
            blocks: Mutex::new(FastMap::default()),
            unavailable_until: Mutex::new(None),
            last_warning: Mutex::new(None),
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

    /// Runs `f` on the subscription's cell, under the lock.
    fn with_cell<T>(&self, subscription_id: &str, f: impl FnOnce(&mut Cell) -> T) -> T {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let cell = match blocks.get_mut(subscription_id) {
            Some(cell) => cell,
            None => blocks.entry(subscription_id.to_owned()).or_default(),
        };
        f(cell)
    }

    async fn decide(&self, subscription_id: &str, rule: &QuotaRule, now_ms: i64) -> QuotaOutcome {
        let leasing = match self.with_cell(subscription_id, |cell| {
            match self.take(subscription_id, &mut cell.block, rule, now_ms) {
                Step::Decided(outcome) => Err(outcome),
                Step::Lease(_) => Ok(cell.leasing.clone()),
            }
        }) {
            Ok(leasing) => leasing,
            Err(outcome) => return outcome,
        };
        let _turn = leasing.lock().await;
        loop {
            // A lease taken while this call waited for its turn serves it.
            let (period, size) = match self.with_cell(subscription_id, |cell| {
                let block = &mut cell.block;
                match self.take(subscription_id, block, rule, now_ms) {
                    Step::Decided(outcome) => Err(outcome),
                    Step::Lease(period) => Ok((
                        period,
                        next_lease(self.lease_size, block.lease, block.leased_at, rule),
                    )),
                }
            }) {
                Ok(lease) => lease,
                Err(outcome) => return outcome,
            };
            if self.counter_unavailable() {
                return QuotaOutcome::Unknown;
            }
            let cap = (!rule.overage).then_some(rule.included);
            // Boxed: a lease is rare, and its future (a store round trip)
            // would otherwise make every call's future that much larger.
            let lease = Box::pin(self.counter.lease(subscription_id, period, size, cap)).await;
            let lease = match lease {
                Ok(lease) => lease,
                Err(e) => {
                    self.counter_failed(&e);
                    return QuotaOutcome::Unknown;
                }
            };
            if lease.granted > 0 {
                self.stats.leases.fetch_add(1, Ordering::Relaxed);
            }
            let exhausted = self.with_cell(subscription_id, |cell| {
                let block = &mut cell.block;
                if block.period_start != period.0 {
                    // The period turned while this call leased: what it
                    // leased is the last period's, and goes back.
                    self.give_back_calls(subscription_id, period.0, lease.granted);
                    return false;
                }
                if lease.granted > 0 {
                    block.lease = size;
                    block.leased_at = Some(Instant::now());
                    block.next = lease.start;
                    block.end = lease.start + lease.granted;
                    false
                } else {
                    block.exhausted_until = Some(Instant::now() + RETRY_EXHAUSTED);
                    true
                }
            });
            if exhausted {
                return QuotaOutcome::Exceeded {
                    reset_at_ms: period.1,
                    included: rule.included,
                };
            }
        }
    }

    /// Brings `block` to `rule`'s period at `now_ms` and takes the call from
    /// it, unless it must be leased first.
    fn take(
        &self,
        subscription_id: &str,
        block: &mut Block,
        rule: &QuotaRule,
        now_ms: i64,
    ) -> Step {
        let (period_start, period_end) = if block.rule.as_ref() == Some(rule)
            && (block.period_start..block.period_end).contains(&now_ms)
        {
            (block.period_start, block.period_end)
        } else {
            period(rule, now_ms)
        };
        if block.period_start != period_start {
            self.give_back(subscription_id, block);
            *block = Block {
                period_start,
                ..Block::default()
            };
        }
        block.period_end = period_end;
        if block.rule.as_ref() != Some(rule) {
            // A plan change (an upgrade, a new limit) is tried at once.
            block.exhausted_until = None;
            block.rule = Some(*rule);
        }
        let exceeded = QuotaOutcome::Exceeded {
            reset_at_ms: period_end,
            included: rule.included,
        };
        if block.next < block.end {
            let ordinal = block.next;
            block.next += 1;
            if ordinal < rule.included {
                return Step::Decided(QuotaOutcome::Within);
            }
            if rule.overage {
                return Step::Decided(QuotaOutcome::Overage);
            }
            // The hard quota was lowered below calls already leased.
            block.next -= 1;
            self.give_back(subscription_id, block);
            block.exhausted_until = Some(Instant::now() + RETRY_EXHAUSTED);
            return Step::Decided(exceeded);
        }
        if block.exhausted_until.is_some_and(|t| Instant::now() < t) {
            return Step::Decided(exceeded);
        }
        Step::Lease((period_start, period_end))
    }

    /// True while the counter is not asked after a failure.
    fn counter_unavailable(&self) -> bool {
        let until = self
            .unavailable_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Notes a failed lease: stop asking for a second, warn at most once a minute.
    fn counter_failed(&self, error: &super::quota_counter::CounterError) {
        let now = Instant::now();
        *self
            .unavailable_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(now + RETRY_UNAVAILABLE);
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= WARNING_INTERVAL) {
            *last = Some(now);
            tracing::warn!(
                %error,
                counter = self.counter.name(),
                "quotas: cannot lease from the shared counter; admitting calls until it answers (counted as unknown)"
            );
        } else {
            tracing::debug!(%error, "cannot lease quota; admitting the call");
        }
    }

    /// Returns the unused rest of a block to the shared counter, in the background.
    fn give_back(&self, subscription_id: &str, block: &mut Block) {
        let unused = block.end - block.next;
        block.end = block.next;
        self.give_back_calls(subscription_id, block.period_start, unused);
    }

    /// Returns `unused` calls of the period starting at `period_start` to the
    /// shared counter, in the background.
    fn give_back_calls(&self, subscription_id: &str, period_start: i64, unused: i64) {
        if unused <= 0 {
            return;
        }
        let counter = self.counter.clone();
        let id = subscription_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = counter.release(&id, period_start, unused).await {
                tracing::debug!(error = %e, "cannot give back unused quota");
            }
        });
    }

    /// Gives back every unused block (at shutdown, after the last call);
    /// waits for the writes.
    pub async fn release_all(&self) {
        let unused: Vec<(String, i64, i64)> = {
            let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            blocks
                .iter_mut()
                .filter_map(|(id, cell)| {
                    let block = &mut cell.block;
                    let unused = block.end - block.next;
                    block.end = block.next;
                    (unused > 0).then(|| (id.clone(), block.period_start, unused))
                })
                .collect()
        };
        for (id, period_start, unused) in unused {
            if let Err(e) = self.counter.release(&id, period_start, unused).await {
                tracing::warn!(error = %e, subscription = %id, "cannot give back unused quota at shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_billing::BillingInterval;
    use tollgate_core::model::QuotaAnchor;

    use super::super::quota_counter::test_redis::{cleanup, cmd, counter, prefix};
    use super::*;

    fn rule(included: i64, overage: bool) -> QuotaRule {
        QuotaRule {
            included,
            overage,
            interval: BillingInterval::Month,
            anchor: QuotaAnchor::Calendar,
            subscription_start: 0,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    #[tokio::test]
    async fn hard_quota_on_redis_admits_the_included_calls_and_follows_plan_changes() {
        let redis = counter(&prefix()).await;
        let keeper = QuotaKeeper::new(QuotaCounter::Redis(redis.clone()), 2);
        let five = rule(5, false);
        for _ in 0..5 {
            assert_eq!(
                keeper.check("sub", &five, now()).await,
                QuotaOutcome::Within
            );
        }
        assert!(matches!(
            keeper.check("sub", &five, now()).await,
            QuotaOutcome::Exceeded { included: 5, .. }
        ));
        // An upgrade is tried at once, not after the one-second pause.
        let seven = rule(7, false);
        for _ in 0..2 {
            assert_eq!(
                keeper.check("sub", &seven, now()).await,
                QuotaOutcome::Within
            );
        }
        assert!(matches!(
            keeper.check("sub", &seven, now()).await,
            QuotaOutcome::Exceeded { included: 7, .. }
        ));
        let (start, _) = period(&seven, now());
        let leased: i64 = cmd(&redis, redis::cmd("GET").arg(redis.key("sub", start))).await;
        assert_eq!(leased, 7);
        assert_eq!(keeper.stats.within.load(Ordering::Relaxed), 7);
        assert_eq!(keeper.stats.exceeded.load(Ordering::Relaxed), 2);
        assert_eq!(keeper.stats.leases.load(Ordering::Relaxed), 4);
        cleanup(&redis).await;
    }

    #[tokio::test]
    async fn calls_that_find_the_block_used_up_together_share_one_lease() {
        let redis = counter(&prefix()).await;
        let keeper = QuotaKeeper::new(QuotaCounter::Redis(redis.clone()), 10);
        let hard = rule(1_000, false);
        let at = now();
        // `n` calls at once, each within the quota; the leases taken so far.
        let at_once = async |n: usize| {
            let calls = (0..n).map(|_| keeper.check("sub", &hard, at));
            let outcomes = futures_util::future::join_all(calls).await;
            assert!(
                outcomes.iter().all(|o| *o == QuotaOutcome::Within),
                "{outcomes:?}"
            );
            keeper.stats.leases.load(Ordering::Relaxed)
        };
        // Eight calls, the block empty: one leases, the others wait for its
        // block and take from it.
        assert_eq!(at_once(8).await, 1);
        // Three more than the block holds: a second lease.
        assert_eq!(at_once(5).await, 2);
        let leased: i64 = cmd(
            &redis,
            redis::cmd("GET").arg(redis.key("sub", period(&hard, at).0)),
        )
        .await;
        assert_eq!(leased, 20, "two blocks of ten");
        cleanup(&redis).await;
    }

    #[tokio::test]
    async fn a_new_period_starts_with_the_whole_quota() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        let redis = counter(&prefix()).await;
        let keeper = QuotaKeeper::new(QuotaCounter::Redis(redis.clone()), 2);
        let three = rule(3, false);
        // Three calls admitted at `now`, the fourth refused until `reset`.
        let uses_up = async |now: i64, reset: &str| {
            for _ in 0..3 {
                assert_eq!(keeper.check("sub", &three, now).await, QuotaOutcome::Within);
            }
            assert_eq!(
                keeper.check("sub", &three, now).await,
                QuotaOutcome::Exceeded {
                    reset_at_ms: at(reset),
                    included: 3
                }
            );
        };
        // Periods to come: the counter lets a past period's count expire.
        let last_of_january = at("2030-01-31T23:59:59.999Z");
        uses_up(last_of_january, "2030-02-01T00:00:00Z").await;
        // One millisecond later: February's quota, whole.
        uses_up(last_of_january + 1, "2030-03-01T00:00:00Z").await;
        cleanup(&redis).await;
    }

    #[tokio::test]
    async fn soft_quota_on_redis_marks_overage_and_unused_calls_go_back() {
        let redis = counter(&prefix()).await;
        let keeper = QuotaKeeper::new(QuotaCounter::Redis(redis.clone()), 10);
        let soft = rule(3, true);
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(keeper.check("sub", &soft, now()).await);
        }
        use QuotaOutcome::{Overage, Within};
        assert_eq!(outcomes, [Within, Within, Within, Overage, Overage]);
        let key = redis.key("sub", period(&soft, now()).0);
        let leased: i64 = cmd(&redis, redis::cmd("GET").arg(&key)).await;
        assert_eq!(leased, 10, "one block leased");
        keeper.release_all().await;
        let leased: i64 = cmd(&redis, redis::cmd("GET").arg(&key)).await;
        assert_eq!(leased, 5, "the unused rest went back");
        cleanup(&redis).await;
    }

    #[tokio::test]
    async fn an_unreachable_counter_admits_calls_as_unknown() {
        let addr = tollgate_testkit::upstream::closed_port().await;
        let redis = super::super::quota_counter::RedisQuotaCounter::start(
            &format!("redis://{addr}"),
            Duration::from_millis(100),
            &prefix(),
        )
        .unwrap();
        let keeper = QuotaKeeper::new(QuotaCounter::Redis(redis), 10);
        let hard = rule(1, false);
        for _ in 0..3 {
            assert_eq!(
                keeper.check("sub", &hard, now()).await,
                QuotaOutcome::Unknown
            );
        }
        assert_eq!(keeper.stats.unknown.load(Ordering::Relaxed), 3);
        assert_eq!(keeper.stats.leases.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn leases_follow_the_call_rate_within_bounds() {
        let soft = rule(1_000_000_000, true);
        let just_now = Some(Instant::now());
        let long_ago = Instant::now().checked_sub(Duration::from_secs(30));
        // First lease: the configured size; a block used within a second doubles.
        assert_eq!(next_lease(100, 0, None, &soft), 100);
        assert_eq!(next_lease(100, 100, just_now, &soft), 200);
        assert_eq!(
            next_lease(100, 6400, just_now, &soft),
            6400,
            "at most 64 times"
        );
        // A slow subscription shrinks back, never below the configured size.
        if long_ago.is_some() {
            assert_eq!(next_lease(100, 800, long_ago, &soft), 400);
            assert_eq!(next_lease(100, 100, long_ago, &soft), 100);
        }
        // A hard quota's leases stay within 1% of its included calls.
        let hard = rule(50_000, false);
        assert_eq!(next_lease(100, 400, just_now, &hard), 500);
        assert_eq!(next_lease(100, 100, just_now, &rule(1_000, false)), 100);
    }
}
