//! One request per stream: reading and checking a client's or a node's
//! frame, and answering it.

use mlsd_transport::protocol::tickets::Ticket;
use mlsd_transport::protocol::{
    BadFrame, ClientFrame, CsRequest, NodeFrame, NodeRequest, OdsRequest, CLIENT_MAGIC, NODE_MAGIC,
};
use std::net::IpAddr;
use std::sync::Arc;

use mlsd_transport::frame::read_message;
use mlsd_transport::{Request, Response, WireError, PROTOCOL_VERSION};

use super::answer::reply;
use super::delivery::route;
use super::node_requests::serve_node_request;
use super::subscription::subscription;
use super::tickets::pay;
use super::{NodePeer, ServerCtx};

fn check_frame(magic: u32, want: u32, version: u16) -> Result<(), WireError> {
    if magic != want {
        return Err(WireError::Frame(BadFrame::Malformed(
            "wrong frame type for this connection".into(),
        )));
    }
    if version != PROTOCOL_VERSION {
        return Err(WireError::Frame(BadFrame::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        }));
    }
    Ok(())
}

/// A KeyPackage fetch paid with `ticket`, as the CS takes it: named by the
/// ticket, so that a repeat of it is answered as the first time.
fn paid(req: Request, ticket: Option<&Ticket>) -> Request {
    match (req, ticket) {
        (Request::Cs(CsRequest::FetchKeyPackages { identity }), Some(t)) => {
            Request::Cs(CsRequest::FetchPaid { identity, paid: t.id() })
        }
        (req, _) => req,
    }
}

pub(super) async fn serve_client_stream(
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
                    Ok(()) if matches!(f.request, Request::Ods(OdsRequest::Subscribe { .. })) => {
                        return subscription(&ctx, send, f.request, true).await;
                    }
                    Ok(()) => match pay(&ctx, &f.request, f.ticket.clone()).await {
                        Err(e) => Response::Error(e),
                        Ok(()) => {
                            let response = route(&ctx, paid(f.request, f.ticket.as_ref())).await;
                            ctx.charge(&response, remote);
                            response
                        }
                    },
                },
            },
        };
    reply(send, response, l).await;
}

pub(super) async fn serve_node_stream(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<ServerCtx>,
    peer: NodePeer,
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
                NodeRequest::Forward(req @ Request::Ods(OdsRequest::Subscribe { .. }))
                    if matches!(peer.clone().now(&ctx), NodePeer::Node(_)) =>
                {
                    return subscription(&ctx, send, req, false).await;
                }
                other => serve_node_request(&ctx, other, peer).await,
            },
        },
    };
    reply(send, response, l).await;
}
