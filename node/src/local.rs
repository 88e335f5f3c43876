//! Calls to this node's own role actors, by name through the actor registry:
//! the last stage of every request served here, and the writer behind the
//! ODS's coalescer.

use mlsd_transport::protocol::{ClusterError, EnqueueResult, NodeResponse};
use std::collections::BTreeMap;
use std::time::Duration;

use mlsd_actors::replica::ShardId;
use mlsd_actors::role::shard_actor_name;
use mlsd_actors::RoleMsg;
use mlsd_transport::{Response, Role, WireError};
use ractor::ActorRef;

use crate::coalescer::OdsWriter;
use crate::parcels::{finish_all, unzip, Parcel};

/// How long a request waits for a role actor that is being restarted.
const ACTOR_WAIT: Duration = Duration::from_secs(2);

/// Hands a message to node `node`'s actor of `role` and waits up to
/// `timeout` for its answer. If the actor is being restarted by the
/// supervisor, waits briefly for its successor.
pub async fn call_shard(
    node: &str,
    timeout: Duration,
    shard: ShardId,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    let unavailable = || {
        Response::Error(WireError::Cluster(ClusterError::Unavailable { node: node.to_string() }))
    };
    let name = shard_actor_name(node, shard.role, shard.index);
    let deadline = tokio::time::Instant::now() + ACTOR_WAIT;
    let actor = loop {
        if let Some(actor) = ActorRef::<RoleMsg>::where_is(name.clone()) {
            break actor;
        }
        if tokio::time::Instant::now() >= deadline {
            return unavailable();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (tx, rx) = ractor::concurrency::oneshot();
    if actor.send_message(msg(tx.into())).is_err() {
        return unavailable();
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => r,
        // The actor died while holding the request, or is stuck: the request
        // had no acknowledged effect and the caller may retry.
        Ok(Err(_)) | Err(_) => unavailable(),
    }
}

/// This node's ODS shard hosts as the coalescer's writer: one `Enqueue`
/// message per shard of each merged batch, all shards at once.
pub struct LocalOds {
    /// This node's name (names its actors).
    pub node: String,
    /// How long the actor may take.
    pub timeout: Duration,
    /// ODS shards per role (`[cluster] shards`).
    pub shards: u32,
}

impl OdsWriter for LocalOds {
    async fn write(&self, parcels: Vec<Parcel>) {
        let mut by_shard: BTreeMap<u16, Vec<Parcel>> = BTreeMap::new();
        for p in parcels {
            let s = ShardId::of(Role::Ods, &p.item.cap.shard, self.shards);
            by_shard.entry(s.index).or_default().push(p);
        }
        let calls = by_shard.into_iter().map(|(index, batch)| async move {
            let (items, slots) = unzip(batch);
            let shard = ShardId { role: Role::Ods, index };
            let r = call_shard(&self.node, self.timeout, shard, |reply| RoleMsg::Enqueue {
                items,
                reply,
            })
            .await;
            match r {
                Response::Node(NodeResponse::Enqueued(rs)) if rs.len() == slots.len() => {
                    finish_all(slots, rs)
                }
                Response::Error(WireError::Cluster(ClusterError::NotLeader { leader, .. })) => {
                    for slot in slots {
                        slot.finish(EnqueueResult::NotLeader { leader: leader.clone() });
                    }
                }
                // The slots dropped: not stored, retried by the router.
                other => tracing::warn!(response = ?other, "ODS shard refused an enqueue batch"),
            }
        });
        crate::join::join_all(calls.collect()).await;
    }
}
