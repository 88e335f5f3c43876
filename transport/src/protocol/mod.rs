//! Every message that crosses the wire, client ↔ node and node ↔ node.
//!
//! One module per role ([`r#as`], [`cs`], [`ids`], [`ods`], [`sds`]) holds
//! that role's requests, its errors and the bodies they carry; [`identity`]
//! what the AS and CS share (client ids, signed bodies), and [`node`] what
//! nodes ask each other and answer. [`Request`], [`Response`] and
//! [`WireError`] gather them, and this file holds the frames around them.
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
pub mod node;
pub mod ods;
mod request;
mod response;
mod rules;
pub mod sds;
pub mod tickets;

pub use cs::{CountBody, CsError, CsRequest, CsResponse, FetchedKeyPackage, PublishBody};
pub use error::{AuthError, BadFrame, ClusterError, WireError};
pub use ids::{
    CommitExtras, IdsError, IdsRequest, IdsResponse, Recipients, RosterEntry, RosterMode,
    SealedRoster, SendBody, Undeliverable, Undelivered, WelcomeCopy,
};
pub use node::{
    ChaosTarget, Join, MoveStep, NodeFrame, NodeRequest, NodeResponse, OperatorRequest, RaftCall,
    RaftRpc, ReplicationRequest, Sender, ShardLine, ShardMove, Spend,
};
pub use ods::{
    shard_of, Delivered, DeliveryCap, EnqueueItem, EnqueueResult, MailboxAuth, MailboxId, OdsError,
    OdsRequest, OdsResponse, SealedPush, ShardHint,
};
pub use r#as::{
    AdmitBody, ApproveBody, AsError, AsRequest, AsResponse, Binding, DevicesBody, PendingDevice,
    RegisterBody, RevokeBody, RevokeDeviceBody, SignedBinding,
};
pub use request::{Ping, Request};
pub use response::{Pong, Response};
pub use rules::{Admission, Rules};
pub use sds::{SdsError, SdsRequest, SdsResponse};

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
