//! The shared counters quota leases come from: the control-plane database
//! (the default) or Redis.
//!
//! Both keep one number per subscription and period, the calls leased so far,
//! and offer the same two atomic operations: lease up to N calls (never past
//! the included calls of a hard quota; always granted for a soft one, the block
//! starting at the calls leased before it, so ordinals mark overage exactly as
//! they do on the database) and give back unused calls. The quota phase
//! ([`super::quota`]) runs one code path over either.
//!
//! On Redis each operation is one Lua script, so concurrent gateways never hand
//! out the same calls and never pass a hard quota's cap. A counter's key is
//! `tollgate:quota:{subscription}:{period start ms}` and expires a day after
//! its period ends, so Redis does not fill up with old periods; the day of grace
//! lets late give-backs and gateways with slightly late clocks still find it.

use std::sync::Arc;
use std::time::Duration;

use tollgate_core::config::QuotaCounterKind;
use tollgate_core::store::QuotaLease;
use tollgate_core::{Settings, Store, StoreError};

use super::redis_link::RedisLink;

/// How long a Redis counter outlives its period.
const EXPIRY_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// The key prefix of quota counters in Redis.
pub const REDIS_KEY_PREFIX: &str = "tollgate:quota";

/// Why the shared counter could not lease or give back calls.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// The database failed.
    #[error("quota counter in the database: {0}")]
    Store(#[from] StoreError),
    /// Redis answered with an error or the connection failed.
    #[error("quota counter in Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No connection to Redis yet (it is being retried in the background).
    #[error("quota counter in Redis: not connected")]
    NotConnected,
    /// Redis did not answer in time.
    #[error("quota counter in Redis: no answer within {0:?}")]
    Timeout(Duration),
    /// The script answered something it never returns.
    #[error("quota counter in Redis: unexpected reply {0:?}")]
    Reply(Vec<i64>),
}

/// Where quota leases come from.
#[derive(Debug, Clone)]
pub enum QuotaCounter {
    /// `quota_counters` in the control-plane database.
    Database(Store),
    /// Redis, shared by every gateway configured with it.
    Redis(Arc<RedisQuotaCounter>),
}

impl QuotaCounter {
    /// The counter `settings` choose: Redis (connecting in the background)
    /// or the database behind `store`.
    pub fn from_settings(store: &Store, settings: &Settings) -> Result<Self, String> {
        match settings.quota_counter {
            QuotaCounterKind::Database => Ok(Self::Database(store.clone())),
            QuotaCounterKind::Redis => {
                let url = settings.redis_url.as_deref().ok_or(
                    "TOLLGATE_QUOTA_COUNTER is redis but TOLLGATE_REDIS_URL is not set".to_owned(),
                )?;
                let counter =
                    RedisQuotaCounter::start(url, settings.redis_timeout, REDIS_KEY_PREFIX)
                        .map_err(|e| format!("invalid TOLLGATE_REDIS_URL: {e}"))?;
                Ok(Self::Redis(counter))
            }
        }
    }

    /// Leases up to `want` calls of the period `[period_start, period_end)`;
    /// with `cap`, the period's leased total never passes it.
    pub async fn lease(
        &self,
        subscription_id: &str,
        (period_start, period_end): (i64, i64),
        want: i64,
        cap: Option<i64>,
    ) -> Result<QuotaLease, CounterError> {
        match self {
            Self::Database(store) => Ok(store
                .lease_quota(subscription_id, period_start, want, cap)
                .await?),
            Self::Redis(redis) => {
                redis
                    .lease(subscription_id, period_start, period_end, want, cap)
                    .await
            }
        }
    }

    /// Gives back `unused` calls of a lease in the period starting at `period_start`.
    pub async fn release(
        &self,
        subscription_id: &str,
        period_start: i64,
        unused: i64,
    ) -> Result<(), CounterError> {
        match self {
            Self::Database(store) => Ok(store
                .release_quota(subscription_id, period_start, unused)
                .await?),
            Self::Redis(redis) => redis
                .release(subscription_id, period_start, unused)
                .await
                .map(|_| ()),
        }
    }

