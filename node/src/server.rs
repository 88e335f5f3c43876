//! The node's QUIC server: accepts client and node connections and serves one
//! request per bidirectional stream.
//!
//! Client streams (`mlsd-client/1`) are routed: served by the local role actor
//! when this node owns the key, otherwise forwarded to the owner. Node streams
//! (`mlsd-node/1`) carry forwarded requests, which are only ever served
//! locally. Every failure to read or decode a frame is answered on that stream
//! and affects nothing else.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mlsd_actors::role::actor_name;
use mlsd_actors::{RoleMsg, Router};
use mlsd_transport::frame::{read_message, write_message, FrameError};
use mlsd_transport::protocol::mailbox::{into_pages, page_budget};
use mlsd_transport::protocol::{
    ChaosTarget, ClientFrame, EnqueueItem, EnqueueResult, NodeFrame, NodeRequest, ResponseFrame,
    ALPN_CLIENT, ALPN_NODE, CLIENT_MAGIC, NODE_MAGIC,
};
use mlsd_transport::{tls, Request, Response, Role, WireError, PROTOCOL_VERSION};
use ractor::ActorRef;
use rustls::pki_types::CertificateDer;

use crate::coalescer::{Coalescer, WriteBatch};
use crate::config::{ClusterConfig, Limits, NodeConfig};
use crate::limiter::{RateLimiter, TokenBucket};
use crate::mixer::{Mixer, SendBatch};
use crate::peers::Peers;
use crate::routing;

/// How long a request waits for a role actor that is being restarted.
const ACTOR_WAIT: Duration = Duration::from_secs(2);

/// Most items in one `Enqueue` batch.
const MAX_ENQUEUE_BATCH: usize = 4096;

/// QUIC application error code for a refused node connection.
const REFUSED: u32 = 0x10;

/// Everything a connection handler needs; shared by all of them.
pub struct ServerCtx {
    /// The cluster config.
    pub config: Arc<ClusterConfig>,
    /// This node.
    pub me: NodeConfig,
    /// Connections to the other nodes.
    pub peers: Peers,
    fetch_limiter: RateLimiter,
    open_limiter: RateLimiter,
    mixer: Mixer,
    /// This node's ODS actor's group commit (when it hosts the ODS).
    ods_queue: Option<Coalescer>,
    client_conns: std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>,
}

/// Holds one of an address's client-connection slots; gives it back on drop.
struct ConnSlot<'a> {
    ctx: &'a ServerCtx,
    ip: IpAddr,
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.ctx.client_conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ServerCtx {
    /// Context for node `me` of `config`.
    pub fn new(config: Arc<ClusterConfig>, me: NodeConfig, peers: Peers) -> Self {
        let fetch_limiter = RateLimiter::per_minute(config.cs.fetch_rate_per_minute);
        let open_limiter = RateLimiter::per_minute(config.ods.open_rate_per_minute);
        let mixer = Mixer::new(config.ids.mixing_window);
        let ods_queue = me.hosts(Role::Ods).then(|| {
            let (node, timeout) = (me.name.clone(), config.limits.call_timeout);
            let write: WriteBatch = Arc::new(move |items| {
                let node = node.clone();
                Box::pin(async move {
                    call_role(&node, timeout, Role::Ods, |reply| RoleMsg::Enqueue { items, reply })
                        .await
                })
            });
            Coalescer::start(write)
        });
        ServerCtx {
            config,
            me,
            peers,
            fetch_limiter,
            open_limiter,
            mixer,
            ods_queue,
            client_conns: Default::default(),
        }
    }

    /// Entry-node admission of a client request: KeyPackage fetches are rate
    /// limited per client address here, where the address is known.
    fn admit(&self, req: &Request, from: IpAddr) -> Result<(), WireError> {
        match req {
            Request::FetchKeyPackages { .. } => self.fetch_limiter.check(from),
            // Mailboxes need no identity, so their creation is what to bound.
            Request::OpenMailbox { .. } => self.open_limiter.check(from),
            _ => Ok(()),
        }
    }
}

/// Accepts connections until the endpoint is closed.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<ServerCtx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_connection(conn, ctx).await,
                Err(e) => tracing::debug!(error = %e, "handshake failed"),
            }
        });
    }
}

fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

fn peer_chain(conn: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|b| *b)
        .unwrap_or_default()
}

