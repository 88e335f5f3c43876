//! The client's one retry policy. A request may be sent again only verbatim
//! (same message id, so it is never delivered twice), only after a failure
//! that may go away by itself ([`transient`]), and only while the caller's
//! patience lasts, with the same pause between tries. Every loop that
//! retries a request (a send, a commit, the outbox) uses this.

use mlsd_transport::protocol::{AuthError, BadFrame, ClusterError, IdsError};
use std::time::{Duration, Instant};

use mlsd_transport::WireError;

use crate::ClientError;

/// Pause between two tries of one request.
pub const PAUSE: Duration = Duration::from_millis(300);

/// How long a plain send is retried while its owner is unavailable: a
/// couple of tries, since the outbox retries later anyway.
pub const SEND: Duration = Duration::from_millis(900);

/// How long a request is sent again while its shard has no leader: a few
/// elections (`[cluster] election_timeout_ms`, 1.5 to 3 s each by default),
/// since the node that died may have led it, and the survivors notice only
/// after their election timeout.
pub const SHARD: Duration = Duration::from_secs(8);

/// How long a commit is retried while the cluster cannot be reached: its
/// outcome must be known before anything else happens in the group.
pub const COMMIT: Duration = Duration::from_secs(30);

/// How long an accepted commit is sent again while some members' ODS is
/// unavailable (a node restarting): a member without its copy cannot follow
/// the group, so the copy is worth a short wait; the outbox takes the rest.
pub const COPIES: Duration = Duration::from_secs(10);

/// Whether `e` may go away by retrying the same request.
pub fn transient(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. }
            | ClientError::Call(_)
            | ClientError::Server(WireError::Cluster(ClusterError::Unavailable { .. }))
            | ClientError::Server(WireError::Cluster(ClusterError::ShardUnavailable { .. }))
            | ClientError::Server(WireError::Cluster(ClusterError::NotLeader { .. }))
            | ClientError::Server(WireError::Ids(IdsError::Incomplete { .. }))
            | ClientError::Server(WireError::Frame(BadFrame::Timeout))
            | ClientError::Server(WireError::Auth(AuthError::Replayed))
    )
}

/// One request's patience: started when the first try is made.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    start: Instant,
    limit: Duration,
}

impl Patience {
    /// Patience of `limit`, from now.
    pub fn new(limit: Duration) -> Self {
        Patience { start: Instant::now(), limit }
    }

    /// Whether there is time for another try.
    pub fn left(&self) -> bool {
        self.start.elapsed() < self.limit
    }

    /// Whether to try again after `e`.
    pub fn again(&self, e: &ClientError) -> bool {
        transient(e) && self.left()
    }

    /// The pause before the next try.
    pub async fn pause(&self) {
        tokio::time::sleep(PAUSE).await;
    }
}
