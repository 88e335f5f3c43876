//! Every message that crosses the wire, client ↔ node and node ↔ node.
//!
//! One module per role ([`r#as`], [`cs`], [`ids`], [`ods`], [`sds`]) holds
//! that role's requests, its errors and the bodies they carry; [`identity`]
//! what the AS and CS share (client ids, signed bodies). [`Request`] and
//! [`WireError`] gather them, [`Response`] is every answer, and this file
//! the frames around them and the node-to-node requests.
//!
//! A stream carries exactly one request frame and one response frame. Frames
//! start with [`PROTOCOL_VERSION`]; a node answers a frame of another version
//! with [`WireError::Frame(BadFrame::UnsupportedVersion)`] instead of guessing.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod r#as;
pub mod cs;
mod error;
mod flat;
pub mod identity;
pub mod ids;
pub mod ods;
mod request;
mod response;
pub mod sds;
pub mod tickets;

pub use cs::{CountBody, CsError, CsRequest, FetchedKeyPackage, PublishBody};
pub use error::{AuthError, BadFrame, ClusterError, WireError};
pub use ids::{
    CommitExtras, IdsError, IdsRequest, Recipients, RosterEntry, RosterMode, SealedRoster,
    SendBody, Undeliverable, Undelivered, WelcomeCopy,
};
pub use ods::{
    shard_of, Delivered, DeliveryCap, EnqueueItem, EnqueueResult, MailboxAuth, MailboxId, OdsError,
    OdsRequest, SealedPush, ShardHint,
};
pub use r#as::{
    ApproveBody, AsError, AsRequest, Binding, DevicesBody, PendingDevice, RegisterBody, RevokeBody,
    RevokeDeviceBody, SignedBinding,
};
pub use request::{Ping, Request};
pub use response::Response;
pub use sds::{SdsError, SdsRequest};

/// Version of the request/response types below. Bumped on any change that an
/// older peer would decode differently.
pub const PROTOCOL_VERSION: u16 = 4;

/// ALPN of client connections: server-authenticated TLS, requests of [`ClientFrame`].
pub const ALPN_CLIENT: &[u8] = b"mlsd-client/1";

/// ALPN of node-to-node connections: mutual TLS, requests of [`NodeFrame`].
pub const ALPN_NODE: &[u8] = b"mlsd-node/1";

/// The five services. Each is an actor type; a node hosts any subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Authentication service: identity ↔ signature key bindings.
    As,
    /// Credential service: the KeyPackage directory.
    Cs,
    /// Message reception: group ordering and anonymizing fan-out.
    Ids,
    /// Message delivery: per-recipient mailboxes.
    Ods,
    /// Storage service: capability-addressed encrypted blobs.
    Sds,
}

impl Role {
    /// All roles, in a fixed order, for iteration and validation.
    pub const ALL: [Role; 5] = [Role::As, Role::Cs, Role::Ids, Role::Ods, Role::Sds];

    /// The lowercase name used in `cluster.toml`, the CLI and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::As => "as",
            Role::Cs => "cs",
            Role::Ids => "ids",
            Role::Ods => "ods",
            Role::Sds => "sds",
        }
    }

    /// Parses the lowercase name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// First field of every [`ClientFrame`]. Client and node frames start with
/// different magic numbers, so a node frame sent on a client connection (or the
/// reverse) is refused as malformed instead of being read as something else.
pub const CLIENT_MAGIC: u32 = u32::from_be_bytes(*b"mlsc");

/// First field of every [`NodeFrame`]; see [`CLIENT_MAGIC`].
pub const NODE_MAGIC: u32 = u32::from_be_bytes(*b"mlsn");

/// A client's request frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Must equal [`CLIENT_MAGIC`].
    pub magic: u32,
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The request.
    pub request: Request,
    /// The quota ticket a request that creates something costly pays with
    /// ([`tickets::TicketKind::for_request`]); spent by the entry node,
    /// never forwarded.
    pub ticket: Option<tickets::Ticket>,
}

impl ClientFrame {
    /// Wraps a request in a frame of the current version.
    pub fn new(request: Request) -> Self {
        ClientFrame { magic: CLIENT_MAGIC, version: PROTOCOL_VERSION, request, ticket: None }
    }

    /// Wraps a request and the ticket it pays with.
    pub fn with_ticket(request: Request, ticket: Option<tickets::Ticket>) -> Self {
        ClientFrame { ticket, ..ClientFrame::new(request) }
    }
}

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

/// Every response frame, on either ALPN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The responder's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The response.
    pub response: Response,
}

impl ResponseFrame {
    /// Wraps a response in a frame of the current version.
    pub fn new(response: Response) -> Self {
        ResponseFrame { version: PROTOCOL_VERSION, response }
    }
}
