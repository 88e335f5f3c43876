//! Replicated shards (decision D13): each role's keyspace is split into a
//! fixed number of shards, and each shard is one Raft group (openraft) whose
//! voters keep a full copy in their own RocksDB.
//!
//! The shard's leader runs the role logic and proposes the write batch the
//! logic decided ([`ShardWrite`]) as one log entry; every voter applies
//! committed entries to its storage. Followers therefore never run role
//! logic, and a rolling upgrade that changes logic cannot make replicas
//! disagree.
//!
//! # Layout
//! - this file: the type configuration, shard ids and how a shard's keys are
//!   laid out in storage.
//! - [`log`]: the Raft log, vote and log state of one shard, in the `raft`
//!   column family.
//! - [`machine`]: the state machine: applies committed batches under the
//!   shard's key prefix, and builds and installs snapshots as files.
//! - [`view`]: the shard as role logic sees it: a [`View`](crate::View) of
//!   its own keys only, and [`ShardStore`], where decided writes go.
//! - [`file`]: snapshot files as openraft moves them.
//! - [`shard`]: [`RaftShard`], the [`ShardStore`] of a replicated shard.
//! - [`recovery`]: the rule that keeps a replica restarted empty from
//!   voting before it holds what its peers had.
//! - [`runtime`]: openraft's runtime (tokio, with seedable elections).
//! - [`unsafe_recovery`]: the operator's way out when a majority of a
//!   shard's voters is gone for good.
//! - [`sim`]: a deterministic simulation of a shard's replicas: seeded
//!   message loss, delays, partitions, crashes and disk wipes.

pub mod file;
pub mod log;
pub mod machine;
pub mod recovery;
pub mod runtime;
pub mod shard;
pub mod sim;
pub mod unsafe_recovery;
pub mod view;

use std::fmt;

use mlsd_transport::Role;
use serde::{Deserialize, Serialize};

use crate::storage::Batch;

pub use shard::RaftShard;
pub use view::{CommitError, Local, ShardStore, ShardView};

/// Bytes a frame needs beside one entry: the RPC's own fields, the entry's
/// log id and the frame's header.
pub const ENTRY_MARGIN: usize = 16 * 1024;

/// Most bytes one replicated entry may carry on a node whose frames are at
/// most `max_frame`: an append of one entry goes alone, in one frame. A
/// larger write is refused before it is proposed ([`CommitError::TooLarge`]);
/// proposed, no follower could ever receive it, and the shard would stall.
pub fn max_entry(max_frame: u32) -> usize {
    (max_frame as usize).saturating_sub(ENTRY_MARGIN)
}

/// `batch`'s encoded size, from above: its keys and values and at most 16
/// bytes of tags and lengths per operation. What bounds every merge that
/// ends in one entry (the ODS's coalescer) and every append.
pub fn batch_size(batch: &Batch) -> usize {
    use crate::storage::Op;
    let op = |op: &Op| match op {
        Op::Put { key, value, .. } => key.len() + value.len() + 16,
        Op::Delete { key, .. } => key.len() + 16,
        Op::DeleteRange { from, to, .. } => from.len() + to.len() + 16,
    };
    batch.ops.iter().map(op).sum::<usize>() + 64
}

/// A node's Raft id: derived from its name, so that every node computes the
/// same id for every other from cluster.toml alone.
pub type NodeId = u64;

/// The id of the node named `name`.
pub fn node_id(name: &str) -> NodeId {
    let h = blake3::derive_key("mlsd/raft/node-id/v1", name.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("blake3 gives 32 bytes"))
}

/// What Raft stores about a voter: its name, which the node's peer
/// connections resolve to an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name in cluster.toml.
    pub name: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// One log entry's payload: the writes the leader's role logic decided, and
/// the term the leader's state was loaded in. An entry whose log term is not
/// `term` was decided on state that another leader may have changed since
/// (this node lost and regained leadership in between): every replica
/// applies it as nothing, and the host answers a retryable error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardWrite {
    /// Term of the leadership the decision was made in.
    pub term: u64,
    /// The writes, in the role's keyspace without the shard prefix.
    pub batch: Batch,
}

