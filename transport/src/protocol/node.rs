//! What nodes ask each other over `mlsd-node/1`, and what they answer.
//!
//! [`NodeRequest`] groups a node's requests by job: forwarding a client's
//! request to its shard's leader, delivery (the IDS's enqueues at the ODS),
//! ticket spending, replication (Raft messages, shard status) and operator
//! commands; [`NodeResponse`] holds their answers, apart from the answers a
//! client may see. On the wire both are flat enums (see [`super::flat`]).

use serde::{Deserialize, Serialize};

use super::flat::{self, Tags};
use super::tickets;
use super::{EnqueueItem, EnqueueResult, Request, Role, NODE_MAGIC, PROTOCOL_VERSION};

flat::flat_enum! {
    /// A node's request to another node over `mlsd-node/1`, grouped by job:
    /// each group names who may send it (nodes, the operator, or either).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum NodeRequest as "NodeRequest" + From {
        /// Node → node: a client request that the receiving node owns; it is
        /// served locally, never forwarded again, so a config disagreement
        /// cannot loop.
        Forward(Request) = 0,
        /// Node → node, IDS → ODS: store envelopes in mailboxes this node owns.
        /// A batch may mix fan-outs and carries nothing that names a group,
        /// epoch or sender.
        Enqueue(Vec<EnqueueItem>) = 3,
        /// Node → node, entry node → the AS node owning the ticket's input:
        /// spend a quota ticket (decision D12).
        Spend(Spend) = 5,
        /// Replication and the cluster's state (decision D13).
        Replication(ReplicationRequest),
        /// Commands only the operator's certificate may give.
        Operator(OperatorRequest),
    }
}

/// Who may send a [`NodeRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Nodes of the cluster (a node certificate).
    Nodes,
    /// The operator (the operator certificate).
    Operator,
    /// Either.
    Either,
    /// Any holder of a certificate of the cluster's CA: a member, the
    /// operator, or a node that is not a member yet (joining).
    Anyone,
}

impl NodeRequest {
    /// Who may send the request: node traffic only from nodes, operator
    /// commands only from the operator, and the shards' status to both
    /// (the operator's to ask, and a node's that starts empty).
    pub fn sender(&self) -> Sender {
        match self {
            NodeRequest::Forward(_)
            | NodeRequest::Enqueue(_)
            | NodeRequest::Spend(_)
            | NodeRequest::Replication(ReplicationRequest::Raft(_) | ReplicationRequest::Move(_)) => {
                Sender::Nodes
            }
            NodeRequest::Replication(ReplicationRequest::ShardStatus) => Sender::Either,
            NodeRequest::Replication(
                ReplicationRequest::ClusterMap | ReplicationRequest::Join(_),
            ) => Sender::Anyone,
            NodeRequest::Operator(_) => Sender::Operator,
        }
    }

    /// Whether a node may send the request again when the answer was lost:
    /// an enqueue (idempotent per delivery id), a ticket spend (idempotent
    /// per request it pays for), Raft messages (Raft tolerates duplicates),
    /// status, and the client requests that are ([`Request::repeatable`]).
    /// Operator commands are the operator's to repeat.
    pub fn repeatable(&self) -> bool {
        match self {
            NodeRequest::Forward(r) => r.repeatable(),
            NodeRequest::Enqueue(_) | NodeRequest::Spend(_) | NodeRequest::Replication(_) => true,
            NodeRequest::Operator(_) => false,
        }
    }

    /// The key of the AS shard that serves the request, for the ones the
    /// AS serves: an enrollment or revocation (the identity), a ticket
    /// spend (the ticket's input).
    pub fn as_shard_key(&self) -> Option<&[u8]> {
        match self {
            NodeRequest::Operator(OperatorRequest::Enroll { identity, .. }) => {
                Some(identity.as_bytes())
            }
            NodeRequest::Operator(OperatorRequest::Revoke { client }) => {
                Some(super::r#as::identity_of(client))
            }
            NodeRequest::Spend(s) => Some(&s.ticket.input),
            _ => None,
        }
    }
}

/// Entry node → AS: spend `ticket` for the request whose
/// [`tickets::bind`] is `bind`. Answered `Spent`, or why the ticket is no
/// good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// The ticket.
    pub ticket: tickets::Ticket,
    /// What it pays for.
    pub bind: [u8; 32],
}

