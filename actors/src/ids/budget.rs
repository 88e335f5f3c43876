//! Fan-out budgets: how many copies a group, or a sender, may have made per
//! second, and how many fan-outs a node runs at once. One `Send` can ask for
//! up to `MAX_ROSTER` copies, each a synced ODS write, so without them one
//! client could make gigabytes of writes in seconds.
//!
//! [`CopyBudget`] is a token bucket that may go into debt: a send is
//! admitted while the bucket is not in debt and then charged its copies,
//! so any single send (even one larger than the per-second rate) can go
//! out, and the next waits until the debt is repaid. The charge comes after
//! the count is known (the group's roster, or the answer the entry node
//! sees), and admission before anything is changed, so a refused send
//! changes nothing. Time is passed in, so the rules are tested without clocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mlsd_transport::protocol::ClusterError;
use mlsd_transport::WireError;

/// Copies per second, with a one-second burst, that may go into debt.
#[derive(Debug, Clone)]
pub struct CopyBudget {
    rate: f64,
    tokens: f64,
    at: f64,
}

impl CopyBudget {
    /// A full budget of `per_second` copies per second (at least 1).
    pub fn new(per_second: u32, now: f64) -> Self {
        let rate = f64::from(per_second.max(1));
        CopyBudget { rate, tokens: rate, at: now }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.rate).min(self.rate);
            self.at = now;
        }
    }

    /// Whether a send may start at `now` (seconds on any steady clock):
    /// `RateLimited` with the time until the debt is repaid otherwise.
    pub fn admit(&mut self, now: f64) -> Result<(), WireError> {
        self.refill(now);
        if self.tokens > 0.0 {
            return Ok(());
        }
        let wait = (-self.tokens + 1.0) / self.rate;
        Err(WireError::Cluster(ClusterError::RateLimited {
            retry_after_ms: (wait * 1000.0).ceil() as u64,
        }))
    }

    /// Charges `copies` made at `now`.
    pub fn charge(&mut self, copies: u64, now: f64) {
        self.refill(now);
        self.tokens -= copies as f64;
    }

    /// Whether the budget is full at `now` (a tracker may forget it).
    pub fn is_full(&mut self, now: f64) -> bool {
        self.refill(now);
        self.tokens >= self.rate
    }
}

/// The fan-outs a node runs at once, shared by all its group actors.
#[derive(Debug)]
pub struct FanoutSlots {
    max: usize,
    in_use: AtomicUsize,
}

impl FanoutSlots {
    /// Room for `max` fan-outs at once (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(FanoutSlots { max: max.max(1), in_use: AtomicUsize::new(0) })
    }

    /// A slot, held until the guard drops, or `RateLimited` when all are taken.
    pub fn acquire(self: &Arc<Self>) -> Result<FanoutSlot, WireError> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .map(|_| FanoutSlot(self.clone()))
            .map_err(|_| WireError::Cluster(ClusterError::RateLimited { retry_after_ms: 100 }))
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

/// One running fan-out's slot; released on drop.
#[derive(Debug)]
pub struct FanoutSlot(Arc<FanoutSlots>);

impl Drop for FanoutSlot {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
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
        let mut b = CopyBudget::new(100, 0.0);
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
    }

    #[test]
    fn fan_out_slots_are_bounded_and_released() {
        let slots = FanoutSlots::new(2);
        let a = slots.acquire().unwrap();
        let b = slots.acquire().unwrap();
        limited(slots.acquire().map(|_| ()));
        drop(a);
        let c = slots.acquire().unwrap();
        assert_eq!(slots.in_use(), 2);
        drop((b, c));
        assert_eq!(slots.in_use(), 0);
    }
}
