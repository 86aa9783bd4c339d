//! Rate limits: GCRA per (plan limit, key or app), on this node or cluster-wide
//! in Redis.
//!
//! GCRA keeps one number per budget, the theoretical arrival time (TAT) of the
//! next call at the steady rate. With `T = window / limit` and capacity `C`
//! (the burst), a call at `now` is admitted when `now >= max(TAT, now) + T - C·T`,
//! and then TAT becomes `max(TAT, now) + T`. No fixed windows, so no double burst
//! at window edges; refused calls change nothing, so they do not use up the budget.
//!
//! Cluster mode runs the same arithmetic in one Lua script per call on Redis:
//! every limit of the call is checked and, only if all admit, all are updated —
//! one round trip, atomic, no read-then-write race, with Redis's clock. If Redis
//! fails or is slower than the timeout, the configured failure mode applies:
//! `open` decides on this node's own limiter, `closed` refuses with 503.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollgate_core::model::RateLimit;

use super::redis_link::RedisLink;
use hashbrown::HashTable;

/// Shards of the local limiter's table, to keep lock contention low.
const SHARDS: usize = 32;

/// One budget a call must fit in: one of a plan's limits, counted for one
/// key or app. Borrowed from the snapshot, so deciding a call locally makes
/// no text: the budget's name ([`Budget::id`]) is written only for Redis;
/// the local table keeps the ids once, when it first sees the budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// The plan.
    pub plan_id: &'a str,
    /// The limit's place among the plan's limits.
    pub index: usize,
    /// The key or app the budget counts.
    pub counted: &'a str,
    /// The limit.
    pub limit: RateLimit,
}

impl Budget<'_> {
    /// The budget's name, `plan:limit index:key or app` (the same text in Redis).
    pub fn id(&self) -> String {
        use std::fmt::Write;
        let mut id = String::with_capacity(self.plan_id.len() + self.counted.len() + 8);
        write!(id, "{}:{}:{}", self.plan_id, self.index, self.counted)
            .expect("writing to a String cannot fail");
        id
    }
}

/// The outcome for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may go on.
    pub allowed: bool,
    /// The limit of the tightest budget (for `RateLimit-Limit`).
    pub limit: u32,
    /// Calls left in the tightest budget right now (for `RateLimit-Remaining`).
    pub remaining: u32,
    /// Until the tightest budget is full again (for `RateLimit-Reset`).
    pub reset: Duration,
    /// When refused: how long until a call would be admitted (`Retry-After`).
    pub retry_after: Duration,
}

/// Where a decision came from, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's limiter (local mode).
    Local,
    /// Redis (cluster mode).
    Redis,
    /// This node's limiter because Redis failed (`open` failure mode).
    Fallback,
}

/// Counters of the limiter, for metrics.
#[derive(Debug, Default)]
pub struct RateLimitStats {
    /// Calls admitted.
    pub allowed: AtomicU64,
    /// Calls refused with 429.
    pub refused: AtomicU64,
    /// Decisions Redis could not make (error or timeout).
    pub redis_failures: AtomicU64,
    /// Calls refused with 503 because Redis failed in `closed` mode.
    pub unavailable: AtomicU64,
}

/// Why a call cannot be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// GCRA on this node.
#[derive(Debug)]
pub struct LocalLimiter {
    epoch: Instant,
    /// Hashes budgets by their parts; the shard is taken from bits the
    /// tables do not use.
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<HashTable<Tracked>>>,
}

/// A budget this node tracks: its parts (the plan id and the counted id
/// side by side, where the plan id ends, and the limit's index), so a lookup
/// compares them exactly without writing a name; its hash, and its TAT.
#[derive(Debug)]
struct Tracked {
    hash: u64,
    /// The plan id, then the counted id.
    ids: Box<str>,
    plan_len: usize,
    index: usize,
    tat: u64,
}

impl Tracked {
    fn new(hash: u64, b: &Budget<'_>, tat: u64) -> Self {
        Self {
            hash,
            ids: [b.plan_id, b.counted].concat().into_boxed_str(),
            plan_len: b.plan_id.len(),
            index: b.index,
            tat,
        }
    }

