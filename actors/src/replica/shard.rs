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
//!
//! A proposal whose outcome is unknown (it timed out, or Raft failed under
//! it) may still commit later, after the host, told it failed, has
//! decided again on state without it. So such a failure fences the shard:
//! until a barrier (an empty entry) proposed after it is applied here, or a
//! later term's leadership is confirmed, `ready` decides nothing, and
//! everything the lost proposal did is in the state the host reads next.
//!
//! A process that stops loses that fence with its memory, but not its log:
//! entries its earlier run proposed and never saw committed are still
//! there, and a node that restarts leads again in the same term (openraft
//! keeps a committed vote for itself), where confirming leadership waits
//! only for what is already committed. So a fresh replica is fenced from
//! its start: its first decision waits for a barrier too, which commits
//! and applies whatever its log held. (Found by the simulation over the
//! real IDS logic, seed 224: a node crashed mid-proposal and restarted
//! leading the same term; another commit for the same epoch was decided
//! before the first one's entry committed, and both were acknowledged.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The term in which a proposal's outcome became unknown (0: none):
    /// nothing is decided in that term before a barrier is applied.
    fenced: AtomicU64,
    /// No barrier has been applied since this replica started: its log may
    /// hold proposals of an earlier run whose outcome nobody knows.
    since_start: AtomicBool,
    /// How long a proposal or a confirmation may take.
    timeout: Duration,
    /// Most bytes one entry may carry ([`super::max_entry`]).
    max_entry: usize,
    /// How long a leader that has heard from no quorum still counts as
    /// leading: the election timeout, after which the others may have
    /// elected another.
    lease: Duration,
    /// Until when this leader is handing the shard over to another voter
    /// ([`RaftShard::hand_over`]); `None` when it is not.
    handover: std::sync::Mutex<Option<std::time::Instant>>,
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
        let lease = Duration::from_millis(raft.config().election_timeout_min);
        RaftShard {
            shard,
            raft,
            me,
            view: ShardView { store, shard },
            ready_term: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            since_start: AtomicBool::new(true),
            timeout,
            max_entry: super::max_entry(mlsd_transport::limits::DEFAULT_MAX_FRAME),
            lease,
            handover: std::sync::Mutex::new(None),
        }
    }

    /// The same shard with entries bounded for frames of `max_frame` bytes.
    pub fn with_max_frame(mut self, max_frame: u32) -> Self {
        self.max_entry = super::max_entry(max_frame);
        self
    }

    /// The position (term, index) of the last entry this replica holds,
    /// `None` when it holds none: what a replica rebuilding after a disk
    /// loss must reach before it votes ([`super::recovery`]). Not the
    /// applied position: an entry the lost copy helped commit may not be
    /// applied here yet.
    pub fn last_log(&self) -> Result<Option<super::recovery::Position>, CommitError> {
        let log = super::log::ShardLog::new(self.view.store.clone(), self.shard);
        let last = log.last_log_id().map_err(|e| self.unavailable(e))?;
        Ok(last.map(|id| (id.leader_id.term, id.index)))
    }

    /// The leader's name as this replica knows it.
    pub fn leader(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config.membership().get_node(&id).map(|n| n.name.clone())
    }

    /// Whether this node is the shard's leader in openraft's eyes, lease or
    /// not: what decides whether it sends heartbeats (which renew the lease).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.me)
    }

    /// Whether this node leads the shard now: it is the leader, and a
    /// quorum acknowledged it within the lease. A leader cut off from the
    /// others keeps openraft's leader state until it hears of a newer term;
    /// after the lease it no longer counts as leading, so its hosts stop
    /// deciding and answer `NotLeader` at once instead of timing out.
    pub fn leading(&self) -> bool {
        let lease = self.lease.as_millis() as u64;
        let acked =
            self.raft.metrics().borrow().millis_since_quorum_ack.is_some_and(|ms| ms <= lease);
        acked && self.is_leader() && !self.handing_over()
    }

    /// Starts handing the shard over to another voter, for at most `within`:
    /// meanwhile this leader proposes nothing new and answers `NotLeader`
    /// ([`RaftShard::leading`] is false), and its node sends it no
    /// heartbeats, so the followers' leases run out and the chosen voter's
    /// campaign succeeds. If this node still leads after `within`, it goes
    /// on leading.
    pub fn hand_over(&self, within: Duration) {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now() + within);
    }

    /// Ends a handover: the leadership moved, or it did not and this
    /// leader goes on.
    pub fn resume(&self) {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether a handover ([`RaftShard::hand_over`]) is under way.
    pub fn handing_over(&self) -> bool {
        let h = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        h.is_some_and(|until| std::time::Instant::now() < until)
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

    /// Records that a proposal made in `term` has an unknown outcome.
    fn fence(&self, term: u64) {
        let term = term.max(self.term());
        self.fenced.fetch_max(term, Ordering::AcqRel);
        self.ready_term.store(0, Ordering::Release);
        tracing::warn!(shard = %self.shard, term, "a write's outcome is unknown; fenced until a barrier applies");
    }

    /// Proposes an empty entry in `term` and waits until it is applied
    /// here: every entry before it, the unknown one included, then is too.
    async fn barrier(&self, term: u64) -> Result<(), CommitError> {
        let write = self.raft.client_write(ShardWrite { term, batch: Batch::new() });
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(_)) => {
                // Only a fence of this term or older is lifted.
                let _ = self.fenced.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                    (f <= term).then_some(0)
                });
                self.since_start.store(false, Ordering::Release);
                Ok(())
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(self.not_leader())
            }
            Ok(Err(e)) => Err(self.unavailable(e)),
            Err(_) => Err(self.unavailable("an earlier write's outcome is still unknown")),
        }
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
            if self.fenced.load(Ordering::Acquire) == term
                || self.since_start.load(Ordering::Acquire)
            {
                self.barrier(term).await?;
            }
            if self.ready_term.load(Ordering::Acquire) == term {
                return Ok(term);
            }
            self.linearize().await?;
            if self.term() != term || !self.leading() {
                return Err(self.not_leader());
            }
            // A new term's confirmed leadership covers every entry of the
            // terms before: a fence from one of them is lifted.
            let _ = self.fenced.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (f != 0 && f < term).then_some(0)
            });
            self.ready_term.store(term, Ordering::Release);
            Ok(term)
        })
    }

    fn commit(&self, term: u64, batch: Batch) -> BoxFuture<'_, Result<(), CommitError>> {
        Box::pin(async move {
            if batch.ops.is_empty() {
                return self.confirm(term).await;
            }
            // Nothing new is proposed while the shard is handed over: the
            // proposal would renew the followers' leases and its outcome
            // would be unknown when the leadership moves.
            if self.handing_over() {
                return Err(self.not_leader());
            }
            let bytes = super::batch_size(&batch);
            if bytes > self.max_entry {
                let shard = self.shard.to_string();
                return Err(CommitError::TooLarge { shard, bytes, max: self.max_entry });
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
                // The entry may be in the log and commit later: fenced.
                Ok(Err(e)) => {
                    self.fence(term);
                    Err(self.unavailable(e))
                }
                Err(_) => {
                    self.fence(term);
                    Err(self.unavailable("the write was not committed in time"))
                }
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
