//! Log-in throttling: failed attempts are counted per account (the address
//! typed, registered or not) and per client address over a sliding window;
//! past the limit, attempts are refused without checking the password until
//! the oldest failure leaves the window. A successful log-in clears the
//! account's count (not the address's).
//!
//! Limits: [`PER_ACCOUNT`] failures per account and [`PER_ADDRESS`] per client
//! address in [`WINDOW`]. IPv6 clients count per /64, the block one
//! subscriber usually holds. The counters live in memory: each portal node
//! counts on its own, and a restart forgets them.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per account in [`WINDOW`].
pub const PER_ACCOUNT: usize = 5;
/// Failed attempts allowed per client address in [`WINDOW`].
pub const PER_ADDRESS: usize = 30;
/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Beyond this many tracked keys, stale ones are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

/// Sliding-window failure counters.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
        v4 => v4,
    }
}

impl LoginThrottle {
    fn keys(email: &str, ip: IpAddr) -> [(Key, usize); 2] {
        [
            (Key::Account(email.trim().to_lowercase()), PER_ACCOUNT),
            (Key::Address(address_key(ip)), PER_ADDRESS),
        ]
    }

    /// `Err(wait)` when an attempt for `email` from `ip` must be refused now.
    pub fn check(&self, email: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, limit) in Self::keys(email, ip) {
            if let Some(q) = map.get_mut(&key) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    q.pop_front();
                }
                if q.len() >= limit
                    && let Some(oldest) = q.front()
                {
                    wait = wait.max(WINDOW - now.duration_since(*oldest));
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a failed attempt.
    pub fn failed(&self, email: &str, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        for (key, limit) in Self::keys(email, ip) {
            let q = map.entry(key).or_default();
            q.push_back(now);
            // Only the newest `limit` failures matter.
            while q.len() > limit {
                q.pop_front();
            }
        }
    }

    /// Forgets an account's failures after a successful log-in.
    pub fn succeeded(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Key::Account(email.trim().to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_lock_after_their_limit_and_unlock_after_the_window() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for i in 0..PER_ACCOUNT {
            assert!(t.check("Ada@Example.com", ip, start).is_ok(), "attempt {i}");
            t.failed("ada@example.com", ip, start + Duration::from_secs(i as u64));
        }
        let wait = t
            .check("ada@example.com", ip, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(10));
        // Another account from the same address is still allowed.
        assert!(t.check("bob@example.com", ip, start).is_ok());
        // Once the oldest failure leaves the window, one more attempt is allowed.
        assert!(t.check("ada@example.com", ip, start + WINDOW).is_ok());
        t.succeeded("ADA@example.com");
        assert!(
            t.check("ada@example.com", ip, start + Duration::from_secs(10))
                .is_ok()
        );
    }

    #[test]
    fn addresses_lock_across_accounts_and_ipv6_counts_per_64() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..PER_ADDRESS {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            t.failed(&format!("user{i}@example.com"), ip, now);
        }
        let other_in_block: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(t.check("new@example.com", other_in_block, now).is_err());
        let elsewhere: IpAddr = "2001:db8:1::1".parse().unwrap();
        assert!(t.check("new@example.com", elsewhere, now).is_ok());
    }
}