    /// Whether this is budget `b`.
    fn is(&self, b: &Budget<'_>) -> bool {
        self.index == b.index
            && self.plan_len == b.plan_id.len()
            && self.ids.len() == self.plan_len + b.counted.len()
            && self.ids[..self.plan_len] == *b.plan_id
            && self.ids[self.plan_len..] == *b.counted
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
        }
    }
}

/// One GCRA step over microsecond times: the new TAT if admitted, and the
/// decision. Signed arithmetic: `allow_at` may lie before the clock's origin.
fn gcra(tat: u64, now: u64, limit: &RateLimit) -> (Option<u64>, Decision) {
    let t = i128::from(limit.interval_micros());
    let tolerance = t * i128::from(limit.capacity());
    let now_i = i128::from(now);
    let base = i128::from(tat.max(now));
    let new_tat = base + t;
    let allow_at = new_tat - tolerance;
    let micros = |x: i128| Duration::from_micros(u64::try_from(x.max(0)).unwrap_or(u64::MAX));
    if now_i < allow_at {
        let d = Decision {
            allowed: false,
            limit: limit.limit,
            remaining: 0,
            reset: micros(base - now_i),
            retry_after: micros(allow_at - now_i),
        };
        (None, d)
    } else {
        let d = Decision {
            allowed: true,
            limit: limit.limit,
            remaining: u32::try_from((now_i - allow_at) / t).unwrap_or(u32::MAX),
            reset: micros(new_tat - now_i),
            retry_after: Duration::ZERO,
        };
        (Some(u64::try_from(new_tat).unwrap_or(u64::MAX)), d)
    }
}

/// The tighter of two admitted decisions (fewer calls left).
fn tighter(a: Decision, b: Decision) -> Decision {
    if b.remaining < a.remaining { b } else { a }
}

impl LocalLimiter {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The budget's hash (parts, not its name: nothing is written to hash it).
    fn hash(&self, b: &Budget<'_>) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((b.plan_id, b.index, b.counted))
    }

