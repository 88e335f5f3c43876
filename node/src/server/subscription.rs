//! Live mailbox subscriptions: at the mailbox's owner the stream is
//! registered with the ODS actor and fed every new envelope; elsewhere it is
//! piped to the owner over a node stream.

use mlsd_transport::protocol::{ClusterError, NodeFrame, NodeRequest, OdsResponse, ResponseFrame};
use std::time::Duration;

use mlsd_actors::RoleMsg;
use mlsd_transport::frame::read_message;
use mlsd_transport::protocol::ods::{into_pages, page_budget};
use mlsd_transport::{Request, Response, WireError};

use super::answer::{reply, write_bounded, write_response};
use super::delivery::local_shard;
use super::ServerCtx;
use crate::routing::{proceed, LeaderSearch, Miss};

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
pub(super) async fn subscription(
    ctx: &ServerCtx,
    mut send: quinn::SendStream,
    req: Request,
    may_forward: bool,
) {
    let l = &ctx.config.limits;
    let (role, key) = req.shard();
    let shard = ctx.shards.shard_of(role, key);
    let leads = ctx.shards.replica(shard).is_some_and(|r| r.leading());
    // The shard's leader serves it; a forwarded subscription that missed the
    // leader is answered with the leader it should have gone to.
    let mut owner = if leads { ctx.me.name.clone() } else { ctx.shards.leader_hint(shard) };
    if !leads && owner == ctx.me.name && may_forward {
        // This node thought it led the shard and does not: another voter may.
        if let Some(v) = ctx.shards.voters(shard).into_iter().find(|v| *v != ctx.me.name) {
            owner = v;
        }
    }
    if !leads && (!may_forward || owner == ctx.me.name) {
        let leader = Some(owner).filter(|o| *o != ctx.me.name);
        let e = ClusterError::NotLeader { shard: shard.to_string(), leader };
        return reply(send, Response::Error(WireError::Cluster(e)), l).await;
    }
    if leads {
        let (tx, mut rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        let first =
            local_shard(ctx, shard, |reply| RoleMsg::Subscribe { request: req, sink: tx, reply })
                .await;
        let ok = matches!(first, Response::Ods(OdsResponse::Envelopes(_)));
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
                        let frame = ResponseFrame::new(Response::Ods(OdsResponse::Envelopes(page)));
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
    let (mut up_send, mut up_recv, first) = match upstream(ctx, shard, owner, req).await {
        Ok(up) => up,
        Err(refused) => return reply(send, refused, l).await,
    };
    if write_response(&mut send, first, l).await.is_err() {
        let _ = up_send.reset(0u32.into());
        return;
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

/// Opens the piped subscription at the shard's leader: sends `req` to
/// `owner` and reads its first answer, following misses as every call does
/// ([`LeaderSearch`], never back to this node, which does not lead the
/// shard or the caller would not be here), until the call timeout. Gives
/// the stream and its first frame, or what to answer.
async fn upstream(
    ctx: &ServerCtx,
    shard: mlsd_actors::replica::ShardId,
    owner: String,
    req: Request,
) -> Result<(quinn::SendStream, quinn::RecvStream, ResponseFrame), Response> {
    let l = &ctx.config.limits;
    let deadline = tokio::time::Instant::now() + l.call_timeout;
    let frame = NodeFrame::new(NodeRequest::Forward(req));
    let mut search = LeaderSearch::starting_at(shard, owner).avoiding(&ctx.me.name);
    loop {
        let target = search.target().to_string();
        let answer = async {
            let (mut s, mut r) = ctx.peers.open_stream(&target).await?;
            write_bounded(&mut s, &frame, l).await.ok()?;
            let f: ResponseFrame = read_message(&mut r, l.max_frame, l.call_timeout).await.ok()?;
            Some((s, r, f))
        }
        .await;
        let last = match answer {
            Some((s, r, f)) if Miss::of(&f.response).is_none() => return Ok((s, r, f)),
            Some((_, _, f)) => f.response,
            None => Response::Error(WireError::Cluster(ClusterError::Unavailable { node: target })),
        };
        let miss = Miss::of(&last).unwrap_or(Miss::NoLeader);
        if !proceed(search.missed(miss, &*ctx.shards), deadline).await {
            return Err(last);
        }
    }
}
