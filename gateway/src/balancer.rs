//! Choosing an upstream target: round robin, least connections or consistent
//! hashing over the targets that are in rotation, with passive health checks.
//!
//! Passive health works as a circuit breaker per target: after `max_failures`
//! consecutive failures (connect errors, timeouts, 502/503/504) the target is
//! out of rotation (open) for `cooldown_ms`; then one trial call goes through
//! (half-open), and its success puts the target back (closed) while a failure
//! opens the circuit again. When every target is out, calls get 503
//! `upstream_unavailable` at once instead of waiting on dead targets.
//!
//! A balancer's health state survives configuration reloads as long as the
//! API's targets and upstream policy stay the same.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollgate_core::model::{Balance, UpstreamPolicy};

use crate::snapshot::Target;
use crate::upstream_pool::Http1Pool;

/// One target and its health.
#[derive(Debug)]
pub struct TargetHealth {
    /// Where calls go.
    pub target: Target,
    /// Kept-alive connections to it (plain HTTP/1.1 targets).
    pub pool: Http1Pool,
    url: String,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Microseconds since the balancer's epoch until which the target is out.
    open_until: AtomicU64,
    trial_in_flight: AtomicBool,
    /// Out of rotation by active health checks.
    probe_down: AtomicBool,
    probe_streak: AtomicU32,
}

/// How a call to a target ended, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered (anything but 502/503/504).
    Success,
    /// Connect error, timeout, or 502/503/504.
    Failure,
}

/// The targets of one API.
#[derive(Debug)]
pub struct Balancer {
    /// The targets, in the order of the API's `upstreams`.
    pub targets: Vec<TargetHealth>,
    /// The policy it was built from.
    pub policy: UpstreamPolicy,
    next: AtomicUsize,
    epoch: Instant,
    /// Retry budget in thousandths of a retry: each call adds the policy's share,
    /// each retry takes 1000, up to [`BUDGET_CAP`].
    retry_budget: AtomicU64,
}

/// The most retries a budget saves up (in thousandths).
const BUDGET_CAP: u64 = 10_000;

