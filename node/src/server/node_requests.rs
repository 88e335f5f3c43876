//! What other nodes and operator tools ask over `mlsd-node/1`: forwarded
//! requests, enrollment tokens, enqueue batches and chaos. Each is served only
//! by the node that owns it, and never forwarded again. Nodes may forward
//! and enqueue; only the operator's certificate may enroll, revoke and kill
//! actors (a node's key, on a host an attacker took, grants none of them).

use mlsd_transport::protocol::{AuthError, BadFrame, ClusterError};
use std::time::Duration;

use mlsd_actors::role::actor_name;
use mlsd_actors::RoleMsg;
use mlsd_transport::protocol::{ChaosTarget, EnqueueItem, EnqueueResult, NodeRequest};
use mlsd_transport::{Response, Role, WireError};

use super::delivery::{local, owner_of};
use super::{NodePeer, ServerCtx};
use crate::dispatch::MAX_ENQUEUE_BATCH;

/// Whether `peer` may send `req`: node traffic from nodes, operator actions
/// from the operator, nothing else.
fn entitled(req: &NodeRequest, peer: NodePeer) -> Result<(), WireError> {
    let needs = match req {
        NodeRequest::Forward(_) | NodeRequest::Enqueue(_) | NodeRequest::Spend { .. } => {
            NodePeer::Node
        }
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
    let owns = |role: Role, key: &[u8]| match owner_of(ctx, role, key) {
        Ok(o) if o == ctx.me.name => Ok(()),
        Ok(owner) => Err(WireError::Cluster(ClusterError::NotOwner { owner })),
        Err(e) => Err(e),
    };
    match req {
        NodeRequest::Forward(request) => {
            let (role, key) = request.shard();
            match owns(role, key) {
                Ok(()) => local(ctx, role, |reply| RoleMsg::Request { request, reply }).await,
                Err(e) => Response::Error(e),
            }
        }
        NodeRequest::Enroll { identity, token_hash } => match owns(Role::As, identity.as_bytes()) {
            Ok(()) => {
                let request = NodeRequest::Enroll { identity, token_hash };
                local(ctx, Role::As, |reply| RoleMsg::Admin { request, reply }).await
            }
            Err(e) => Response::Error(e),
        },
        NodeRequest::Revoke { client } => {
            let identity = client.split('/').next().unwrap_or("").to_string();
            match owns(Role::As, identity.as_bytes()) {
                Ok(()) => {
                    let request = NodeRequest::Revoke { client };
                    local(ctx, Role::As, |reply| RoleMsg::Admin { request, reply }).await
                }
                Err(e) => Response::Error(e),
            }
        }
        NodeRequest::Chaos { target } => chaos(ctx, target).await,
        NodeRequest::Spend { ticket, bind } => match owns(Role::As, &ticket.input) {
            Ok(()) => {
                let request = NodeRequest::Spend { ticket, bind };
                local(ctx, Role::As, |reply| RoleMsg::Admin { request, reply }).await
            }
            Err(e) => Response::Error(e),
        },
        NodeRequest::Enqueue(items) => {
            if items.len() > MAX_ENQUEUE_BATCH {
                return Response::Error(WireError::Frame(BadFrame::Malformed(
                    "enqueue batch too large".into(),
                )));
            }
            // Items for mailboxes owned elsewhere get a per-item error; the rest proceed.
            let mut results = vec![EnqueueResult::NotOwner; items.len()];
            let (positions, mine): (Vec<usize>, Vec<EnqueueItem>) = items
                .into_iter()
                .enumerate()
                .filter(|(_, it)| owns(Role::Ods, &it.cap.shard).is_ok())
                .unzip();
            if !mine.is_empty() {
                let resp = ctx.dispatch.here(mine).await;
                let Response::Enqueued(local_results) = resp else { return resp };
                if local_results.len() != positions.len() {
                    return Response::Error(WireError::Cluster(ClusterError::Internal(
                        "enqueue result count".into(),
                    )));
                }
                for (p, r) in positions.into_iter().zip(local_results) {
                    results[p] = r;
                }
            }
            Response::Enqueued(results)
        }
    }
}

/// Kills one random live actor of `target` on this node, if chaos is allowed.
/// Short-lived actors (fan-outs, anonymizers live for milliseconds) are
/// waited for, up to half a second, so chaos runs do hit them.
async fn chaos(ctx: &ServerCtx, target: ChaosTarget) -> Response {
    use rand::seq::IndexedRandom;
    if !ctx.config.chaos_allowed {
        return Response::Error(WireError::Auth(AuthError::NotAuthorized(
            "chaos requests are off".into(),
        )));
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        let victims: Vec<ractor::ActorCell> = match target {
            ChaosTarget::Role(r) => {
                ractor::registry::where_is(actor_name(&ctx.me.name, r)).into_iter().collect()
            }
            other => {
                ractor::pg::get_local_members(&mlsd_actors::ids::process_group(&ctx.me.name, other))
            }
        };
        if let Some(v) = victims.choose(&mut rand::rng()) {
            tracing::warn!(?target, "chaos: killing an actor");
            v.kill();
            return Response::Killed { count: 1 };
        }
        if std::time::Instant::now() >= deadline {
            return Response::Killed { count: 0 };
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
