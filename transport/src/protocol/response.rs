//! What a node answers: one enum for every role, because clients and nodes
//! read answers without knowing which role produced them.

use serde::{Deserialize, Serialize};

use super::tickets::TicketKey;
use super::{
    Delivered, EnqueueResult, FetchedKeyPackage, PendingDevice, Role, SignedBinding, Undelivered,
    WireError,
};

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
    /// Answer to `Register` of a new device of an identity that has
    /// devices already: nothing is bound until a live device of the identity
    /// approves it (`Approve`), or an operator's token is presented.
    RegistrationPending {
        /// The pending request, as the approving device will see it.
        pending: PendingDevice,
    },
    /// Answer to `Devices`: every device of the identity (revoked ones
    /// marked) and every pending registration.
    Devices {
        /// The bindings, signed like `Lookup`'s.
        bindings: Vec<SignedBinding>,
        /// Registrations awaiting approval.
        pending: Vec<PendingDevice>,
    },
    /// Answer to `LookupPage`: up to `LOOKUP_PAGE` unexpired bindings in
    /// client id order, revoked ones marked.
    BindingPage {
        /// The bindings, signed like `Lookup`'s.
        bindings: Vec<SignedBinding>,
        /// Client id to ask `after` for the next page; `None` on the last.
        next: Option<String>,
    },
    /// Answer to `IssueCapabilities`: each token's serial, in order.
    CapabilitiesIssued {
        /// Serials, as [`Delivered::via`] will name them.
        serials: Vec<u64>,
    },
    /// Answer to `RevokeCapabilities`.
    CapabilitiesRevoked {
        /// How many of the tokens were live capabilities of the mailbox.
        revoked: u32,
    },
    /// Tickets issued blindly: the evaluated elements in order, one proof
    /// over all of them, and the signed ticket key to check it against.
    TicketsIssued {
        /// One evaluated element per blinded input.
        evaluated: Vec<[u8; 32]>,
        /// The batch proof (64 bytes).
        proof: Vec<u8>,
        /// The AS's ticket key.
        key: TicketKey,
    },
    /// A ticket was spent (or had been spent for this same request).
    Spent,
    /// Answers to a `Raft` node request, one per call, each opaque
    /// (an encoded openraft result).
    Raft(Vec<serde_bytes::ByteBuf>),
    /// Answer to `ShardStatus`.
    ShardStatus(Vec<super::ShardLine>),
}
