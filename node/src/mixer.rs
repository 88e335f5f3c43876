//! The IDS's mixing window: envelopes bound for one ODS node are held for up
//! to a configured time and sent as one shuffled batch, so the order and timing
//! of a batch do not tell which copies belong to one message.
//!
//! With a window of zero (the default) each fan-out's parcels for a node go
//! out at once, still shuffled. With a window, a per-node task collects the
//! parcels of every fan-out that arrive within it and sends them together.
//! Outcomes travel with the parcels ([`crate::parcels`]), so mixing needs no
//! record of whose copy went where.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::mpsc;

use crate::parcels::Parcel;

/// Most copies the mixer puts in one batch.
pub const MAX_MIX_BATCH: usize = 4096;

/// Mixing queue depth per node, in submissions.
const QUEUE: usize = 1024;

/// The stage after the mixer: sends one batch to one ODS node and records
/// each copy's outcome in its slot (`dispatch::Dispatch` in the node).
pub trait BatchSender: Send + Sync + 'static {
    /// Sends `parcels`, all for `node`; returns once each has its outcome.
    fn send(&self, node: &str, parcels: Vec<Parcel>) -> impl Future<Output = ()> + Send;
}

/// Per-node mixing queues in front of `S`.
pub struct Mixer<S> {
    window: Duration,
    sender: Arc<S>,
    queues: Mutex<HashMap<String, mpsc::Sender<Vec<Parcel>>>>,
}

impl<S: BatchSender> Mixer<S> {
    /// A mixer holding parcels for `window`, then handing them to `sender`.
    pub fn new(window: Duration, sender: Arc<S>) -> Self {
        Mixer { window, sender, queues: Mutex::new(HashMap::new()) }
    }

    /// Sends `parcels` (all for `node`) through the node's mixing queue. With
    /// no window it returns once they are sent; with one, once they are
    /// queued (their outcomes arrive in their slots either way).
    pub async fn submit(&self, node: &str, mut parcels: Vec<Parcel>) {
        if self.window.is_zero() {
            parcels.shuffle(&mut rand::rng());
            return self.sender.send(node, parcels).await;
        }
        let tx = {
            let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            q.entry(node.to_string())
                .or_insert_with(|| spawn_queue(node.to_string(), self.window, self.sender.clone()))
                .clone()
        };
        // A queue that is gone drops the parcels: not stored, retried.
        let _ = tx.send(parcels).await;
    }
}

/// The task of one node's mixing queue: collects what arrives within the
/// window after the first submission (up to [`MAX_MIX_BATCH`] copies),
/// shuffles it and sends it as one batch.
fn spawn_queue<S: BatchSender>(
    node: String,
    window: Duration,
    sender: Arc<S>,
) -> mpsc::Sender<Vec<Parcel>> {
    let (tx, mut rx) = mpsc::channel::<Vec<Parcel>>(QUEUE);
    tokio::spawn(async move {
        while let Some(mut batch) = rx.recv().await {
            let deadline = tokio::time::Instant::now() + window;
            while batch.len() < MAX_MIX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(more)) => batch.extend(more),
                    _ => break,
                }
            }
            batch.shuffle(&mut rand::rng());
            sender.send(&node, batch).await;
        }
    });
    tx
}
