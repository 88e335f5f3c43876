//! ODS protocol: mailboxes, envelopes and their delivery.
//!
//! A mailbox is a random 256-bit id with an Ed25519 authentication key; no
//! identity is attached. Requests on a mailbox are signed with its key over a
//! label, the body and a strictly increasing counter, so a captured request
//! cannot be replayed.
//!
//! Nobody delivers to a mailbox by its id: a copy reaches it only with a
//! [`DeliveryCap`] its owner had the ODS issue, one per KeyPackage (and so
//! per group membership), which the owner can revoke. KeyPackages and
//! rosters carry capabilities, never mailbox ids (decision D10).

use serde::{Deserialize, Serialize};

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::flat::Tags;
use super::rules::{Admission, Rules};
use super::tickets::TicketKind;

/// A mailbox id: 32 random bytes chosen by the client that opens it.
pub type MailboxId = [u8; 32];

/// Which ODS shard holds a mailbox: the first two bytes of its random id.
/// Every request on a mailbox, and every copy for it, is routed by this
/// alone, so a capability can say where to go without naming the mailbox
/// (it tells one mailbox from about 1 in 65,536 others).
pub type ShardHint = [u8; 2];

/// The [`ShardHint`] of `mailbox`.
pub fn shard_of(mailbox: &MailboxId) -> ShardHint {
    [mailbox[0], mailbox[1]]
}

/// What a sender must present for a copy to reach a mailbox: a random
/// bearer token the mailbox owner had the ODS issue ([`OdsRequest::IssueCapabilities`]),
/// with its shard hint. The ODS keeps only `H(token)` and, sealed under a
/// key derived from the token, the mailbox it names, so neither the token's
/// holders nor the ODS's disk alone link it to a mailbox. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct DeliveryCap {
    /// Routes the copy to the mailbox's ODS owner.
    pub shard: ShardHint,
    /// The secret token.
    pub token: [u8; 32],
}

impl DeliveryCap {
    /// The legacy capability of a mailbox opened before capabilities: its
    /// id is the token. Rosters and mailbox references of that time are
    /// upgraded to it when read.
    pub fn legacy(mailbox: &MailboxId) -> DeliveryCap {
        DeliveryCap { shard: shard_of(mailbox), token: *mailbox }
    }
}

impl std::fmt::Debug for DeliveryCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeliveryCap {{ shard: {:02x}{:02x}, .. }}", self.shard[0], self.shard[1])
    }
}

/// Most tokens one [`OdsRequest::IssueCapabilities`] or
/// [`OdsRequest::RevokeCapabilities`] may carry.
pub const MAX_CAPS_PER_REQUEST: usize = 128;

/// Largest sealed envelope the ODS stores, bytes.
pub const MAX_ENVELOPE: usize = 256 * 1024;

/// Encoding overhead of one [`Delivered`] in a page beyond its envelope's
/// bytes: the sequence number, the capability serial and the envelope's
/// length, each a varint of at most 9 bytes, rounded up.
pub const DELIVERED_OVERHEAD: usize = 32;

/// Encoding overhead of a page's frame beyond its envelopes: the frame's
/// version, the response and vector tags and lengths, rounded up.
pub const PAGE_OVERHEAD: usize = 64;

/// Largest response frame every client accepts. A node never sends a page
/// of envelopes larger than this, whatever its own `max_frame`, so a client
/// built with the default limit reads every page.
pub const CLIENT_MAX_RESPONSE: u32 = crate::limits::DEFAULT_MAX_FRAME;

/// Bytes of envelopes (with their [`DELIVERED_OVERHEAD`]) one page of a
/// fetch or subscription may hold, for a node whose frames are at most
/// `max_frame`: what fits in both that limit and [`CLIENT_MAX_RESPONSE`].
pub fn page_budget(max_frame: u32) -> usize {
    (max_frame.min(CLIENT_MAX_RESPONSE) as usize).saturating_sub(PAGE_OVERHEAD)
}

/// The bytes `d` takes in a page.
pub fn page_cost(d: &Delivered) -> usize {
    d.envelope.len() + DELIVERED_OVERHEAD
}

/// Smallest `max_frame` a node may be configured with: one page must hold
/// the largest envelope, so every stored envelope can be delivered.
pub const MIN_FRAME_FOR_ENVELOPES: u32 = (MAX_ENVELOPE + DELIVERED_OVERHEAD + PAGE_OVERHEAD) as u32;

// Every client can read a page holding the largest envelope.
const _: () = assert!(MIN_FRAME_FOR_ENVELOPES < CLIENT_MAX_RESPONSE);

/// The bytes left in one page being filled: the one rule for what a page
/// may hold, shared by the ODS's fetch and the node's live pushes.
pub struct PageRoom {
    left: usize,
    empty: bool,
}

