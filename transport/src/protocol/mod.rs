//! Every message that crosses the wire, client ↔ node and node ↔ node.
//!
//! A stream carries exactly one request frame and one response frame. Frames
//! start with [`PROTOCOL_VERSION`]; a node answers a frame of another version
//! with [`WireError::UnsupportedVersion`] instead of guessing.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod group;
pub mod identity;
pub mod mailbox;

pub use group::{
    CommitExtras, Recipients, RosterEntry, RosterMode, SealedRoster, SendBody, Undeliverable,
    Undelivered, WelcomeCopy,
};
pub use mailbox::{Delivered, EnqueueItem, EnqueueResult, MailboxAuth, MailboxId, SealedPush};

pub use identity::{
    Binding, CountBody, FetchedKeyPackage, PublishBody, RegisterBody, RevokeBody, SignedBinding,
};

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
    /// AS: bind a client id to a signature key (step 1). `proof` is the new
    /// key's signature over the body (proof of possession); `rotation`, the
    /// currently bound key's signature, is required to replace a live binding.
    Register {
        /// What is registered.
        body: RegisterBody,
        /// Signature by `body.signature_key`.
        proof: Vec<u8>,
        /// Signature by the currently bound key, for key rotation.
        rotation: Option<Vec<u8>>,
    },
    /// AS: end a binding; signed by the bound key.
    Revoke {
        /// What is revoked.
        body: RevokeBody,
        /// Signature by the bound key.
        signature: Vec<u8>,
    },
    /// AS: every unexpired binding of an identity's clients (step 4).
    Lookup {
        /// The identity, e.g. `alice`.
        identity: String,
    },
    /// CS: store KeyPackages (step 2); signed by the client's bound key.
    PublishKeyPackages {
        /// The upload.
        body: PublishBody,
        /// Signature by the bound key.
        signature: Vec<u8>,
    },
    /// CS: one KeyPackage for every current client of `identity` (step 3),
    /// consumed as it is handed out.
    FetchKeyPackages {
        /// The identity whose clients are wanted.
        identity: String,
    },
    /// ODS: create a mailbox with id `mailbox` (random, chosen by the client),
    /// authenticated by `auth_key`; no identity is involved.
    OpenMailbox {
        /// The new mailbox's id.
        mailbox: MailboxId,
        /// Ed25519 key that must sign fetches and acks.
        auth_key: Vec<u8>,
        /// The push endpoint, encrypted under the client's push key.
        push: Option<SealedPush>,
    },
    /// ODS: envelopes of a mailbox after sequence number `after`.
    Fetch {
        /// Signed by the mailbox key (label `mlsd/ods/fetch/v1`, op = `(after, limit)`).
        auth: MailboxAuth,
        /// Return envelopes with a larger sequence number.
        after: u64,
        /// At most this many (capped by the server).
        limit: u32,
    },
    /// ODS: keep this stream open and push envelopes on it as they arrive.
    /// The first response frame holds the envelopes after `after` (at most a
    /// fetch page; fetch the rest if it is full), every later frame new ones.
    Subscribe {
        /// Signed by the mailbox key (label `mlsd/ods/subscribe/v1`, op = `after`).
        auth: MailboxAuth,
        /// Resume after this sequence number.
        after: u64,
    },
    /// ODS: delete every envelope up to and including `up_to`.
    Ack {
        /// Signed by the mailbox key (label `mlsd/ods/ack/v1`, op = `up_to`).
        auth: MailboxAuth,
        /// Highest acknowledged sequence number.
        up_to: u64,
    },
    /// IDS: register a group id (first come) with its epoch-0 auth key and,
    /// in stored mode, its roster sealed under `R(0)`.
    CreateGroup {
        /// MLS group id.
        group: Vec<u8>,
        /// Roster mode.
        mode: RosterMode,
        /// `A(0)`.
        auth_key: [u8; 32],
        /// The epoch-0 roster sealed under `R(0)` (stored mode only).
        roster: Option<SealedRoster>,
    },
    /// IDS: fan a message out to a group's members (steps 5-6).
    Send {
        /// The message and its recipients (boxed: by far the largest request).
        body: Box<SendBody>,
        /// `send_mac(A(e), body)`.
        mac: [u8; 32],
    },
    /// SDS: write bytes `offset..offset+data.len()` of blob `id` (of `total`
    /// bytes). Chunks come in order; the blob appears (or replaces the old
    /// content) when the last byte is written. Creating a blob binds it to
    /// `SHA-256(cap)`; writing an existing one needs `cap`.
    PutBlob {
        /// Random 256-bit blob id chosen by the client.
        id: [u8; 32],
        /// Write capability.
        cap: [u8; 32],
        /// Position of this chunk.
        offset: u64,
        /// Size of the whole blob.
        total: u64,
        /// The chunk (at most `MAX_CHUNK`).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// SDS: up to `max` bytes of blob `id` from `offset`; anyone who knows the id.
    GetBlob {
        /// The blob.
        id: [u8; 32],
        /// Where to start.
        offset: u64,
        /// At most this many bytes (capped at `MAX_CHUNK`).
        max: u32,
    },
    /// SDS: delete blob `id`; needs its write capability.
    DeleteBlob {
        /// The blob.
        id: [u8; 32],
        /// Write capability.
        cap: [u8; 32],
    },
    /// CS: how many one-time KeyPackages a client has left; signed.
    CountKeyPackages {
        /// Who asks.
        body: CountBody,
        /// Signature by the bound key.
        signature: Vec<u8>,
    },
}

