//! What a node answers: one enum per role beside that role's requests, the
//! node-to-node answers apart, and [`Response`] gathering them.
//!
//! On the wire, [`Response`] is the flat enum protocol version 1 has always
//! sent (see [`super::flat`]): clients and nodes read an answer without
//! knowing which role produced it.

use serde::{Deserialize, Serialize};

use super::cs::CsResponse;
use super::flat;
use super::ids::IdsResponse;
use super::node::NodeResponse;
use super::ods::OdsResponse;
use super::r#as::AsResponse;
use super::sds::SdsResponse;
use super::{Role, WireError};

/// Answer to [`super::Ping`]: who answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Name of the node whose role actor answered.
    pub node: String,
    /// The role that answered.
    pub role: Role,
}

flat::flat_enum! {
    /// What a node answers to a [`super::Request`] or a [`super::NodeRequest`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Response as "Response" + From {
        /// Answer to [`super::Request::Ping`].
        Pong(Pong) = 0,
        /// The request was refused or failed; nothing was changed.
        Error(WireError) = 1,
        /// The AS's answers.
        As(AsResponse),
        /// The CS's answers.
        Cs(CsResponse),
        /// The IDS's answers.
        Ids(IdsResponse),
        /// The ODS's answers to a mailbox's holder.
        Ods(OdsResponse),
        /// The SDS's answers.
        Sds(SdsResponse),
        /// Answers to node-to-node requests, never sent to a client.
        Node(NodeResponse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_number_every_response_once() {
        let mut tags: Vec<u32> = Response::GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..30).collect::<Vec<_>>());
    }
}