impl PageRoom {
    /// An empty page of `budget` bytes (see [`page_budget`]).
    pub fn new(budget: usize) -> Self {
        PageRoom { left: budget, empty: true }
    }

    /// Takes `d` into the page if it fits; the first envelope always does
    /// (one larger than the budget on its own gets a page of its own; the
    /// config check makes that impossible).
    pub fn take(&mut self, d: &Delivered) -> bool {
        let cost = page_cost(d);
        if !self.empty && cost > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(cost);
        self.empty = false;
        true
    }
}

/// Splits envelopes into pages of at most `budget` bytes each (see
/// [`PageRoom`]), in order.
pub fn into_pages(items: Vec<Delivered>, budget: usize) -> Vec<Vec<Delivered>> {
    let mut pages = Vec::new();
    let mut page: Vec<Delivered> = Vec::new();
    let mut room = PageRoom::new(budget);
    for d in items {
        if !room.take(&d) {
            pages.push(std::mem::take(&mut page));
            room = PageRoom::new(budget);
            room.take(&d);
        }
        page.push(d);
    }
    if !page.is_empty() {
        pages.push(page);
    }
    pages
}

/// Label of [`MailboxAuth`] signatures on fetches.
pub const LABEL_FETCH: &str = "mlsd/ods/fetch/v1";
/// Label of [`MailboxAuth`] signatures on subscriptions.
pub const LABEL_SUBSCRIBE: &str = "mlsd/ods/subscribe/v1";
/// Label of [`MailboxAuth`] signatures on acks.
pub const LABEL_ACK: &str = "mlsd/ods/ack/v1";
/// Label of [`MailboxAuth`] signatures on capability issuance.
pub const LABEL_ISSUE: &str = "mlsd/ods/issue/v1";
/// Label of [`MailboxAuth`] signatures on capability revocation.
pub const LABEL_REVOKE: &str = "mlsd/ods/revoke/v1";

/// The push endpoint of a mailbox, encrypted by the client under a push key
/// that the ODS never stores in the clear: XChaCha20-Poly1305, aad = mailbox
/// id. The key is sealed inside each capability's record at the ODS under a
/// key only the capability's token gives, so the ODS reads it only when a
/// copy arrives with a token, and drops it after the notification.
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
    /// The recipient's capability: names (to the ODS only) the mailbox.
    pub cap: DeliveryCap,
    /// `H(message id || token)`: the same copy enqueued twice is stored once.
    pub delivery_id: [u8; 32],
    /// The sealed, padded envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
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
    /// The capability was never issued, or its owner revoked it.
    NoCapability,
    /// The node that was sent the copy does not lead the mailbox's shard;
    /// `leader` is the leader it knows of, so the sender can go there at
    /// once instead of guessing again (a leader hint learned on the
    /// delivery path, as `NotLeader` teaches it on the request path).
    NotLeader {
        /// The shard's leader as the answering node knows it, if any.
        leader: Option<String>,
    },
}

/// A stored envelope handed to its mailbox's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Per-mailbox sequence number.
    pub seq: u64,
    /// Serial of the capability the copy came with (0: stored before
    /// capabilities), so the owner can tell which one a spammer uses and
    /// revoke it.
    pub via: u64,
    /// The sealed envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// A request the ODS serves for a mailbox's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OdsRequest {
    /// Create a mailbox with id `mailbox` (random, chosen by the client),
    /// authenticated by `auth_key`; no identity is involved.
    OpenMailbox {
        /// The new mailbox's id.
        mailbox: MailboxId,
        /// Ed25519 key that must sign fetches and acks.
        auth_key: Vec<u8>,
        /// The push endpoint, encrypted under the client's push key.
        push: Option<SealedPush>,
    },
    /// Envelopes of a mailbox after sequence number `after`.
    Fetch {
        /// Signed by the mailbox key (label `mlsd/ods/fetch/v1`, op = `(after, limit)`).
        auth: MailboxAuth,
        /// Return envelopes with a larger sequence number.
        after: u64,
        /// At most this many (capped by the server).
        limit: u32,
    },
    /// Keep this stream open and push envelopes on it as they arrive. The
    /// first response frame holds the envelopes after `after` (at most a
    /// fetch page; fetch the rest if it is full), every later frame new ones.
    Subscribe {
        /// Signed by the mailbox key (label `mlsd/ods/subscribe/v1`, op = `after`).
        auth: MailboxAuth,
        /// Resume after this sequence number.
        after: u64,
    },
    /// Delete every envelope up to and including `up_to`.
    Ack {
        /// Signed by the mailbox key (label `mlsd/ods/ack/v1`, op = `up_to`).
        auth: MailboxAuth,
        /// Highest acknowledged sequence number.
        up_to: u64,
    },
    /// Issue delivery capabilities for this mailbox: one per token (random,
    /// chosen by the client, at most [`MAX_CAPS_PER_REQUEST`]). Answered by
    /// each token's serial, in order; a token issued before to this mailbox
    /// keeps its serial, so a retry is harmless.
    IssueCapabilities {
        /// Signed by the mailbox key (label `mlsd/ods/issue/v1`, op = `(tokens, push_key)`).
        auth: MailboxAuth,
        /// The new capabilities' tokens.
        tokens: Vec<[u8; 32]>,
        /// The push key the ODS needs to read the push endpoint when a copy
        /// comes with one of these; sealed with each under its token.
        push_key: Option<[u8; 32]>,
    },
    /// Revoke capabilities of this mailbox (at most
    /// [`MAX_CAPS_PER_REQUEST`]); tokens that are not this mailbox's live
    /// ones are skipped.
    RevokeCapabilities {
        /// Signed by the mailbox key (label `mlsd/ods/revoke/v1`, op = `tokens`).
        auth: MailboxAuth,
        /// The tokens.
        tokens: Vec<[u8; 32]>,
    },
}

