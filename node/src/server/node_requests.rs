//! What other nodes and operator tools ask over `mlsd-node/1`: forwarded
//! requests, enrollment tokens, enqueue batches and chaos. Each is served only
//! by the node that owns it, and never forwarded again. Nodes may forward
//! and enqueue; only the operator's certificate may enroll, revoke and kill
//! actors (a node's key, on a host an attacker took, grants none of them).

use mlsd_transport::protocol::{
    AuthError, BadFrame, ChaosTarget, ClusterError, EnqueueResult, NodeRequest, NodeResponse,
    OperatorRequest, ReplicationRequest, Sender,
};
use std::time::Duration;

use mlsd_actors::role::shard_actor_name;
use mlsd_actors::RoleMsg;
use mlsd_transport::{tls, Response, Role, WireError};
use serde_bytes::ByteBuf;

use super::delivery::local_shard;
use super::{NodePeer, ServerCtx};
use crate::dispatch::MAX_ENQUEUE_BATCH;
use crate::parcels::Parcel;

/// Whether `peer` may send `req`, as the request's rules say
/// ([`NodeRequest::sender`]).
fn entitled(req: &NodeRequest, peer: &NodePeer) -> Result<(), WireError> {
    match (req.sender(), peer) {
        (Sender::Anyone, _) => Ok(()),
        (Sender::Either, NodePeer::Node(_) | NodePeer::Operator) => Ok(()),
        (Sender::Nodes, NodePeer::Node(_)) => Ok(()),
        (Sender::Operator, NodePeer::Operator) => Ok(()),
        (Sender::Operator, _) => {
            Err(WireError::Auth(AuthError::NotAuthorized("operator certificate required".into())))
        }
        (Sender::Nodes | Sender::Either, _) => Err(WireError::Auth(AuthError::NotAuthorized(
            "a member node's certificate required".into(),
        ))),
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
    let peer = peer.now(ctx);
    if let Err(e) = entitled(&req, &peer) {
        return Response::Error(e);
    }
    match req {
        NodeRequest::Forward(request) => {
            let (role, key) = request.shard();
            let shard = ctx.shards.shard_of(role, key);
            local_shard(ctx, shard, |reply| RoleMsg::Request { request, reply }).await
        }
        NodeRequest::Operator(OperatorRequest::Chaos { target }) => chaos(ctx, target).await,
        NodeRequest::Operator(OperatorRequest::RemoveNode { node, dead }) => {
            match ctx.shards.remove_member(&node, dead).await {
                Ok(map) => Response::Node(NodeResponse::ClusterMap(map.map(ByteBuf::from))),
                Err(e) => Response::Error(e),
            }
        }
        // Enrollments, revocations and ticket spends: the AS shard's.
        request @ (NodeRequest::Operator(_) | NodeRequest::Spend(_)) => {
            let Some(key) = request.as_shard_key() else {
                return Response::Error(WireError::Cluster(ClusterError::Internal(
                    "no AS shard for this request".into(),
                )));
            };
            let shard = ctx.shards.shard_of(Role::As, key);
            local_shard(ctx, shard, |reply| RoleMsg::Admin { request, reply }).await
        }
        NodeRequest::Replication(ReplicationRequest::Raft(calls)) => {
            Response::Node(NodeResponse::Raft(ctx.shards.serve(calls).await))
        }
        NodeRequest::Replication(ReplicationRequest::ShardStatus) => {
            Response::Node(NodeResponse::ShardStatus(ctx.shards.status()))
        }
        NodeRequest::Replication(ReplicationRequest::ClusterMap) => {
            Response::Node(NodeResponse::ClusterMap(ctx.shards.map_record().map(ByteBuf::from)))
        }
        NodeRequest::Replication(ReplicationRequest::Join(join)) => {
            // Only the node itself asks to join under its name: its
            // certificate must name it.
            let named = match &peer {
                NodePeer::Newcomer(chain) => {
                    tls::peer_node_name(chain, [join.node.as_str()]).is_some()
                }
                NodePeer::Node(name) => *name == join.node,
                NodePeer::Operator => false,
            };
            if !named {
                return Response::Error(WireError::Auth(AuthError::NotAuthorized(format!(
                    "only {} itself may ask to join as {}",
                    join.node, join.node
                ))));
            }
            match ctx.shards.admit(&join).await {
                Ok(map) => Response::Node(NodeResponse::ClusterMap(map.map(ByteBuf::from))),
                Err(e) => Response::Error(e),
            }
        }
        NodeRequest::Replication(ReplicationRequest::Move(mv)) => {
            match ctx.shards.record_move(&mv).await {
                Ok(map) => Response::Node(NodeResponse::ClusterMap(map.map(ByteBuf::from))),
                Err(e) => Response::Error(e),
            }
        }
        NodeRequest::Enqueue(items) => {
            if items.len() > MAX_ENQUEUE_BATCH {
                return Response::Error(WireError::Frame(BadFrame::Malformed(
                    "enqueue batch too large".into(),
                )));
            }
            // Copies of shards this node does not lead are answered with the
            // leader it knows of, so the sender goes there next; the rest are
            // stored here, within the call timeout.
            let (parcels, pending) = Parcel::wrap(items);
            let mut mine = Vec::with_capacity(parcels.len());
            for p in parcels {
                let shard = ctx.shards.shard_of(Role::Ods, &p.item.cap.shard);
                if ctx.shards.replica(shard).is_some_and(|r| r.leading()) {
                    mine.push(p);
                } else {
                    let leader = Some(ctx.shards.leader_hint(shard)).filter(|l| *l != ctx.me.name);
                    p.slot.finish(EnqueueResult::NotLeader { leader });
                }
            }
            ctx.dispatch.here(mine).await;
            match tokio::time::timeout(ctx.config.limits.call_timeout, pending.results()).await {
                Ok(results) => Response::Node(NodeResponse::Enqueued(results)),
                Err(_) => Response::Error(WireError::Cluster(ClusterError::Unavailable {
                    node: ctx.me.name.clone(),
                })),
            }
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
                .into_iter()
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
