//! Getting requests and envelopes to their owners: a client request is served
//! by the local role actor or forwarded; the role actors' [`Router`] routes
//! the same way. Envelopes take typed stages, each owning the next: grouped
//! by ODS owner here, then the mixer (shuffled batches per owner), then
//! [`crate::dispatch`] (frame-sized chunks to a peer, or to this node's
//! coalescer), then the coalescer (group commits), then this node's ODS actor
//! ([`crate::local`]).

use mlsd_transport::protocol::ClusterError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mlsd_actors::replica::ShardId;
use mlsd_actors::{RoleMsg, Router};
use mlsd_transport::protocol::{EnqueueItem, EnqueueResult, NodeRequest};
use mlsd_transport::{Request, Response, Role, WireError};

use super::ServerCtx;

/// How long to wait before asking again when a shard has no leader yet
/// (an election is under way).
pub(super) const ELECTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves a request at the leader of `shard`: here when this node leads it
/// (`here` builds the message for the local host), else at the node the
/// leader hint names (`there`, over the node connection). A `NotLeader`
/// answer is followed to the leader it names, and a shard without a leader
/// (or an unreachable one) is asked again, voter after voter, until the
/// call timeout; then the answer is `ShardUnavailable`, retryable.
pub(super) async fn at_leader(
    ctx: &ServerCtx,
    shard: ShardId,
    here: impl Fn(ractor::RpcReplyPort<Response>) -> RoleMsg,
    there: impl Fn() -> NodeRequest,
) -> Response {
    let deadline = tokio::time::Instant::now() + ctx.config.limits.call_timeout;
    let voters = ctx.shards.voters(shard);
    let mut target = ctx.shards.leader_hint(shard);
    let mut rotation = 0usize;
    // Voters that could not be reached during this call: once all are, no
    // leader can exist and waiting longer only delays the answer.
    let mut unreachable = std::collections::HashSet::new();
    loop {
        let resp = if target == ctx.me.name {
            local_shard(ctx, shard, &here).await
        } else {
            ctx.peers.call(&target, there()).await
        };
        let next = match &resp {
            Response::Error(WireError::Cluster(ClusterError::NotLeader { leader, .. })) => {
                match leader {
                    Some(l) if *l != target => {
                        ctx.shards.note_leader(shard, l);
                        Some((l.clone(), false))
                    }
                    _ => None,
                }
            }
            Response::Error(WireError::Cluster(ClusterError::Unavailable { node })) => {
                unreachable.insert(node.clone());
                None
            }
            Response::Error(WireError::Cluster(ClusterError::ShardUnavailable { .. })) => None,
            _ => return resp,
        };
        if voters.iter().all(|v| unreachable.contains(v)) {
            return Response::Error(WireError::Cluster(ClusterError::ShardUnavailable {
                shard: shard.to_string(),
            }));
        }
        let (t, pause) = next.unwrap_or_else(|| {
            rotation += 1;
            let v = voters.get(rotation % voters.len().max(1)).cloned();
            (v.unwrap_or_else(|| ctx.me.name.clone()), true)
        });
        if tokio::time::Instant::now() + ELECTION_PAUSE >= deadline {
            return Response::Error(WireError::Cluster(ClusterError::ShardUnavailable {
                shard: shard.to_string(),
            }));
        }
        if pause {
            tokio::time::sleep(ELECTION_PAUSE).await;
        }
        target = t;
    }
}

/// Serves a client request at its shard's leader.
pub(super) async fn route(ctx: &ServerCtx, req: Request) -> Response {
    let (role, key) = req.shard();
    let shard = ctx.shards.shard_of(role, key);
    at_leader(
        ctx,
        shard,
        |reply| RoleMsg::Request { request: req.clone(), reply },
        || NodeRequest::Forward(req.clone()),
    )
    .await
}

/// The node's [`Router`] for role actors: the same routing clients get.
pub struct NodeRouter(pub Arc<ServerCtx>);

impl Router for NodeRouter {
    fn route(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>> {
        Box::pin(route(&self.0, req))
    }

    fn enqueue(
        &self,
        items: Vec<EnqueueItem>,
    ) -> Pin<Box<dyn Future<Output = Vec<EnqueueResult>> + Send + '_>> {
        Box::pin(enqueue(self.0.clone(), items))
    }
}

