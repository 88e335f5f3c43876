//! The fan-outs a node runs at once: slots shared by all its group actors,
//! taken before a send is accepted and released when its fan-out ends (or
//! its group actor dies), so a flood of sends across many groups cannot
//! run unbounded fan-outs in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mlsd_transport::protocol::ClusterError;
use mlsd_transport::WireError;

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

    #[test]
    fn fan_out_slots_are_bounded_and_released() {
        let slots = FanoutSlots::new(2);
        let a = slots.acquire().unwrap();
        let b = slots.acquire().unwrap();
        assert!(matches!(
            slots.acquire(),
            Err(WireError::Cluster(ClusterError::RateLimited { .. }))
        ));
        drop(a);
        let c = slots.acquire().unwrap();
        assert_eq!(slots.in_use(), 2);
        drop((b, c));
        assert_eq!(slots.in_use(), 0);
    }
}
