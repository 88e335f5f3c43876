//! Live mailbox subscriptions: at the mailbox's owner the stream is
//! registered with the ODS actor and fed every new envelope; elsewhere it is
//! piped to the owner over a node stream.

use mlsd_transport::protocol::ClusterError;
use std::time::Duration;

use mlsd_actors::RoleMsg;
use mlsd_transport::frame::read_message;
use mlsd_transport::protocol::ods::{into_pages, page_budget};
use mlsd_transport::protocol::{NodeFrame, NodeRequest, ResponseFrame};
use mlsd_transport::{Request, Response, WireError};

use super::answer::{reply, write_bounded, write_response};
use super::delivery::local_shard;
use super::ServerCtx;

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
    let owner = if leads { ctx.me.name.clone() } else { ctx.shards.leader_hint(shard) };
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
        return reply(
            send,
            Response::Error(WireError::Cluster(ClusterError::Unavailable { node: owner })),
            l,
        )
        .await;
    };
    let frame = NodeFrame::new(NodeRequest::Forward(req));
    if write_bounded(&mut up_send, &frame, l).await.is_err() {
        return reply(
            send,
            Response::Error(WireError::Cluster(ClusterError::Unavailable { node: owner })),
            l,
        )
        .await;
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
