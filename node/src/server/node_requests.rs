//! What other nodes and operator tools ask over `mlsd-node/1`: forwarded
//! requests, enrollment tokens, enqueue batches and chaos. Each is served only
//! by the node that owns it, and never forwarded again. Nodes may forward
//! and enqueue; only the operator's certificate may enroll, revoke and kill
//! actors (a node's key, on a host an attacker took, grants none of them).

use mlsd_transport::protocol::{AuthError, BadFrame, ClusterError};
use std::time::Duration;

use mlsd_actors::role::shard_actor_name;
use mlsd_actors::RoleMsg;
use mlsd_transport::protocol::NodeResponse;
use mlsd_transport::protocol::{ChaosTarget, EnqueueResult, NodeRequest};
use mlsd_transport::{Response, Role, WireError};

use super::delivery::local_shard;
use super::{NodePeer, ServerCtx};
use crate::dispatch::MAX_ENQUEUE_BATCH;

/// Whether `peer` may send `req`: node traffic from nodes, operator actions
/// from the operator, nothing else.
fn entitled(req: &NodeRequest, peer: NodePeer) -> Result<(), WireError> {
    let needs = match req {
        NodeRequest::Forward(_)
        | NodeRequest::Enqueue(_)
        | NodeRequest::Spend { .. }
        | NodeRequest::Raft(_) => NodePeer::Node,
        // What the cluster looks like: the operator's to ask, and a node's
        // that starts empty (it asks its peers how far their shards are).
        NodeRequest::ShardStatus => return Ok(()),
        NodeRequest::Enroll { .. } | NodeRequest::Revoke { .. } | NodeRequest::Chaos { .. } => {
            NodePeer::Operator
        }
    };
    match (needs, peer) {
        (a, b) if a == b => Ok(()),
        (NodePeer::Operator, _) => {
            Err(WireError::Auth(AuthError::NotAuthorized("operator certificate required".into())))
        }
        (NodePeer::Node, _) => {
            Err(WireError::Auth(AuthError::NotAuthorized("node certificate required".into())))
        }
    }
}

/// Serves a request from another node (or an operator tool). Requests are
/// only served if this node owns them and `peer` may send them; they are
/// never forwarded again.
pub(super) async fn serve_node_request(
    ctx: &ServerCtx,
    req: NodeRequest,
    peer: NodePeer,
) -> Response {
    if let Err(e) = entitled(&req, peer) {
        return Response::Error(e);
    }
    let as_shard = |key: &[u8]| ctx.shards.shard_of(Role::As, key);
    match req {
        NodeRequest::Forward(request) => {
            let (role, key) = request.shard();
            let shard = ctx.shards.shard_of(role, key);
            local_shard(ctx, shard, |reply| RoleMsg::Request { request, reply }).await
        }
        NodeRequest::Enroll { identity, token_hash } => {
            let shard = as_shard(identity.as_bytes());
            let request = NodeRequest::Enroll { identity, token_hash };
            local_shard(ctx, shard, |reply| RoleMsg::Admin { request, reply }).await
        }
        NodeRequest::Revoke { client } => {
            let identity = client.split('/').next().unwrap_or("").to_string();
            let request = NodeRequest::Revoke { client };
            local_shard(ctx, as_shard(identity.as_bytes()), |reply| RoleMsg::Admin {
                request,
                reply,
            })
            .await
        }
        NodeRequest::Chaos { target } => chaos(ctx, target).await,
        NodeRequest::Spend { ticket, bind } => {
            let shard = as_shard(&ticket.input);
            let request = NodeRequest::Spend { ticket, bind };
            local_shard(ctx, shard, |reply| RoleMsg::Admin { request, reply }).await
        }
        NodeRequest::Raft(calls) => {
            Response::Node(NodeResponse::Raft(ctx.shards.serve(calls).await))
        }
        NodeRequest::ShardStatus => Response::Node(NodeResponse::ShardStatus(ctx.shards.status())),
        NodeRequest::Enqueue(items) => {
            if items.len() > MAX_ENQUEUE_BATCH {
                return Response::Error(WireError::Frame(BadFrame::Malformed(
                    "enqueue batch too large".into(),
                )));
            }
            // Items of shards this node does not lead are answered with the
            // leader it knows of, so the sender goes there next; the rest proceed.
            let mut results = Vec::with_capacity(items.len());
            let mut positions = Vec::new();
            let mut mine = Vec::new();
            for (i, it) in items.into_iter().enumerate() {
                let shard = ctx.shards.shard_of(Role::Ods, &it.cap.shard);
                if ctx.shards.replica(shard).is_some_and(|r| r.leading()) {
                    positions.push(i);
                    mine.push(it);
                    results.push(EnqueueResult::NotOwner);
                } else {
                    let leader = Some(ctx.shards.leader_hint(shard)).filter(|l| *l != ctx.me.name);
                    results.push(EnqueueResult::NotLeader { leader });
                }
            }
            if !mine.is_empty() {
                let resp = ctx.dispatch.here(mine).await;
                let Response::Node(NodeResponse::Enqueued(local_results)) = resp else {
                    return resp;
                };
                if local_results.len() != positions.len() {
                    return Response::Error(WireError::Cluster(ClusterError::Internal(
                        "enqueue result count".into(),
                    )));
                }
                for (p, r) in positions.into_iter().zip(local_results) {
                    results[p] = r;
                }
            }
            Response::Node(NodeResponse::Enqueued(results))
        }
    }
}

/// Kills one random live actor of `target` on this node, if chaos is allowed.
/// Short-lived actors (fan-outs, anonymizers live for milliseconds) are
/// waited for, up to half a second, so chaos runs do hit them.
async fn chaos(ctx: &ServerCtx, target: ChaosTarget) -> Response {
    use rand::seq::IndexedRandom;
    if !ctx.config.chaos.allow {
        return Response::Error(WireError::Auth(AuthError::NotAuthorized(
            "chaos requests are off".into(),
        )));
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        let victims: Vec<ractor::ActorCell> = match target {
            ChaosTarget::Role(r) => ctx
                .shards
                .replicas()
                .filter(|s| s.shard.role == r)
                .filter_map(|s| {
                    ractor::registry::where_is(shard_actor_name(&ctx.me.name, r, s.shard.index))
                })
                .collect(),
            other => {
                ractor::pg::get_local_members(&mlsd_actors::ids::process_group(&ctx.me.name, other))
            }
        };
        if let Some(v) = victims.choose(&mut rand::rng()) {
            tracing::warn!(?target, "chaos: killing an actor");
            v.kill();
            return Response::Node(NodeResponse::Killed { count: 1 });
        }
        if std::time::Instant::now() >= deadline {
            return Response::Node(NodeResponse::Killed { count: 0 });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