    /// The shard of a hash: bits 32-36, which a table of fewer than 2^32
    /// slots does not use for the slot or its tag (the low and the top bits).
    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashTable<Tracked>> {
        self.shards[(hash >> 32) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Decides a call against every budget; updates them only if all admit.
    pub fn check(&self, budgets: &[Budget<'_>]) -> Decision {
        let now = self.now();
        // What each budget took, to give back if a later one refuses: none
        // to keep with one budget.
        let mut taken: Vec<(usize, u64, u64)> = Vec::new();
        let mut result: Option<Decision> = None;
        for (i, b) in budgets.iter().enumerate() {
            let hash = self.hash(b);
            let mut shard = self.shard(hash);
            // One lookup for a budget seen before (the common case).
            let slot = shard.find_mut(hash, |t| t.is(b));
            let tat = slot.as_ref().map_or(0, |t| t.tat);
            let (new_tat, d) = gcra(tat, now, &b.limit);
            match new_tat {
                Some(nt) => {
                    match slot {
                        Some(slot) => slot.tat = nt,
                        None => {
                            shard.insert_unique(hash, Tracked::new(hash, b, nt), |t| t.hash);
                        }
                    }
                    if i + 1 < budgets.len() {
                        taken.push((i, hash, tat));
                    }
                    result = Some(result.map_or(d, |r| tighter(r, d)));
                }
                None => {
                    drop(shard);
                    // Give back what earlier budgets took: a refused call costs nothing.
                    for (j, hash, old) in taken {
                        let b = &budgets[j];
                        let mut shard = self.shard(hash);
                        if let Ok(entry) = shard.find_entry(hash, |t| t.is(b)) {
                            if old == 0 {
                                entry.remove();
                            } else {
                                entry.into_mut().tat = old;
                            }
                        }
                    }
                    return d;
                }
            }
        }
        result.unwrap_or(Decision {
            allowed: true,
            limit: 0,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
        })
    }

    /// Forgets budgets that are full again (their TAT has passed).
    pub fn sweep(&self) {
        let now = self.now();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|t| t.tat > now);
        }
    }

    /// Budgets tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// True when no budget is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The script every cluster-mode decision runs: checks all budgets of a call
/// with Redis's clock and updates them only if all admit. ARGV holds, per key,
/// the interval and the tolerance in microseconds. Returns
/// `{allowed, limit index, remaining, reset_us, retry_after_us}`.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local best_i, best_rem, best_reset = 0, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    return {0, i, 0, tat - now, allow_at - now}
  end
  new[i] = new_tat
  local rem = math.floor((now - allow_at) / interval)
  if best_rem < 0 or rem < best_rem then
    best_i, best_rem, best_reset = i, rem, new_tat - now
  end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', math.ceil((new[i] - now) / 1000) + 1000)
end
return {1, best_i, best_rem, best_reset, 0}
";

/// GCRA in Redis, shared by every gateway.
pub struct RedisLimiter {
    link: std::sync::Arc<RedisLink>,
    script: redis::Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("connected", &self.link.is_connected())
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter on `url`; connects in the background (see [`RedisLink`]), so a
    /// gateway starts even while Redis is down.
    pub fn start(url: &str, timeout: Duration) -> Result<std::sync::Arc<Self>, redis::RedisError> {
        Ok(std::sync::Arc::new(Self {
            link: RedisLink::start(url, timeout, "rate limits", "falling back meanwhile")?,
            script: redis::Script::new(GCRA_SCRIPT),
            timeout,
        }))
    }

    /// Decides a call in one round trip.
    pub async fn check(&self, budgets: &[Budget<'_>]) -> Result<Decision, Unavailable> {
        let Some(mut conn) = self.link.connection().await else {
            return Err(Unavailable);
        };
        let mut invocation = self.script.prepare_invoke();
        for b in budgets {
            let t = b.limit.interval_micros();
            invocation
                .key(format!("tollgate:rl:{}", b.id()))
                .arg(t)
                .arg(t.saturating_mul(u64::from(b.limit.capacity())));
        }
        let reply: Result<Result<Vec<i64>, _>, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await;
        let v = match reply {
            Ok(Ok(v)) if v.len() == 5 => v,
            Ok(Ok(v)) => {
                tracing::debug!(reply = ?v, "unexpected rate-limit script reply");
                return Err(Unavailable);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "rate-limit script failed");
                return Err(Unavailable);
            }
            Err(_) => return Err(Unavailable),
        };
        let idx = usize::try_from(v[1] - 1)
            .unwrap_or(0)
            .min(budgets.len().saturating_sub(1));
        let micros = |x: i64| Duration::from_micros(u64::try_from(x).unwrap_or(0));
        Ok(Decision {
            allowed: v[0] == 1,
            limit: budgets.get(idx).map_or(0, |b| b.limit.limit),
            remaining: u32::try_from(v[2].max(0)).unwrap_or(u32::MAX),
            reset: micros(v[3]),
            retry_after: micros(v[4]),
        })
    }
}

/// The rate-limit phase's state: local, or Redis with a local fallback.
#[derive(Debug)]
pub struct RateLimiter {
    local: LocalLimiter,
    redis: Option<std::sync::Arc<RedisLimiter>>,
    fail_closed: bool,
    /// Counters for metrics.
    pub stats: RateLimitStats,
    last_warning: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter: cluster-wide when `redis` is given.
    pub fn new(redis: Option<std::sync::Arc<RedisLimiter>>, fail_closed: bool) -> Self {
        Self {
            local: LocalLimiter::default(),
            redis,
            fail_closed,
            stats: RateLimitStats::default(),
            last_warning: Mutex::new(None),
        }
    }

    /// The local table, for sweeping.
    pub fn local(&self) -> &LocalLimiter {
        &self.local
    }

    /// Decides a call against its budgets.
    pub async fn check(&self, budgets: &[Budget<'_>]) -> Result<(Decision, Source), Unavailable> {
        let (decision, source) = match &self.redis {
            None => (self.local.check(budgets), Source::Local),
            // Boxed, so local checks do not carry the Redis call's large future.
            Some(redis) => match Box::pin(redis.check(budgets)).await {
                Ok(d) => (d, Source::Redis),
                Err(Unavailable) => {
                    self.stats.redis_failures.fetch_add(1, Ordering::Relaxed);
                    self.warn_fallback();
                    if self.fail_closed {
                        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        return Err(Unavailable);
                    }
                    (self.local.check(budgets), Source::Fallback)
                }
            },
        };
        let counter = if decision.allowed {
            &self.stats.allowed
        } else {
            &self.stats.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok((decision, source))
    }

    fn warn_fallback(&self) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            if self.fail_closed {
                tracing::warn!(
                    "rate limits: Redis unavailable; refusing limited calls (failure mode closed)"
                );
            } else {
                tracing::warn!(
                    "rate limits: Redis unavailable; each gateway enforces its own limits until it is back"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::model::{RateScope, RateWindow};

    fn limit(n: u32, window: RateWindow, burst: Option<u32>) -> RateLimit {
        RateLimit {
            limit: n,
            window,
            burst,
            per: RateScope::App,
        }
    }

    /// Limit 0 of plan `plan` for key `counted`.
    fn budget(counted: &str, limit: RateLimit) -> Budget<'_> {
        Budget {
            plan_id: "plan",
            index: 0,
            counted,
            limit,
        }
    }

    #[test]
    fn budgets_are_named_and_told_apart_by_their_parts() {
        let per_minute = limit(1, RateWindow::Minute, None);
        let b = |plan_id, index, counted| Budget {
            plan_id,
            index,
            counted,
            limit: per_minute,
        };
        assert_eq!(b("plan_1", 0, "key_1").id(), "plan_1:0:key_1");
        assert_eq!(b("plan_1", 12, "app_1").id(), "plan_1:12:app_1");
        // Parts that would run together in one text are still other budgets,
        // and each has its own single call a minute.
        let limiter = LocalLimiter::default();
        let all = [
            b("p", 1, "k"),
            b("p", 11, "k"),
            b("p:1", 1, "k"),
            b("p", 1, "1:k"),
            b("p", 1, "k:"),
            b("p", 0, "k"),
        ];
        for one in &all {
            assert!(
                limiter.check(std::slice::from_ref(one)).allowed,
                "{}",
                one.id()
            );
        }
        assert_eq!(limiter.len(), all.len());
        for one in &all {
            assert!(
                !limiter.check(std::slice::from_ref(one)).allowed,
                "{}",
                one.id()
            );
        }
        assert_eq!(limiter.len(), all.len(), "refusals track nothing new");
    }

    #[test]
    fn gcra_admits_the_burst_then_the_steady_rate() {
        let l = limit(10, RateWindow::Second, Some(3)); // one per 100 ms, 3 at once
        let mut tat = 0;
        let now = 1_000_000;
        for left in [2, 1, 0] {
            let (nt, d) = gcra(tat, now, &l);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            tat = nt.unwrap();
        }
        let (nt, d) = gcra(tat, now, &l);
        assert!(nt.is_none() && !d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // Refused calls do not move the TAT: 100 ms later one call fits.
        let (nt, d) = gcra(tat, now + 100_000, &l);
        assert!(d.allowed && nt.is_some());
    }

    #[test]
    fn local_limiter_counts_budgets_separately_and_refusals_cost_nothing() {
        let limiter = LocalLimiter::default();
        let per_minute = limit(2, RateWindow::Minute, None);
        // Right after start the clock is near zero: the first call still sees a full budget.
        assert_eq!(limiter.check(&[budget("fresh", per_minute)]).remaining, 1);
        let a = [budget("a", per_minute)];
        let b = [budget("b", per_minute)];
        assert!(limiter.check(&a).allowed);
        assert!(limiter.check(&a).allowed);
        assert!(!limiter.check(&a).allowed);
        assert!(limiter.check(&b).allowed, "budgets are independent");

        // Two limits: the second refuses, so the first is given back.
        let tight = limit(1, RateWindow::Hour, None);
        let both = [budget("c1", per_minute), budget("c2", tight)];
        let d = limiter.check(&both);
        assert!(d.allowed);
        assert_eq!(
            (d.limit, d.remaining),
            (1, 0),
            "the tightest budget is reported"
        );
        assert!(!limiter.check(&both).allowed);
        let c1_only = [budget("c1", per_minute)];
        assert_eq!(
            limiter.check(&c1_only).remaining,
            0,
            "the refused call did not use c1"
        );
    }

    #[test]
    fn sweep_forgets_full_budgets() {
        let limiter = LocalLimiter::default();
        let fast = limit(1_000_000, RateWindow::Second, Some(1));
        limiter.check(&[budget("x", fast)]);
        assert_eq!(limiter.len(), 1);
        std::thread::sleep(Duration::from_millis(2));
        limiter.sweep();
        assert!(limiter.is_empty());
    }
}
