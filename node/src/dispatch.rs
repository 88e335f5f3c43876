//! The stage after the mixer: hands a batch of envelopes to its ODS owner in
//! chunks that fit a frame, over the node connection to a peer, or to this
//! node's coalescer when the owner is this node.

use mlsd_transport::protocol::ClusterError;
use std::sync::Arc;
use std::time::Duration;

use mlsd_transport::protocol::NodeResponse;
use mlsd_transport::protocol::{EnqueueItem, EnqueueResult, NodeRequest};
use mlsd_transport::{Response, WireError};

use crate::coalescer::Coalescer;
use crate::mixer::BatchSender;
use crate::peers::Peers;

/// Most items in one `Enqueue` batch, sent or accepted.
pub const MAX_ENQUEUE_BATCH: usize = 4096;

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
    /// Stores copies in this node's ODS, together with other callers' copies
    /// waiting at the same time (see [`crate::coalescer`]).
    pub async fn here(&self, items: Vec<EnqueueItem>) -> Response {
        let Some(q) = &self.ods_queue else {
            return Response::Error(WireError::Cluster(ClusterError::Internal(
                "this node hosts no ODS".into(),
            )));
        };
        // Time in the queue counts against the bound a direct call has; copies
        // written after the caller gave up are recognized when the sender retries.
        match tokio::time::timeout(self.call_timeout, q.submit(items)).await {
            Ok(r) => r,
            Err(_) => Response::Error(WireError::Cluster(ClusterError::Unavailable {
                node: self.me.clone(),
            })),
        }
    }
}

impl BatchSender for Dispatch {
    /// Sends items to one ODS node in chunks that fit a frame: at most
    /// [`MAX_ENQUEUE_BATCH`] items and about half the frame limit in bytes.
    async fn send(&self, owner: &str, items: Vec<EnqueueItem>) -> Vec<EnqueueResult> {
        let budget = (self.max_frame / 2) as usize;
        let mut out = Vec::with_capacity(items.len());
        let mut chunk: Vec<EnqueueItem> = Vec::new();
        let mut bytes = 0;
        let mut iter = items.into_iter().peekable();
        while let Some(item) = iter.next() {
            bytes += item.envelope.len() + 128;
            chunk.push(item);
            let full = chunk.len() >= MAX_ENQUEUE_BATCH
                || iter.peek().is_none_or(|next| bytes + next.envelope.len() + 128 > budget);
            if !full {
                continue;
            }
            let k = chunk.len();
            let chunk = std::mem::take(&mut chunk);
            bytes = 0;
            let resp = if owner == self.me {
                self.here(chunk).await
            } else {
                self.peers.call(owner, NodeRequest::Enqueue(chunk)).await
            };
            match resp {
                Response::Node(NodeResponse::Enqueued(r)) if r.len() == k => out.extend(r),
                other => {
                    tracing::warn!(node = %owner, response = ?other, "enqueue batch failed");
                    out.extend(std::iter::repeat_n(EnqueueResult::NotOwner, k));
                }
            }
        }
        out
    }
}