/// A picked target; counts as in flight until dropped.
#[derive(Debug)]
pub struct Pick<'a> {
    /// Index in [`Balancer::targets`].
    pub index: usize,
    /// The target.
    pub target: &'a Target,
    in_flight: &'a AtomicUsize,
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn hash64(bytes: &[u8], seed: &[u8]) -> u64 {
    // FNV-1a over seed then bytes: cheap, stable across processes and releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.iter().chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    // A final mix so close inputs spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Balancer {
    /// A balancer over `targets` (with their URLs, for hashing).
    pub fn new(targets: Vec<(String, Target)>, policy: UpstreamPolicy) -> Self {
        Self {
            targets: targets
                .into_iter()
                .map(|(url, target)| TargetHealth {
                    target,
                    pool: Http1Pool::default(),
                    url,
                    in_flight: AtomicUsize::new(0),
                    failures: AtomicU32::new(0),
                    open_until: AtomicU64::new(0),
                    trial_in_flight: AtomicBool::new(false),
                    probe_down: AtomicBool::new(false),
                    probe_streak: AtomicU32::new(0),
                })
                .collect(),
            policy,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            retry_budget: AtomicU64::new(BUDGET_CAP),
        }
    }

    /// True when this balancer serves the same targets under the same policy.
    pub fn same_as(&self, urls: &[String], policy: &UpstreamPolicy) -> bool {
        self.policy == *policy
            && self.targets.len() == urls.len()
            && self.targets.iter().zip(urls).all(|(t, u)| t.url == *u)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Whether a target may take a call now: closed, or half-open with no trial
    /// in flight (this call becomes the trial). The clock is read only for a
    /// target whose circuit has opened, once per pick.
    fn available(&self, t: &TargetHealth, now: &OnceCell<u64>, claim_trial: bool) -> bool {
        if t.probe_down.load(Ordering::Relaxed) {
            return false;
        }
        let open_until = t.open_until.load(Ordering::Relaxed);
        if open_until == 0 {
            return true;
        }
        if *now.get_or_init(|| self.now()) < open_until {
            return false;
        }
        if claim_trial {
            t.trial_in_flight
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        } else {
            !t.trial_in_flight.load(Ordering::Relaxed)
        }
    }

    /// Picks a target for a call, skipping `tried` ones; `hash_key` feeds
    /// consistent hashing. `None` when no target is in rotation.
    pub fn pick(&self, hash_key: Option<&str>, tried: &[usize]) -> Option<Pick<'_>> {
        let now = OnceCell::new();
        let n = self.targets.len();
        let candidates = || {
            (0..n)
                .filter(|i| !tried.contains(i))
                .filter(|&i| self.available(&self.targets[i], &now, false))
        };
        let chosen = match self.policy.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|i| !tried.contains(i) && self.available(&self.targets[*i], &now, false))
            }
            Balance::LeastConnections => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                candidates().min_by_key(|&i| {
                    (
                        self.targets[i].in_flight.load(Ordering::Relaxed),
                        (i + n - start % n) % n,
                    )
                })
            }
            Balance::ConsistentHash => {
                // Rendezvous hashing: the target with the highest score for the key.
                let key = hash_key.unwrap_or("");
                candidates().max_by_key(|&i| hash64(key.as_bytes(), self.targets[i].url.as_bytes()))
            }
        }?;
        let t = &self.targets[chosen];
        if t.open_until.load(Ordering::Relaxed) != 0 && !self.available(t, &now, true) {
            // Another call took the half-open trial meanwhile: try the others.
            let mut tried = tried.to_vec();
            tried.push(chosen);
            return self.pick(hash_key, &tried);
        }
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            index: chosen,
            target: &t.target,
            in_flight: &t.in_flight,
        })
    }

    /// Adds a call's share to the retry budget.
    pub fn deposit_retry_budget(&self) {
        let share = u64::from(self.policy.retry_budget_percent) * 10;
        let _ = self
            .retry_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < BUDGET_CAP).then(|| (b + share).min(BUDGET_CAP))
            });
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw_retry(&self) -> bool {
        self.retry_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(1000)
            })
            .is_ok()
    }

    /// Records how a call to target `index` ended.
    pub fn report(&self, index: usize, outcome: Outcome) {
        let t = &self.targets[index];
        match outcome {
            Outcome::Success => {
                t.failures.store(0, Ordering::Relaxed);
                if t.open_until.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(upstream = %t.url, "upstream back in rotation");
                }
                t.trial_in_flight.store(false, Ordering::Release);
            }
            Outcome::Failure => {
                let failures = t.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let was_trial = t.trial_in_flight.swap(false, Ordering::AcqRel);
                if failures >= self.policy.max_failures || was_trial {
                    let until = self.now()
                        + Duration::from_millis(self.policy.cooldown_ms).as_micros() as u64;
                    if t.open_until.swap(until.max(1), Ordering::Relaxed) == 0 {
                        tracing::warn!(upstream = %t.url, failures, cooldown_ms = self.policy.cooldown_ms, "upstream out of rotation");
                    }
                }
            }
        }
    }

    /// Targets in rotation now (for metrics).
    pub fn healthy(&self) -> usize {
        let now = self.now();
        self.targets
            .iter()
            .filter(|t| {
                let until = t.open_until.load(Ordering::Relaxed);
                !t.probe_down.load(Ordering::Relaxed) && (until == 0 || now >= until)
            })
            .count()
    }

    /// Records an active probe's result; `healthy`/`unhealthy` consecutive
    /// results flip the target.
    pub fn probed(&self, index: usize, ok: bool, healthy: u32, unhealthy: u32) {
        let t = &self.targets[index];
        let down = t.probe_down.load(Ordering::Relaxed);
        if ok != down {
            // Agrees with the current state.
            t.probe_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = t.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok { healthy } else { unhealthy };
        if streak >= needed {
            t.probe_streak.store(0, Ordering::Relaxed);
            t.probe_down.store(!ok, Ordering::Relaxed);
            if ok {
                // A target the probes bring back starts with a clean record.
                t.failures.store(0, Ordering::Relaxed);
                t.open_until.store(0, Ordering::Relaxed);
                tracing::info!(upstream = %t.url, "health checks pass; upstream in rotation");
            } else {
                tracing::warn!(upstream = %t.url, "health checks fail; upstream out of rotation");
            }
        }
    }

    /// Starts active health checks if the policy asks for them; the task ends
    /// when the balancer is dropped.
    pub fn start_probes(self: &std::sync::Arc<Self>) {
        let Some(check) = self.policy.health_check.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = std::sync::Arc::downgrade(self);
        runtime.spawn(async move {
            let http = match reqwest::Client::builder()
                .timeout(Duration::from_millis(check.timeout_ms))
                .redirect(reqwest::redirect::Policy::none())
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the health check client");
                    return;
                }
            };
            let mut ticker = tokio::time::interval(Duration::from_millis(check.interval_ms));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(balancer) = weak.upgrade() else {
                    return;
                };
                let urls: Vec<String> = balancer
                    .targets
                    .iter()
                    .map(|t| {
                        format!(
                            "{}://{}{}{}",
                            t.target.scheme, t.target.authority, t.target.path, check.path
                        )
                    })
                    .collect();
                drop(balancer);
                let probes = urls.iter().map(|u| http.get(u).send());
                let results = futures_util::future::join_all(probes).await;
                let Some(balancer) = weak.upgrade() else {
                    return;
                };
                for (i, r) in results.into_iter().enumerate() {
                    let ok = r.is_ok_and(|resp| {
                        resp.status().is_success() || resp.status().is_redirection()
                    });
                    balancer.probed(i, ok, check.healthy, check.unhealthy);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(n: usize, policy: UpstreamPolicy) -> Balancer {
        let targets = (0..n)
            .map(|i| {
                let url = format!("http://10.0.0.{i}:80");
                let t = Target::parse(&url).unwrap();
                (url, t)
            })
            .collect();
        Balancer::new(targets, policy)
    }

    #[test]
    fn round_robin_skips_targets_out_of_rotation() {
        let b = balancer(
            3,
            UpstreamPolicy {
                max_failures: 2,
                cooldown_ms: 60_000,
                ..Default::default()
            },
        );
        let picks: Vec<usize> = (0..6).map(|_| b.pick(None, &[]).unwrap().index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        b.report(1, Outcome::Failure);
        assert_eq!(b.healthy(), 3, "one failure is not enough");
        b.report(1, Outcome::Failure);
        assert_eq!(b.healthy(), 2);
        let picks: Vec<usize> = (0..4).map(|_| b.pick(None, &[]).unwrap().index).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        // Retries skip what was tried.
        assert_eq!(b.pick(None, &[0, 2]).map(|p| p.index), None);
    }

    #[test]
    fn half_open_trial_closes_or_reopens_the_circuit() {
        let b = balancer(
            1,
            UpstreamPolicy {
                max_failures: 1,
                cooldown_ms: 0,
                ..Default::default()
            },
        );
        b.report(0, Outcome::Failure);
        std::thread::sleep(Duration::from_millis(1));
        let trial = b.pick(None, &[]).expect("cooldown over: one trial");
        assert!(b.pick(None, &[]).is_none(), "only one trial at a time");
        drop(trial);
        b.report(0, Outcome::Failure);
        std::thread::sleep(Duration::from_millis(1));
        let trial = b.pick(None, &[]).expect("another trial after the cooldown");
        drop(trial);
        b.report(0, Outcome::Success);
        assert!(
            b.pick(None, &[]).is_some() && b.pick(None, &[]).is_some(),
            "closed again"
        );
    }

    #[test]
    fn retry_budget_allows_a_share_of_calls() {
        let b = balancer(
            2,
            UpstreamPolicy {
                retry_budget_percent: 20,
                ..Default::default()
            },
        );
        // A full budget saves up 10 retries.
        let saved = (0..20).filter(|_| b.withdraw_retry()).count();
        assert_eq!(saved, 10);
        // Then one retry per five calls.
        for _ in 0..10 {
            b.deposit_retry_budget();
        }
        assert!(b.withdraw_retry() && b.withdraw_retry());
        assert!(!b.withdraw_retry());
        let none = balancer(
            2,
            UpstreamPolicy {
                retry_budget_percent: 0,
                ..Default::default()
            },
        );
        (0..10).for_each(|_| {
            none.withdraw_retry();
        });
        none.deposit_retry_budget();
        assert!(!none.withdraw_retry(), "a zero budget never refills");
    }

    #[test]
    fn least_connections_and_consistent_hashing() {
        let b = balancer(
            3,
            UpstreamPolicy {
                balance: Balance::LeastConnections,
                ..Default::default()
            },
        );
        let a = b.pick(None, &[]).unwrap();
        let c = b.pick(None, &[]).unwrap();
        let d = b.pick(None, &[]).unwrap();
        let mut busy = vec![a.index, c.index, d.index];
        busy.sort();
        assert_eq!(busy, [0, 1, 2], "each target gets one before any gets two");
        drop(c);
        let again = b.pick(None, &[]).unwrap();
        assert_eq!(
            again.index,
            busy.iter()
                .copied()
                .find(|&i| i != a.index && i != d.index)
                .unwrap()
        );

        let h = balancer(
            5,
            UpstreamPolicy {
                balance: Balance::ConsistentHash,
                ..Default::default()
            },
        );
        let first = h.pick(Some("app_1"), &[]).unwrap().index;
        for _ in 0..10 {
            assert_eq!(
                h.pick(Some("app_1"), &[]).unwrap().index,
                first,
                "same key, same target"
            );
        }
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| h.pick(Some(&format!("app_{i}")), &[]).unwrap().index)
            .collect();
        assert!(spread.len() >= 4, "keys spread over targets: {spread:?}");
        // Taking the chosen target out moves only its keys.
        h.report(first, Outcome::Failure);
        for _ in 0..4 {
            h.report(first, Outcome::Failure);
        }
        assert_ne!(h.pick(Some("app_1"), &[]).unwrap().index, first);
    }
}
