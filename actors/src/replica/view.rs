//! The shard as role hosts see it: reads of its own keys ([`ShardView`]),
//! and [`ShardStore`], the one way a host makes its logic's writes durable:
//! proposed to the shard's Raft group and applied on a majority of replicas
//! before the host replies ([`crate::replica::machine`]), or written
//! straight to a local store ([`Local`]) where nothing is replicated (unit
//! tests, benchmarks of the logic alone).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mlsd_transport::protocol::ClusterError;
use mlsd_transport::WireError;

use super::ShardId;
use crate::storage::{Batch, Entries, Op, Space, Store, StoreError, View};

/// A boxed future, as the object-safe traits here return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a write or a read could not be confirmed. Every variant but
/// `Store` means "not here, not now": the request changed nothing, and the
/// same request again (at the leader) may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// This node does not lead the shard; `leader` is the one it knows of.
    #[error("not the leader of shard {shard}; leader is {leader:?}")]
    NotLeader {
        /// The shard.
        shard: String,
        /// The leader's name, if known.
        leader: Option<String>,
    },
    /// The decision was made on state of an earlier leadership term and was
    /// applied as nothing.
    #[error("shard {shard}: leadership changed while the request was decided")]
    Stale {
        /// The shard.
        shard: String,
    },
    /// No quorum answered in time, or Raft stopped.
    #[error("shard {shard} is unavailable: {why}")]
    Unavailable {
        /// The shard.
        shard: String,
        /// What failed.
        why: String,
    },
    /// The writes are larger than one entry may be
    /// ([`super::max_entry`]); nothing was proposed, and the same request
    /// fails the same way.
    #[error("shard {shard}: a write of {bytes} bytes exceeds the {max} bytes one entry may carry")]
    TooLarge {
        /// The shard.
        shard: String,
        /// The write's size ([`super::batch_size`]).
        bytes: usize,
        /// The most one entry may carry.
        max: usize,
    },
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] StoreErrorText),
}

/// A [`StoreError`]'s text (so that [`CommitError`] can be cloned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreErrorText(pub String);

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        CommitError::Store(StoreErrorText(e.to_string()))
    }
}

impl From<CommitError> for WireError {
    /// What a client is told: a shard without a leader (or that moved on
    /// under the request) is retryable; storage failures are internal.
    fn from(e: CommitError) -> Self {
        WireError::Cluster(match e {
            CommitError::NotLeader { shard, leader } => ClusterError::NotLeader { shard, leader },
            CommitError::Stale { shard } | CommitError::Unavailable { shard, .. } => {
                ClusterError::ShardUnavailable { shard }
            }
            CommitError::TooLarge { shard, bytes, max } => {
                ClusterError::EntryTooLarge { shard, bytes: bytes as u64, max: max as u64 }
            }
            CommitError::Store(e) => ClusterError::Internal(e.0),
        })
    }
}

/// Where a role host reads its shard's state and makes its decisions
/// durable. Reads ([`View`]) are of this replica's applied state; a host
/// first calls [`ShardStore::ready`], which confirms that this node leads
/// the shard and has applied everything earlier leaders committed, and
/// decides in the term it returns.
pub trait ShardStore: View {
    /// The shard, or `None` for a store that is not replicated.
    fn shard(&self) -> Option<ShardId>;

    /// Confirms leadership with the state complete; the term to decide in.
    fn ready(&self) -> BoxFuture<'_, Result<u64, CommitError>>;

    /// Makes `batch` durable on a majority and applied here, as decided in
    /// `term`. An empty batch only confirms, like [`ShardStore::confirm`].
    fn commit(&self, term: u64, batch: Batch) -> BoxFuture<'_, Result<(), CommitError>>;

    /// Confirms that this node still led the shard in `term` when the call
    /// was made: what a read answers only after (linearizable reads).
    fn confirm(&self, term: u64) -> BoxFuture<'_, Result<(), CommitError>>;

    /// The local store underneath, for what is not the shard's state
    /// (scans during start-up of this node's own records).
    fn local(&self) -> Arc<dyn Store>;
}

