//! What a node answers: one enum per role beside that role's requests, the
//! node-to-node answers apart, and [`Response`] gathering them.
//!
//! On the wire, [`Response`] is the flat enum protocol version 1 has always
//! sent (see [`super::flat`]): clients and nodes read an answer without
//! knowing which role produced it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cs::CsResponse;
use super::flat::{self, Inner, Nested, Tags};
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

/// What a node answers to a [`super::Request`] or a [`super::NodeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to [`super::Request::Ping`].
    Pong(Pong),
    /// The request was refused or failed; nothing was changed.
    Error(WireError),
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

/// Flat wire index of [`Pong`].
const PONG: Tags = &[0];
/// Flat wire index of [`Response::Error`].
const ERROR: Tags = &[1];

/// The groups of the flat enum, in the order `Nested::build` numbers them.
const GROUPS: &[Tags] = &[
    PONG,
    ERROR,
    AsResponse::TAGS,
    CsResponse::TAGS,
    IdsResponse::TAGS,
    OdsResponse::TAGS,
    SdsResponse::TAGS,
    NodeResponse::TAGS,
];

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "Response";
        match self {
            Response::Pong(p) => s.serialize_newtype_variant(NAME, PONG[0], "Pong", p),
            Response::Error(e) => s.serialize_newtype_variant(NAME, ERROR[0], "Error", e),
            Response::As(r) => flat::serialize(r, NAME, AsResponse::TAGS, s),
            Response::Cs(r) => flat::serialize(r, NAME, CsResponse::TAGS, s),
            Response::Ids(r) => flat::serialize(r, NAME, IdsResponse::TAGS, s),
            Response::Ods(r) => flat::serialize(r, NAME, OdsResponse::TAGS, s),
            Response::Sds(r) => flat::serialize(r, NAME, SdsResponse::TAGS, s),
            Response::Node(r) => flat::serialize(r, NAME, NodeResponse::TAGS, s),
        }
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        flat::deserialize(d, "Response", GROUPS, Build)
    }
}

/// Builds a [`Response`] from its group of [`GROUPS`].
struct Build;

impl<'de> Nested<'de, Response> for Build {
    fn build<V: serde::de::VariantAccess<'de>>(
        self,
        group: usize,
        inner: Inner<V>,
    ) -> Result<Response, V::Error> {
        Ok(match group {
            0 => Response::Pong(inner.into_variant().newtype_variant()?),
            1 => Response::Error(inner.into_variant().newtype_variant()?),
            2 => Response::As(AsResponse::deserialize(inner)?),
            3 => Response::Cs(CsResponse::deserialize(inner)?),
            4 => Response::Ids(IdsResponse::deserialize(inner)?),
            5 => Response::Ods(OdsResponse::deserialize(inner)?),
            6 => Response::Sds(SdsResponse::deserialize(inner)?),
            _ => Response::Node(NodeResponse::deserialize(inner)?),
        })
    }
}

flat::nested_from!(Response: Pong => Pong, WireError => Error, AsResponse => As,
    CsResponse => Cs, IdsResponse => Ids, OdsResponse => Ods, SdsResponse => Sds,
    NodeResponse => Node);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_number_every_response_once() {
        let mut tags: Vec<u32> = GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..28).collect::<Vec<_>>());
    }
}
