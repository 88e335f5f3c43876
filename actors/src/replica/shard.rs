//! [`RaftShard`]: a shard this node replicates, as its role host uses it.
//! Reads are of this replica's applied state; writes are proposed to the
//! shard's Raft group and answered once committed and applied here.
//!
//! A host decides only while this node leads the shard with its state
//! complete: [`ShardStore::ready`] confirms leadership with a quorum and
//! waits until every entry of earlier terms is applied, once per term. The
//! term goes into each proposal, and an entry that ends up in another term's
//! log (leadership lost and regained in between) is applied as nothing on
//! every replica, so no decision made on old state can take effect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use super::view::{BoxFuture, CommitError, ShardStore, ShardView};
use super::{NodeId, ShardId, ShardRaft, ShardWrite};
use crate::storage::{Batch, Entries, Space, Store, StoreError, View};

/// A shard replicated on this node.
pub struct RaftShard {
    /// The shard.
    pub shard: ShardId,
    /// Its Raft handle.
    pub raft: ShardRaft,
    me: NodeId,
    view: ShardView,
    /// The term in which `ready` last confirmed a complete state (0: none).
    ready_term: AtomicU64,
    /// How long a proposal or a confirmation may take.
    timeout: Duration,
}

impl RaftShard {
    /// Wraps `raft`, the group of `shard` on node `me`.
    pub fn new(
        shard: ShardId,
        raft: ShardRaft,
        me: NodeId,
        store: Arc<dyn Store>,
        timeout: Duration,
    ) -> Self {
        RaftShard {
            shard,
            raft,
            me,
            view: ShardView { store, shard },
            ready_term: AtomicU64::new(0),
            timeout,
        }
    }

    /// The leader's name as this replica knows it.
    pub fn leader(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config.membership().get_node(&id).map(|n| n.name.clone())
    }

    /// Whether this node leads the shard now (as far as it knows).
    pub fn leading(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.me)
    }

    fn not_leader(&self) -> CommitError {
        CommitError::NotLeader { shard: self.shard.to_string(), leader: self.leader() }
    }

    fn unavailable(&self, why: impl ToString) -> CommitError {
        CommitError::Unavailable { shard: self.shard.to_string(), why: why.to_string() }
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Confirms leadership with a quorum and waits until everything
    /// committed before is applied here.
    async fn linearize(&self) -> Result<(), CommitError> {
        match tokio::time::timeout(self.timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(_))) => Err(self.not_leader()),
            Ok(Err(RaftError::Fatal(e))) => Err(self.unavailable(e)),
            Err(_) => Err(self.unavailable("no quorum confirmed the leader in time")),
        }
    }
}

impl View for RaftShard {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.view.get(space, key)
    }
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.view.scan_from(space, prefix, start, limit)
    }
}

impl ShardStore for RaftShard {
    fn shard(&self) -> Option<ShardId> {
        Some(self.shard)
    }

    fn ready(&self) -> BoxFuture<'_, Result<u64, CommitError>> {
        Box::pin(async move {
            if !self.leading() {
                return Err(self.not_leader());
            }
            let term = self.term();
            if self.ready_term.load(Ordering::Acquire) == term {
                return Ok(term);
            }
            self.linearize().await?;
            if self.term() != term || !self.leading() {
                return Err(self.not_leader());
            }
            self.ready_term.store(term, Ordering::Release);
            Ok(term)
        })
    }

    fn commit(&self, term: u64, batch: Batch) -> BoxFuture<'_, Result<(), CommitError>> {
        Box::pin(async move {
            if batch.ops.is_empty() {
                return self.confirm(term).await;
            }
            let write = self.raft.client_write(ShardWrite { term, batch });
            match tokio::time::timeout(self.timeout, write).await {
                Ok(Ok(r)) if r.data.written => Ok(()),
                Ok(Ok(_)) => Err(CommitError::Stale { shard: self.shard.to_string() }),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(CommitError::NotLeader {
                        shard: self.shard.to_string(),
                        leader: f.leader_node.map(|n| n.name),
                    })
                }
                Ok(Err(e)) => Err(self.unavailable(e)),
                // It may still commit: the caller was not told it did, and
                // its retry (same message id) is recognized.
                Err(_) => Err(self.unavailable("the write was not committed in time")),
            }
        })
    }

    fn confirm(&self, term: u64) -> BoxFuture<'_, Result<(), CommitError>> {
        Box::pin(async move {
            self.linearize().await?;
            if self.term() != term {
                return Err(CommitError::Stale { shard: self.shard.to_string() });
            }
            Ok(())
        })
    }

    fn local(&self) -> Arc<dyn Store> {
        self.view.store.clone()
    }
}