/// A shard that is not replicated: writes go straight to `store`. What the
/// role hosts' unit tests use, and any caller that runs role logic without
/// a cluster.
pub struct Local(pub Arc<dyn Store>);

impl View for Local {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(space, key)
    }
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.0.scan_from(space, prefix, start, limit)
    }
}

impl ShardStore for Local {
    fn shard(&self) -> Option<ShardId> {
        None
    }
    fn ready(&self) -> BoxFuture<'_, Result<u64, CommitError>> {
        Box::pin(async { Ok(0) })
    }
    fn commit(&self, _term: u64, batch: Batch) -> BoxFuture<'_, Result<(), CommitError>> {
        Box::pin(async move {
            if !batch.ops.is_empty() {
                self.0.write(batch)?;
            }
            Ok(())
        })
    }
    fn confirm(&self, _term: u64) -> BoxFuture<'_, Result<(), CommitError>> {
        Box::pin(async { Ok(()) })
    }
    fn local(&self) -> Arc<dyn Store> {
        self.0.clone()
    }
}

/// One shard's keys of the local store, with the shard prefix taken off:
/// role logic reads through it exactly as it would read an unsharded store.
pub struct ShardView {
    /// The node's storage.
    pub store: Arc<dyn Store>,
    /// The shard.
    pub shard: ShardId,
}

impl ShardView {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        [&self.shard.data_prefix()[..], key].concat()
    }
}

impl View for ShardView {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(space, &self.key(key))
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let rows = self.store.scan_from(space, &self.key(prefix), &self.key(start), limit)?;
        Ok(rows.into_iter().map(|(mut k, v)| (k.split_off(2), v)).collect())
    }
}

/// `batch` as it is stored for `shard`: every key of a role keyspace under
/// the shard's prefix. Writes outside the role keyspaces are not the
/// shard's and are dropped (role logic writes none).
pub fn prefixed(shard: ShardId, batch: Batch) -> Batch {
    let p = shard.data_prefix();
    let with = |k: Vec<u8>| [&p[..], &k].concat();
    let ops = batch
        .ops
        .into_iter()
        .filter(|op| match op {
            Op::Put { space, .. } | Op::Delete { space, .. } | Op::DeleteRange { space, .. } => {
                matches!(space, Space::Role(_))
            }
        })
        .map(|op| match op {
            Op::Put { space, key, value } => Op::Put { space, key: with(key), value },
            Op::Delete { space, key } => Op::Delete { space, key: with(key) },
            Op::DeleteRange { space, from, to } => {
                // An empty `to` is an empty range; keep it empty.
                let to = if to.is_empty() { with(from.clone()) } else { with(to) };
                Op::DeleteRange { space, from: with(from), to }
            }
        })
        .collect();
    Batch { ops }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStore;
    use mlsd_transport::Role;

    #[test]
    fn a_shard_reads_and_writes_only_its_own_keys() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let sp = Space::Role(Role::Ods);
        let a = ShardId { role: Role::Ods, index: 1 };
        let b = ShardId { role: Role::Ods, index: 2 };
        for (s, v) in [(a, b"a"), (b, b"b")] {
            let mut w = Batch::new();
            w.put(sp, b"m/x".to_vec(), v.to_vec());
            w.put(sp, b"m/y".to_vec(), v.to_vec());
            store.write(prefixed(s, w)).unwrap();
        }
        let va = ShardView { store: store.clone(), shard: a };
        assert_eq!(va.get(sp, b"m/x").unwrap().as_deref(), Some(&b"a"[..]));
        let rows = va.scan_prefix(sp, b"m/", 10).unwrap();
        assert_eq!(rows, vec![(b"m/x".to_vec(), b"a".to_vec()), (b"m/y".to_vec(), b"a".to_vec())]);
        let mut d = Batch::new();
        d.delete_prefix(sp, b"m/".to_vec());
        store.write(prefixed(a, d)).unwrap();
        assert!(va.scan_prefix(sp, b"m/", 10).unwrap().is_empty());
        let vb = ShardView { store, shard: b };
        assert_eq!(vb.scan_prefix(sp, b"m/", 10).unwrap().len(), 2, "the other shard is untouched");
    }
}