async fn serve_connection(conn: quinn::Connection, ctx: Arc<ServerCtx>) {
    let remote = conn.remote_address();
    let mut _slot = None;
    let is_node = match alpn(&conn).as_deref() {
        Some(p) if p == ALPN_CLIENT => {
            let ip = remote.ip();
            {
                let mut m = ctx.client_conns.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(ip).or_insert(0);
                if *n >= ctx.config.limits.max_connections_per_address {
                    drop(m);
                    tracing::warn!(%remote, "refused: too many connections from this address");
                    conn.close(REFUSED.into(), b"too many connections from this address");
                    return;
                }
                *n += 1;
            }
            _slot = Some(ConnSlot { ctx: &ctx, ip });
            false
        }
        Some(p) if p == ALPN_NODE => {
            let names = ctx.config.nodes.iter().map(|n| n.name.as_str());
            match tls::peer_node_name(&peer_chain(&conn), names) {
                Some(peer) => {
                    tracing::debug!(%peer, %remote, "node connection");
                    true
                }
                None => {
                    tracing::warn!(%remote, "refused node connection without a node certificate");
                    conn.close(REFUSED.into(), b"node certificate required");
                    return;
                }
            }
        }
        _ => {
            conn.close(REFUSED.into(), b"unknown ALPN");
            return;
        }
    };
    let bucket = Arc::new(TokenBucket::per_second(ctx.config.limits.requests_per_second));
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "connection closed");
                return;
            }
        };
        let ctx = ctx.clone();
        if !is_node {
            // A client flooding its connection gets refusals, not service;
            // other connections are unaffected.
            if let Err(e) = bucket.take() {
                tokio::spawn(async move {
                    reply(send, Response::Error(e), &ctx.config.limits).await;
                    drop(recv);
                });
                continue;
            }
        }
        tokio::spawn(async move {
            if is_node {
                serve_node_stream(send, recv, ctx).await
            } else {
                serve_client_stream(send, recv, ctx, remote.ip()).await
            }
        });
    }
}

/// Writes `value` as one frame of at most `max_frame` bytes within
/// `read_timeout`: the bound on every frame this node writes.
async fn write_bounded<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    l: &Limits,
) -> Result<(), FrameError> {
    tokio::time::timeout(l.read_timeout, write_message(send, value, l.max_frame))
        .await
        .unwrap_or(Err(FrameError::Timeout))
}

/// Answers a request on its stream and finishes it.
async fn reply(mut send: quinn::SendStream, response: Response, l: &Limits) {
    let _ = write_response(&mut send, ResponseFrame::new(response), l).await;
    let _ = send.finish();
}

/// Writes one response frame, taking at most `read_timeout` (a reader that
/// never reads holds a task and a buffer for that long, no longer). An answer
/// that does not fit a frame is replaced by `ResponseTooLarge`, so the client
/// learns of it; every failure is logged at warn. `Err` when the stream is no
/// use any more.
async fn write_response(
    send: &mut quinn::SendStream,
    frame: ResponseFrame,
    l: &Limits,
) -> Result<(), FrameError> {
    match write_bounded(send, &frame, l).await {
        Ok(()) => Ok(()),
        Err(FrameError::TooLarge { len, max }) => {
            tracing::warn!(len, max, "response exceeds the frame limit; answering with an error");
            let error =
                ResponseFrame::new(Response::Error(WireError::ResponseTooLarge { len, max }));
            if write_bounded(send, &error, l).await.is_err() {
                tracing::warn!("cannot write the error response either");
            }
            Err(FrameError::TooLarge { len, max })
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot write response");
            Err(e)
        }
    }
}

fn check_frame(magic: u32, want: u32, version: u16) -> Result<(), WireError> {
    if magic != want {
        return Err(WireError::Malformed("wrong frame type for this connection".into()));
    }
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
    }
    Ok(())
}

async fn serve_client_stream(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<ServerCtx>,
    remote: IpAddr,
) {
    let l = &ctx.config.limits;
    let response =
        match read_message::<ClientFrame, _>(&mut recv, l.max_frame, l.read_timeout).await {
            Err(e) => Response::Error(e.into()),
            Ok(f) => match check_frame(f.magic, CLIENT_MAGIC, f.version) {
                Err(e) => Response::Error(e),
                Ok(()) => match ctx.admit(&f.request, remote) {
                    Err(e) => Response::Error(e),
                    Ok(()) if matches!(f.request, Request::Subscribe { .. }) => {
                        return subscription(&ctx, send, f.request, true).await;
                    }
                    Ok(()) => route(&ctx, f.request).await,
                },
            },
        };
    reply(send, response, l).await;
}

async fn serve_node_stream(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<ServerCtx>,
) {
    let l = &ctx.config.limits;
    let response = match read_message::<NodeFrame, _>(&mut recv, l.max_frame, l.read_timeout).await
    {
        Err(e) => Response::Error(e.into()),
        Ok(f) => match check_frame(f.magic, NODE_MAGIC, f.version) {
            Err(e) => Response::Error(e),
            Ok(()) => match f.request {
                // Served here or refused: a forwarded subscription is never
                // forwarded a second time (configs that disagree cannot loop).
                NodeRequest::Forward(req @ Request::Subscribe { .. }) => {
                    return subscription(&ctx, send, req, false).await;
                }
                other => serve_node_request(&ctx, other).await,
            },
        },
    };
    reply(send, response, l).await;
}

/// Live envelopes a subscription may have queued before its stream takes
/// them; a subscriber that falls further behind is dropped and resumes by
/// fetching.
const SUBSCRIBER_QUEUE: usize = 1024;

