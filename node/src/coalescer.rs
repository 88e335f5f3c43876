//! The ODS's group commit across callers: enqueue batches that arrive while
//! the node's ODS actor is busy with a synced write go to it together, as one
//! batch and one fsync, when it is free again.
//!
//! Several fan-outs run at once (on this node's IDS and on other nodes'), and
//! each hands its sealed copies over in chunks. Without this, the ODS actor
//! writes those chunks one after another, each with its own fsync (about a
//! millisecond here), although all of them were waiting at the same time.
//! The ODS answers per copy, so each caller gets back exactly the results of
//! its own items, in order; a whole-batch failure (storage) goes to each.
//!
//! No timer: a batch leaves as soon as the previous write is done, so a lone
//! request waits for nothing.
//!
//! Every merged write is bounded in bytes as well as in copies: it becomes
//! one replicated entry, which must fit one frame ([`mlsd_actors::replica::max_entry`]).
//! A request that would take a write over the bound waits for the next
//! one; a request larger than the bound alone is written in pieces.

use mlsd_transport::protocol::ClusterError;
use std::future::Future;

use mlsd_transport::protocol::EnqueueItem;
use mlsd_transport::protocol::NodeResponse;
use mlsd_transport::{Response, WireError};
use tokio::sync::{mpsc, oneshot};

/// Most copies merged into one write (requests are taken whole, so a write
/// can carry up to one request more).
pub const MAX_COALESCED: usize = 4096;

/// Requests waiting for the writer; a full queue makes callers wait.
const QUEUE: usize = 256;

/// What one copy adds to a write besides its envelope, from above: its
/// queue key and capability serial, its delivery record and its share of
/// its mailbox's record.
pub const ITEM_OVERHEAD: usize = 512;

/// The bytes `items` add to a write, from above.
pub fn items_bytes(items: &[EnqueueItem]) -> usize {
    items.iter().map(|i| i.envelope.len() + ITEM_OVERHEAD).sum()
}

/// The stage after the coalescer: writes one merged batch and answers one
/// result per item (this node's ODS actor: `local::LocalOds`).
pub trait OdsWriter: Send + Sync + 'static {
    /// Writes `items` as one batch.
    fn write(&self, items: Vec<EnqueueItem>) -> impl Future<Output = Response> + Send;
}

struct Job {
    items: Vec<EnqueueItem>,
    bytes: usize,
    reply: oneshot::Sender<Response>,
}

/// The queue in front of one node's ODS actor.
pub struct Coalescer {
    tx: mpsc::Sender<Job>,
    max_bytes: usize,
}

impl Coalescer {
    /// Starts the writer task, which hands each merged batch of at most
    /// `max_bytes` ([`items_bytes`]) to `writer`. Must be called inside a
    /// tokio runtime; the task ends when the coalescer is dropped.
    pub fn start(writer: impl OdsWriter, max_bytes: usize) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, writer, max_bytes));
        Coalescer { tx, max_bytes }
    }

    /// Enqueues `items` with whatever else is waiting; the answer holds one
    /// result per item of `items`, in order. Items over the byte bound
    /// together go in pieces, one after another; a piece that fails fails
    /// the whole (its retry stores each copy once: delivery ids).
    pub async fn submit(&self, items: Vec<EnqueueItem>) -> Response {
        if items_bytes(&items) <= self.max_bytes {
            return self.submit_one(items).await;
        }
        let mut results = Vec::with_capacity(items.len());
        let mut piece = Vec::new();
        let mut bytes = 0;
        let mut items = items.into_iter().peekable();
        while let Some(item) = items.next() {
            bytes += items_bytes(std::slice::from_ref(&item));
            piece.push(item);
            let next = items.peek().map_or(0, |i| items_bytes(std::slice::from_ref(i)));
            if items.peek().is_none() || bytes + next > self.max_bytes {
                let n = piece.len();
                match self.submit_one(std::mem::take(&mut piece)).await {
                    Response::Node(NodeResponse::Enqueued(r)) if r.len() == n => results.extend(r),
                    Response::Node(NodeResponse::Enqueued(_)) => return count_mismatch(),
                    other => return other,
                }
                bytes = 0;
            }
        }
        Response::Node(NodeResponse::Enqueued(results))
    }

    async fn submit_one(&self, items: Vec<EnqueueItem>) -> Response {
        let (reply, rx) = oneshot::channel();
        let gone = || {
            Response::Error(WireError::Cluster(ClusterError::Internal("ODS queue closed".into())))
        };
        let bytes = items_bytes(&items);
        if self.tx.send(Job { items, bytes, reply }).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }
}

fn count_mismatch() -> Response {
    Response::Error(WireError::Cluster(ClusterError::Internal("enqueue result count".into())))
}