/// What replicas and operators ask about the replicated shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationRequest {
    /// Node → node: Raft messages of several shards for the receiving
    /// node's replicas: every shard's heartbeats to one peer share one of
    /// these. Answered `Raft`, one answer per call, in order.
    Raft(Vec<RaftCall>),
    /// Operator or node (`mlsd cluster status`, a node that restarts empty):
    /// the receiving node's view of each shard it replicates. Answered
    /// `ShardStatus`.
    ShardStatus,
    /// Operator, member or a node not yet a member (decision D15): the
    /// cluster map as the receiving node's cluster replica applied it.
    /// Answered `ClusterMap`.
    ClusterMap,
    /// A node not yet a member asks to become one (or a member to have its
    /// address or roles updated). From the node itself, its certificate
    /// must name `node`; a member that checked that relays it to the
    /// cluster group's leader. Answered `ClusterMap` with a map listing
    /// it, `NotLeader` by a member that does not lead the cluster group.
    Join(Join),
    /// Node → the cluster group's leader: a shard's leader begins a move
    /// of the shard's replicas the cluster map plans, or reports it done
    /// (its membership change committed). Answered `ClusterMap` with the
    /// map that records it.
    Move(ShardMove),
}

impl ReplicationRequest {
    /// Flat wire index of each variant in [`NodeRequest`].
    pub(crate) const TAGS: Tags = &[6, 7, 8, 9, 10];
}

/// One step of a rebalance of a shard's replicas (decision D15).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    /// The shard's role.
    pub role: Role,
    /// The shard's index.
    pub shard: u16,
    /// The node that gains a replica.
    pub add: Option<String>,
    /// The node that loses one.
    pub remove: Option<String>,
    /// Whether it begins, is done or is given up.
    pub step: MoveStep,
}

/// Where a [`ShardMove`] stands. Encoded as `done: bool` was before
/// (`Begin` 0, `Done` 1), so older nodes' reports still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStep {
    /// The move begins: the node it adds opens a replica.
    Begin,
    /// The shard's voters are the new ones.
    Done,
    /// The node it adds was removed from the cluster before it became a
    /// voter: the shard's voters are still the old ones, and the move is
    /// dropped (the planner then picks another node).
    Abandoned,
}

/// What a node joining the cluster says of itself: what its `[[node]]`
/// block says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Its name (the name in its certificate).
    pub node: String,
    /// Where its QUIC endpoint listens.
    pub listen: std::net::SocketAddr,
    /// The roles it hosts.
    pub roles: Vec<Role>,
}

/// Commands only the holder of the operator certificate may give (a node's
/// key, on a host an attacker took, grants none of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRequest {
    /// `mlsd admin enroll`: store the hash of a one-time enrollment token
    /// for `identity` at the AS that owns it.
    Enroll {
        /// The identity the token is for.
        identity: String,
        /// SHA-256 of the token; the token itself never reaches a node.
        token_hash: Vec<u8>,
    },
    /// Chaos testing: kill one random live actor of `target` on the
    /// receiving node through the actor runtime. Refused unless the cluster
    /// config sets `[chaos] allow = true`.
    Chaos {
        /// What to kill.
        target: ChaosTarget,
    },
    /// `mlsd admin revoke`: revoke `client`'s binding at the AS that owns
    /// it, e.g. a device whose owner lost every other one. The record stays
    /// (the id remains the identity's).
    Revoke {
        /// The client id, `identity/device`.
        client: String,
    },
    /// `mlsd cluster remove`: take `node` out of the cluster (decision
    /// D15). Live (`dead` false), it is drained: marked leaving, its
    /// replicas move to the other members, then it is removed and its
    /// process exits. Dead, it is removed at once and its replicas are
    /// rebuilt from the survivors. Served by the cluster group's leader
    /// (others answer `NotLeader`); answered `ClusterMap`.
    RemoveNode {
        /// The member to remove.
        node: String,
        /// Whether it is gone for good (its replicas are not moved from it).
        dead: bool,
    },
}

impl OperatorRequest {
    /// Flat wire index of each variant in [`NodeRequest`].
    pub(crate) const TAGS: Tags = &[1, 2, 4, 11];
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
    /// Answer to `ClusterMap` and `Join`: the cluster map in its stored
    /// form (a versioned record), none before the cluster group applied one.
    ClusterMap(Option<serde_bytes::ByteBuf>),
}

impl NodeResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[14, 15, 16, 25, 26, 27, 28];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_number_every_node_request_once() {
        let mut tags: Vec<u32> =
            NodeRequest::GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..12).collect::<Vec<_>>());
    }
}
