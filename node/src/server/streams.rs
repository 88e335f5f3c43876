//! One request per stream: reading and checking a client's or a node's frame,
//! and writing every answer within the frame and time bounds.

use std::net::IpAddr;
use std::sync::Arc;

use mlsd_transport::frame::{read_message, write_message, FrameError};
use mlsd_transport::protocol::{
    ClientFrame, NodeFrame, NodeRequest, ResponseFrame, CLIENT_MAGIC, NODE_MAGIC,
};
use mlsd_transport::{Request, Response, WireError, PROTOCOL_VERSION};

use super::delivery::route;
use super::node_requests::serve_node_request;
use super::subscription::subscription;
use super::ServerCtx;
use crate::config::Limits;

/// Writes `value` as one frame of at most `max_frame` bytes within
/// `read_timeout`: the bound on every frame this node writes.
pub(super) async fn write_bounded<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    l: &Limits,
) -> Result<(), FrameError> {
    tokio::time::timeout(l.read_timeout, write_message(send, value, l.max_frame))
        .await
        .unwrap_or(Err(FrameError::Timeout))
}

/// Answers a request on its stream and finishes it.
pub(super) async fn reply(mut send: quinn::SendStream, response: Response, l: &Limits) {
    let _ = write_response(&mut send, ResponseFrame::new(response), l).await;
    let _ = send.finish();
}

/// Writes one response frame, taking at most `read_timeout` (a reader that
/// never reads holds a task and a buffer for that long, no longer). An answer
/// that does not fit a frame is replaced by `ResponseTooLarge`, so the client
/// learns of it; every failure is logged at warn. `Err` when the stream is no
/// use any more.
pub(super) async fn write_response(
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
                    Ok(()) if matches!(f.request, Request::Subscribe { .. }) => {
                        return subscription(&ctx, send, f.request, true).await;
                    }
                    Ok(()) => route(&ctx, f.request).await,
                },
            },
        };
    reply(send, response, l).await;
}

pub(super) async fn serve_node_stream(
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
