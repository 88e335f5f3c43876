//! The outbox: sends that have not been acknowledged yet, kept in the home so
//! they are retried verbatim (same message id, so never delivered twice) until
//! the IDS acknowledges them, by this command or the next one.

use std::time::{Duration, Instant};

use mlsd_transport::{Request, Response, WireError};

use crate::{Client, ClientError};

/// How long to wait between attempts while the cluster is unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What became of the outbox's entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Acknowledged and removed.
    pub sent: u32,
    /// Refused for good (e.g. the group moved on); removed, never re-encrypted.
    pub dropped: u32,
    /// Still waiting.
    pub pending: u32,
}

/// Whether `e` may go away by retrying the same request.
pub(crate) fn transient(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. }
            | ClientError::Call(_)
            | ClientError::Server(WireError::Unavailable { .. })
            | ClientError::Server(WireError::Incomplete { .. })
            | ClientError::Server(WireError::Timeout)
            | ClientError::Server(WireError::Replayed)
    )
}

impl Client {
    fn outbox(&self) -> Result<Vec<Request>, ClientError> {
        Ok(self.home.load("outbox")?.unwrap_or_default())
    }

    /// Adds a prepared send to the outbox (before the first attempt).
    pub fn outbox_push(&self, req: Request) -> Result<(), ClientError> {
        let mut list = self.outbox()?;
        list.push(req);
        self.home.save("outbox", &list)
    }

    /// Tries every waiting send once, in order; stops at the first that
    /// cannot reach the cluster, so order is kept.
    pub async fn flush_outbox(&mut self) -> Result<Flushed, ClientError> {
        let mut list = self.outbox()?;
        let mut out = Flushed::default();
        while let Some(req) = list.first().cloned() {
            match self.connection().request(req).await {
                Ok(Response::Sent { .. }) => out.sent += 1,
                Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
                Err(e) if transient(&e) => break,
                Err(e) => {
                    eprintln!("mlsc: dropping an unsendable message from the outbox: {e}");
                    out.dropped += 1;
                }
            }
            list.remove(0);
            self.home.save("outbox", &list)?;
        }
        out.pending = list.len() as u32;
        Ok(out)
    }

    /// Puts `req` in the outbox and retries the outbox (reconnecting as
    /// needed) until it is empty or `timeout` passes. `Ok(true)` when
    /// everything was acknowledged.
    pub async fn send_reliably(
        &mut self,
        req: Request,
        timeout: Duration,
    ) -> Result<bool, ClientError> {
        self.outbox_push(req)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.flush_outbox().await {
                Ok(f) if f.pending == 0 => return Ok(f.dropped == 0),
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            let _ = self.reconnect().await;
        }
    }
}
