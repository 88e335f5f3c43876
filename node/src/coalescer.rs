//! The ODS's group commit across callers: parcels that arrive while the
//! node's ODS actor is busy with a synced write go to it together, as one
//! batch and one fsync, when it is free again.
//!
//! Several fan-outs run at once (on this node's IDS and on other nodes'), and
//! each hands its sealed copies over in chunks. Without this, the ODS actor
//! writes those chunks one after another, each with its own fsync (about a
//! millisecond here), although all of them were waiting at the same time.
//! The ODS answers per copy, and each answer goes to its copy's slot
//! ([`crate::parcels`]); a whole-batch failure (storage) leaves every copy of
//! the batch not stored.
//!
//! No timer: a batch leaves as soon as the previous write is done, so a lone
//! request waits for nothing.
//!
//! Every merged write is bounded in bytes as well as in copies: it becomes
//! one replicated entry, which must fit one frame ([`mlsd_actors::replica::max_entry`]).
//! A submission that would take a write over the bound waits for the next
//! one; a submission larger than the bound alone is written in pieces.

use std::future::Future;

use tokio::sync::mpsc;

use crate::parcels::Parcel;

/// Most copies merged into one write (submissions are taken whole, so a
/// write can carry up to one submission more).
pub const MAX_COALESCED: usize = 4096;

/// Submissions waiting for the writer; a full queue makes callers wait.
const QUEUE: usize = 256;

/// What one copy adds to a write besides its envelope, from above: its
/// queue key and capability serial, its delivery record and its share of
/// its mailbox's record.
pub const ITEM_OVERHEAD: usize = 512;

/// The bytes `parcel` adds to a write, from above.
fn parcel_bytes(parcel: &Parcel) -> usize {
    parcel.item.envelope.len() + ITEM_OVERHEAD
}

/// The stage after the coalescer: writes one merged batch and records each
/// copy's outcome in its slot (`local::LocalOds` in the node).
pub trait OdsWriter: Send + Sync + 'static {
    /// Writes `parcels`; returns once each has its outcome.
    fn write(&self, parcels: Vec<Parcel>) -> impl Future<Output = ()> + Send;
}

/// One submission, and the bytes it adds to a write.
struct Job {
    parcels: Vec<Parcel>,
    bytes: usize,
}

/// The queue in front of the ODS writer.
pub struct Coalescer {
    tx: mpsc::Sender<Job>,
    max_bytes: usize,
}

impl Coalescer {
    /// Starts the writer task in front of `writer`; no merged write exceeds
    /// `max_bytes` (from [`ITEM_OVERHEAD`]).
    pub fn start(writer: impl OdsWriter, max_bytes: usize) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, writer, max_bytes));
        Coalescer { tx, max_bytes }
    }

    /// Queues `parcels` for the next write, in pieces of at most the byte
    /// bound; returns once they are queued (their outcomes arrive in their
    /// slots). A closed queue drops them: not stored.
    pub async fn submit(&self, parcels: Vec<Parcel>) {
        let mut piece = Vec::new();
        let mut bytes = 0;
        let mut parcels = parcels.into_iter().peekable();
        while let Some(parcel) = parcels.next() {
            bytes += parcel_bytes(&parcel);
            piece.push(parcel);
            let next = parcels.peek().map_or(0, parcel_bytes);
            if parcels.peek().is_none() || bytes + next > self.max_bytes {
                let job = Job { parcels: std::mem::take(&mut piece), bytes };
                if self.tx.send(job).await.is_err() {
                    return;
                }
                bytes = 0;
            }
        }
    }
}

