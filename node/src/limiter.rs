//! Per-address budgets for requests that are cheap to send and costly to
//! suffer (KeyPackage fetches drain other people's KeyPackages), fan-out
//! copies and blob bytes ([`AddressBudgets`]), and the per-connection
//! request bucket ([`TokenBucket`]). The arithmetic is
//! `mlsd_roles::budget`'s.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use mlsd_roles::budget::{Budget, Budgets};
use mlsd_transport::WireError;

/// Budgets per client address at this node ([`Budgets`], on a clock that
/// starts with the limiter): requests that are cheap to send and costly to
/// suffer take one each (KeyPackage fetches, lookups, mailbox opens, group
/// creations); fan-out copies are charged after the answer (a send starts
/// while its address holds budget); blob bytes as they arrive.
pub struct AddressBudgets {
    start: Instant,
    budgets: Mutex<Budgets<IpAddr>>,
}

impl AddressBudgets {
    /// `rate` per second per address, one second of burst.
    pub fn per_second(rate: u32) -> Self {
        Self::new(Budgets::per_second(rate))
    }

    /// `rate` per minute per address, one minute of burst.
    pub fn per_minute(rate: u32) -> Self {
        Self::new(Budgets::per_minute(rate))
    }

    /// `rate` per hour per address, one hour of burst.
    pub fn per_hour(rate: u32) -> Self {
        Self::new(Budgets::per_hour(rate))
    }

    fn new(budgets: Budgets<IpAddr>) -> Self {
        AddressBudgets { start: Instant::now(), budgets: Mutex::new(budgets) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Budgets<IpAddr>, f64) -> T) -> T {
        let now = self.start.elapsed().as_secs_f64();
        f(&mut self.budgets.lock().unwrap_or_else(|p| p.into_inner()), now)
    }

    /// Takes one for `addr`, or says when one will be there.
    pub fn take(&self, addr: IpAddr) -> Result<(), WireError> {
        self.spend(addr, 1)
    }

    /// Takes `cost` for `addr` (while it holds budget), or refuses.
    pub fn spend(&self, addr: IpAddr, cost: u64) -> Result<(), WireError> {
        self.with(|b, now| b.spend(addr, cost, now))
    }

    /// Whether `addr` may start a request now.
    pub fn admit(&self, addr: IpAddr) -> Result<(), WireError> {
        self.with(|b, now| b.admit(&addr, now))
    }

    /// Charges `addr` `cost` (copies of a send it made).
    pub fn charge(&self, addr: IpAddr, cost: u64) {
        self.with(|b, now| b.charge(addr, cost, now))
    }
}

/// One token bucket (per connection): `rate` per second, bursts up to `rate`.
pub struct TokenBucket {
    start: Instant,
    budget: Mutex<Budget>,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second.
    pub fn per_second(rate: u32) -> Self {
        TokenBucket { start: Instant::now(), budget: Mutex::new(Budget::per_second(rate, 0.0)) }
    }

    /// Takes one token, or says when one will be there.
    pub fn take(&self) -> Result<(), WireError> {
        let now = self.start.elapsed().as_secs_f64();
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        b.admit(now)?;
        b.charge(1, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::protocol::ClusterError;

    #[test]
    fn burst_then_refusal_per_address() {
        let l = AddressBudgets::per_minute(3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.take(a).unwrap();
        }
        assert!(
            matches!(l.take(a), Err(WireError::Cluster(ClusterError::RateLimited { retry_after_ms })) if retry_after_ms > 0)
        );
        l.take(b).unwrap();
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