/// A mailbox's [`ShardHint`], as a shard key.
fn hint(mailbox: &MailboxId) -> &[u8] {
    &mailbox[..2]
}

impl OdsRequest {
    /// Flat wire index of each variant (protocol version 1).
    pub(crate) const TAGS: Tags = &[6, 7, 8, 9, 20, 21];

    /// The rules of each mailbox request ([`Rules`]); the mailbox's
    /// [`ShardHint`] picks the shard. A second fetch or ack changes nothing
    /// (it is refused as a replay, and the client signs anew).
    pub fn rules(&self) -> Rules<'_> {
        match self {
            OdsRequest::OpenMailbox { mailbox, .. } => {
                Rules::once(hint(mailbox)).paid(TicketKind::Mailbox).admit(Admission::OpenMailbox)
            }
            OdsRequest::Fetch { auth, .. } | OdsRequest::Ack { auth, .. } => {
                Rules::repeatable(hint(&auth.mailbox))
            }
            OdsRequest::Subscribe { auth, .. }
            | OdsRequest::IssueCapabilities { auth, .. }
            | OdsRequest::RevokeCapabilities { auth, .. } => Rules::once(hint(&auth.mailbox)),
        }
    }
}

/// What the ODS answers a mailbox's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OdsResponse {
    /// Answer to `OpenMailbox`.
    MailboxOpened,
    /// Answer to `Fetch`, in sequence order.
    Envelopes(Vec<Delivered>),
    /// Answer to `Ack`: envelopes still queued.
    Acked {
        /// Envelopes left in the mailbox.
        remaining: u32,
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
}

impl OdsResponse {
    /// Flat wire index of each variant in [`super::Response`].
    pub(crate) const TAGS: Tags = &[11, 12, 13, 22, 23];
}

/// Why the ODS refused a mailbox request (besides the shared reasons of
/// [`super::AuthError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OdsError {
    /// No mailbox with this id.
    #[error("unknown mailbox")]
    UnknownMailbox,
    /// A mailbox with this id exists already (pick another random id).
    #[error("mailbox id taken")]
    MailboxTaken,
    /// The mailbox holds its maximum of live capabilities: revoke some first.
    #[error("the mailbox has {live} live capabilities, its maximum")]
    TooManyCapabilities {
        /// Live capabilities.
        live: u32,
    },
    /// A token is another mailbox's capability (pick other random tokens).
    #[error("capability token taken")]
    TokenTaken,
}

impl OdsError {
    /// Flat wire index of each variant in [`super::WireError`].
    pub(crate) const TAGS: Tags = &[26, 27, 33, 34];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Response, ResponseFrame};

    fn page_of(n: usize, size: usize) -> Vec<Delivered> {
        (0..n)
            .map(|i| Delivered { seq: u64::MAX - i as u64, via: u64::MAX, envelope: vec![7; size] })
            .collect()
    }

    #[test]
    fn a_full_page_of_the_largest_envelopes_fits_the_client_limit() {
        // Worst case for the overheads: huge sequence numbers, many small
        // envelopes, and the largest envelope alone.
        for size in [0, 1, 100, 4096, 40_000, MAX_ENVELOPE] {
            let budget = page_budget(crate::limits::ABSOLUTE_MAX_FRAME);
            for page in into_pages(page_of(budget / (size + DELIVERED_OVERHEAD) + 3, size), budget)
            {
                let bytes = crate::codec::encode(&ResponseFrame::new(Response::Ods(
                    OdsResponse::Envelopes(page),
                )))
                .unwrap();
                assert!(bytes.len() <= CLIENT_MAX_RESPONSE as usize, "{size}: {}", bytes.len());
            }
        }
    }

    #[test]
    fn pages_keep_order_and_lose_nothing() {
        let items = page_of(50, 30_000);
        let pages = into_pages(items.clone(), page_budget(1 << 20));
        assert!(pages.len() > 1);
        assert_eq!(pages.concat(), items);
    }
}
