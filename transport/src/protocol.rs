//! Every message that crosses the wire, client ↔ node and node ↔ node.
//!
//! A stream carries exactly one request frame and one response frame. Frames
//! start with [`PROTOCOL_VERSION`]; a node answers a frame of another version
//! with [`WireError::UnsupportedVersion`] instead of guessing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the request/response types below. Bumped on any change that an
/// older peer would decode differently.
pub const PROTOCOL_VERSION: u16 = 1;

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

/// A request a client may send; every node accepts every variant and routes it
/// to the node that owns its shard key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and routing probe: answered by the owner of `key` among the
    /// nodes hosting `role`, which names itself in the reply.
    Ping {
        /// The role whose actor should answer.
        role: Role,
        /// Shard key; the same key always reaches the same owner.
        key: Vec<u8>,
    },
}

impl Request {
    /// The role that serves this request and the key that picks its owner
    /// (identity for AS/CS, group id for IDS, mailbox id for ODS, blob id for SDS).
    pub fn shard(&self) -> (Role, &[u8]) {
        match self {
            Request::Ping { role, key } => (*role, key),
        }
    }
}

/// What a node answers to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// Name of the node whose role actor answered.
        node: String,
        /// The role that answered.
        role: Role,
    },
    /// The request was refused or failed; nothing was changed.
    Error(WireError),
}

/// Why a request failed, precise enough for the caller to decide what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// The frame's bytes are not a valid message. Fix the sender.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The length prefix announced more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
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
    /// The sender may not make this request.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// An unexpected failure inside the node; the request had no effect.
    #[error("internal error: {0}")]
    Internal(String),
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
}

impl ClientFrame {
    /// Wraps a request in a frame of the current version.
    pub fn new(request: Request) -> Self {
        ClientFrame { magic: CLIENT_MAGIC, version: PROTOCOL_VERSION, request }
    }
}

/// A node's request frame to another node over `mlsd-node/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// A client request that the receiving node owns; it is served locally,
    /// never forwarded again, so a config disagreement cannot loop.
    Forward(Request),
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
