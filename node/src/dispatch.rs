//! The stage after the mixer: hands a batch of parcels to its ODS owner,
//! in chunks that fit a frame over the node connection to a peer, or all at
//! once to this node's coalescer when the owner is this node.

use std::sync::Arc;
use std::time::Duration;

use mlsd_transport::protocol::{NodeRequest, NodeResponse};
use mlsd_transport::Response;

use crate::coalescer::Coalescer;
use crate::mixer::BatchSender;
use crate::parcels::{finish_all, unzip, Parcel};
use crate::peers::Peers;

/// Most items in one `Enqueue` batch, sent or accepted.
pub const MAX_ENQUEUE_BATCH: usize = 4096;

/// Bytes a copy adds to a frame beyond its envelope (capability, delivery
/// id, encoding).
const ITEM_FRAME_OVERHEAD: usize = 128;

/// Where batches for each ODS owner go.
pub struct Dispatch {
    /// This node's name.
    pub me: String,
    /// Connections to the other nodes.
    pub peers: Arc<Peers>,
    /// This node's ODS group commit, when it hosts the ODS.
    pub ods_queue: Option<Coalescer>,
    /// Most bytes of a frame.
    pub max_frame: u32,
    /// How long a local enqueue may wait, queue included.
    pub call_timeout: Duration,
}

impl Dispatch {
    /// Stores parcels in this node's ODS, together with other callers'
    /// parcels waiting at the same time (see [`crate::coalescer`]). Without
    /// an ODS here, or past the call timeout, the parcels left are dropped:
    /// not stored.
    pub async fn here(&self, parcels: Vec<Parcel>) {
        let Some(q) = &self.ods_queue else {
            tracing::warn!(node = %self.me, "enqueue refused: this node hosts no ODS");
            return;
        };
        if tokio::time::timeout(self.call_timeout, q.submit(parcels)).await.is_err() {
            tracing::warn!(node = %self.me, "local enqueue timed out");
        }
    }
}

impl BatchSender for Dispatch {
    async fn send(&self, owner: &str, parcels: Vec<Parcel>) {
        if owner == self.me {
            return self.here(parcels).await;
        }
        let budget = (self.max_frame / 2) as usize;
        let mut chunk: Vec<Parcel> = Vec::new();
        let mut bytes = 0;
        let mut iter = parcels.into_iter().peekable();
        while let Some(parcel) = iter.next() {
            bytes += parcel.item.envelope.len() + ITEM_FRAME_OVERHEAD;
            chunk.push(parcel);
            let full = chunk.len() >= MAX_ENQUEUE_BATCH
                || iter.peek().is_none_or(|next| {
                    bytes + next.item.envelope.len() + ITEM_FRAME_OVERHEAD > budget
                });
            if !full {
                continue;
            }
            let (items, slots) = unzip(std::mem::take(&mut chunk));
            bytes = 0;
            match self.peers.call(owner, NodeRequest::Enqueue(items)).await {
                Response::Node(NodeResponse::Enqueued(r)) if r.len() == slots.len() => {
                    finish_all(slots, r)
                }
                // The slots dropped: not stored, retried by the router.
                other => tracing::warn!(node = %owner, response = ?other, "enqueue batch failed"),
            }
        }
    }
}
