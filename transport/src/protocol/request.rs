//! What a client may ask: one enum per role, and the liveness probe.
//!
//! Each role's requests are an enum of its own in that role's protocol
//! module, so its logic matches exactly those (the compiler lists every arm
//! a new request needs). On the wire, [`Request`] is the flat enum protocol
//! version 1 has always sent (see [`super::flat`]).

use serde::{Deserialize, Serialize};

use super::cs::CsRequest;
use super::flat;
use super::ids::IdsRequest;
use super::ods::OdsRequest;
use super::r#as::AsRequest;
use super::rules::Rules;
use super::sds::SdsRequest;
use super::Role;

/// Liveness and routing probe: answered by the owner of `key` among the
/// nodes hosting `role`, which names itself in the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// The role whose actor should answer.
    pub role: Role,
    /// Shard key; the same key always reaches the same owner.
    pub key: Vec<u8>,
}

flat::flat_enum! {
    /// A request a client may send; every node accepts every variant and routes
    /// it to the node that owns its shard key.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Request as "Request" + From {
        /// Liveness and routing probe.
        Ping(Ping) = 0,
        /// Identities and their signature keys.
        As(AsRequest),
        /// The KeyPackage directory.
        Cs(CsRequest),
        /// Groups and sends.
        Ids(IdsRequest),
        /// Mailboxes.
        Ods(OdsRequest),
        /// Blobs.
        Sds(SdsRequest),
    }
}

impl Request {
    /// The role that serves this request.
    pub fn role(&self) -> Role {
        match self {
            Request::Ping(p) => p.role,
            Request::As(_) => Role::As,
            Request::Cs(_) => Role::Cs,
            Request::Ids(_) => Role::Ids,
            Request::Ods(_) => Role::Ods,
            Request::Sds(_) => Role::Sds,
        }
    }

    /// The request's rules, as its role states them beside it; a ping is
    /// free and repeatable, and reaches the owner of its key.
    pub fn rules(&self) -> Rules<'_> {
        match self {
            Request::Ping(p) => Rules::repeatable(&p.key),
            Request::As(r) => r.rules(),
            Request::Cs(r) => r.rules(),
            Request::Ids(r) => r.rules(),
            Request::Ods(r) => r.rules(),
            Request::Sds(r) => r.rules(),
        }
    }

    /// The role that serves this request and the key that picks its shard
    /// ([`Rules::shard_key`]).
    pub fn shard(&self) -> (Role, &[u8]) {
        (self.role(), self.rules().shard_key)
    }

    /// See [`Rules::repeatable`].
    pub fn repeatable(&self) -> bool {
        self.rules().repeatable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_number_every_request_once() {
        let mut tags: Vec<u32> = Request::GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn what_creates_something_costly_pays_a_ticket_and_is_limited_per_address() {
        use super::super::rules::Admission;
        use super::super::tickets::TicketKind;
        use super::super::{MailboxAuth, RosterMode};
        let costly = [
            (
                Request::Cs(CsRequest::FetchKeyPackages { identity: "bob".into() }),
                TicketKind::Fetch,
            ),
            (
                Request::Ods(OdsRequest::OpenMailbox {
                    mailbox: [1; 32],
                    auth_key: vec![],
                    push: None,
                }),
                TicketKind::Mailbox,
            ),
            (
                Request::Ids(IdsRequest::CreateGroup {
                    group: vec![1],
                    mode: RosterMode::Stored,
                    auth_key: [0; 32],
                    roster: None,
                }),
                TicketKind::Group,
            ),
            (
                Request::Sds(SdsRequest::PutBlob {
                    id: [1; 32],
                    cap: [2; 32],
                    offset: 0,
                    total: 3,
                    data: vec![1, 2, 3],
                }),
                TicketKind::Blob,
            ),
        ];
        for (r, kind) in costly {
            let rules = r.rules();
            assert_eq!(rules.ticket, Some(kind), "{r:?}");
            assert!(!rules.repeatable, "{r:?}");
            assert_ne!(rules.admission, Admission::Free, "{r:?}");
        }
        let auth = MailboxAuth { mailbox: [7; 32], counter: 1, signature: vec![] };
        let fetch = Request::Ods(OdsRequest::Fetch { auth, after: 0, limit: 1 });
        assert_eq!(fetch.rules().ticket, None);
        assert_eq!(fetch.shard(), (Role::Ods, &[7u8, 7][..]));
        let paid = Request::Cs(CsRequest::FetchPaid { identity: "bob".into(), paid: [0; 32] });
        assert_eq!(
            paid.rules().admission,
            Admission::NodesOnly,
            "clients cannot name a paid fetch"
        );
    }
}
