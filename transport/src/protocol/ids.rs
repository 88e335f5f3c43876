//! IDS protocol: groups, rosters and sends.
//!
//! The IDS never learns who the members are beyond their delivery
//! capabilities (opaque tokens and a shard hint) for the duration of one
//! fan-out, and never learns any identity or mailbox id. Keys in here are
//! derived by members from the MLS exporter:
//! - envelope key `K(r, e) = MLS-Exporter("mlsd envelope", token of r's capability, 32)`
//! - roster key `R(e) = MLS-Exporter("mlsd roster", "", 32)` (stored mode)
//! - epoch auth key `A(e) = MLS-Exporter("mlsd auth", "", 32)`

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::flat::Tags;
use super::ods::DeliveryCap;
use super::rules::{Admission, Rules};
use super::tickets::TicketKind;

/// Exporter label of envelope keys.
pub const EXPORT_ENVELOPE: &str = "mlsd envelope";
/// Exporter label of roster keys.
pub const EXPORT_ROSTER: &str = "mlsd roster";
/// Exporter label of epoch auth keys.
pub const EXPORT_AUTH: &str = "mlsd auth";

/// Exporter label of the SDS id of a group's data in an epoch (step 8).
pub const EXPORT_DATA_ID: &str = "mlsd group data id";
/// Exporter label of the key encrypting a group's data.
pub const EXPORT_DATA_KEY: &str = "mlsd group data key";
/// Exporter label of the write capability of a group's data blob.
pub const EXPORT_DATA_CAP: &str = "mlsd group data cap";

/// Most members a roster may list.
pub const MAX_ROSTER: usize = 20_000;

/// Most recipients a [`PartlySent`](super::Response::PartlySent) names one
/// by one (about 300 KB); the count covers the rest, so the answer stays
/// far below a frame even for the largest roster.
pub const MAX_UNDELIVERED_LISTED: usize = 8192;

/// Why one recipient's copy of a send was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Undeliverable {
    /// The ODS knows no such mailbox (never opened, or a bogus reference).
    UnknownMailbox,
    /// The mailbox holds its maximum of unacknowledged envelopes.
    MailboxFull,
    /// The sealed copy exceeds the largest envelope.
    TooLarge,
    /// The copy could not be sealed (e.g. a Welcome to an invalid HPKE key).
    Unsealable,
    /// The mailbox's ODS owner (or this copy's anonymizer) did not answer:
    /// a retry with the same message id may store it, and stores no other
    /// copy twice.
    Unavailable,
    /// The recipient's capability was never issued or was revoked by its
    /// owner: it does not take copies through it.
    NoCapability,
}

impl Undeliverable {
    /// Whether retrying the same send may store the copy.
    pub fn retryable(self) -> bool {
        matches!(self, Undeliverable::Unavailable | Undeliverable::MailboxFull)
    }
}

/// One recipient whose copy was not stored. Named by its capability, and
/// only to the sender, who knows the group's members anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undelivered {
    /// The recipient's capability (from the roster or the Welcome's copy list).
    pub cap: DeliveryCap,
    /// Why.
    pub reason: Undeliverable,
}

/// One recipient of a group in one epoch. Zeroized on drop: the envelope key
/// is what lets the IDS seal for this member.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct RosterEntry {
    /// The member's delivery capability in this group (from its leaf).
    pub cap: DeliveryCap,
    /// `K(r, e)`.
    pub key: [u8; 32],
}

impl std::fmt::Debug for RosterEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RosterEntry { .. }")
    }
}

/// How the IDS learns a group's recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RosterMode {
    /// The IDS keeps the roster encrypted under `R(e)`; each send carries `R(e)`.
    Stored,
    /// Every send carries the roster; the IDS keeps none.
    Client,
}

/// A roster encrypted under a roster key (XChaCha20-Poly1305, aad = group id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRoster {
    /// 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Encrypted `Vec<RosterEntry>`.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The recipients of one send: the roster key (stored mode) or the roster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipients {
    /// `R(e)` of the send's epoch.
    RosterKey([u8; 32]),
    /// The roster itself.
    Roster(Vec<RosterEntry>),
}

