//! Budgets of costly work: fan-out copies per group and per sender (one
//! `Send` can ask for up to `MAX_ROSTER` copies, each a synced ODS write),
//! and KeyPackage fetches per target identity.
//!
//! [`Budget`] is a token bucket that may go into debt: a request is
//! admitted while the bucket holds a token and then charged its cost, so
//! any single request (even one costlier than the rate) can go through, and
//! the next waits until the debt is repaid. The charge can come after the
//! cost is known (the group's roster, or the answer the entry node sees),
//! and admission before anything is changed, so a refused request changes
//! nothing. Time is passed in, so the rules are tested without clocks.
//! [`Budgets`] keeps one per key (an address, an identity), bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{SystemTime, UNIX_EPOCH};

use mlsd_transport::protocol::ClusterError;
use mlsd_transport::WireError;

/// A rate with a burst of its own size, that may go into debt.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Refill per second.
    rate: f64,
    /// Most tokens held.
    burst: f64,
    tokens: f64,
    at: f64,
}

impl Budget {
    /// A full budget of `per_second` per second (at least 1), one second of burst.
    pub fn per_second(per_second: u32, now: f64) -> Self {
        let rate = f64::from(per_second.max(1));
        Budget { rate, burst: rate, tokens: rate, at: now }
    }

    /// A full budget of `per_minute` per minute (at least 1), one minute of burst.
    pub fn per_minute(per_minute: u32, now: f64) -> Self {
        let burst = f64::from(per_minute.max(1));
        Budget { rate: burst / 60.0, burst, tokens: burst, at: now }
    }

    /// A full budget of `per_hour` per hour (at least 1), one hour of burst.
    pub fn per_hour(per_hour: u32, now: f64) -> Self {
        let burst = f64::from(per_hour.max(1));
        Budget { rate: burst / 3600.0, burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// Whether a request may start at `now` (seconds on any steady clock):
    /// `RateLimited` with the time until the debt is repaid otherwise.
    pub fn admit(&mut self, now: f64) -> Result<(), WireError> {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(WireError::Cluster(ClusterError::RateLimited {
            retry_after_ms: (wait * 1000.0).ceil() as u64,
        }))
    }

    /// Charges `cost` (copies, fetches) spent at `now`.
    pub fn charge(&mut self, cost: u64, now: f64) {
        self.refill(now);
        self.tokens -= cost as f64;
    }

    /// Whether the budget is full at `now` (a tracker may forget it).
    pub fn is_full(&mut self, now: f64) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// `t` in seconds since the Unix epoch: the clock of budgets kept by role
/// logic, which is handed the time of each request.
pub fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Most keys whose budgets are tracked; beyond, full budgets (which hold no
/// debt, so forgetting them changes nothing) are dropped, so memory stays
/// bounded under a flood of new keys.
pub const MAX_TRACKED: usize = 65_536;

/// One [`Budget`] per key, created full on first use.
pub struct Budgets<K> {
    rate: u32,
    make: fn(u32, f64) -> Budget,
    map: HashMap<K, Budget>,
}

impl<K: Hash + Eq> Budgets<K> {
    /// `rate` per second per key, one second of burst.
    pub fn per_second(rate: u32) -> Self {
        Budgets { rate, make: Budget::per_second, map: HashMap::new() }
    }

    /// `rate` per minute per key, one minute of burst.
    pub fn per_minute(rate: u32) -> Self {
        Budgets { rate, make: Budget::per_minute, map: HashMap::new() }
    }

    /// `rate` per hour per key, one hour of burst.
    pub fn per_hour(rate: u32) -> Self {
        Budgets { rate, make: Budget::per_hour, map: HashMap::new() }
    }

    fn entry(&mut self, key: K, now: f64) -> &mut Budget {
        if self.map.len() >= MAX_TRACKED && !self.map.contains_key(&key) {
            self.map.retain(|_, b| !b.is_full(now));
        }
        let (rate, make) = (self.rate, self.make);
        self.map.entry(key).or_insert_with(|| make(rate, now))
    }

    /// Whether `key` may start a request at `now` (a key never charged may).
    pub fn admit(&mut self, key: &K, now: f64) -> Result<(), WireError> {
        self.map.get_mut(key).map_or(Ok(()), |b| b.admit(now))
    }

    /// Charges `key` `cost` spent at `now`.
    pub fn charge(&mut self, key: K, cost: u64, now: f64) {
        self.entry(key, now).charge(cost, now);
    }

    /// Admits and charges `cost` at once, for a cost known up front.
    pub fn spend(&mut self, key: K, cost: u64, now: f64) -> Result<(), WireError> {
        let b = self.entry(key, now);
        b.admit(now)?;
        b.charge(cost, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(r: Result<(), WireError>) -> u64 {
        match r {
            Err(WireError::Cluster(ClusterError::RateLimited { retry_after_ms })) => retry_after_ms,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_send_may_exceed_the_rate_once_then_the_debt_is_repaid() {
        let mut b = Budget::per_second(100, 0.0);
        assert!(b.admit(0.0).is_ok());
        b.charge(60, 0.0);
        assert!(b.admit(0.0).is_ok());
        // A roster larger than a second's worth still goes out...
        b.charge(1000, 0.0);
        // ... and the next send waits about 9.6 s, whatever it asks for.
        let wait = limited(b.admit(0.0));
        assert!((9_500..=9_700).contains(&wait), "{wait}");
        assert!(b.admit(5.0).is_err());
        assert!(b.admit(9.7).is_ok());
        // Idle time refills to one second's worth, no more.
        assert!(b.is_full(100.0));
        b.charge(100, 100.0);
        assert!(b.admit(100.0).is_err());
        // Per minute: a minute's worth at once, then one a second.
        let mut m = Budget::per_minute(60, 0.0);
        m.charge(60, 0.0);
        assert!(m.admit(0.5).is_err());
        assert!(m.admit(1.01).is_ok());
    }

    #[test]
    fn each_key_has_its_own_budget() {
        let mut b = Budgets::per_minute(2);
        b.spend("alice", 1, 0.0).unwrap();
        b.spend("alice", 1, 0.0).unwrap();
        assert!(b.spend("alice", 1, 0.0).is_err());
        assert!(b.admit(&"alice", 0.0).is_err());
        assert!(b.admit(&"bob", 0.0).is_ok());
        b.spend("bob", 1, 0.0).unwrap();
        assert!(b.spend("alice", 1, 30.0).is_ok());
    }
}
