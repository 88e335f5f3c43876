//! ODS message bodies: mailboxes, envelopes and their delivery.
//!
//! A mailbox is a random 256-bit id with an Ed25519 authentication key; no
//! identity is attached. Requests on a mailbox are signed with its key over a
//! label, the body and a strictly increasing counter, so a captured request
//! cannot be replayed.

use serde::{Deserialize, Serialize};

/// A mailbox id: 32 random bytes chosen by the client that opens it.
pub type MailboxId = [u8; 32];

/// Largest sealed envelope the ODS stores, bytes.
pub const MAX_ENVELOPE: usize = 256 * 1024;

/// Label of [`MailboxAuth`] signatures on fetches.
pub const LABEL_FETCH: &str = "mlsd/ods/fetch/v1";
/// Label of [`MailboxAuth`] signatures on subscriptions.
pub const LABEL_SUBSCRIBE: &str = "mlsd/ods/subscribe/v1";
/// Label of [`MailboxAuth`] signatures on acks.
pub const LABEL_ACK: &str = "mlsd/ods/ack/v1";

/// The push endpoint of a mailbox, encrypted by the client under a push key
/// that the ODS never stores: XChaCha20-Poly1305, aad = mailbox id. The key
/// reaches the ODS with each enqueue item (from the recipient's mailbox
/// reference) and is dropped after the notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPush {
    /// 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Encrypted endpoint URL.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Proof that a request comes from the holder of a mailbox's auth key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxAuth {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// Must exceed every counter this mailbox used before (clients use Unix
    /// milliseconds), and be within the timestamp window of the server clock.
    pub counter: u64,
    /// Ed25519 signature over `signing_bytes(label, &(mailbox, counter, op))`.
    pub signature: Vec<u8>,
}

/// One envelope for one mailbox, as the IDS hands it to the ODS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueItem {
    /// Recipient mailbox.
    pub mailbox: MailboxId,
    /// `H(message id || mailbox id)`: the same copy enqueued twice is stored once.
    pub delivery_id: [u8; 32],
    /// The sealed, padded envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// The recipient's push key, to decrypt its push endpoint for one
    /// notification; never stored.
    pub push_key: Option<[u8; 32]>,
}

/// Outcome of one [`EnqueueItem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnqueueResult {
    /// Stored (or already stored) at this sequence number.
    Stored {
        /// Per-mailbox sequence number.
        seq: u64,
    },
    /// No such mailbox.
    UnknownMailbox,
    /// The mailbox holds its maximum of unacknowledged envelopes.
    MailboxFull,
    /// The envelope exceeds [`MAX_ENVELOPE`].
    TooLarge,
    /// This node does not own the mailbox.
    NotOwner,
}

/// A stored envelope handed to its mailbox's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Per-mailbox sequence number.
    pub seq: u64,
    /// The sealed envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}
