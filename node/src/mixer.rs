//! The IDS's mixing window: envelopes bound for one ODS node are held for up
//! to a configured time and sent as one shuffled batch, so the order and timing
//! of a batch do not tell which copies belong to one message.
//!
//! With a window of zero (the default) each fan-out's items for a node go out
//! at once, still shuffled. With a window, a per-node task collects the items
//! of every fan-out that arrive within it and sends them together.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlsd_transport::protocol::{EnqueueItem, EnqueueResult};
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot};

/// Most items the mixer puts in one batch.
pub const MAX_MIX_BATCH: usize = 4096;

struct Job {
    items: Vec<EnqueueItem>,
    reply: oneshot::Sender<Vec<EnqueueResult>>,
}

/// The stage after the mixer: sends one batch to one ODS node and answers
/// one result per item (`dispatch::Dispatch` in the node).
pub trait BatchSender: Send + Sync + 'static {
    /// Sends `items`, all for `node`.
    fn send(
        &self,
        node: &str,
        items: Vec<EnqueueItem>,
    ) -> impl Future<Output = Vec<EnqueueResult>> + Send;
}

/// Per-node mixing queues in front of `S`.
pub struct Mixer<S> {
    window: Duration,
    sender: Arc<S>,
    queues: Mutex<HashMap<String, mpsc::Sender<Job>>>,
}

impl<S: BatchSender> Mixer<S> {
    /// A mixer holding items for `window`, then handing them to `sender`.
    pub fn new(window: Duration, sender: Arc<S>) -> Self {
        Mixer { window, sender, queues: Mutex::new(HashMap::new()) }
    }

    /// Enqueues `items` (all for `node`) through the node's mixing queue.
    pub async fn submit(&self, node: &str, mut items: Vec<EnqueueItem>) -> Vec<EnqueueResult> {
        if self.window.is_zero() {
            let n = items.len();
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rand::rng());
            let shuffled: Vec<EnqueueItem> =
                order.iter().map(|&i| std::mem::replace(&mut items[i], placeholder())).collect();
            let results = self.sender.send(node, shuffled).await;
            let mut out = vec![EnqueueResult::NotOwner; n];
            for (pos, r) in order.into_iter().zip(results) {
                out[pos] = r;
            }
            return out;
        }
        let tx = {
            let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            q.entry(node.to_string())
                .or_insert_with(|| spawn_queue(node.to_string(), self.window, self.sender.clone()))
                .clone()
        };
        let n = items.len();
        let (reply, rx) = oneshot::channel();
        if tx.send(Job { items, reply }).await.is_err() {
            return vec![EnqueueResult::NotOwner; n];
        }
        rx.await.unwrap_or_else(|_| vec![EnqueueResult::NotOwner; n])
    }
}

fn placeholder() -> EnqueueItem {
    let cap = mlsd_transport::protocol::DeliveryCap { shard: [0; 2], token: [0; 32] };
    EnqueueItem { cap, delivery_id: [0; 32], envelope: Vec::new() }
}

fn spawn_queue<S: BatchSender>(
    node: String,
    window: Duration,
    sender: Arc<S>,
) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(1024);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            let deadline = tokio::time::Instant::now() + window;
            let mut count = jobs[0].items.len();
            while count < MAX_MIX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => {
                        count += j.items.len();
                        jobs.push(j);
                    }
                    _ => break,
                }
            }
            // (job, item) positions, shuffled together across fan-outs.
            let mut all: Vec<(usize, usize, EnqueueItem)> = Vec::with_capacity(count);
            let mut replies = Vec::new();
            let mut sizes = Vec::new();
            for (j, job) in jobs.into_iter().enumerate() {
                sizes.push(job.items.len());
                replies.push(job.reply);
                all.extend(job.items.into_iter().enumerate().map(|(i, it)| (j, i, it)));
            }
            all.shuffle(&mut rand::rng());
            let (pos, items): (Vec<(usize, usize)>, Vec<EnqueueItem>) =
                all.into_iter().map(|(j, i, it)| ((j, i), it)).unzip();
            let results = sender.send(&node, items).await;
            let mut out: Vec<Vec<EnqueueResult>> =
                sizes.iter().map(|&n| vec![EnqueueResult::NotOwner; n]).collect();
            for ((j, i), r) in pos.into_iter().zip(results) {
                out[j][i] = r;
            }
            for (reply, r) in replies.into_iter().zip(out) {
                let _ = reply.send(r);
            }
        }
    });
    tx
}
