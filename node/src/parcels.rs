//! The copies of a fan-out on their way to their mailboxes, as one batch
//! type from the router to the ODS commit.
//!
//! A [`Parcel`] is one sealed copy (an [`EnqueueItem`]) with the [`Slot`] its
//! outcome goes to. The stages between the router and the ODS actor (the
//! mixer, the dispatch to a peer or to this node, the coalescer and the
//! local ODS writer) shuffle, split and merge parcels freely; none of them
//! keeps track of where a copy came from. Each copy's outcome lands in its
//! submission's [`Pending`], which resolves once every copy has one. A
//! parcel dropped on any path without an outcome counts as not stored
//! (`NotOwner`, which the router retries), so no path can lose an answer or
//! leave its sender waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mlsd_transport::protocol::{EnqueueItem, EnqueueResult};
use tokio::sync::oneshot;

/// One copy on its way, and where its outcome goes.
pub struct Parcel {
    /// The sealed copy.
    pub item: EnqueueItem,
    /// Where its outcome goes.
    pub slot: Slot,
}

/// Where one copy's outcome goes. Dropped without one, it records
/// `NotOwner`.
pub struct Slot {
    shared: Arc<Shared>,
    index: usize,
    done: bool,
}

/// The outcomes of one submission, shared by its slots and its [`Pending`].
struct Shared {
    results: Mutex<Vec<EnqueueResult>>,
    remaining: AtomicUsize,
    all_done: Mutex<Option<oneshot::Sender<()>>>,
}

/// The outcomes of one submission, once every copy has one.
pub struct Pending {
    shared: Arc<Shared>,
    all_done: oneshot::Receiver<()>,
}

impl Parcel {
    /// Wraps `items` as parcels, and the [`Pending`] their outcomes arrive
    /// in, in the order of `items`.
    pub fn wrap(items: Vec<EnqueueItem>) -> (Vec<Parcel>, Pending) {
        let n = items.len();
        let (tx, all_done) = oneshot::channel();
        let shared = Arc::new(Shared {
            results: Mutex::new(vec![EnqueueResult::NotOwner; n]),
            remaining: AtomicUsize::new(n),
            // Nothing to wait for: the receiver sees the sender gone.
            all_done: Mutex::new((n > 0).then_some(tx)),
        });
        let parcels = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| Parcel {
                item,
                slot: Slot { shared: shared.clone(), index, done: false },
            })
            .collect();
        (parcels, Pending { shared, all_done })
    }
}

impl Slot {
    /// Records the copy's outcome.
    pub fn finish(mut self, result: EnqueueResult) {
        self.record(result);
    }

    fn record(&mut self, result: EnqueueResult) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut results = self.shared.results.lock().unwrap_or_else(|p| p.into_inner());
        results[self.index] = result;
        drop(results);
        if self.shared.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let tx = self.shared.all_done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.record(EnqueueResult::NotOwner);
    }
}

impl Pending {
    /// Every copy's outcome, in the order the copies were wrapped.
    pub async fn results(self) -> Vec<EnqueueResult> {
        // Every slot records before it is gone, and the last one sends, so
        // this returns once all have (or at once for no copies).
        let _ = self.all_done.await;
        std::mem::take(&mut *self.shared.results.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Splits parcels into their copies and slots, for a stage that hands the
/// copies on in order and gets one result per copy back (a frame to a
/// peer, a batch to the ODS actor).
pub fn unzip(parcels: Vec<Parcel>) -> (Vec<EnqueueItem>, Vec<Slot>) {
    parcels.into_iter().map(|p| (p.item, p.slot)).unzip()
}

/// Records `results` in `slots`, in order; a slot left without a result
/// (the answer was short) records `NotOwner`.
pub fn finish_all(slots: Vec<Slot>, results: Vec<EnqueueResult>) {
    for (slot, r) in slots.into_iter().zip(results) {
        slot.finish(r);
    }
}

#[cfg(test)]
mod tests {
    use mlsd_transport::protocol::DeliveryCap;

    use super::*;

    fn item(b: u8) -> EnqueueItem {
        EnqueueItem {
            cap: DeliveryCap { shard: [b; 2], token: [b; 32] },
            delivery_id: [b; 32],
            envelope: vec![b],
        }
    }

    #[tokio::test]
    async fn outcomes_come_back_in_the_order_wrapped_whatever_order_they_arrive_in() {
        let (mut parcels, pending) = Parcel::wrap((0..4).map(item).collect());
        parcels.reverse();
        for p in parcels {
            let seq = u64::from(p.item.cap.token[0]) * 10;
            p.slot.finish(EnqueueResult::Stored { seq });
        }
        let seqs: Vec<_> = pending.results().await;
        assert_eq!(seqs, (0..4).map(|s| EnqueueResult::Stored { seq: s * 10 }).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_parcel_dropped_on_the_way_counts_as_not_stored_and_nobody_waits() {
        let (parcels, pending) = Parcel::wrap(vec![item(1), item(2)]);
        let mut parcels = parcels.into_iter();
        parcels.next().unwrap().slot.finish(EnqueueResult::Stored { seq: 7 });
        drop(parcels);
        assert_eq!(
            pending.results().await,
            vec![EnqueueResult::Stored { seq: 7 }, EnqueueResult::NotOwner]
        );
        let (none, pending) = Parcel::wrap(Vec::new());
        assert!(none.is_empty());
        assert!(pending.results().await.is_empty());
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_rest_not_stored() {
        let (parcels, pending) = Parcel::wrap(vec![item(1), item(2), item(3)]);
        let (items, slots) = unzip(parcels);
        assert_eq!(items.len(), 3);
        finish_all(slots, vec![EnqueueResult::Stored { seq: 1 }]);
        let r = pending.results().await;
        assert_eq!(r[0], EnqueueResult::Stored { seq: 1 });
        assert_eq!(&r[1..], &[EnqueueResult::NotOwner, EnqueueResult::NotOwner]);
    }
}
