//! Quota tickets on the wire (decision D12): the AS issues each identity a
//! daily allowance of anonymous tickets per kind; a request that creates
//! something costly (a KeyPackage fetch, a mailbox, a group, a blob chunk)
//! spends one at its entry node. The crypto is in [`crate::ticket`].

use serde::{Deserialize, Serialize};

use super::Request;

/// Bytes of a ticket's PRF output (SHA-512).
pub const OUTPUT_LEN: usize = 64;
/// Most tickets one `IssueTickets` asks for.
pub const MAX_TICKETS_PER_REQUEST: usize = 64;
/// Label of [`TicketBody`] signatures.
pub const LABEL_TICKETS: &str = "mlsd/as/tickets/v1";
/// Label of the AS's signature over its ticket key.
pub const LABEL_TICKET_KEY: &str = "mlsd/as/ticket-key/v1";
/// Seconds in a ticket day.
pub const DAY_SECS: u64 = 24 * 3600;

/// What a ticket pays for; each kind has an allowance of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TicketKind {
    /// One `FetchKeyPackages` (the requester's budget; the target's is
    /// counted at its CS owner).
    Fetch,
    /// One `OpenMailbox`.
    Mailbox,
    /// One `CreateGroup`.
    Group,
    /// One `PutBlob` chunk (at most `MAX_CHUNK` bytes).
    Blob,
}

impl TicketKind {
    /// Every kind.
    pub const ALL: [TicketKind; 4] =
        [TicketKind::Fetch, TicketKind::Mailbox, TicketKind::Group, TicketKind::Blob];

    /// Name in config keys, errors and the client's wallet.
    pub fn name(self) -> &'static str {
        match self {
            TicketKind::Fetch => "fetch",
            TicketKind::Mailbox => "mailbox",
            TicketKind::Group => "group",
            TicketKind::Blob => "blob",
        }
    }
}

impl std::fmt::Display for TicketKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The PRF's public info for `(kind, day)`: a ticket is only good for the
/// kind and day it was issued for.
pub fn info(kind: TicketKind, day: u32) -> Vec<u8> {
    let mut i = b"mlsd ticket v1".to_vec();
    i.push(kind as u8);
    i.extend_from_slice(&day.to_be_bytes());
    i
}

/// The ticket day of a Unix time in seconds.
pub fn day_of(unix_secs: u64) -> u32 {
    (unix_secs / DAY_SECS).min(u64::from(u32::MAX)) as u32
}

/// One anonymous ticket: good once, for its kind, on its day and the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// What it pays for.
    pub kind: TicketKind,
    /// The day it was issued for ([`day_of`]).
    pub day: u32,
    /// The random input the client chose (and blinded when it was issued).
    pub input: [u8; 32],
    /// The PRF output under the AS's ticket key ([`OUTPUT_LEN`] bytes).
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
}

impl Ticket {
    /// What names the request a ticket paid for, among all requests: its
    /// BLAKE3 (a ticket is spent once, for one request).
    pub fn id(&self) -> [u8; 32] {
        let bytes = crate::codec::encode(self).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
}

/// A device's request for tickets; signed by its bound key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketBody {
    /// The asking client (its identity's allowance is charged).
    pub client: String,
    /// The kind wanted.
    pub kind: TicketKind,
    /// The day they are for: today by the AS's clock.
    pub day: u32,
    /// Blinded ticket inputs, at most [`MAX_TICKETS_PER_REQUEST`].
    pub blinded: Vec<[u8; 32]>,
    /// Unix seconds.
    pub timestamp: u64,
}

/// The AS's ticket key, signed by the AS key so a client knows the key its
/// proofs are checked against is the AS's (and, since the key is derived
/// from the AS key, the same for every client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketKey {
    /// The ristretto255 public key.
    pub key: [u8; 32],
    /// Ed25519 signature by the AS key over `signing_bytes(LABEL_TICKET_KEY, &key)`.
    pub signature: Vec<u8>,
}

/// What a spent ticket is bound to: the request it paid for, so a client
/// that sends the same request again (its answer was lost) spends nothing
/// twice, and a ticket cannot pay for two different requests.
pub fn bind(req: &Request) -> [u8; 32] {
    let bytes = crate::codec::encode(req).unwrap_or_default();
    blake3::derive_key("mlsd ticket binding v1", &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_differs_by_kind_and_day() {
        let all: std::collections::HashSet<Vec<u8>> =
            TicketKind::ALL.iter().flat_map(|k| [info(*k, 1), info(*k, 2)]).collect();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn days_start_at_midnight_utc() {
        assert_eq!(day_of(DAY_SECS - 1), 0);
        assert_eq!(day_of(DAY_SECS), 1);
    }
}