impl Request {
    /// The role that serves this request and the key that picks its owner
    /// (identity for AS/CS, group id for IDS, mailbox id for ODS, blob id for SDS).
    pub fn shard(&self) -> (Role, &[u8]) {
        fn identity_of(client: &str) -> &[u8] {
            client.split('/').next().unwrap_or("").as_bytes()
        }
        match self {
            Request::Ping { role, key } => (*role, key),
            Request::Register { body, .. } => (Role::As, identity_of(&body.client)),
            Request::Revoke { body, .. } => (Role::As, identity_of(&body.client)),
            Request::Lookup { identity } => (Role::As, identity.as_bytes()),
            Request::PublishKeyPackages { body, .. } => (Role::Cs, identity_of(&body.client)),
            Request::FetchKeyPackages { identity } => (Role::Cs, identity.as_bytes()),
            Request::CountKeyPackages { body, .. } => (Role::Cs, identity_of(&body.client)),
            Request::OpenMailbox { mailbox, .. } => (Role::Ods, mailbox),
            Request::CreateGroup { group, .. } => (Role::Ids, group),
            Request::Send { body, .. } => (Role::Ids, &body.group),
            Request::Fetch { auth, .. } => (Role::Ods, &auth.mailbox),
            Request::Ack { auth, .. } => (Role::Ods, &auth.mailbox),
            Request::Subscribe { auth, .. } => (Role::Ods, &auth.mailbox),
            Request::PutBlob { id, .. } => (Role::Sds, id),
            Request::GetBlob { id, .. } => (Role::Sds, id),
            Request::DeleteBlob { id, .. } => (Role::Sds, id),
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
    /// The AS's binding after `Register` or `Revoke`.
    Binding(SignedBinding),
    /// Answer to `Lookup`: every unexpired binding, revoked ones marked.
    Bindings(Vec<SignedBinding>),
    /// Answer to `PublishKeyPackages`.
    Published {
        /// One-time KeyPackages now stored for the client.
        stored: u32,
    },
    /// Answer to `FetchKeyPackages`: at most one per client of the identity.
    KeyPackages(Vec<FetchedKeyPackage>),
    /// Answer to `CreateGroup`.
    GroupCreated,
    /// Answer to `Send`: every copy is durably enqueued.
    Sent {
        /// Copies enqueued (recipients plus Welcomes).
        copies: u32,
    },
    /// Answer to `PutBlob`: bytes received so far (`total` when complete).
    BlobWritten {
        /// Bytes written of the current upload.
        written: u64,
    },
    /// Answer to `GetBlob`.
    Blob {
        /// Size of the whole blob.
        total: u64,
        /// The requested bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Answer to `DeleteBlob`.
    BlobDeleted,
    /// Answer to `OpenMailbox`.
    MailboxOpened,
    /// Answer to `Fetch`, in sequence order.
    Envelopes(Vec<Delivered>),
    /// Answer to `Ack`: envelopes still queued.
    Acked {
        /// Envelopes left in the mailbox.
        remaining: u32,
    },
    /// Answer to a node's `Enqueue`, one result per item in order.
    Enqueued(Vec<EnqueueResult>),
    /// Answer to `Chaos`: how many actors were killed (0 when none was alive).
    Killed {
        /// Actors killed.
        count: u32,
    },
    /// Answer to an operator's `Enroll`: the token hash is stored.
    Enrolled,
    /// Answer to `CountKeyPackages`.
    KeyPackageCount {
        /// One-time KeyPackages left.
        count: u32,
        /// Whether a last-resort KeyPackage is stored.
        last_resort: bool,
    },
    /// Answer to `Send` when every copy reached an outcome but some were not
    /// stored: the message was accepted (a commit counts for its epoch) and
    /// the stored copies stay stored. The sender retries with the same
    /// message id while a reason is retryable; the others are final.
    PartlySent {
        /// Copies in all (recipients plus Welcomes).
        copies: u32,
        /// Copies not stored.
        failed: u32,
        /// The recipients not served, at most `MAX_UNDELIVERED_LISTED` of
        /// them (`failed` counts all).
        undelivered: Vec<Undelivered>,
    },
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
    /// The client id is bound to another key; a rotation must be signed by it.
    #[error("client id {0} is bound to another key")]
    ClientTaken(String),
    /// No live binding exists for the client.
    #[error("no binding for client {0}")]
    UnknownClient(String),
    /// The AS requires a valid, unused enrollment token for this identity.
    #[error("enrollment token missing, wrong or already used")]
    BadToken,
    /// A KeyPackage failed validation; nothing of the upload was stored.
    #[error("invalid KeyPackage #{index}: {reason}")]
    InvalidKeyPackage {
        /// Position in the upload (the last-resort one is last).
        index: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// Storing the upload would exceed the per-client cap.
    #[error("too many KeyPackages: at most {max} per client")]
    TooManyKeyPackages {
        /// The cap.
        max: u32,
    },
    /// The message is for an epoch other than the group's current one, or a
    /// commit lost the race for this epoch: process the winning commit first.
    #[error("stale epoch; the group is at epoch {current}")]
    StaleEpoch {
        /// The group's current epoch at the IDS.
        current: u64,
    },
    /// No group with this id at the IDS.
    #[error("unknown group")]
    UnknownGroup,
    /// A group with this id exists already.
    #[error("group id taken")]
    GroupTaken,
    /// The send's MAC does not verify under the epoch auth key.
    #[error("MAC does not verify under the epoch auth key")]
    BadMac,
    /// The MLS message is malformed or does not match the request.
    #[error("invalid MLS message: {0}")]
    InvalidMessage(String),
    /// Some copies could not be enqueued; the send may be retried with the
    /// same message id without duplicating the copies that were. (Nodes of
    /// this version answer `Response::PartlySent` instead, which says which
    /// recipients and why; clients still treat this one as retryable.)
    #[error("{failed} of {total} copies not enqueued")]
    Incomplete {
        /// Copies that failed.
        failed: u32,
        /// All copies.
        total: u32,
    },
    /// No blob with this id.
    #[error("unknown blob")]
    UnknownBlob,
    /// The blob exists and the write capability does not match.
    #[error("wrong write capability")]
    WrongCapability,
    /// A blob or chunk over the size limit, or a chunk out of order.
    #[error("blob refused: {0}")]
    BadBlob(String),
    /// No mailbox with this id.
    #[error("unknown mailbox")]
    UnknownMailbox,
    /// A mailbox with this id exists already (pick another random id).
    #[error("mailbox id taken")]
    MailboxTaken,
    /// A mailbox request's counter is not above the last one: a replay.
    #[error("replayed mailbox request (counter not increasing)")]
    Replayed,
    /// Too many requests of this kind from this requester; retry later.
    #[error("rate limited; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When a retry may succeed.
        retry_after_ms: u64,
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
    /// A stored record this request needs cannot be read (a torn disk, or a
    /// format this binary does not know). The record is kept untouched for
    /// the operator, the request changed nothing, and a retry fails the same
    /// way; every other key is served as usual.
    #[error("unreadable: {0}")]
    Unreadable(String),
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
