//! Unsafe recovery: the way out for a shard that lost a majority of its
//! voters for good (their disks and hosts gone, nothing to restore). Raft
//! cannot elect a leader without a majority, so such a shard stays
//! unavailable forever; like CockroachDB's and TiKV's unsafe recovery, an
//! operator may then tell a surviving replica, while its node is stopped,
//! that the shard's voters are now only the survivors.
//!
//! It appends one membership entry naming the survivors to this replica's
//! log, in a term above any it has seen, and records a vote for that term,
//! so that when the node starts the survivors elect a leader among
//! themselves and commit the entry.
//!
//! What it can lose, which is why it is never automatic: every entry the
//! lost voters committed that this replica had not received (acknowledged
//! writes the client was told are durable). And if a lost voter comes back
//! with its old data after all, it and the other lost voters still believe
//! in the old voters, could elect a leader of their own and serve a second,
//! diverging copy of the shard: their data dirs must be deleted before they
//! ever start again.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};

use super::log::ShardLog;
use super::{node_id, recovery, Member, NodeId, ShardId};

/// Why a shard could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeRecoveryError {
    /// The replica is rebuilding after losing its own data: it holds no
    /// more than the lost voters' copies would, and must not lead.
    #[error("shard {0}: this replica is rebuilding (it lost its own data); recover from a replica that kept its data")]
    Rebuilding(ShardId),
    /// The replica holds no log of the shard at all.
    #[error("shard {0}: this replica holds nothing of the shard")]
    Empty(ShardId),
    /// The survivors do not include the node the recovery runs on.
    #[error("shard {shard}: the voters to keep must include this node ({me})")]
    NotAVoter {
        /// The shard.
        shard: ShardId,
        /// This node.
        me: String,
    },
    /// Reading or writing the replica's storage failed.
    #[error("shard {shard}: storage: {why}")]
    Storage {
        /// The shard.
        shard: ShardId,
        /// What failed.
        why: String,
    },
}

/// What a recovery did to one shard, for the operator to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The shard.
    pub shard: ShardId,
    /// Index and term of the last entry this replica held: anything the
    /// lost voters committed after it is gone.
    pub last: (u64, u64),
    /// The term the survivors start from.
    pub term: u64,
    /// The shard's voters from now on.
    pub voters: Vec<String>,
}

/// Makes `voters` (which must include `me`) the only voters of `shard` in
/// the log of this replica (`log`, on the stopped node `me`); `rebuilding`
/// is whether the node recorded the shard as rebuilding.
pub async fn keep_only(
    mut log: ShardLog,
    shard: ShardId,
    me: &str,
    voters: &[String],
    rebuilding: Option<recovery::Rebuild>,
) -> Result<Recovered, UnsafeRecoveryError> {
    let storage = |e: openraft::StorageError<NodeId>| UnsafeRecoveryError::Storage {
        shard,
        why: e.to_string(),
    };
    if rebuilding.is_some() {
        return Err(UnsafeRecoveryError::Rebuilding(shard));
    }
    if !voters.iter().any(|v| v == me) {
        return Err(UnsafeRecoveryError::NotAVoter { shard, me: me.to_string() });
    }
    let state = log.get_log_state().await.map_err(storage)?;
    let last = state.last_log_id.ok_or(UnsafeRecoveryError::Empty(shard))?;
    let vote = log.read_vote().await.map_err(storage)?;
    let term = vote.map_or(0, |v| v.leader_id().term).max(last.leader_id.term) + 1;
    let names: BTreeSet<String> = voters.iter().cloned().collect();
    let ids: BTreeSet<NodeId> = names.iter().map(|n| node_id(n)).collect();
    let nodes: BTreeMap<NodeId, Member> =
        names.iter().map(|n| (node_id(n), Member { name: n.clone() })).collect();
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node_id(me)), last.index + 1),
        payload: EntryPayload::Membership(Membership::new(vec![ids], nodes)),
    };
    log.force_append(entry, Vote::new(term, node_id(me))).map_err(storage)?;
    Ok(Recovered {
        shard,
        last: (last.index, last.leader_id.term),
        term,
        voters: names.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mlsd_transport::Role;
    use openraft::RaftLogReader;

    use super::*;
    use crate::storage::MemStore;

    const SHARD: ShardId = ShardId { role: Role::As, index: 2 };

    async fn log_at(term: u64, index: u64) -> (Arc<MemStore>, ShardLog) {
        let store = Arc::new(MemStore::new());
        let log = ShardLog::new(store.clone(), SHARD);
        let id = |i| LogId::new(CommittedLeaderId::new(term, node_id("n2")), i);
        let entries: Vec<Entry<super::super::ShardConfig>> =
            (1..=index).map(|i| Entry { log_id: id(i), payload: EntryPayload::Blank }).collect();
        for e in entries {
            log.force_append(e, Vote::new(term, node_id("n2"))).unwrap();
        }
        (store, log)
    }

    #[tokio::test]
    async fn the_survivors_become_the_voters_in_a_newer_term() {
        let (_store, log) = log_at(4, 7).await;
        let keep = vec!["n1".to_string()];
        let r = keep_only(log.clone(), SHARD, "n1", &keep, None).await.unwrap();
        assert_eq!(r, Recovered { shard: SHARD, last: (7, 4), term: 5, voters: keep });
        let mut reader = log.clone();
        let e = reader.try_get_log_entries(8..=8).await.unwrap().pop().unwrap();
        assert_eq!(e.log_id.index, 8);
        assert_eq!(e.log_id.leader_id.term, 5);
        let EntryPayload::Membership(m) = e.payload else { panic!("{:?}", e.payload) };
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![node_id("n1")]);
        let mut l = log.clone();
        assert_eq!(l.read_vote().await.unwrap(), Some(Vote::new(5, node_id("n1"))));
        assert_eq!(l.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(8));
    }

    #[tokio::test]
    async fn a_rebuilding_empty_or_excluded_replica_is_refused_and_unchanged() {
        let (_store, log) = log_at(2, 3).await;
        let keep = vec!["n1".to_string()];
        let waiting = Some(recovery::Rebuild::Waiting);
        let e = keep_only(log.clone(), SHARD, "n1", &keep, waiting).await.unwrap_err();
        assert!(matches!(e, UnsafeRecoveryError::Rebuilding(s) if s == SHARD), "{e}");
        let e = keep_only(log.clone(), SHARD, "n3", &keep, None).await.unwrap_err();
        assert!(matches!(e, UnsafeRecoveryError::NotAVoter { .. }), "{e}");
        let mut l = log.clone();
        assert_eq!(l.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(3));
        let empty = ShardLog::new(Arc::new(MemStore::new()), SHARD);
        let e = keep_only(empty, SHARD, "n1", &keep, None).await.unwrap_err();
        assert!(matches!(e, UnsafeRecoveryError::Empty(s) if s == SHARD), "{e}");
    }
}