/// Hands envelopes to their mailboxes' ODS leaders: one batch per leader
/// node, through the mixer (shuffled, optionally held for the mixing window),
/// all leaders in parallel. Results come back in the order of `items`.
///
/// Copies a node refuses because it does not lead their shard go at once to
/// the leader it names (remembered for later fan-outs); copies whose node
/// cannot be reached, or that name no leader, go to the shard's next voter
/// after a pause, as [`at_leader`] does for requests, until the call timeout.
/// Sending a copy twice stores it once (its delivery id).
async fn enqueue(ctx: Arc<ServerCtx>, items: Vec<EnqueueItem>) -> Vec<EnqueueResult> {
    let deadline = tokio::time::Instant::now() + ctx.config.limits.call_timeout;
    let mut results = vec![EnqueueResult::NotOwner; items.len()];
    // Each copy with its position and its shard, computed once.
    let mut pending: Vec<(usize, ShardId, EnqueueItem)> = items
        .into_iter()
        .enumerate()
        .map(|(i, it)| (i, ctx.shards.shard_of(Role::Ods, &it.cap.shard), it))
        .collect();
    // Where each shard's copies go next during this call, and how far its
    // voters have been rotated through.
    let mut targets: std::collections::HashMap<ShardId, (String, usize)> = Default::default();
    while !pending.is_empty() {
        let mut by_target: std::collections::HashMap<String, Vec<(usize, ShardId, EnqueueItem)>> =
            Default::default();
        for (i, shard, it) in pending.drain(..) {
            let (t, _) = targets.entry(shard).or_insert_with(|| (ctx.shards.leader_hint(shard), 0));
            by_target.entry(t.clone()).or_default().push((i, shard, it));
        }
        let calls: Vec<_> = by_target
            .into_iter()
            .map(|(target, batch)| {
                let ctx = ctx.clone();
                async move {
                    let items: Vec<EnqueueItem> =
                        batch.iter().map(|(_, _, it)| it.clone()).collect();
                    let out = ctx.mixer.submit(&target, items).await;
                    (target, batch, out)
                }
            })
            .collect();
        // Shards whose copies found no leader this round: one step to the next voter each.
        let mut lost: std::collections::HashSet<ShardId> = Default::default();
        for (target, batch, out) in crate::join::join_all(calls).await {
            for ((p, shard, it), r) in batch.into_iter().zip(out) {
                match r {
                    EnqueueResult::NotLeader { leader: Some(l) } if l != target => {
                        ctx.shards.note_leader(shard, &l);
                        if let Some(t) = targets.get_mut(&shard) {
                            t.0 = l;
                        }
                    }
                    EnqueueResult::NotLeader { .. } | EnqueueResult::NotOwner => {
                        lost.insert(shard);
                    }
                    done => {
                        results[p] = done;
                        continue;
                    }
                }
                pending.push((p, shard, it));
            }
        }
        if pending.is_empty() {
            break;
        }
        if !lost.is_empty() {
            if tokio::time::Instant::now() + ELECTION_PAUSE >= deadline {
                break;
            }
            for shard in lost {
                let voters = ctx.shards.voters(shard);
                let t = targets.entry(shard).or_insert_with(|| (ctx.me.name.clone(), 0));
                t.1 += 1;
                if let Some(v) = voters.get(t.1 % voters.len().max(1)) {
                    t.0 = v.clone();
                }
            }
            tokio::time::sleep(ELECTION_PAUSE).await;
        } else if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    results
}

/// Hands a message to this node's host of `shard`; a shard this node does
/// not replicate is answered `NotLeader` with the leader it knows of.
pub(super) async fn local_shard(
    ctx: &ServerCtx,
    shard: ShardId,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    if ctx.shards.replica(shard).is_none() {
        let leader = Some(ctx.shards.leader_hint(shard)).filter(|l| *l != ctx.me.name);
        return Response::Error(WireError::Cluster(ClusterError::NotLeader {
            shard: shard.to_string(),
            leader,
        }));
    }
    crate::local::call_shard(&ctx.me.name, ctx.config.limits.call_timeout, shard, msg).await
}
