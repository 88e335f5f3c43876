//! Why a request failed: the frame, the way to the owner, the requester's
//! credentials, or one role's own reasons.
//!
//! Each group is an enum of its own, so framing code cannot produce a role's
//! error and a role's logic names its refusals in its protocol module. On the
//! wire, [`WireError`] is the flat enum protocol version 1 has always sent
//! (see [`super::flat`]).

use serde::{Deserialize, Serialize};

use super::cs::CsError;
use super::flat::{self, Tags};
use super::ids::IdsError;
use super::ods::OdsError;
use super::r#as::AsError;
use super::sds::SdsError;

flat::flat_enum! {
    /// Why a request failed, precise enough for the caller to decide what to do.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum WireError as "WireError" {
        /// The frame itself: fix the sender, or speak the node's version.
        #[error(transparent)]
        Frame(#[from] BadFrame),
        /// Reaching the owner, or the node's own trouble.
        #[error(transparent)]
        Cluster(#[from] ClusterError),
        /// Who asks: names, signatures, freshness, permission.
        #[error(transparent)]
        Auth(#[from] AuthError),
        /// The AS's own reasons.
        #[error(transparent)]
        As(#[from] AsError),
        /// The CS's own reasons.
        #[error(transparent)]
        Cs(#[from] CsError),
        /// The IDS's own reasons.
        #[error(transparent)]
        Ids(#[from] IdsError),
        /// The ODS's own reasons.
        #[error(transparent)]
        Ods(#[from] OdsError),
        /// The SDS's own reasons.
        #[error(transparent)]
        Sds(#[from] SdsError),
    }
}

/// The frame could not be taken as a request or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BadFrame {
    /// The frame's bytes are not a valid message. Fix the sender.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The length prefix announced more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Receiver's limit.
        max: u32,
    },
    /// The stream ended before the announced length arrived.
    #[error("truncated frame")]
    Truncated,
    /// The frame did not arrive in time.
    #[error("timed out waiting for the request")]
    Timeout,
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got} (this node speaks {supported})")]
    UnsupportedVersion {
        /// Version the peer sent.
        got: u16,
        /// Version this node speaks.
        supported: u16,
    },
    /// The node's answer did not fit in a frame (a node defect: answers are
    /// bounded by design); what the request changed stays changed.
    #[error("the response of {len} bytes exceeds the frame limit of {max}")]
    ResponseTooLarge {
        /// Encoded length of the answer.
        len: u32,
        /// The frame limit.
        max: u32,
    },
}

impl BadFrame {
    /// Flat wire index of each variant.
    const TAGS: Tags = &[0, 1, 2, 3, 4, 30];
}

/// The request could not be served where it belongs, for now or for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    /// The node that owns the request's key cannot be reached; retry later.
    #[error("node {node} is unavailable")]
    Unavailable {
        /// The owner node.
        node: String,
    },
    /// A forwarded request reached a node that does not own its key: the
    /// nodes disagree about the cluster config.
    #[error("this node does not own the key; owner is {owner}")]
    NotOwner {
        /// Owner according to the receiving node.
        owner: String,
    },
    /// An unexpected failure inside the node; the request had no effect.
    #[error("internal error: {0}")]
    Internal(String),
    /// Too many requests of this kind from this requester; retry later.
    #[error("rate limited; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When a retry may succeed.
        retry_after_ms: u64,
    },
    /// A stored record this request needs cannot be read (a torn disk, or a
    /// format this binary does not know). The record is kept untouched for
    /// the operator, the request changed nothing, and a retry fails the same
    /// way; every other key is served as usual.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// The request reached a replica that does not lead its shard; the
    /// entry node follows `leader` (clients see this only from a node of an
    /// older version).
    #[error("not the leader of shard {shard}; leader is {leader:?}")]
    NotLeader {
        /// The shard, `role/index`.
        shard: String,
        /// Its leader as far as the answering replica knows.
        leader: Option<String>,
    },
    /// The request's shard has no leader that a majority confirms (two of
    /// three replicas down, or a partition); nothing was changed. Retry.
    #[error("shard {shard} is unavailable; retry")]
    ShardUnavailable {
        /// The shard, `role/index`.
        shard: String,
    },
    /// What the request would write is more than one replicated entry may
    /// carry (a frame's worth); nothing was changed, and the same request
    /// fails the same way. No client request of the documented sizes gets
    /// it: it guards against a write that would stall its shard.
    #[error("shard {shard}: a write of {bytes} bytes exceeds the {max} bytes one entry may carry")]
    EntryTooLarge {
        /// The shard, `role/index`.
        shard: String,
        /// The write's size.
        bytes: u64,
        /// The most one entry may carry.
        max: u64,
    },
    /// A change of the cluster's members (a node joining, or one to be
    /// removed) is refused for a reason of its own: the address is another
    /// member's, it names no role, the cluster has its maximum of members.
    /// Nothing was changed; the same request fails the same way.
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
}

impl ClusterError {
    /// Flat wire index of each variant.
    const TAGS: Tags = &[5, 6, 8, 29, 31, 38, 39, 40, 41];
}

/// The requester is not who, or not allowed to do what, the request says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    /// The sender may not make this request.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// A client id or identity is not of the form `identity/device` with
    /// lowercase names of 1-64 characters.
    #[error("invalid client id or identity {0:?}")]
    InvalidClientId(String),
    /// A signature does not verify with the key it must come from.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A signed request's timestamp is outside the server's window: replayed
    /// or the client's clock is off.
    #[error("timestamp outside the accepted window (server time {server_time})")]
    StaleTimestamp {
        /// Server's Unix time, so the client can tell clock skew from replay.
        server_time: u64,
    },
    /// No live binding exists for the client.
    #[error("no binding for client {0}")]
    UnknownClient(String),
    /// A replay: a mailbox request whose counter is not above the last one,
    /// or a signed AS or CS request that was served already.
    #[error("replayed request (a signed request acts once; mailbox counters must increase)")]
    Replayed,
    /// The request creates something costly and pays with no ticket, or
    /// with one of another kind (decision D12).
    #[error("this request needs a {kind} ticket (ask the AS for tickets)")]
    TicketRequired {
        /// The kind it needs.
        kind: super::tickets::TicketKind,
    },
    /// The ticket was not issued by this cluster's AS for its kind and day,
    /// or its day is over.
    #[error("bad ticket: {0}")]
    BadTicket(String),
    /// The ticket paid for another request already.
    #[error("ticket already spent")]
    TicketSpent,
}

impl AuthError {
    /// Flat wire index of each variant.
    const TAGS: Tags = &[7, 9, 10, 11, 13, 28, 35, 36, 37];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_number_every_error_once() {
        let mut tags: Vec<u32> = WireError::GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..42).collect::<Vec<_>>());
    }
}
