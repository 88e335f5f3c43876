//! Per-address token buckets for requests that are cheap to send and costly to
//! suffer (KeyPackage fetches drain other people's KeyPackages), and the
//! per-address budgets of fan-out copies and blob bytes ([`AddressBudgets`]).

use mlsd_transport::protocol::ClusterError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mlsd_actors::budget::Budget;
use mlsd_transport::WireError;

/// Most addresses tracked; beyond it the oldest-idle (full) buckets are dropped,
/// so memory stays bounded under an address-spraying flood.
const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per client address: `rate` per minute, bursts up to `rate`.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// Allows `rate` requests per minute per address.
    pub fn per_minute(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimiter { per_sec: rate / 60.0, burst: rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `addr`, or says when one will be there.
    pub fn check(&self, addr: IpAddr) -> Result<(), WireError> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            let full = Duration::from_secs_f64(self.burst / self.per_sec);
            map.retain(|_, b| now.duration_since(b.updated) < full);
        }
        let b = map.entry(addr).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.per_sec;
            Err(WireError::Cluster(ClusterError::RateLimited {
                retry_after_ms: (wait * 1000.0).ceil() as u64,
            }))
        }
    }
}

/// One token bucket (per connection): `rate` per second, bursts up to `rate`.
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second.
    pub fn per_second(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        TokenBucket { rate, state: Mutex::new((rate, Instant::now())) }
    }

    /// Takes one token, or says when one will be there.
    pub fn take(&self) -> Result<(), WireError> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *st;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if tokens >= 1.0 {
            *st = (tokens - 1.0, now);
            Ok(())
        } else {
            *st = (tokens, now);
            let wait = (1.0 - tokens) / self.rate;
            Err(WireError::Cluster(ClusterError::RateLimited {
                retry_after_ms: (wait * 1000.0).ceil() as u64,
            }))
        }
    }
}

/// A [`Budget`] per client address at this node, for costs known only in
/// part before the request is served: fan-out copies (a send starts while
/// its address holds budget and is charged the copies its answer reports)
/// and blob bytes (charged as they arrive).
pub struct AddressBudgets {
    rate: u32,
    per_minute: bool,
    start: Instant,
    budgets: Mutex<HashMap<IpAddr, Budget>>,
}

impl AddressBudgets {
    /// `rate` per second per address, one second of burst.
    pub fn per_second(rate: u32) -> Self {
        Self::new(rate, false)
    }

    /// `rate` per minute per address, one minute of burst.
    pub fn per_minute(rate: u32) -> Self {
        Self::new(rate, true)
    }

    fn new(rate: u32, per_minute: bool) -> Self {
        AddressBudgets {
            rate,
            per_minute,
            start: Instant::now(),
            budgets: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Whether `addr` may start a request now.
    pub fn admit(&self, addr: IpAddr) -> Result<(), WireError> {
        let now = self.now();
        let mut map = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&addr) {
            Some(b) => b.admit(now),
            None => Ok(()),
        }
    }

    /// Charges `addr` `cost` (copies of a send it made, bytes it uploaded).
    pub fn charge(&self, addr: IpAddr, cost: u64) {
        let now = self.now();
        let mut map = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            // Full budgets carry no debt: forgetting them changes nothing.
            map.retain(|_, b| !b.is_full(now));
        }
        let fresh = || match self.per_minute {
            true => Budget::per_minute(self.rate, now),
            false => Budget::per_second(self.rate, now),
        };
        map.entry(addr).or_insert_with(fresh).charge(cost, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_address() {
        let l = RateLimiter::per_minute(3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.check(a).unwrap();
        }
        assert!(
            matches!(l.check(a), Err(WireError::Cluster(ClusterError::RateLimited { retry_after_ms })) if retry_after_ms > 0)
        );
        l.check(b).unwrap();
    }

    #[test]
    fn a_sender_in_debt_waits_and_others_do_not() {
        let s = AddressBudgets::per_second(10);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        s.admit(a).unwrap();
        s.charge(a, 25);
        assert!(matches!(s.admit(a), Err(WireError::Cluster(ClusterError::RateLimited { .. }))));
        s.admit(b).unwrap();
    }
}