/// How long a subscription stream may stay silent; liveness is QUIC's
/// keep-alive, this only bounds a stuck peer.
const SUBSCRIPTION_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Serves a `Subscribe` on `send`: the backlog, then every new envelope, until
/// the subscriber goes away. At the mailbox's owner it registers with the ODS
/// actor; elsewhere it pipes a stream to the owner if `may_forward` (a
/// client's subscription), and answers `NotOwner` if not (one another node
/// forwarded: never forwarded twice).
async fn subscription(
    ctx: &ServerCtx,
    mut send: quinn::SendStream,
    req: Request,
    may_forward: bool,
) {
    let l = &ctx.config.limits;
    let (role, key) = req.shard();
    let owner = match owner_of(ctx, role, key) {
        Ok(o) if o != ctx.me.name && !may_forward => {
            return reply(send, Response::Error(WireError::NotOwner { owner: o }), l).await
        }
        Ok(o) => o,
        Err(e) => return reply(send, Response::Error(e), l).await,
    };
    if owner == ctx.me.name {
        let (tx, mut rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        let first =
            local(ctx, Role::Ods, |reply| RoleMsg::Subscribe { request: req, sink: tx, reply })
                .await;
        let ok = matches!(first, Response::Envelopes(_));
        if write_response(&mut send, ResponseFrame::new(first), l).await.is_err() || !ok {
            let _ = send.finish();
            return;
        }
        let budget = page_budget(l.max_frame);
        let stopped = send.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    // A batch of new envelopes goes out in as many frames as
                    // it needs; a subscriber that does not take them within
                    // the write timeout is dropped and resumes by fetching.
                    Some(b) => for page in into_pages(b, budget) {
                        let frame = ResponseFrame::new(Response::Envelopes(page));
                        if write_response(&mut send, frame, l).await.is_err() {
                            return;
                        }
                    },
                    None => {
                        let _ = send.finish();
                        return;
                    }
                },
                _ = &mut stopped => return,
            }
        }
    }
    let Some((mut up_send, mut up_recv)) = ctx.peers.open_stream(&owner).await else {
        return reply(send, Response::Error(WireError::Unavailable { node: owner }), l).await;
    };
    let frame = NodeFrame::new(NodeRequest::Forward(req));
    if write_bounded(&mut up_send, &frame, l).await.is_err() {
        return reply(send, Response::Error(WireError::Unavailable { node: owner }), l).await;
    }
    let stopped = send.stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            f = read_message::<ResponseFrame, _>(&mut up_recv, l.max_frame, SUBSCRIPTION_IDLE) => match f {
                Ok(f) => {
                    if write_response(&mut send, f, l).await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let _ = send.finish();
                    break;
                }
            },
            _ = &mut stopped => break,
        }
    }
    // Tell the owner we are gone, so it drops the subscriber.
    let _ = up_send.reset(0u32.into());
    let _ = up_recv.stop(0u32.into());
}

/// The node that owns `key` among those hosting `role`.
fn owner_of(ctx: &ServerCtx, role: Role, key: &[u8]) -> Result<String, WireError> {
    routing::owner(&ctx.config.nodes, role, key)
        .map(|o| o.name.clone())
        .ok_or_else(|| WireError::Internal(format!("no node hosts {role}")))
}

/// Serves a request from another node (or an operator tool). Requests are
/// only served if this node owns them; they are never forwarded again.
async fn serve_node_request(ctx: &ServerCtx, req: NodeRequest) -> Response {
    let owns = |role: Role, key: &[u8]| match owner_of(ctx, role, key) {
        Ok(o) if o == ctx.me.name => Ok(()),
        Ok(owner) => Err(WireError::NotOwner { owner }),
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
        NodeRequest::Chaos { target } => chaos(ctx, target).await,
        NodeRequest::Enqueue(items) => {
            if items.len() > MAX_ENQUEUE_BATCH {
                return Response::Error(WireError::Malformed("enqueue batch too large".into()));
            }
            // Items for mailboxes owned elsewhere get a per-item error; the rest proceed.
            let mut results = vec![EnqueueResult::NotOwner; items.len()];
            let (positions, mine): (Vec<usize>, Vec<EnqueueItem>) = items
                .into_iter()
                .enumerate()
                .filter(|(_, it)| owns(Role::Ods, &it.mailbox).is_ok())
                .unzip();
            if !mine.is_empty() {
                let resp = enqueue_here(ctx, mine).await;
                let Response::Enqueued(local_results) = resp else { return resp };
                if local_results.len() != positions.len() {
                    return Response::Error(WireError::Internal("enqueue result count".into()));
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
        return Response::Error(WireError::NotAuthorized("chaos requests are off".into()));
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

/// Serves a client request here or at its owner.
async fn route(ctx: &ServerCtx, req: Request) -> Response {
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

/// Runs futures concurrently on this task and collects their outputs.
pub(crate) async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
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
async fn enqueue_here(ctx: &ServerCtx, items: Vec<EnqueueItem>) -> Response {
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
async fn local(
    ctx: &ServerCtx,
    role: Role,
    msg: impl FnOnce(ractor::RpcReplyPort<Response>) -> RoleMsg,
) -> Response {
    call_role(&ctx.me.name, ctx.config.limits.call_timeout, role, msg).await
}

/// [`local`] given only what it needs: node `node`'s actor of `role`,
/// answering within `timeout`.
async fn call_role(
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
