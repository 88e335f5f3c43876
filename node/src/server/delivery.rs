//! Getting requests and envelopes to their owners: a client request is served
//! by the local role actor or forwarded; the role actors' [`Router`] routes
//! the same way; envelopes go to their mailboxes' ODS owners in shuffled
//! batches (through the mixer), and this node's own ODS writes them in group
//! commits (through the coalescer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mlsd_actors::role::actor_name;
use mlsd_actors::{RoleMsg, Router};
use mlsd_transport::protocol::{EnqueueItem, EnqueueResult, NodeRequest};
use mlsd_transport::{Request, Response, Role, WireError};
use ractor::ActorRef;

use super::ServerCtx;
use crate::mixer::SendBatch;
use crate::routing;

/// How long a request waits for a role actor that is being restarted.
const ACTOR_WAIT: Duration = Duration::from_secs(2);

/// Most items in one `Enqueue` batch.
pub(super) const MAX_ENQUEUE_BATCH: usize = 4096;

/// The node that owns `key` among those hosting `role`.
pub(super) fn owner_of(ctx: &ServerCtx, role: Role, key: &[u8]) -> Result<String, WireError> {
    routing::owner(&ctx.config.nodes, role, key)
        .map(|o| o.name.clone())
        .ok_or_else(|| WireError::Internal(format!("no node hosts {role}")))
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
        if let Some(o) = routing::owner(&ctx.config.nodes, Role::Ods, &it.mailbox) {
            by_owner.entry(o.name.clone()).or_default().push((i, it));
        }
    }
    let weak = Arc::downgrade(&ctx);
    let send: SendBatch = Arc::new(move |node: String, items: Vec<EnqueueItem>| {
        let weak = weak.clone();
        Box::pin(async move {
            let k = items.len();
            match weak.upgrade() {
                Some(ctx) => send_batch(&ctx, &node, items).await,
                None => vec![EnqueueResult::NotOwner; k],
            }
        })
    });
    let calls: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, batch)| {
            let ctx = ctx.clone();
            let send = send.clone();
            async move {
                let (positions, items): (Vec<usize>, Vec<EnqueueItem>) = batch.into_iter().unzip();
                let out = ctx.mixer.submit(&owner, items, send).await;
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

/// Sends items to one ODS node in chunks that fit a frame: at most
/// [`MAX_ENQUEUE_BATCH`] items and about half the frame limit in bytes.
async fn send_batch(ctx: &ServerCtx, owner: &str, items: Vec<EnqueueItem>) -> Vec<EnqueueResult> {
    let budget = (ctx.config.limits.max_frame / 2) as usize;
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
        let resp = if owner == ctx.me.name {
            enqueue_here(ctx, chunk).await
        } else {
            ctx.peers.call(owner, NodeRequest::Enqueue(chunk)).await
        };
        match resp {
            Response::Enqueued(r) if r.len() == k => out.extend(r),
            other => {
                tracing::warn!(node = %owner, response = ?other, "enqueue batch failed");
                out.extend(std::iter::repeat_n(EnqueueResult::NotOwner, k));
            }
        }
    }
    out
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

/// Stores copies in this node's ODS, together with other callers' copies
/// waiting at the same time (see [`crate::coalescer`]).
pub(super) async fn enqueue_here(ctx: &ServerCtx, items: Vec<EnqueueItem>) -> Response {
    let Some(q) = &ctx.ods_queue else {
        return Response::Error(WireError::Internal("this node hosts no ODS".into()));
    };
    // Time in the queue counts against the bound a direct call has; copies
    // written after the caller gave up are recognized when the sender retries.
    match tokio::time::timeout(ctx.config.limits.call_timeout, q.submit(items)).await {
        Ok(r) => r,
        Err(_) => Response::Error(WireError::Unavailable { node: ctx.me.name.clone() }),
    }
}

/// Hands a message to this node's actor of `role`. If the actor is being
/// restarted by the supervisor, waits briefly for its successor.
pub(super) async fn local(
    ctx: &ServerCtx,
    role: Role,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    call_role(&ctx.me.name, ctx.config.limits.call_timeout, role, msg).await
}

/// [`local`] given only what it needs: node `node`'s actor of `role`,
/// answering within `timeout`.
pub(super) async fn call_role(
    node: &str,
    timeout: Duration,
    role: Role,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    let unavailable = || Response::Error(WireError::Unavailable { node: node.to_string() });
    let name = actor_name(node, role);
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
