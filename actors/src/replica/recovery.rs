//! The rule for a replica that restarts with empty storage (its disk was
//! wiped or replaced). Without it, a candidate missing acknowledged entries
//! could win with the empty replica's vote, and those entries would be
//! overwritten: the empty replica's lost copy was part of the majority that
//! acknowledged them.
//!
//! The replica's target is the last log id its peers had applied when it
//! came back (asked at start-up: `mlsd cluster status`'s applied index and
//! its term). Until it has applied that far itself, it votes only for a
//! candidate whose last log id is at least the target: in Raft a log whose
//! last entry is at least as new as a committed entry holds that entry, so
//! such a candidate has everything the peers had applied. (Refusing every
//! vote instead would deadlock a shard whose other empty replica needs the
//! one complete replica elected before either can catch up.) Once caught
//! up it votes as any replica does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::ShardId;

/// A log position as Raft orders them: (term, index).
pub type Position = (u64, u64);

/// Which shards of this node are still catching up after an empty start,
/// and to which position.
#[derive(Debug, Default)]
pub struct Recovery {
    targets: Mutex<BTreeMap<ShardId, Position>>,
}

impl Recovery {
    /// Shards that must reach `targets` before they vote freely.
    pub fn new(targets: BTreeMap<ShardId, Position>) -> Self {
        Recovery { targets: Mutex::new(targets) }
    }

    /// How many shards are still catching up.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether every shard votes (nothing to catch up).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Whether the replica of `shard`, having applied up to index
    /// `applied`, may vote for a candidate whose last log position is
    /// `candidate`. Once caught up, it votes freely from then on.
    pub fn may_vote(&self, shard: ShardId, applied: u64, candidate: Option<Position>) -> bool {
        let mut t = self.lock();
        let Some(&target) = t.get(&shard) else { return true };
        if applied >= target.1 {
            t.remove(&shard);
            tracing::info!(%shard, applied, "replica caught up; it votes freely again");
            return true;
        }
        candidate.is_some_and(|c| c >= target)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShardId, Position>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlsd_transport::Role;

    #[test]
    fn an_empty_replica_votes_only_once_it_reached_its_target() {
        let s = ShardId { role: Role::Ids, index: 1 };
        let other = ShardId { role: Role::Ids, index: 2 };
        let r = Recovery::new([(s, (3, 40))].into());
        assert!(!r.may_vote(s, 0, None), "not for a candidate with an empty log");
        assert!(!r.may_vote(s, 39, Some((3, 39))), "not for one missing an entry");
        assert!(!r.may_vote(s, 0, Some((2, 90))), "not for a long log of an older term");
        assert!(r.may_vote(s, 0, Some((3, 40))), "for one that holds the target");
        assert!(r.may_vote(s, 0, Some((4, 1))), "for one with an entry of a newer term");
        assert!(r.may_vote(other, 0, None), "shards without a target vote");
        assert!(!r.is_empty(), "still catching up");
        assert!(r.may_vote(s, 40, None), "caught up");
        assert!(r.may_vote(s, 0, None), "once caught up, it stays allowed");
        assert!(r.is_empty());
    }
}
