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

use mlsd_actors::{RoleMsg, Router};
use mlsd_transport::protocol::{EnqueueItem, EnqueueResult};
use mlsd_transport::{Request, Response, Role, WireError};

use super::ServerCtx;
use crate::routing;

/// The node that owns `key` among those hosting `role`.
pub(super) fn owner_of(ctx: &ServerCtx, role: Role, key: &[u8]) -> Result<String, WireError> {
    routing::owner(&ctx.config.nodes, role, key)
        .map(|o| o.name.clone())
        .ok_or_else(|| WireError::Cluster(ClusterError::Internal(format!("no node hosts {role}"))))
}

/// Serves a client request here or at its owner.
pub(super) async fn route(ctx: &ServerCtx, req: Request) -> Response {
    let (role, key) = req.shard();
    match owner_of(ctx, role, key) {
        Ok(owner) if owner == ctx.me.name => {
            local(ctx, role, |reply| RoleMsg::Request { request: req, reply }).await
        }
        Ok(owner) => ctx.peers.forward(&owner, req).await,
        Err(e) => Response::Error(e),
    }
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

/// Hands envelopes to their mailboxes' ODS owners: one batch per owner node,
/// through the mixer (shuffled, optionally held for the mixing window), all
/// owners in parallel. Results come back in the order of `items`.
async fn enqueue(ctx: Arc<ServerCtx>, items: Vec<EnqueueItem>) -> Vec<EnqueueResult> {
    let n = items.len();
    let mut by_owner: std::collections::HashMap<String, Vec<(usize, EnqueueItem)>> =
        std::collections::HashMap::new();
    let mut results = vec![EnqueueResult::NotOwner; n];
    for (i, it) in items.into_iter().enumerate() {
        if let Some(o) = routing::owner(&ctx.config.nodes, Role::Ods, &it.cap.shard) {
            by_owner.entry(o.name.clone()).or_default().push((i, it));
        }
    }
    let calls: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, batch)| {
            let ctx = ctx.clone();
            async move {
                let (positions, items): (Vec<usize>, Vec<EnqueueItem>) = batch.into_iter().unzip();
                let out = ctx.mixer.submit(&owner, items).await;
                positions.into_iter().zip(out).collect::<Vec<_>>()
            }
        })
        .collect();
    for batch in join_all(calls).await {
        for (p, r) in batch {
            results[p] = r;
        }
    }
    results
}

/// Runs futures concurrently on this task and collects their outputs (no
/// extra crate for it; the benchmark's load lanes use it too).
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future completed")).collect()
}

/// Hands a message to this node's actor of `role`. If the actor is being
/// restarted by the supervisor, waits briefly for its successor.
pub(super) async fn local(
    ctx: &ServerCtx,
    role: Role,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    crate::local::call_role(&ctx.me.name, ctx.config.limits.call_timeout, role, msg).await
}