impl Drop for Recipients {
    fn drop(&mut self) {
        if let Recipients::RosterKey(k) = self {
            k.zeroize();
        }
    }
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipients::RosterKey(_) => f.write_str("RosterKey(..)"),
            Recipients::Roster(r) => write!(f, "Roster({} entries)", r.len()),
        }
    }
}

/// A Welcome for a new member, addressed by its mailbox reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeCopy {
    /// The capability of the new member's KeyPackage.
    pub cap: DeliveryCap,
    /// Its mailbox HPKE public key (X25519), to seal the Welcome to.
    pub hpke_key: Vec<u8>,
}

/// What comes with a commit, accepted or refused together with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitExtras {
    /// The MLS Welcome message (bytes), if the commit adds members.
    #[serde(with = "serde_bytes")]
    pub welcome: Option<Vec<u8>>,
    /// Where the Welcome goes.
    pub welcome_to: Vec<WelcomeCopy>,
    /// `A(e+1)`.
    pub next_auth_key: [u8; 32],
    /// The roster of epoch `e+1` sealed under `R(e+1)` (stored mode).
    pub next_roster: Option<SealedRoster>,
}

/// A message for a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBody {
    /// MLS group id.
    pub group: Vec<u8>,
    /// Random id chosen by the sender; a retry reuses it.
    pub message_id: [u8; 32],
    /// The MLS message (TLS-serialized `MlsMessageOut`).
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// Recipients for this send's epoch.
    pub recipients: Recipients,
    /// The sender's own capability in the group, which gets no copy.
    pub skip: Option<DeliveryCap>,
    /// Present exactly when `message` is a commit.
    pub commit: Option<CommitExtras>,
}

/// The MAC a send carries: keyed BLAKE3 under `A(e)` over everything in the
/// body except the recipients. The IDS holds `A(e)` too, so the tag convinces
/// the IDS that the sender knows the epoch secret but proves nothing to anyone else.
pub fn send_mac(auth_key: &[u8; 32], body: &SendBody) -> [u8; 32] {
    let bytes = crate::codec::encode(&(
        "mlsd/ids/send/v1",
        &body.group,
        &body.message_id,
        &body.message,
        &body.skip,
        &body.commit,
    ))
    .unwrap_or_default();
    *blake3::keyed_hash(auth_key, &bytes).as_bytes()
}

/// A request the IDS serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdsRequest {
    /// Register a group id (first come) with its epoch-0 auth key and, in
    /// stored mode, its roster sealed under `R(0)`.
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
    /// Fan a message out to a group's members (steps 5-6).
    Send {
        /// The message and its recipients (boxed: by far the largest request).
        body: Box<SendBody>,
        /// `send_mac(A(e), body)`.
        mac: [u8; 32],
    },
}

impl IdsRequest {
    /// Flat wire index of each variant (protocol version 1).
    pub(crate) const TAGS: Tags = &[10, 11];

    /// The rules of each IDS request ([`Rules`]); the group id picks the
    /// shard, and the sender retries a send itself.
    pub fn rules(&self) -> Rules<'_> {
        match self {
            IdsRequest::CreateGroup { group, .. } => {
                Rules::once(group).paid(TicketKind::Group).admit(Admission::CreateGroup)
            }
            IdsRequest::Send { body, .. } => Rules::once(&body.group).admit(Admission::Send),
        }
    }
}

/// What the IDS answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdsResponse {
    /// Answer to `CreateGroup`.
    GroupCreated,
    /// Answer to `Send`: every copy is durably enqueued.
    Sent {
        /// Copies enqueued (recipients plus Welcomes).
        copies: u32,
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

impl IdsResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[6, 7, 18];
}

/// Why the IDS refused a group request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum IdsError {
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
    /// this version answer `IdsResponse::PartlySent` instead, which says which
    /// recipients and why; clients still treat this one as retryable.)
    #[error("{failed} of {total} copies not enqueued")]
    Incomplete {
        /// Copies that failed.
        failed: u32,
        /// All copies.
        total: u32,
    },
}

impl IdsError {
    /// Flat wire index of each variant in [`super::WireError`].
    pub(crate) const TAGS: Tags = &[17, 18, 19, 20, 21, 22];
}
