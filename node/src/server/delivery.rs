//! Getting requests and envelopes to their owners: a client request is served
//! by the local role actor or forwarded; the role actors' [`Router`] routes
//! the same way. Envelopes take typed stages, each owning the next: grouped
//! by ODS owner here, then the mixer (shuffled batches per owner), then
//! [`crate::dispatch`] (frame-sized chunks to a peer, or to this node's
//! coalescer), then the coalescer (group commits), then this node's ODS actor
//! ([`crate::local`]). The copies travel as [`crate::parcels`], each with the
//! slot its outcome goes to; this is the one place that keeps a copy's
//! position, to retry what was not stored.

use mlsd_transport::protocol::{ClusterError, EnqueueItem, EnqueueResult, NodeRequest};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mlsd_actors::replica::ShardId;
use mlsd_actors::{RoleMsg, Router};
use mlsd_transport::{Request, Response, Role, WireError};

use super::ServerCtx;
use crate::parcels::Parcel;
use crate::routing::{proceed, LeaderSearch, Miss, Next};

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
    let mut search = LeaderSearch::new(&*ctx.shards, shard);
    loop {
        let resp = if search.target() == ctx.me.name {
            local_shard(ctx, shard, &here).await
        } else {
            ctx.peers.call(search.target(), there()).await
        };
        let Some(miss) = Miss::of(&resp) else { return resp };
        if !proceed(search.missed(miss, &*ctx.shards), deadline).await {
            return Response::Error(WireError::Cluster(ClusterError::ShardUnavailable {
                shard: shard.to_string(),
            }));
        }
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
    // The search for each shard's leader during this call.
    let mut searches: HashMap<ShardId, LeaderSearch> = HashMap::new();
    while !pending.is_empty() {
        let mut by_target: HashMap<String, Vec<(usize, ShardId, EnqueueItem)>> = HashMap::new();
        for (i, shard, it) in pending.drain(..) {
            let s = searches.entry(shard).or_insert_with(|| LeaderSearch::new(&*ctx.shards, shard));
            by_target.entry(s.target().to_string()).or_default().push((i, shard, it));
        }
        let calls: Vec<_> = by_target
            .into_iter()
            .map(|(target, batch)| {
                let ctx = ctx.clone();
                async move {
                    // The copies travel as parcels; these stay for a retry.
                    let copies = batch.iter().map(|(_, _, it)| it.clone()).collect();
                    let (parcels, pending) = Parcel::wrap(copies);
                    ctx.mixer.submit(&target, parcels).await;
                    (batch, pending.results().await)
                }
            })
            .collect();
        // What each shard's copies met this round: the leader named, if any
        // copy's answer named one (all of a shard's copies went to one node).
        let mut missed: HashMap<ShardId, Option<String>> = HashMap::new();
        for (batch, out) in crate::join::join_all(calls).await {
            for ((p, shard, it), r) in batch.into_iter().zip(out) {
                let named = match r {
                    EnqueueResult::NotLeader { leader } => leader,
                    EnqueueResult::NotOwner => None,
                    done => {
                        results[p] = done;
                        continue;
                    }
                };
                let m = missed.entry(shard).or_default();
                if m.is_none() {
                    *m = named;
                }
                pending.push((p, shard, it));
            }
        }
        if pending.is_empty() {
            break;
        }
        // One step of each shard's search; one pause for the round if any
        // shard has to wait for its next voter.
        let mut next = Next::Now;
        for (shard, named) in missed {
            let miss = named.as_deref().map_or(Miss::NoLeader, |l| Miss::NotLeader(Some(l)));
            if let Some(s) = searches.get_mut(&shard) {
                if s.missed(miss, &*ctx.shards) == Next::AfterPause {
                    next = Next::AfterPause;
                }
            }
        }
        if !proceed(next, deadline).await {
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
