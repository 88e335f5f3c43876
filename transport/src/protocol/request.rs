//! What a client may ask: one enum per role, and the liveness probe.
//!
//! Each role's requests are an enum of its own in that role's protocol
//! module, so its logic matches exactly those (the compiler lists every arm
//! a new request needs). On the wire, [`Request`] is the flat enum protocol
//! version 1 has always sent (see [`super::flat`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cs::CsRequest;
use super::flat::{self, Inner, Nested, Tags};
use super::ids::IdsRequest;
use super::ods::OdsRequest;
use super::r#as::AsRequest;
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

/// A request a client may send; every node accepts every variant and routes
/// it to the node that owns its shard key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Liveness and routing probe.
    Ping(Ping),
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

/// Flat wire index of [`Ping`].
const PING: Tags = &[0];

/// The groups of the flat enum, in the order `Nested::build` numbers them.
const GROUPS: &[Tags] =
    &[PING, AsRequest::TAGS, CsRequest::TAGS, IdsRequest::TAGS, OdsRequest::TAGS, SdsRequest::TAGS];

impl Request {
    /// The role that serves this request and the key that picks its owner
    /// (identity for AS/CS, group id for IDS, mailbox id for ODS, blob id for SDS).
    pub fn shard(&self) -> (Role, &[u8]) {
        match self {
            Request::Ping(p) => (p.role, &p.key),
            Request::As(r) => (Role::As, r.shard_key()),
            Request::Cs(r) => (Role::Cs, r.shard_key()),
            Request::Ids(r) => (Role::Ids, r.shard_key()),
            Request::Ods(r) => (Role::Ods, r.shard_key()),
            Request::Sds(r) => (Role::Sds, r.shard_key()),
        }
    }

    /// Whether serving the request twice has the effect of serving it once,
    /// so a node may send it again when the answer was lost: reads, and a
    /// mailbox's fetch and ack. The others are retried by their client,
    /// which knows whether the first attempt took effect.
    pub fn repeatable(&self) -> bool {
        match self {
            Request::Ping(_) => true,
            Request::As(r) => r.repeatable(),
            Request::Cs(r) => r.repeatable(),
            Request::Ids(r) => r.repeatable(),
            Request::Ods(r) => r.repeatable(),
            Request::Sds(r) => r.repeatable(),
        }
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "Request";
        match self {
            Request::Ping(p) => s.serialize_newtype_variant(NAME, PING[0], "Ping", p),
            Request::As(r) => flat::serialize(r, NAME, AsRequest::TAGS, s),
            Request::Cs(r) => flat::serialize(r, NAME, CsRequest::TAGS, s),
            Request::Ids(r) => flat::serialize(r, NAME, IdsRequest::TAGS, s),
            Request::Ods(r) => flat::serialize(r, NAME, OdsRequest::TAGS, s),
            Request::Sds(r) => flat::serialize(r, NAME, SdsRequest::TAGS, s),
        }
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        flat::deserialize(d, "Request", GROUPS, Build)
    }
}

/// Builds a [`Request`] from its group of [`GROUPS`].
struct Build;

impl<'de> Nested<'de, Request> for Build {
    fn build<V: serde::de::VariantAccess<'de>>(
        self,
        group: usize,
        inner: Inner<V>,
    ) -> Result<Request, V::Error> {
        Ok(match group {
            0 => Request::Ping(inner.into_variant().newtype_variant()?),
            1 => Request::As(AsRequest::deserialize(inner)?),
            2 => Request::Cs(CsRequest::deserialize(inner)?),
            3 => Request::Ids(IdsRequest::deserialize(inner)?),
            4 => Request::Ods(OdsRequest::deserialize(inner)?),
            _ => Request::Sds(SdsRequest::deserialize(inner)?),
        })
    }
}

flat::nested_from!(Request: Ping => Ping, AsRequest => As, CsRequest => Cs, IdsRequest => Ids,
    OdsRequest => Ods, SdsRequest => Sds);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_number_every_request_once() {
        let mut tags: Vec<u32> = GROUPS.iter().flat_map(|g| g.iter().copied()).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..24).collect::<Vec<_>>());
    }
}
