//! What nodes ask each other over `mlsd-node/1`, and what they answer.
//!
//! A node's requests mix four jobs: forwarding a client's request to its
//! shard's owner, delivery (the IDS's enqueues at the ODS), replication (Raft
//! messages) and operator commands; [`NodeResponse`] holds their answers,
//! apart from the answers a client may see.

use serde::{Deserialize, Serialize};

use super::flat::Tags;
use super::tickets;
use super::{EnqueueItem, EnqueueResult, Request, Role, NODE_MAGIC, PROTOCOL_VERSION};

/// A node's request frame to another node over `mlsd-node/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// A client request that the receiving node owns; it is served locally,
    /// never forwarded again, so a config disagreement cannot loop.
    Forward(Request),
    /// Operator request (`mlsd admin enroll`): store the hash of a one-time
    /// enrollment token for `identity` at the AS that owns it. Only holders of
    /// a node certificate can send it.
    Enroll {
        /// The identity the token is for.
        identity: String,
        /// SHA-256 of the token; the token itself never reaches a node.
        token_hash: Vec<u8>,
    },
    /// Chaos testing: kill one random live actor of `target` on the receiving
    /// node through the actor runtime. Refused unless the cluster config sets
    /// `[chaos] allow = true`.
    Chaos {
        /// What to kill.
        target: ChaosTarget,
    },
    /// IDS → ODS: store envelopes in mailboxes this node owns. A batch may mix
    /// fan-outs and carries nothing that names a group, epoch or sender.
    Enqueue(Vec<EnqueueItem>),
    /// Operator request (`mlsd admin revoke`): revoke `client`'s binding at
    /// the AS that owns it, e.g. a device whose owner lost every other one.
    /// The record stays (the id remains the identity's).
    Revoke {
        /// The client id, `identity/device`.
        client: String,
    },
    /// Entry node → the AS node owning `ticket.input`: spend a quota ticket
    /// for the request whose [`tickets::bind`] is `bind` (decision D12).
    /// Answered `Spent`, or why the ticket is no good.
    Spend {
        /// The ticket.
        ticket: tickets::Ticket,
        /// What it pays for.
        bind: [u8; 32],
    },
    /// Raft messages of several shards for the receiving node's replicas
    /// (decision D13): every shard's heartbeats to one peer share one of
    /// these. Answered `Raft`, one answer per call, in order.
    Raft(Vec<RaftCall>),
    /// `mlsd cluster status`: the receiving node's view of each shard it
    /// replicates. Answered `ShardStatus`.
    ShardStatus,
}

/// Which Raft RPC a [`RaftCall`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Log entries, or a heartbeat.
    Append,
    /// A candidate's request for a vote.
    Vote,
    /// One chunk of a snapshot.
    Snapshot,
    /// The leader hands the shard over to this replica (Raft's leadership
    /// transfer, which openraft 0.9 lacks): it has stopped heartbeats and
    /// proposals, and the replica campaigns as soon as the followers'
    /// leases allow. The body is the leader's term; a replica in another
    /// term ignores it.
    TimeoutNow,
}

/// One Raft RPC for one shard. The RPC itself is opaque here: encoded and
/// decoded by the node's replication layer, which knows openraft's types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftCall {
    /// The shard's role.
    pub role: Role,
    /// The shard's index.
    pub shard: u16,
    /// The RPC.
    pub rpc: RaftRpc,
    /// Its encoding.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// One shard as one replica sees it, for `mlsd cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLine {
    /// The shard's role.
    pub role: Role,
    /// The shard's index.
    pub shard: u16,
    /// The reporting node.
    pub node: String,
    /// Its voters, by name.
    pub voters: Vec<String>,
    /// The leader it knows of.
    pub leader: Option<String>,
    /// Its Raft term.
    pub term: u64,
    /// The last log index it applied.
    pub applied: u64,
    /// The term of that entry (with `applied`, the position a replica
    /// restarted empty must reach before it votes freely).
    pub applied_term: u64,
    /// The last log index it holds.
    pub last_log: u64,
    /// The term of that entry (`None`: its log could not be read); with
    /// `last_log`, the position a replica restarted empty must reach before
    /// it votes: an entry its lost copy helped commit is in this log, but
    /// may not be applied here yet.
    pub last_log_term: Option<u64>,
    /// For a leader: each voter's matched log index (`None`: not known yet).
    pub matched: Vec<(String, Option<u64>)>,
    /// Why the replica waits, when it is rebuilding after its node lost its
    /// data (`None`: it is not): so an operator sees a shard that waits for
    /// its voters instead of a bare missing leader.
    pub rebuilding: Option<String>,
}

/// Kinds of actor a chaos request may kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChaosTarget {
    /// A role actor (restarted by the node supervisor).
    Role(Role),
    /// An IDS group actor (respawned on the next request).
    Group,
    /// An IDS fan-out actor (its sender retries).
    Fanout,
    /// An anonymizer actor (restarted by its fan-out).
    Anonymizer,
}

/// Frame of node-to-node requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFrame {
    /// Must equal [`NODE_MAGIC`].
    pub magic: u32,
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The request.
    pub request: NodeRequest,
}

impl NodeFrame {
    /// Wraps a node request in a frame of the current version.
    pub fn new(request: NodeRequest) -> Self {
        NodeFrame { magic: NODE_MAGIC, version: PROTOCOL_VERSION, request }
    }
}

/// What a node answers to another node's [`NodeRequest`] (other than a
/// forwarded client request, answered as the client would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeResponse {
    /// Answer to `Enqueue`, one result per item in order.
    Enqueued(Vec<EnqueueResult>),
    /// Answer to `Chaos`: how many actors were killed (0 when none was alive).
    Killed {
        /// Actors killed.
        count: u32,
    },
    /// Answer to an operator's `Enroll`: the token hash is stored.
    Enrolled,
    /// A ticket was spent (or had been spent for this same request).
    Spent,
    /// Answers to a `Raft` node request, one per call, each opaque
    /// (an encoded openraft result).
    Raft(Vec<serde_bytes::ByteBuf>),
    /// Answer to `ShardStatus`.
    ShardStatus(Vec<ShardLine>),
}

impl NodeResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[14, 15, 16, 25, 26, 27];
}
