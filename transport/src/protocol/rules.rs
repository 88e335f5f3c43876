//! The rules of a client request, stated once per request beside its
//! definition (each role's `rules()`), so the entry node, the router, the
//! peer links and the client read the same answer: which shard serves it,
//! whether a node may send it again, what ticket it pays with and which
//! per-address limit it draws from.

use super::tickets::TicketKind;

/// What every layer needs to know of a client request, apart from serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules<'a> {
    /// The key that picks the shard of the request's role: identity for the
    /// AS and CS, group id for the IDS, mailbox shard hint for the ODS, blob
    /// id for the SDS.
    pub shard_key: &'a [u8],
    /// Whether serving the request twice has the effect of serving it once,
    /// so a node may send it again when the answer was lost (reads, and a
    /// mailbox's fetch and ack). The others are retried by their client,
    /// which knows whether the first attempt took effect.
    pub repeatable: bool,
    /// The quota ticket the request pays with (decision D12), if any: what
    /// creates something costly.
    pub ticket: Option<TicketKind>,
    /// Which of the entry node's per-address limits the request draws from.
    pub admission: Admission,
}

impl<'a> Rules<'a> {
    /// A request a node may repeat: free, no ticket.
    pub(crate) fn repeatable(shard_key: &'a [u8]) -> Self {
        Rules { shard_key, repeatable: true, ticket: None, admission: Admission::Free }
    }

    /// A request that must take effect once: only its client retries it.
    pub(crate) fn once(shard_key: &'a [u8]) -> Self {
        Rules { repeatable: false, ..Rules::repeatable(shard_key) }
    }

    /// The same rules, paid with a ticket of `kind`.
    pub(crate) fn paid(self, kind: TicketKind) -> Self {
        Rules { ticket: Some(kind), ..self }
    }

    /// The same rules, drawing from the entry node's limit `admission`.
    pub(crate) fn admit(self, admission: Admission) -> Self {
        Rules { admission, ..self }
    }
}

/// Which per-address limit of the entry node a client request draws from.
/// The node holds the limits; the request only names the one it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// None at the entry node: signed requests and reads its role bounds.
    Free,
    /// KeyPackage fetches, which consume another identity's KeyPackages.
    Fetch,
    /// Directory lookups, against scraping the AS.
    Lookup,
    /// A registration without a token or approval code, charged once
    /// answered when it was left pending approval (it shows in the devices
    /// of an identity that may not be the requester's): a stranger cannot
    /// flood an identity's pending queue from one address.
    Register,
    /// Mailbox creation: a mailbox needs no identity.
    OpenMailbox,
    /// Group creation: a group needs no identity.
    CreateGroup,
    /// A send, charged by the copies it makes once answered.
    Send,
    /// An upload of this many bytes.
    Upload(u64),
    /// Never from a client: only nodes name it (a paid fetch, named by its
    /// ticket at the entry node).
    NodesOnly,
}
