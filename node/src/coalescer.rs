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

use mlsd_transport::protocol::ClusterError;
use std::future::Future;

use mlsd_transport::protocol::EnqueueItem;
use mlsd_transport::{Response, WireError};
use tokio::sync::{mpsc, oneshot};

/// Most copies merged into one write (requests are taken whole, so a write
/// can carry up to one request more).
pub const MAX_COALESCED: usize = 4096;

/// Requests waiting for the writer; a full queue makes callers wait.
const QUEUE: usize = 256;

/// The stage after the coalescer: writes one merged batch and answers one
/// result per item (this node's ODS actor: `local::LocalOds`).
pub trait OdsWriter: Send + Sync + 'static {
    /// Writes `items` as one batch.
    fn write(&self, items: Vec<EnqueueItem>) -> impl Future<Output = Response> + Send;
}

struct Job {
    items: Vec<EnqueueItem>,
    reply: oneshot::Sender<Response>,
}

/// The queue in front of one node's ODS actor.
pub struct Coalescer {
    tx: mpsc::Sender<Job>,
}

impl Coalescer {
    /// Starts the writer task, which hands each merged batch to `writer`.
    /// Must be called inside a tokio runtime; the task ends when the
    /// coalescer is dropped.
    pub fn start(writer: impl OdsWriter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, writer));
        Coalescer { tx }
    }

    /// Enqueues `items` with whatever else is waiting; the answer holds one
    /// result per item of `items`, in order.
    pub async fn submit(&self, items: Vec<EnqueueItem>) -> Response {
        let (reply, rx) = oneshot::channel();
        let gone = || {
            Response::Error(WireError::Cluster(ClusterError::Internal("ODS queue closed".into())))
        };
        if self.tx.send(Job { items, reply }).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, writer: impl OdsWriter) {
    while let Some(first) = rx.recv().await {
        let mut total = first.items.len();
        let mut jobs = vec![first];
        while total < MAX_COALESCED {
            match rx.try_recv() {
                Ok(job) => {
                    total += job.items.len();
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
            Response::Enqueued(results) if results.len() == total => {
                let mut results = results.into_iter();
                for (n, reply) in parts {
                    // A caller that gave up is not our concern.
                    let _ = reply.send(Response::Enqueued(results.by_ref().take(n).collect()));
                }
            }
            Response::Enqueued(_) => {
                let e = Response::Error(WireError::Cluster(ClusterError::Internal(
                    "enqueue result count".into(),
                )));
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
            Response::Enqueued(r)
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
        let c = Arc::new(Coalescer::start(writer(sizes.clone(), hold.clone(), false)));
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
            Response::Enqueued(s.iter().map(|&seq| EnqueueResult::Stored { seq }).collect())
        };
        assert_eq!(first.await.unwrap(), stored(&[1]));
        for (w, b) in waiting.into_iter().zip([10u64, 20, 30]) {
            assert_eq!(w.await.unwrap(), stored(&[b, b + 1]));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 6], "one write for the three waiting");
    }

    #[tokio::test]
    async fn a_failed_write_answers_every_request_in_it() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Notify::new());
        hold.notify_one();
        let c = Coalescer::start(writer(sizes, hold, true));
        let r = c.submit(vec![item(1), item(2)]).await;
        assert_eq!(r, Response::Error(WireError::Cluster(ClusterError::Internal("disk".into()))));
    }
}