/// What applying one entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// False when the entry was decided in another term and applied as nothing.
    pub written: bool,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for mlsd's shards.
    pub ShardConfig:
        D = ShardWrite,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<ShardConfig>,
        SnapshotData = file::SnapshotFile,
        AsyncRuntime = runtime::ShardRuntime,
);

/// A shard's Raft handle.
pub type ShardRaft = openraft::Raft<ShardConfig>;

/// Most shards a role may have: the shard index is two bytes in every key.
pub const MAX_SHARDS: u32 = 1 << 12;

/// One shard: a role and the index of a slice of its keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId {
    /// The role.
    pub role: Role,
    /// Which slice of the role's keyspace.
    pub index: u16,
}

impl ShardId {
    /// The cluster's own Raft group, which holds the cluster map (members
    /// and each shard's voters, `mlsd_node::shards::map`). An index no
    /// role's shard has ([`MAX_SHARDS`] bounds them), so its keys (in the
    /// AS keyspace, under a prefix no AS shard uses) and its log share the
    /// shards' storage, snapshots, network and rebuild rules unchanged.
    pub const CLUSTER: ShardId = ShardId { role: Role::As, index: u16::MAX };

    /// Whether this is the cluster's own group rather than a role's shard.
    pub fn is_cluster(self) -> bool {
        self == ShardId::CLUSTER
    }

    /// The shard of `key` (a request's shard key) among `shards` of `role`.
    pub fn of(role: Role, key: &[u8], shards: u32) -> ShardId {
        let h = blake3::derive_key("mlsd/shard/v1", key);
        let x = u64::from_be_bytes(h[..8].try_into().expect("blake3 gives 32 bytes"));
        ShardId { role, index: (x % u64::from(shards.max(1))) as u16 }
    }

    /// Every shard of `role` when it has `shards`.
    pub fn all(role: Role, shards: u32) -> impl Iterator<Item = ShardId> {
        (0..shards.min(MAX_SHARDS) as u16).map(move |index| ShardId { role, index })
    }

    /// The prefix of this shard's keys in its role's column family.
    pub fn data_prefix(self) -> [u8; 2] {
        self.index.to_be_bytes()
    }

    /// The prefix of this shard's keys in the `raft` column family.
    pub fn raft_prefix(self) -> [u8; 3] {
        let [a, b] = self.index.to_be_bytes();
        [role_byte(self.role), a, b]
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_cluster() {
            return f.write_str("cluster");
        }
        write!(f, "{}/{}", self.role, self.index)
    }
}

fn role_byte(role: Role) -> u8 {
    Role::ALL.iter().position(|r| *r == role).unwrap_or(0) as u8
}

/// A storage error as openraft takes it.
pub(crate) fn io_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::fmt::Display,
) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_shards_and_ids_are_stable() {
        let mut counts = [0u32; 4];
        for i in 0..4000u32 {
            let s = ShardId::of(Role::Ods, &i.to_be_bytes(), 4);
            counts[s.index as usize] += 1;
            assert_eq!(s, ShardId::of(Role::Ods, &i.to_be_bytes(), 4));
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_ne!(node_id("n1"), node_id("n2"));
        assert_eq!(ShardId::of(Role::As, b"x", 1).index, 0);
    }
}

/// openraft's own conformance suite run against the shard log and state
/// machine, on the in-memory store and a temporary snapshot dir.
#[cfg(test)]
mod suite {
    use std::sync::Arc;

    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::log::ShardLog;
    use super::machine::ShardMachine;
    use super::{NodeId, ShardConfig, ShardId};
    use crate::storage::MemStore;
    use mlsd_transport::Role;

    struct Builder;

    impl StoreBuilder<ShardConfig, ShardLog, ShardMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, ShardLog, ShardMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Arc::new(MemStore::new());
            let shard = ShardId { role: Role::Ods, index: 3 };
            let log = ShardLog::new(store.clone(), shard);
            let sm = ShardMachine::open(store, shard, dir.path()).await?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn the_shard_store_passes_openraft_s_suite() {
        Suite::test_all(Builder).unwrap();
    }
}