/// The writer task: takes the first waiting submission, adds every other
/// one already waiting that fits the bounds, and writes them as one batch.
async fn run(mut rx: mpsc::Receiver<Job>, writer: impl OdsWriter, max_bytes: usize) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = first.parcels;
        while batch.len() < MAX_COALESCED {
            match rx.try_recv() {
                Ok(job) if bytes + job.bytes > max_bytes => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    bytes += job.bytes;
                    batch.extend(job.parcels);
                }
                Err(_) => break,
            }
        }
        writer.write(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parcels::{finish_all, unzip, Pending};
    use mlsd_transport::protocol::{EnqueueItem, EnqueueResult};
    use std::sync::{Arc, Mutex};

    fn item(b: u8) -> EnqueueItem {
        let cap = mlsd_transport::protocol::DeliveryCap { shard: [b; 2], token: [b; 32] };
        EnqueueItem { cap, delivery_id: [b; 32], envelope: vec![b] }
    }

    /// A writer that answers `Stored { seq: first mailbox byte }` per copy
    /// (or fails the whole batch), records each batch's size and holds the
    /// first batch until released.
    struct Recording {
        sizes: Arc<Mutex<Vec<usize>>>,
        hold: Arc<tokio::sync::Notify>,
        fail: bool,
    }

    impl OdsWriter for Recording {
        async fn write(&self, parcels: Vec<Parcel>) {
            let first = self.sizes.lock().unwrap().is_empty();
            self.sizes.lock().unwrap().push(parcels.len());
            if first {
                self.hold.notified().await;
            }
            if self.fail {
                return;
            }
            let (items, slots) = unzip(parcels);
            let r = items
                .iter()
                .map(|i| EnqueueResult::Stored { seq: u64::from(i.cap.token[0]) })
                .collect();
            finish_all(slots, r);
        }
    }

    fn writer(
        sizes: Arc<Mutex<Vec<usize>>>,
        hold: Arc<tokio::sync::Notify>,
        fail: bool,
    ) -> Recording {
        Recording { sizes, hold, fail }
    }

    /// Submits `items` and gives what their outcomes arrive in.
    async fn submit(c: &Coalescer, items: Vec<EnqueueItem>) -> Pending {
        let (parcels, pending) = Parcel::wrap(items);
        c.submit(parcels).await;
        pending
    }

    fn stored(s: impl IntoIterator<Item = u64>) -> Vec<EnqueueResult> {
        s.into_iter().map(|seq| EnqueueResult::Stored { seq }).collect()
    }

    #[tokio::test]
    async fn submissions_waiting_behind_a_write_go_together_and_get_their_own_results() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        let c = Coalescer::start(writer(sizes.clone(), hold.clone(), false), 1 << 20);
        let first = submit(&c, vec![item(1)]).await;
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Three submissions arrive while the first write is in progress.
        let mut waiting = Vec::new();
        for b in [10u8, 20, 30] {
            waiting.push(submit(&c, vec![item(b), item(b + 1)]).await);
        }
        hold.notify_one();
        assert_eq!(first.results().await, stored([1]));
        for (w, b) in waiting.into_iter().zip([10u64, 20, 30]) {
            assert_eq!(w.results().await, stored([b, b + 1]));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 6], "one write for the three waiting");
    }

    #[tokio::test]
    async fn every_write_stays_under_the_byte_bound_and_results_keep_their_order() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        // Room for three one-byte copies a write.
        let bound = 3 * (1 + ITEM_OVERHEAD);
        let c = Coalescer::start(writer(sizes.clone(), hold.clone(), false), bound);
        let first = submit(&c, vec![item(1)]).await;
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Waiting behind the first write: two submissions of two copies each
        // (the second does not fit with the first), and one of seven, which
        // goes in pieces of three, three and one.
        let mut waiting = Vec::new();
        for (b, n) in [(10u8, 2u8), (20, 2), (40, 7)] {
            waiting.push(submit(&c, (0..n).map(|k| item(b + k)).collect()).await);
        }
        hold.notify_one();
        assert_eq!(first.results().await, stored(1..2));
        let mut answers = Vec::new();
        for w in waiting {
            answers.push(w.results().await);
        }
        assert_eq!(answers, vec![stored(10..12), stored(20..22), stored(40..47)]);
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|n| *n <= 3), "a write over the bound: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 12, "{sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_write_leaves_every_copy_in_it_not_stored() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        hold.notify_one();
        let c = Coalescer::start(writer(sizes, hold, true), 1 << 20);
        let r = submit(&c, vec![item(1), item(2)]).await.results().await;
        assert_eq!(r, vec![EnqueueResult::NotOwner; 2]);
    }
}