async fn run(mut rx: mpsc::Receiver<Job>, writer: impl OdsWriter, max_bytes: usize) {
    // A request that did not fit the last write: it starts the next.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut total = first.items.len();
        let mut bytes = first.bytes;
        let mut jobs = vec![first];
        while total < MAX_COALESCED {
            match rx.try_recv() {
                Ok(job) if bytes + job.bytes > max_bytes => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    total += job.items.len();
                    bytes += job.bytes;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut items = Vec::with_capacity(total);
        let mut parts = Vec::with_capacity(jobs.len());
        for job in jobs {
            parts.push((job.items.len(), job.reply));
            items.extend(job.items);
        }
        match writer.write(items).await {
            Response::Node(NodeResponse::Enqueued(results)) if results.len() == total => {
                let mut results = results.into_iter();
                for (n, reply) in parts {
                    // A caller that gave up is not our concern.
                    let _ = reply.send(Response::Node(NodeResponse::Enqueued(
                        results.by_ref().take(n).collect(),
                    )));
                }
            }
            Response::Node(NodeResponse::Enqueued(_)) => {
                let e = count_mismatch();
                parts.into_iter().for_each(|(_, r)| drop(r.send(e.clone())));
            }
            other => parts.into_iter().for_each(|(_, r)| drop(r.send(other.clone()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::protocol::EnqueueResult;
    use std::sync::{Arc, Mutex};

    fn item(b: u8) -> EnqueueItem {
        let cap = mlsd_transport::protocol::DeliveryCap { shard: [b; 2], token: [b; 32] };
        EnqueueItem { cap, delivery_id: [b; 32], envelope: vec![b] }
    }

    /// A writer that answers `Stored { seq: first mailbox byte }` per item,
    /// records each batch's size and holds the first batch until released.
    struct Recording {
        sizes: Arc<Mutex<Vec<usize>>>,
        hold: Arc<tokio::sync::Notify>,
        fail: bool,
    }

    impl OdsWriter for Recording {
        async fn write(&self, items: Vec<EnqueueItem>) -> Response {
            let first = self.sizes.lock().unwrap().is_empty();
            self.sizes.lock().unwrap().push(items.len());
            if first {
                self.hold.notified().await;
            }
            if self.fail {
                return Response::Error(WireError::Cluster(ClusterError::Internal("disk".into())));
            }
            let r = items
                .iter()
                .map(|i| EnqueueResult::Stored { seq: u64::from(i.cap.token[0]) })
                .collect();
            Response::Node(NodeResponse::Enqueued(r))
        }
    }

    fn writer(
        sizes: Arc<Mutex<Vec<usize>>>,
        hold: Arc<tokio::sync::Notify>,
        fail: bool,
    ) -> Recording {
        Recording { sizes, hold, fail }
    }

    #[tokio::test]
    async fn requests_waiting_behind_a_write_go_together_and_get_their_own_results() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        let c = Arc::new(Coalescer::start(writer(sizes.clone(), hold.clone(), false), 1 << 20));
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(vec![item(1)]).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Three requests arrive while the first write is in progress.
        let mut waiting = Vec::new();
        for b in [10u8, 20, 30] {
            let c = c.clone();
            waiting.push(tokio::spawn(async move { c.submit(vec![item(b), item(b + 1)]).await }));
            tokio::task::yield_now().await;
        }
        while c.tx.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        hold.notify_one();
        let stored = |s: &[u64]| {
            Response::Node(NodeResponse::Enqueued(
                s.iter().map(|&seq| EnqueueResult::Stored { seq }).collect(),
            ))
        };
        assert_eq!(first.await.unwrap(), stored(&[1]));
        for (w, b) in waiting.into_iter().zip([10u64, 20, 30]) {
            assert_eq!(w.await.unwrap(), stored(&[b, b + 1]));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 6], "one write for the three waiting");
    }

    #[tokio::test]
    async fn every_write_stays_under_the_byte_bound_and_results_keep_their_order() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        // Room for three one-byte copies a write.
        let bound = 3 * (1 + ITEM_OVERHEAD);
        let c = Arc::new(Coalescer::start(writer(sizes.clone(), hold.clone(), false), bound));
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(vec![item(1)]).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Waiting behind the first write: two requests of two copies each
        // (the second does not fit with the first), and one of seven, which
        // goes in pieces of three, three and one.
        let mut waiting = Vec::new();
        for (b, n) in [(10u8, 2u8), (20, 2), (40, 7)] {
            let c = c.clone();
            waiting.push(tokio::spawn(async move {
                c.submit((0..n).map(|k| item(b + k)).collect()).await
            }));
            tokio::task::yield_now().await;
        }
        while c.tx.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        hold.notify_one();
        let stored = |s: std::ops::Range<u64>| {
            Response::Node(NodeResponse::Enqueued(
                s.map(|seq| EnqueueResult::Stored { seq }).collect(),
            ))
        };
        assert_eq!(first.await.unwrap(), stored(1..2));
        let mut answers = Vec::new();
        for w in waiting {
            answers.push(w.await.unwrap());
        }
        assert_eq!(answers, vec![stored(10..12), stored(20..22), stored(40..47)]);
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|n| *n <= 3), "a write over the bound: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 12, "{sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_write_answers_every_request_in_it() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        hold.notify_one();
        let c = Coalescer::start(writer(sizes, hold, true), 1 << 20);
        let r = c.submit(vec![item(1), item(2)]).await;
        assert_eq!(r, Response::Error(WireError::Cluster(ClusterError::Internal("disk".into()))));
    }
}
