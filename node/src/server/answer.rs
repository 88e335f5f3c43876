//! Writing answers: every frame this node writes is bounded in size and in
//! time, and an answer too large for a frame becomes an error the client sees.

use mlsd_transport::frame::{write_message, FrameError};
use mlsd_transport::protocol::{BadFrame, ResponseFrame};
use mlsd_transport::{Response, WireError};

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
                ResponseFrame::new(Response::Error(WireError::Frame(BadFrame::ResponseTooLarge {
                    len,
                    max,
                })));
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