    /// A name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Redis(_) => "Redis",
        }
    }
}

/// Leases a block: KEYS[1] is the counter; ARGV holds the calls wanted, the cap
/// (-1 for none) and when the counter expires (Unix ms). Returns
/// `{calls leased before the block, calls granted}`. INCRBY keeps the counter
/// an integer and a refused lease leaves it untouched.
const LEASE_SCRIPT: &str = r"
local want = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local leased = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = want
if cap >= 0 then
  granted = math.max(0, math.min(want, cap - leased))
end
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return {leased, granted}
";

/// Gives back calls: KEYS[1] is the counter, ARGV[1] the unused calls. Never
/// below zero, and never recreates an expired counter (DECRBY keeps the key's
/// expiry). Returns the calls given back.
const RELEASE_SCRIPT: &str = r"
local leased = tonumber(redis.call('GET', KEYS[1]) or '0')
local back = math.min(tonumber(ARGV[1]), leased)
if back > 0 then
  redis.call('DECRBY', KEYS[1], back)
else
  back = 0
end
return back
";

/// Quota counters in Redis.
pub struct RedisQuotaCounter {
    link: Arc<RedisLink>,
    lease_script: redis::Script,
    release_script: redis::Script,
    timeout: Duration,
    prefix: String,
}

impl std::fmt::Debug for RedisQuotaCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotaCounter")
            .field("connected", &self.link.is_connected())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisQuotaCounter {
    /// Counters under `prefix` on `url`. Connects in the background (see
    /// [`RedisLink`]), so a gateway starts while Redis is down; until then
    /// leases fail and calls are admitted, except that a lease in the first
    /// seconds after start waits for the connection, so a freshly started
    /// gateway does not admit its first calls unchecked.
    pub fn start(
        url: &str,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Arc<Self>, redis::RedisError> {
        Ok(Arc::new(Self {
            link: RedisLink::start(url, timeout, "quotas", "admitting calls until then")?,
            lease_script: redis::Script::new(LEASE_SCRIPT),
            release_script: redis::Script::new(RELEASE_SCRIPT),
            timeout,
            prefix: prefix.to_owned(),
        }))
    }

    /// The key of a subscription's counter for the period starting at `period_start`.
    pub fn key(&self, subscription_id: &str, period_start: i64) -> String {
        format!("{}:{subscription_id}:{period_start}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CounterError> {
        let mut conn = self
            .link
            .connection()
            .await
            .ok_or(CounterError::NotConnected)?;
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(CounterError::Timeout(self.timeout)),
        }
    }

    /// Leases up to `want` calls (at most `cap` leased in the period, if given).
    pub async fn lease(
        &self,
        subscription_id: &str,
        period_start: i64,
        period_end: i64,
        want: i64,
        cap: Option<i64>,
    ) -> Result<QuotaLease, CounterError> {
        let mut invocation = self.lease_script.prepare_invoke();
        invocation
            .key(self.key(subscription_id, period_start))
            .arg(want.max(0))
            .arg(cap.map_or(-1, |c| c.max(0)))
            .arg(period_end.saturating_add(EXPIRY_GRACE_MS));
        let v: Vec<i64> = self.run(&invocation).await?;
        match v[..] {
            [start, granted] if start >= 0 && (0..=want.max(0)).contains(&granted) => {
                Ok(QuotaLease { start, granted })
            }
            _ => Err(CounterError::Reply(v)),
        }
    }

    /// Gives back `unused` calls; returns how many the counter took back.
    pub async fn release(
        &self,
        subscription_id: &str,
        period_start: i64,
        unused: i64,
    ) -> Result<i64, CounterError> {
        if unused <= 0 {
            return Ok(0);
        }
        let mut invocation = self.release_script.prepare_invoke();
        invocation
            .key(self.key(subscription_id, period_start))
            .arg(unused);
        self.run(&invocation).await
    }
}

/// Redis for tests: counters under a prefix of their own, so tests run in
/// parallel on one server.
#[cfg(test)]
pub(crate) mod test_redis {
    use super::*;

    /// The test Redis (`TOLLGATE_TEST_REDIS_URL`, default the local one).
    pub(crate) fn url() -> String {
        std::env::var("TOLLGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    /// A fresh key prefix.
    pub(crate) fn prefix() -> String {
        format!("tollgate-test:{}:quota", uuid::Uuid::new_v4().simple())
    }

    /// A connected counter under `prefix`; fails the test if Redis is not there.
    pub(crate) async fn counter(prefix: &str) -> Arc<RedisQuotaCounter> {
        let c = RedisQuotaCounter::start(&url(), Duration::from_secs(2), prefix).unwrap();
        let connected = tollgate_testkit::eventually(Duration::from_secs(5), || async {
            c.link.is_connected().then_some(())
        })
        .await;
        assert!(
            connected.is_some(),
            "cannot reach the test Redis at {}: start it (scripts/test.sh does) or set TOLLGATE_TEST_REDIS_URL",
            url()
        );
        c
    }

    /// Runs one command on the counter's connection.
    pub(crate) async fn cmd<T: redis::FromRedisValue>(
        c: &RedisQuotaCounter,
        cmd: &mut redis::Cmd,
    ) -> T {
        let mut conn = c.link.connection().await.expect("connected");
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// Deletes every key under the counter's prefix.
    pub(crate) async fn cleanup(c: &RedisQuotaCounter) {
        let keys: Vec<String> = cmd(c, redis::cmd("KEYS").arg(format!("{}:*", c.prefix))).await;
        if !keys.is_empty() {
            let _: i64 = cmd(c, redis::cmd("DEL").arg(keys)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_redis::{cleanup, cmd, counter, prefix};
    use super::*;

    /// A period that ended long enough ago that its counters expire within a minute.
    fn old_period() -> (i64, i64) {
        let end = chrono::Utc::now().timestamp_millis() - EXPIRY_GRACE_MS + 60_000;
        (end - 1_000_000, end)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hard_leases_never_pass_the_cap_across_concurrent_leasers() {
        let prefix = prefix();
        let (start, end) = old_period();
        // Four "gateways", each with its own connection, two callers each.
        let mut counters = Vec::new();
        for _ in 0..4 {
            counters.push(counter(&prefix).await);
        }
        let mut tasks = Vec::new();
        for c in counters.iter().chain(&counters) {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut blocks = Vec::new();
                loop {
                    let lease = c.lease("sub_a", start, end, 7, Some(100)).await.unwrap();
                    if lease.granted == 0 {
                        return blocks;
                    }
                    blocks.push(lease);
                }
            }));
        }
        let mut blocks = Vec::new();
        for t in tasks {
            blocks.extend(t.await.unwrap());
        }
        blocks.sort_by_key(|b| b.start);
        assert_eq!(blocks.iter().map(|b| b.granted).sum::<i64>(), 100);
        // The blocks tile 0..100: no call is handed out twice.
        let mut next = 0;
        for b in &blocks {
            assert_eq!(b.start, next, "{blocks:?}");
            next += b.granted;
        }
        assert_eq!(blocks.last().map(|b| b.granted), Some(100 % 7));
        let c = &counters[0];
        let leased: i64 = cmd(c, redis::cmd("GET").arg(c.key("sub_a", start))).await;
        assert_eq!(leased, 100);
        // Other subscriptions and periods have counters of their own.
        assert_eq!(
            c.lease("sub_b", start, end, 7, Some(100))
                .await
                .unwrap()
                .start,
            0
        );
        assert_eq!(
            c.lease("sub_a", start + 1, end, 7, Some(100))
                .await
                .unwrap(),
            QuotaLease {
                start: 0,
                granted: 7
            }
        );
        cleanup(c).await;
    }

    #[tokio::test]
    async fn soft_leases_hand_out_ordinals_past_the_included_calls() {
        let c = counter(&prefix()).await;
        let (start, end) = old_period();
        // Hard at 15 first: 10, then the 5 left, then nothing.
        assert_eq!(
            c.lease("sub", start, end, 10, Some(15)).await.unwrap(),
            QuotaLease {
                start: 0,
                granted: 10
            }
        );
        assert_eq!(
            c.lease("sub", start, end, 10, Some(15)).await.unwrap(),
            QuotaLease {
                start: 10,
                granted: 5
            }
        );
        assert_eq!(
            c.lease("sub", start, end, 10, Some(15))
                .await
                .unwrap()
                .granted,
            0
        );
        // The plan turns soft: leases go on past the included calls, each
        // block starting where the last ended, so ordinals mark overage.
        for expected in [15, 25, 35] {
            assert_eq!(
                c.lease("sub", start, end, 10, None).await.unwrap(),
                QuotaLease {
                    start: expected,
                    granted: 10
                }
            );
        }
        cleanup(&c).await;
    }

    #[tokio::test]
    async fn release_gives_back_unused_calls() {
        let c = counter(&prefix()).await;
        let (start, end) = old_period();
        let key = c.key("sub", start);
        c.lease("sub", start, end, 10, Some(20)).await.unwrap();
        c.lease("sub", start, end, 10, Some(20)).await.unwrap();
        assert_eq!(
            c.lease("sub", start, end, 10, Some(20))
                .await
                .unwrap()
                .granted,
            0
        );
        assert_eq!(c.release("sub", start, 4).await.unwrap(), 4);
        assert_eq!(
            c.lease("sub", start, end, 10, Some(20)).await.unwrap(),
            QuotaLease {
                start: 16,
                granted: 4
            }
        );
        // Never below zero.
        assert_eq!(c.release("sub", start, 500).await.unwrap(), 20);
        let leased: i64 = cmd(&c, redis::cmd("GET").arg(&key)).await;
        assert_eq!(leased, 0);
        // The counter expires a day after its period, and giving back keeps that.
        let ttl: i64 = cmd(&c, redis::cmd("PTTL").arg(&key)).await;
        assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");
        // A give-back never recreates an expired (or unknown) counter, and a
        // refused lease creates none.
        assert_eq!(c.release("sub", start + 1, 5).await.unwrap(), 0);
        assert_eq!(
            c.lease("sub", start + 2, end, 10, Some(0))
                .await
                .unwrap()
                .granted,
            0
        );
        let exists: i64 = cmd(
            &c,
            redis::cmd("EXISTS")
                .arg(c.key("sub", start + 1))
                .arg(c.key("sub", start + 2)),
        )
        .await;
        assert_eq!(exists, 0);
        cleanup(&c).await;
    }

    #[tokio::test]
    async fn a_lease_right_after_start_waits_for_the_connection() {
        let c =
            RedisQuotaCounter::start(&super::test_redis::url(), Duration::from_secs(2), &prefix())
                .unwrap();
        let (start, end) = old_period();
        // No wait for the background connection: the lease itself waits.
        assert_eq!(
            c.lease("sub", start, end, 10, Some(10)).await.unwrap(),
            QuotaLease {
                start: 0,
                granted: 10
            }
        );
        cleanup(&c).await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_hang() {
        let addr = tollgate_testkit::upstream::closed_port().await;
        let c = RedisQuotaCounter::start(
            &format!("redis://{addr}"),
            Duration::from_millis(100),
            &prefix(),
        )
        .unwrap();
        let (start, end) = old_period();
        assert!(c.lease("sub", start, end, 10, Some(10)).await.is_err());
        assert!(c.release("sub", start, 3).await.is_err());
    }
}
